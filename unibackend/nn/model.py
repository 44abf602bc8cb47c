"""The model: the layers between its inputs and outputs, their parameters
(a dict of numpy arrays), and the forward pass on the backend in force."""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .. import _registry as R
from .._autodiff import function
from ..ops import asarray, to_numpy
from .layers import Input, MixtureOfExperts, Projection
from .saving import FORMAT, FORMAT_VERSION, write

__all__ = ["Model"]


def _topo(outputs):
    """Layers reachable from ``outputs``, every layer after its inputs.

    Iterative (an explicit stack), so the depth of a model, which a loaded
    file controls, never meets Python's recursion limit."""
    order: list = []
    state: dict[int, int] = {}  # id(layer) -> 1 (on the stack) or 2 (done)
    for root in outputs:
        if state.get(id(root)) == 2:
            continue
        stack = [(root, iter(root.inputs))]
        state[id(root)] = 1
        while stack:
            layer, pending = stack[-1]
            for i in pending:
                s = state.get(id(i))
                if s == 1:
                    raise ValueError("unibackend.nn: the layers form a cycle")
                if s is None:
                    state[id(i)] = 1
                    stack.append((i, iter(i.inputs)))
                    break
            else:
                stack.pop()
                state[id(layer)] = 2
                order.append(layer)
    return order


def _compiles(B):
    """Whether a forward pass / training step runs as one ``ub.function``:
    on a backend whose every eager op call compiles a graph of its own
    (capability ``eager_compiles``), one graph for the whole step is what
    makes it fast.  Elsewhere the pass runs eagerly (an eager backend's
    ``ub.function`` gains nothing, and a traced one may not take the
    scipy.sparse inputs a model is fed)."""
    return B.capabilities.eager_compiles


class Model:
    """The layers between ``inputs`` and ``outputs``, with their parameters.

    ``params``: dict ``"layer/param"`` -> numpy array, created from ``seed``
    (or given).  Unnamed layers get names from their class, in order."""

    def __init__(self, inputs, outputs, seed=0, dtype="float32", params=None):
        self.inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        self.outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        for x in self.inputs:
            if not isinstance(x, Input):
                raise TypeError(f"Model: inputs must be nn.Input layers, got {x!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"Model: dtype must be a float dtype, got {self.dtype}")
        self.layers = _topo(self.outputs)
        counts: dict[str, int] = {}
        for layer in self.layers:
            if layer.name is None:
                base = type(layer).__name__.lower()
                counts[base] = counts.get(base, 0) + 1
                layer.name = f"{base}_{counts[base]}"
        dup = {n for n, c in Counter(layer.name for layer in self.layers).items() if c > 1}
        if dup:
            raise ValueError(f"Model: layer names must be unique, repeated: {', '.join(sorted(dup))}")
        for layer in self.layers:
            if isinstance(layer, Input) and layer not in self.inputs:
                raise ValueError(f"Model: input {layer.name!r} is used but not listed in inputs")
        self.by_name = {layer.name: layer for layer in self.layers}
        for layer in self.layers:
            if isinstance(layer, MixtureOfExperts):
                layer._dtype = self.dtype  # its constant 0/1 matrices
        for x in self.inputs:
            if x.name not in self.by_name:
                raise ValueError(f"Model: input {x.name!r} does not reach any output")
        self.param_shapes = {
            f"{layer.name}/{k}": tuple(s) for layer in self.layers for k, s in layer.param_shapes().items()
        }
        if params is None:
            rng = np.random.default_rng(seed)
            params = {}
            for layer in self.layers:
                for k, v in layer.init_params(rng, self.dtype).items():
                    params[f"{layer.name}/{k}"] = v
        self.params = self._checked_params(params)
        self._compiled = {}  # (backend, outputs) -> compiled forward pass (eager_compiles)

    def _checked_params(self, params):
        if set(params) != set(self.param_shapes):
            missing = sorted(set(self.param_shapes) - set(params))
            extra = sorted(set(params) - set(self.param_shapes))
            raise ValueError(f"Model: parameters do not fit the layers (missing: {missing}, unexpected: {extra})")
        out = {}
        for k, shape in self.param_shapes.items():
            v = np.asarray(params[k])
            if v.shape != shape:
                raise ValueError(f"Model: parameter {k!r} has shape {v.shape}, the layer needs {shape}")
            out[k] = v.astype(self.dtype, copy=False)
        return out

    @property
    def param_names(self):
        """Parameter names in a fixed order (the order of ``param_shapes``)."""
        return list(self.param_shapes)

    def __getitem__(self, name):
        return self.by_name[name]

    def summary(self):
        lines = []
        for layer in self.layers:
            ins = ", ".join(i.name for i in layer.inputs) or "-"
            n = sum(int(np.prod(s)) for k, s in self.param_shapes.items() if k.startswith(layer.name + "/"))
            lines.append(f"{layer.name:<16} {type(layer).__name__:<17} dim={layer.dim!s:<6} params={n:<8} <- {ins}")
        return "\n".join(lines)

    # -- evaluation ----------------------------------------------------------
    def _feed(self, data):
        if not isinstance(data, dict):
            if len(self.inputs) != 1:
                raise TypeError(f"Model: give the inputs as a dict {{{', '.join(x.name for x in self.inputs)}}}")
            data = {self.inputs[0].name: data}
        names = {x.name for x in self.inputs}
        missing, extra = names - set(data), set(data) - names
        if missing or extra:
            raise ValueError(f"Model: inputs missing: {sorted(missing)}, unexpected: {sorted(extra)}")
        return [data[x.name] for x in self.inputs]

    def _wanted(self, output):
        if output is None:
            return [o.name for o in self.outputs], len(self.outputs) == 1
        single = isinstance(output, str)
        names = [output] if single else list(output)
        for n in names:
            if n not in self.by_name:
                raise KeyError(f"Model: no layer named {n!r}; layers: {', '.join(self.by_name)}")
        return names, single

    def forward(self, params, data, output=None, logits=False):
        """Outputs of the layers named by ``output`` (default: the model's
        outputs) as native tensors of the backend that ran.  ``params``: a
        dict name -> array or native tensor; ``data``: a dict input name ->
        array, sparse matrix, ids, or native tensor; or the input values as
        a list in the order of ``inputs``.  ``logits``: the pre-activation of
        a Projection/Dense output instead."""
        values = data if isinstance(data, (list, tuple)) else self._feed(data)
        names, single = self._wanted(output)
        memo = {x.name: v for x, v in zip(self.inputs, values)}
        per_layer: dict[str, dict[str, Any]] = {}
        for k, v in params.items():
            layer_name, pname = k.split("/", 1)
            per_layer.setdefault(layer_name, {})[pname] = v

        def param(layer):
            return per_layer.get(layer.name, {})

        def compute(layer):
            return layer.forward(param(layer), [memo[i.name] for i in layer.inputs])

        wanted = [self.by_name[n] for n in names]
        # in topological order (no recursion: a deep chain is as fine as a wide one),
        # only the layers the wanted outputs read from (with logits, not the outputs themselves)
        roots = [i for layer in wanted for i in layer.inputs] if logits else wanted
        for layer in _topo(roots):
            if layer.name not in memo:
                memo[layer.name] = compute(layer)
        outs = []
        for layer in wanted:
            if not logits:
                outs.append(memo[layer.name])
            elif not isinstance(layer, Projection):
                raise ValueError(f"Model: layer {layer.name!r} has no logits")
            else:
                outs.append(layer.logits(param(layer), [memo[i.name] for i in layer.inputs]))
        return outs[0] if single else dict(zip(names, outs))

    def predict(self, data, output=None):
        """Outputs (numpy) of the layers named by ``output`` (a name or a
        list of names; default the model's outputs) on the backend in force."""
        B = R.get_backend()
        params = {k: asarray(v) for k, v in self.params.items()}
        names, single = self._wanted(output)
        values = self._feed(data)
        if _compiles(B):
            key = (B.name, tuple(names))
            fn = self._compiled.get(key)
            if fn is None:
                order = self.param_names
                k = len(order)

                def run(*args):
                    outs = self.forward(dict(zip(order, args[:k])), list(args[k:]), names)
                    return tuple(outs[n] for n in names)

                fn = function(run)
                self._compiled[key] = fn
            outs = fn(*[params[n] for n in self.param_names], *values)
            res = dict(zip(names, (to_numpy(o) for o in outs)))
        else:
            res = {n: to_numpy(o) for n, o in self.forward(params, values, names).items()}
        return res[names[0]] if single else res

    # -- saving --------------------------------------------------------------
    def architecture(self):
        """The layers as plain JSON-able data."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dtype": self.dtype.name,
            "inputs": [x.name for x in self.inputs],
            "outputs": [o.name for o in self.outputs],
            "layers": [
                {"class": type(layer).__name__, "name": layer.name,
                 "inputs": [i.name for i in layer.inputs], "config": layer.config()}
                for layer in self.layers
            ],
        }

    def save(self, path):
        """Write one ``.npz``: the parameters, and the architecture as JSON
        (with a SHA-256 of the parameters).  No pickle: only numeric arrays."""
        return write(path, self.architecture(), self.params)
