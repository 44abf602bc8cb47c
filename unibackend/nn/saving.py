"""The model file: one ``.npz`` holding the parameters and the architecture
as JSON (with a SHA-256 of the parameters), read back with
``allow_pickle=False`` and checked field by field before anything is built:
only the layer classes of :mod:`unibackend.nn.layers` are rebuilt."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile

import numpy as np

from .layers import _NAME, LAYERS, EmbeddingMean, Input

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "load", "write"]

FORMAT = "unibackend.nn"
FORMAT_VERSION = 1
_ARCH_KEY = "__unibackend_nn__"
_PARAM_PREFIX = "param/"


class ModelFileError(ValueError):
    """A model file that is truncated, edited, or not a unibackend model."""

    def __init__(self, path, why):
        self.path = os.fspath(path) if path is not None else "<model file>"
        super().__init__(f"{self.path}: not a valid unibackend model file: {why}")


def write(path, arch, params):
    """Write architecture ``arch`` (JSON-able) and ``params`` (name -> numpy
    array) to one ``.npz`` at ``path``; returns the path as a string."""
    arch = dict(arch, sha256=_digest(params))
    blob = np.frombuffer(json.dumps(arch, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    arrays = {_ARCH_KEY: blob}
    for k, v in params.items():
        arrays[_PARAM_PREFIX + k] = np.ascontiguousarray(v)
    path = os.fspath(path)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _digest(params):
    h = hashlib.sha256()
    for k in sorted(params):
        v = np.ascontiguousarray(params[k])
        h.update(f"{k}|{v.dtype.str}|{v.shape}|".encode())
        h.update(v.tobytes())
    return h.hexdigest()


def _expect(cond, path, why):
    if not cond:
        raise ModelFileError(path, why)


_CONFIG_TYPES = {
    "Input": {"dim": (int, type(None)), "sparse": bool, "ids": bool},
    "Projection": {"units": int, "bias": bool},
    "Dense": {"units": int, "activation": str, "bias": bool},
    "EmbeddingMean": {"vocab": int, "dim": int, "pad_id": int},
    "TopKGate": {"experts": int, "k": int},
    "MixtureOfExperts": {"units": int, "experts": int, "activation": str},
}


def _rebuild(path, arch):
    """Layers from the architecture JSON; only the classes of :data:`LAYERS`."""
    _expect(isinstance(arch, dict), path, "the architecture is not a JSON object")
    _expect(arch.get("format") == FORMAT, path, f"format is {arch.get('format')!r}, expected {FORMAT!r}")
    _expect(arch.get("version") == FORMAT_VERSION, path,
            f"format version {arch.get('version')!r} is not supported (this reads {FORMAT_VERSION})")
    for key in ("inputs", "outputs", "layers"):
        _expect(isinstance(arch.get(key), list), path, f"architecture field {key!r} is missing or not a list")
    dtype = arch.get("dtype")
    _expect(dtype in ("float16", "float32", "float64"), path, f"dtype {dtype!r} is not supported")
    layers = {}
    for spec in arch["layers"]:
        _expect(isinstance(spec, dict) and set(spec) == {"class", "name", "inputs", "config"}, path,
                f"a layer entry has the wrong fields: {spec!r:.200}")
        cls_name, name, ins, cfg = spec["class"], spec["name"], spec["inputs"], spec["config"]
        _expect(cls_name in LAYERS, path, f"unknown layer class {cls_name!r:.80}")
        _expect(isinstance(name, str) and _NAME.match(name) and name not in layers, path,
                f"bad or repeated layer name {name!r:.80}")
        _expect(isinstance(cfg, dict) and set(cfg) == set(_CONFIG_TYPES[cls_name]), path,
                f"layer {name!r}: config {cfg!r:.200} does not fit {cls_name}")
        for k, t in _CONFIG_TYPES[cls_name].items():
            v = cfg[k]
            ok = isinstance(v, t) and (t is bool or not isinstance(v, bool))
            _expect(ok, path, f"layer {name!r}: config {k}={v!r:.80} has the wrong type")
        _expect(isinstance(ins, list) and all(isinstance(i, str) and i in layers for i in ins), path,
                f"layer {name!r}: inputs {ins!r:.200} do not name earlier layers")
        try:
            if cls_name == "Input":
                layer = Input(name, cfg["dim"], cfg["sparse"], cfg["ids"])
            elif cls_name == "EmbeddingMean":
                layer = EmbeddingMean(cfg["vocab"], cfg["dim"], name, cfg["pad_id"])
            else:
                layer = LAYERS[cls_name](name=name, **cfg)
            if cls_name != "Input":
                layer(*[layers[i] for i in ins])
        except (ValueError, TypeError) as e:
            raise ModelFileError(path, f"layer {name!r}: {e}") from None
        layers[name] = layer
    for key in ("inputs", "outputs"):
        for n in arch[key]:
            _expect(isinstance(n, str) and n in layers, path, f"{key} names an unknown layer {n!r:.80}")
    return [layers[n] for n in arch["inputs"]], [layers[n] for n in arch["outputs"]], dtype


def load(path):
    """Rebuild a model saved by :meth:`~unibackend.nn.Model.save`; it then predicts on the
    backend in force.  Reads with ``allow_pickle=False``.  A truncated,
    edited or foreign file raises :class:`ModelFileError` (a ValueError)
    naming the file; a missing file raises FileNotFoundError."""
    from .model import Model  # model.py imports this module for Model.save

    path = os.fspath(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ModelFileError(path, f"cannot be read as an .npz archive ({e})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ModelFileError(path, "it is a single .npy array, not a model archive")
    try:
        with npz:
            files = set(npz.files)
            _expect(_ARCH_KEY in files, path, "it holds no unibackend architecture record")
            blob = npz[_ARCH_KEY]
            _expect(blob.dtype == np.uint8 and blob.ndim == 1, path, "the architecture record is malformed")
            try:
                arch = json.loads(blob.tobytes().decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise ModelFileError(path, f"the architecture record is not valid JSON ({e})") from None
            inputs, outputs, dtype = _rebuild(path, arch)
            params = {}
            for f in files - {_ARCH_KEY}:
                _expect(f.startswith(_PARAM_PREFIX), path, f"unexpected entry {f!r:.80}")
                v = npz[f]
                _expect(v.dtype == np.dtype(dtype), path, f"parameter {f!r} has dtype {v.dtype}, expected {dtype}")
                params[f[len(_PARAM_PREFIX):]] = v
    except ModelFileError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ModelFileError(path, f"damaged archive ({type(e).__name__}: {e})") from None
    _expect(arch.get("sha256") == _digest(params), path,
            "the parameters do not match the SHA-256 recorded at save time (corrupted or edited)")
    try:
        return Model(inputs, outputs, dtype=dtype, params=params)
    except (ValueError, TypeError) as e:
        raise ModelFileError(path, str(e)) from None

