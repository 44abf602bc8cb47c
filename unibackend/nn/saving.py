"""The model file: one ``.npz`` holding the parameters and the architecture
as JSON (with a SHA-256 of the parameters).

:func:`load` treats the file as untrusted (the threat model is in
docs/models.md): it reads the zip itself, never unpickles, checks every
``.npy`` header's shape and dtype against the member's real size before
allocating, caps the total uncompressed size relative to the file (zip
bombs), bounds the JSON's nesting before parsing it, validates every field's
type against a schema, rebuilds only the layer classes of
:mod:`unibackend.nn.layers`, and walks the graph without recursion.  Whatever
is wrong raises :class:`ModelFileError` naming the member."""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

from .layers import _NAME, LAYERS, EmbeddingMean, Input, MixtureOfExperts

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
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub reads the names as allow_pickle
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


# Limits on what a file may make load() do.  A file this library writes is stored
# uncompressed (np.savez), so its members add up to about the file's own size.
_MAX_EXPANSION = 64  # total uncompressed bytes <= this x the file's size (+ _SLACK)
_SLACK = 1 << 20
_MAX_JSON_DEPTH = 32  # the schema needs 4 (arch > layers > layer > config)
_NPY_KINDS = "uif"  # numeric dtypes only: no object, string, void or structured arrays
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_ARCH_FIELDS = {"format", "version", "dtype", "inputs", "outputs", "layers", "sha256"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# what reading one zip member or .npy header can raise on damaged bytes
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError,
                NotImplementedError, RuntimeError, struct.error, OverflowError, UnicodeDecodeError)


def _is(v, t):
    """``isinstance`` where a JSON ``true`` is not an int."""
    return isinstance(v, t) and (t is bool or not isinstance(v, bool))


_CONFIG_TYPES: dict[str, dict[str, Any]] = {
    "Input": {"dim": (int, type(None)), "sparse": bool, "ids": bool},
    "Projection": {"units": int, "bias": bool},
    "Dense": {"units": int, "activation": str, "bias": bool},
    "EmbeddingMean": {"vocab": int, "dim": int, "pad_id": int},
    "TopKGate": {"experts": int, "k": int},
    "MixtureOfExperts": {"units": int, "experts": int, "activation": str},
}


def _json_depth(raw):
    """Deepest ``[``/``{`` nesting of the JSON text ``raw`` (bytes), counted
    without parsing (strings blanked first), so a deep file is refused before
    the recursive JSON parser sees it."""
    bare = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    if bare.size == 0:
        return 0
    step = (np.isin(bare, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(bare, (ord("]"), ord("}"))).astype(np.int64))
    return int(np.cumsum(step).max(initial=0))


def _check_schema(path, arch):
    """Every field of the architecture record has the type the format says."""
    where = f"member {_ARCH_KEY}.npy"
    _expect(isinstance(arch, dict), path, f"{where}: the architecture is not a JSON object")
    _expect(set(arch) == _ARCH_FIELDS, path,
            f"{where}: fields {sorted(arch)!r:.200} are not {sorted(_ARCH_FIELDS)}")
    _expect(arch["format"] == FORMAT, path, f"{where}: format is {arch['format']!r:.80}, expected {FORMAT!r}")
    _expect(_is(arch["version"], int) and arch["version"] == FORMAT_VERSION, path,
            f"{where}: format version {arch['version']!r:.80} is not supported (this reads {FORMAT_VERSION})")
    _expect(arch["dtype"] in ("float16", "float32", "float64"), path,
            f"{where}: dtype {arch['dtype']!r:.80} is not supported")
    _expect(isinstance(arch["sha256"], str) and _SHA256.match(arch["sha256"]), path,
            f"{where}: sha256 {arch['sha256']!r:.80} is not a hex SHA-256")
    for key in ("inputs", "outputs", "layers"):
        _expect(isinstance(arch[key], list), path, f"{where}: field {key!r} is not a list")
    for key in ("inputs", "outputs"):
        _expect(all(isinstance(n, str) for n in arch[key]), path,
                f"{where}: field {key!r} holds something other than layer names: {arch[key]!r:.200}")
    for spec in arch["layers"]:
        _expect(isinstance(spec, dict) and set(spec) == {"class", "name", "inputs", "config"}, path,
                f"{where}: a layer entry has the wrong fields: {spec!r:.200}")
        cls_name, name, ins, cfg = spec["class"], spec["name"], spec["inputs"], spec["config"]
        _expect(isinstance(name, str) and _NAME.match(name), path, f"{where}: bad layer name {name!r:.80}")
        _expect(isinstance(cls_name, str) and cls_name in LAYERS, path,
                f"{where}: layer {name!r}: unknown layer class {cls_name!r:.80}")
        _expect(isinstance(ins, list) and all(isinstance(i, str) for i in ins), path,
                f"{where}: layer {name!r}: inputs {ins!r:.200} is not a list of layer names")
        types = _CONFIG_TYPES[cls_name]
        _expect(isinstance(cfg, dict) and set(cfg) == set(types), path,
                f"{where}: layer {name!r}: config {cfg!r:.200} does not fit {cls_name}")
        for k, t in types.items():
            _expect(_is(cfg[k], t), path, f"{where}: layer {name!r}: config {k}={cfg[k]!r:.80} has the wrong type")


def _rebuild(path, arch, cap):
    """Layers from a schema-checked architecture; only the classes of :data:`LAYERS`.
    ``cap``: the most bytes a layer may allocate for itself at predict time."""
    where = f"member {_ARCH_KEY}.npy"
    itemsize = np.dtype(arch["dtype"]).itemsize
    layers: dict[str, Any] = {}
    for spec in arch["layers"]:
        cls_name, name, ins, cfg = spec["class"], spec["name"], spec["inputs"], spec["config"]
        _expect(name not in layers, path, f"{where}: repeated layer name {name!r}")
        _expect(all(i in layers for i in ins), path,
                f"{where}: layer {name!r}: inputs {ins!r:.200} do not name earlier layers")
        try:
            layer: Any
            if cls_name == "Input":
                layer = Input(name, cfg["dim"], cfg["sparse"], cfg["ids"])
            elif cls_name == "EmbeddingMean":
                layer = EmbeddingMean(cfg["vocab"], cfg["dim"], name, cfg["pad_id"])
            else:
                layer = LAYERS[cls_name](name=name, **cfg)
            if cls_name != "Input":
                layer(*[layers[i] for i in ins])
        except (ValueError, TypeError) as e:
            raise ModelFileError(path, f"{where}: layer {name!r}: {e}") from None
        if isinstance(layer, MixtureOfExperts):
            # its 0/1 matrices, (E, E*u) and (E*u, u), are built at the first prediction:
            # their size follows from the config, not from the parameters in the file
            E, u = layer.experts, layer.units
            need = E * u * (E + u) * itemsize
            _expect(need <= cap, path, f"{where}: layer {name!r}: experts={E}, units={u} need {need} bytes "
                    f"of constants at predict time, over the cap of {cap} for this file")
        layers[name] = layer
    for key in ("inputs", "outputs"):
        for n in arch[key]:
            _expect(n in layers, path, f"{where}: {key} names an unknown layer {n!r:.80}")
    return [layers[n] for n in arch["inputs"]], [layers[n] for n in arch["outputs"]], arch["dtype"]


def _read_npy(path, zf, info):
    """The array in zip member ``info``, its header checked against its size
    before anything the header declares is allocated."""
    where = f"member {info.filename!r:.120}"
    try:
        raw = zf.read(info)  # at most info.file_size bytes (checked against the cap), CRC checked
        f = io.BytesIO(raw)
        version = np.lib.format.read_magic(f)
        _expect(version in ((1, 0), (2, 0)), path, f"{where}: .npy format version {version} is not supported")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
    except ModelFileError:
        raise
    except _READ_ERRORS as e:
        raise ModelFileError(path, f"{where}: damaged ({type(e).__name__}: {e})") from None
    _expect(dtype.kind in _NPY_KINDS and not dtype.hasobject and dtype.fields is None
            and dtype.subdtype is None, path, f"{where}: dtype {dtype} is not a plain numeric dtype")
    _expect(all(_is(n, int) and n >= 0 for n in shape), path, f"{where}: bad shape {shape!r:.120}")
    offset = f.tell()
    declared = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    _expect(declared == len(raw) - offset, path,
            f"{where}: the header declares shape {shape} of {dtype} ({declared} bytes) "
            f"but the member holds {len(raw) - offset} bytes of data")
    a = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=offset)
    return a.reshape(shape, order="F" if fortran else "C").copy()


def _cap(size):
    """The most uncompressed bytes a file of ``size`` bytes may make load() (and a
    layer's constants) allocate."""
    return _MAX_EXPANSION * size + _SLACK


def _read_members(path, size):
    """``{member name without .npy: array}``, after checking the zip's
    directory: no encryption, stored or deflated only, unique ``.npy``
    names, total uncompressed size within the cap."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except _READ_ERRORS as e:
        raise ModelFileError(path, f"cannot be read as an .npz archive ({type(e).__name__}: {e})") from None
    with zf:
        infos = zf.infolist()
        seen = set()
        for info in infos:
            _expect(info.filename not in seen, path, f"member {info.filename!r:.120} appears twice in the archive")
            seen.add(info.filename)
        total = 0
        for info in infos:
            where = f"member {info.filename!r:.120}"
            _expect(info.filename.endswith(".npy"), path, f"{where}: not an .npy array")
            _expect(not info.flag_bits & 0x1, path, f"{where}: encrypted")
            _expect(info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED), path,
                    f"{where}: compression method {info.compress_type} is not stored or deflated")
            total += info.file_size
        cap = _cap(size)
        _expect(total <= cap, path,
                f"the members declare {total} bytes uncompressed, over the cap of {cap} for a "
                f"{size}-byte file (a zip bomb?)")
        return {info.filename[:-4]: _read_npy(path, zf, info) for info in infos}


def load(path):
    """Rebuild a model saved by :meth:`~unibackend.nn.Model.save`; it then
    predicts on the backend in force.

    The file is treated as untrusted (docs/models.md, "Threat model"): no
    pickle, memory bounded by the file's size, no recursion the file
    controls, every JSON field type-checked.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.

    Returns
    -------
    Model
        The rebuilt model, parameters included.

    Raises
    ------
    ModelFileError
        (a ValueError) for a truncated, edited, malicious or foreign file,
        naming the file, the member and what is wrong.
    FileNotFoundError
        If ``path`` does not exist.
    """
    from .model import Model  # model.py imports this module for Model.save

    path = os.fspath(path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise ModelFileError(path, f"cannot be read ({e})") from None
    arrays = _read_members(path, size)
    where = f"member {_ARCH_KEY}.npy"
    _expect(_ARCH_KEY in arrays, path, f"it holds no unibackend architecture record (member {_ARCH_KEY}.npy)")
    blob = arrays.pop(_ARCH_KEY)
    _expect(blob.dtype == np.uint8 and blob.ndim == 1, path, f"{where}: not a 1-D uint8 array")
    raw = blob.tobytes()
    depth = _json_depth(raw)
    _expect(depth <= _MAX_JSON_DEPTH, path, f"{where}: JSON nested {depth} deep (at most {_MAX_JSON_DEPTH})")
    try:
        arch = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # RecursionError: cannot happen below _MAX_JSON_DEPTH; kept so no parser error escapes
        raise ModelFileError(path, f"{where}: not valid JSON ({e})") from None
    _check_schema(path, arch)
    inputs, outputs, dtype = _rebuild(path, arch, _cap(size))
    params = {}
    for name, v in arrays.items():
        _expect(name.startswith(_PARAM_PREFIX), path, f"unexpected member {name + '.npy'!r:.120}")
        _expect(v.dtype == np.dtype(dtype), path, f"member {name + '.npy'!r}: dtype {v.dtype}, expected {dtype}")
        params[name[len(_PARAM_PREFIX):]] = v
    _expect(arch["sha256"] == _digest(params), path,
            f"the members {_PARAM_PREFIX}* do not match the SHA-256 recorded in {_ARCH_KEY}.npy at save time "
            "(corrupted or edited)")
    try:
        return Model(inputs, outputs, dtype=dtype, params=params)
    except (ValueError, TypeError) as e:
        raise ModelFileError(path, f"members {_PARAM_PREFIX}* do not fit the architecture: {e}") from None
