"""Portable models: a few layers that run on any backend, train on the
autodiff ones, and save to one ``.npz`` that serves on plain numpy.

Layers are composed the classic way: each layer is called on the layer(s)
before it, and when a model evaluates a layer, the layer pulls its inputs
from those layers first, so the output of any layer can be asked for by name::

    import unibackend as ub
    from unibackend import nn

    bow = nn.Input("bow", 10000, sparse=True)
    tags = nn.Input("tags", ids=True)
    emb = nn.EmbeddingMean(500, 32, name="tag_mean")(tags)
    hidden = nn.Dense(64, "tanh", name="hidden")(bow, emb)
    gate = nn.TopKGate(8, 2, name="gate")(hidden)
    moe = nn.MixtureOfExperts(32, 8, "relu", name="moe")(hidden, gate)
    out = nn.Dense(5, "softmax", name="out")(moe)
    model = nn.Model([bow, tags], out, seed=0)

    model.predict({"bow": X, "tags": ids})                 # class probabilities
    model.predict({"bow": X, "tags": ids}, output="gate")  # any layer by name

Parameters are a dict of numpy arrays (``model.params``); the forward pass
runs on whichever backend is in force (``ub.use_backend``).  Training
(:class:`Trainer`) takes ``ub.value_and_grad`` of the loss on torch,
tensorflow or theano (on theano wrapped in ``ub.function``, so a step runs
one compiled graph) and updates the numpy parameters with :class:`SGD` or
:class:`Adam`.  ``model.save(path)`` writes the parameters and the
architecture (JSON) into one ``.npz``; :func:`load` reads it back with
``allow_pickle=False``: no pickle anywhere.

Importing this module imports no framework.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import zipfile

import numpy as np

from .. import _registry as R
from .._autodiff import _autodiff_backend, function, value_and_grad
from ..ops import asarray, dot, embedding_mean, softmax, to_numpy, topk_gate

__all__ = [
    "Input", "Projection", "Dense", "EmbeddingMean", "TopKGate",
    "MixtureOfExperts", "Model", "Trainer", "SGD", "Adam", "load",
    "ModelFileError", "ACTIVATIONS", "softmax_cross_entropy",
]

FORMAT = "unibackend.nn"
FORMAT_VERSION = 1
_ARCH_KEY = "__unibackend_nn__"
_PARAM_PREFIX = "param/"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


class ModelFileError(ValueError):
    """A model file that is truncated, edited, or not a unibackend model."""

    def __init__(self, path, why):
        self.path = os.fspath(path) if path is not None else "<model file>"
        super().__init__(f"{self.path}: not a valid unibackend model file: {why}")


# --------------------------------------------------------------------------
# Elementwise functions.
#
# The unified op set has no tanh/relu/exp/log/sum/max, and the plugin
# interface is not widened for a model library.  Python operators (+ - * /
# and slicing) already work on the native tensors of every backend; the few
# functions below dispatch on the tensor's own module instead, through one
# table.  A tensor can only exist once its framework is imported, so the
# module is taken from sys.modules and nothing is ever imported here.
# Numpy arrays and Python scalars (what the numpy backend, and the theano
# backend called eagerly, return) use numpy.

def _np_table():
    return {
        "tanh": np.tanh,
        "relu": lambda x: np.maximum(x, 0),
        "exp": np.exp,
        "log": np.log,
        "sum": lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims),
        "max": lambda x, axis, keepdims: np.max(x, axis=axis, keepdims=keepdims),
    }


def _torch_table(torch):
    return {
        "tanh": torch.tanh,
        "relu": torch.relu,
        "exp": torch.exp,
        "log": torch.log,
        "sum": lambda x, axis, keepdims: torch.sum(x, dim=axis, keepdim=keepdims),
        "max": lambda x, axis, keepdims: torch.amax(x, dim=axis, keepdim=keepdims),
    }


def _tf_table(tf):
    return {
        "tanh": tf.math.tanh,
        "relu": tf.nn.relu,
        "exp": tf.math.exp,
        "log": tf.math.log,
        "sum": lambda x, axis, keepdims: tf.reduce_sum(x, axis=axis, keepdims=keepdims),
        "max": lambda x, axis, keepdims: tf.reduce_max(x, axis=axis, keepdims=keepdims),
    }


def _tensor_table(T):
    """PyTensor's ``pytensor.tensor`` and Theano's ``theano.tensor`` alike."""
    return {
        "tanh": T.tanh,
        "relu": lambda x: T.maximum(x, 0),
        "exp": T.exp,
        "log": T.log,
        "sum": lambda x, axis, keepdims: T.sum(x, axis=axis, keepdims=keepdims),
        "max": lambda x, axis, keepdims: T.max(x, axis=axis, keepdims=keepdims),
    }


_TABLE_MAKERS = {
    "numpy": lambda: _np_table(),
    "builtins": lambda: _np_table(),
    "torch": lambda: _torch_table(sys.modules["torch"]),
    "tensorflow": lambda: _tf_table(sys.modules["tensorflow"]),
    "keras": lambda: _tf_table(sys.modules["tensorflow"]),
    "pytensor": lambda: _tensor_table(sys.modules["pytensor"].tensor),
    "theano": lambda: _tensor_table(sys.modules["theano"].tensor),
}
_tables: dict = {}


def _fn(name, x):
    mod = type(x).__module__.split(".")[0]
    table = _tables.get(mod)
    if table is None:
        maker = _TABLE_MAKERS.get(mod)
        if maker is None:
            raise TypeError(f"unibackend.nn: {name} does not know tensors of type {type(x).__module__}.{type(x).__name__}")
        table = _tables[mod] = maker()
    return table[name]


def tanh(x):
    return _fn("tanh", x)(x)


def relu(x):
    return _fn("relu", x)(x)


def exp(x):
    return _fn("exp", x)(x)


def log(x):
    return _fn("log", x)(x)


def reduce_sum(x, axis=None, keepdims=False):
    return _fn("sum", x)(x, axis, keepdims)


def reduce_max(x, axis=None, keepdims=False):
    return _fn("max", x)(x, axis, keepdims)


def _softmax_last(x):
    return softmax(x, axis=-1)


ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": relu,
    "tanh": tanh,
    "softmax": _softmax_last,
}


def log_softmax(z):
    """``log(softmax(z))`` along the last axis, stable (max-shifted)."""
    m = reduce_max(z, axis=-1, keepdims=True)
    s = z - m
    return s - log(reduce_sum(exp(s), axis=-1, keepdims=True))


def softmax_cross_entropy(logits, onehot):
    """Mean over rows of ``-sum(onehot * log_softmax(logits))``.  The row
    count is ``sum(onehot)``, so no static shape is needed (symbolic graphs)."""
    return -reduce_sum(onehot * log_softmax(logits)) / reduce_sum(onehot)


# --------------------------------------------------------------------------
# Layers

def _check_name(name, what="name"):
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"unibackend.nn: {what} {name!r} must match {_NAME.pattern}")
    return name


def _check_pos_int(cls, arg, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{cls}: {arg} must be a positive int, got {v!r}")
    return int(v)


def _check_activation(cls, act):
    act = "linear" if act is None else act
    if act not in ACTIVATIONS:
        raise ValueError(f"{cls}: activation must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
    return act


def _glorot(rng, fan_in, fan_out, shape, dtype):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


class Layer:
    """Base class.  A layer is connected by calling it on the layer(s) it
    reads from; ``forward`` computes its output from its parameters and its
    inputs' outputs, using only unified ops, Python operators and the
    elementwise functions above, so it runs on every backend."""

    #: how many inputs the layer takes: an int, or None for "one or more"
    n_inputs = 1

    def __init__(self, name=None):
        self.name = None if name is None else _check_name(name)
        self.inputs = ()
        self.dim = None  # width of the output, known once connected

    def __call__(self, *inputs):
        cls = type(self).__name__
        if self.inputs:
            raise ValueError(f"{cls} {self.name or ''}: already connected; make a new layer")
        if not inputs or any(not isinstance(i, Layer) for i in inputs):
            raise TypeError(f"{cls}: call it on the layer(s) it reads from, got {inputs!r}")
        if self.n_inputs is not None and len(inputs) != self.n_inputs:
            raise ValueError(f"{cls}: takes {self.n_inputs} input(s), got {len(inputs)}")
        self.inputs = tuple(inputs)
        self.dim = self._out_dim([i.dim for i in inputs])
        return self

    # what save() records and load() rebuilds from
    def config(self) -> dict:
        return {}

    def _out_dim(self, in_dims):
        raise NotImplementedError

    def param_shapes(self) -> dict:
        """name -> shape of each parameter, from the input widths."""
        return {}

    def init_params(self, rng, dtype) -> dict:
        return {}

    def forward(self, p, xs):
        """Output from parameters ``p`` (name -> native tensor) and the
        inputs' outputs ``xs``."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args}, name={self.name!r})"


class Input(Layer):
    """A model input, fed by name: dense (n, dim), scipy.sparse (n, dim)
    (``sparse=True``), or padded integer ids (n, L) (``ids=True``)."""

    n_inputs = 0

    def __init__(self, name, dim=None, sparse=False, ids=False):
        super().__init__(_check_name(name, "input name"))
        if ids and sparse:
            raise ValueError("Input: an input is either sparse or ids, not both")
        if not ids:
            dim = _check_pos_int("Input", "dim", dim)
        elif dim is not None:
            raise ValueError("Input: ids inputs have no dim (their width is the padded length)")
        self.dim, self.sparse, self.ids = dim, bool(sparse), bool(ids)

    def __call__(self, *inputs):
        raise TypeError("Input: an input reads from no layer")

    def config(self):
        return {"dim": self.dim, "sparse": self.sparse, "ids": self.ids}

    def forward(self, p, xs):  # never called: the model feeds inputs
        raise AssertionError


class Projection(Layer):
    """``sum_i x_i @ W_i + b``: a linear map of one or more inputs (two
    inputs projected and added equal one projection of their
    concatenation).  A sparse input goes through ``sparse_dot``."""

    n_inputs = None

    def __init__(self, units, name=None, bias=True):
        super().__init__(name)
        self.units = _check_pos_int(type(self).__name__, "units", units)
        self.bias = bool(bias)

    def config(self):
        return {"units": self.units, "bias": self.bias}

    def _out_dim(self, in_dims):
        for i, d in enumerate(in_dims):
            if d is None:
                raise ValueError(
                    f"{type(self).__name__}: input {i} is an ids input; put an EmbeddingMean in between"
                )
        return self.units

    def _wname(self, i):
        return "W" if len(self.inputs) == 1 else f"W{i}"

    def param_shapes(self):
        shapes = {self._wname(i): (x.dim, self.units) for i, x in enumerate(self.inputs)}
        if self.bias:
            shapes["b"] = (self.units,)
        return shapes

    def init_params(self, rng, dtype):
        fan_in = sum(x.dim for x in self.inputs)
        out = {self._wname(i): _glorot(rng, fan_in, self.units, (x.dim, self.units), dtype)
               for i, x in enumerate(self.inputs)}
        if self.bias:
            out["b"] = np.zeros(self.units, dtype)
        return out

    def logits(self, p, xs):
        z = None
        for i, x in enumerate(xs):
            t = dot(x, p[self._wname(i)])  # dot sends a sparse x to sparse_dot
            z = t if z is None else z + t
        return z + p["b"] if self.bias else z

    def forward(self, p, xs):
        return self.logits(p, xs)


class Dense(Projection):
    """A projection followed by an activation: linear, relu, tanh or softmax."""

    def __init__(self, units, activation=None, name=None, bias=True):
        super().__init__(units, name, bias)
        self.activation = _check_activation("Dense", activation)

    def config(self):
        return {"units": self.units, "activation": self.activation, "bias": self.bias}

    def forward(self, p, xs):
        return ACTIVATIONS[self.activation](self.logits(p, xs))


class EmbeddingMean(Layer):
    """Mean of the embeddings of each row's ids (padded with ``pad_id``,
    which gets a zero row and never a gradient): ``ub.embedding_mean``."""

    def __init__(self, vocab, dim, name=None, pad_id=0):
        super().__init__(name)
        self.vocab = _check_pos_int("EmbeddingMean", "vocab", vocab)
        self.units = _check_pos_int("EmbeddingMean", "dim", dim)
        if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)) or not 0 <= pad_id < self.vocab:
            raise ValueError(f"EmbeddingMean: pad_id must be an int in [0, {self.vocab}), got {pad_id!r}")
        self.pad_id = int(pad_id)

    def config(self):
        return {"vocab": self.vocab, "dim": self.units, "pad_id": self.pad_id}

    def __call__(self, *inputs):
        if len(inputs) == 1 and not (isinstance(inputs[0], Input) and inputs[0].ids):
            raise ValueError("EmbeddingMean: its input must be an ids Input (nn.Input(name, ids=True))")
        return super().__call__(*inputs)

    def _out_dim(self, in_dims):
        return self.units

    def param_shapes(self):
        return {"table": (self.vocab, self.units)}

    def init_params(self, rng, dtype):
        table = (rng.standard_normal((self.vocab, self.units)) * 0.1).astype(dtype)
        table[self.pad_id] = 0
        return {"table": table}

    def forward(self, p, xs):
        return embedding_mean(p["table"], xs[0], self.pad_id)


class TopKGate(Layer):
    """Gate weights (n, experts): ``topk_gate(x @ W + b, k)``: exactly ``k``
    nonzero weights per row, summing to 1 (arXiv:1701.06538, without the
    noise and the load-balancing loss)."""

    def __init__(self, experts, k, name=None):
        super().__init__(name)
        self.experts = _check_pos_int("TopKGate", "experts", experts)
        self.k = _check_pos_int("TopKGate", "k", k)
        if self.k > self.experts:
            raise ValueError(f"TopKGate: k={k} must be at most experts={experts}")

    def config(self):
        return {"experts": self.experts, "k": self.k}

    def _out_dim(self, in_dims):
        if in_dims[0] is None:
            raise ValueError("TopKGate: its input is an ids input; put an EmbeddingMean in between")
        return self.experts

    def param_shapes(self):
        return {"W": (self.inputs[0].dim, self.experts), "b": (self.experts,)}

    def init_params(self, rng, dtype):
        d = self.inputs[0].dim
        return {"W": _glorot(rng, d, self.experts, (d, self.experts), dtype),
                "b": np.zeros(self.experts, dtype)}

    def forward(self, p, xs):
        return topk_gate(dot(xs[0], p["W"]) + p["b"], self.k)


class MixtureOfExperts(Layer):
    """``sum_e gate[:, e] * activation(x @ W_e + b_e)``; called on
    ``(x, gate)`` where ``gate`` is a :class:`TopKGate` of as many experts.

    The experts sit side by side in one ``W`` (d, experts * units), so all of
    them run as one matrix product, and the weighting and the sum over the
    experts are two more (with constant 0/1 matrices); the experts a row's
    gate drops get weight exactly 0, so they add nothing to its output and
    get no gradient from it.
    """

    n_inputs = 2

    def __init__(self, units, experts, activation=None, name=None):
        super().__init__(name)
        self.units = _check_pos_int("MixtureOfExperts", "units", units)
        self.experts = _check_pos_int("MixtureOfExperts", "experts", experts)
        self.activation = _check_activation("MixtureOfExperts", activation)
        self._constants = {}
        self._dtype = np.float32  # set to the model's dtype by Model

    def config(self):
        return {"units": self.units, "experts": self.experts, "activation": self.activation}

    def __call__(self, *inputs):
        if len(inputs) == 2 and not isinstance(inputs[1], TopKGate):
            raise TypeError("MixtureOfExperts: call it on (x, gate) with gate a TopKGate layer")
        if len(inputs) == 2 and inputs[1].experts != self.experts:
            raise ValueError(
                f"MixtureOfExperts: has {self.experts} experts but its gate has {inputs[1].experts}"
            )
        return super().__call__(*inputs)

    def _out_dim(self, in_dims):
        if in_dims[0] is None:
            raise ValueError("MixtureOfExperts: its input is an ids input; put an EmbeddingMean in between")
        return self.units

    def param_shapes(self):
        return {"W": (self.inputs[0].dim, self.experts * self.units), "b": (self.experts * self.units,)}

    def init_params(self, rng, dtype):
        d = self.inputs[0].dim
        return {"W": _glorot(rng, d, self.units, (d, self.experts * self.units), dtype),
                "b": np.zeros(self.experts * self.units, dtype)}

    def _spread_and_sum(self, dtype):
        """0/1 matrices: ``spread`` (experts, experts*units) copies each
        expert's gate weight over its units; ``gather`` (experts*units, units)
        adds the experts up.  Matrix products broadcast nothing, so the
        mixture needs no size-1 column (which symbolic backends can only
        broadcast when they know its size statically)."""
        key = np.dtype(dtype).str
        cached = self._constants.get(key)
        if cached is None:
            E, u = self.experts, self.units
            spread = np.kron(np.eye(E, dtype=dtype), np.ones((1, u), dtype))
            gather = np.tile(np.eye(u, dtype=dtype), (E, 1))
            cached = self._constants[key] = (spread, gather)
        return cached

    def forward(self, p, xs):
        x, gate = xs
        y = ACTIVATIONS[self.activation](dot(x, p["W"]) + p["b"])
        spread, gather = self._spread_and_sum(self._dtype)
        return dot(dot(gate, spread) * y, gather)


LAYERS = {cls.__name__: cls for cls in (Input, Projection, Dense, EmbeddingMean, TopKGate, MixtureOfExperts)}


# --------------------------------------------------------------------------
# Model

def _topo(outputs):
    """Layers reachable from ``outputs``, every layer after its inputs."""
    order, state = [], {}

    def visit(layer):
        s = state.get(id(layer))
        if s == 2:
            return
        if s == 1:
            raise ValueError("unibackend.nn: the layers form a cycle")
        state[id(layer)] = 1
        for i in layer.inputs:
            visit(i)
        state[id(layer)] = 2
        order.append(layer)

    for o in outputs:
        visit(o)
    return order


def _compiles(B):
    """Whether a forward pass / training step runs as one ``ub.function``.

    Only on theano: there every eager op is a compiled function of its own,
    and one graph for the whole step is what makes it fast.  torch's
    ``ub.function`` is ``f`` itself, and a ``tf.function`` cannot take the
    scipy.sparse inputs a model is fed, so those run eagerly."""
    return (getattr(B, "alias_of", "") or B.name) == "theano"


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
        counts = {}
        for layer in self.layers:
            if layer.name is None:
                base = type(layer).__name__.lower()
                counts[base] = counts.get(base, 0) + 1
                layer.name = f"{base}_{counts[base]}"
        names = [layer.name for layer in self.layers]
        dup = {n for n in names if names.count(n) > 1}
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
        self._compiled = {}  # backend -> compiled forward pass (theano)

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
        per_layer = {}
        for k, v in params.items():
            layer_name, pname = k.split("/", 1)
            per_layer.setdefault(layer_name, {})[pname] = v

        def param(layer):
            return per_layer.get(layer.name, {})

        def pull(layer, want_logits=False):
            # each layer pulls its inputs' outputs first, then computes its own
            if not want_logits and layer.name in memo:
                return memo[layer.name]
            xs = [pull(i) for i in layer.inputs]
            if want_logits:
                if not isinstance(layer, Projection):
                    raise ValueError(f"Model: layer {layer.name!r} has no logits")
                return layer.logits(param(layer), xs)
            out = memo[layer.name] = layer.forward(param(layer), xs)
            return out

        outs = [pull(self.by_name[n], logits) for n in names]
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
        arch = self.architecture()
        arch["sha256"] = _digest(self.params)
        blob = np.frombuffer(json.dumps(arch, sort_keys=True).encode("utf-8"), dtype=np.uint8)
        arrays = {_ARCH_KEY: blob}
        for k, v in self.params.items():
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


# --------------------------------------------------------------------------
# Loading

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
    """Layers from the architecture JSON; only the classes of this module."""
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
    """Rebuild a model saved by :meth:`Model.save`; it then predicts on the
    backend in force.  Reads with ``allow_pickle=False``.  A truncated,
    edited or foreign file raises :class:`ModelFileError` (a ValueError)
    naming the file; a missing file raises FileNotFoundError."""
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


# --------------------------------------------------------------------------
# Training

class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum, on the numpy
    parameter dict."""

    def __init__(self, lr=0.1, momentum=0.9):
        self.lr, self.momentum = float(lr), float(momentum)
        self.velocity = {}

    def update(self, params, grads):
        """New parameter dict; ``params`` and ``grads`` are not modified."""
        out = {}
        for k, g in grads.items():
            v = self.velocity.get(k)
            v = g if v is None else self.momentum * v + g
            self.velocity[k] = v
            out[k] = (params[k] - self.lr * v).astype(params[k].dtype, copy=False)
        return out


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction, on the numpy parameter dict."""

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        self.m, self.v, self.t = {}, {}, 0

    def update(self, params, grads):
        """New parameter dict; ``params`` and ``grads`` are not modified."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        out = {}
        for k, g in grads.items():
            m = self.m.get(k)
            v = self.v.get(k)
            m = (1 - b1) * g if m is None else b1 * m + (1 - b1) * g
            v = (1 - b2) * g * g if v is None else b2 * v + (1 - b2) * g * g
            self.m[k], self.v[k] = m, v
            step = self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
            out[k] = (params[k] - step).astype(params[k].dtype, copy=False)
        return out


class Trainer:
    """Minimises the softmax cross-entropy of ``model``'s output (a softmax
    :class:`Dense`) on the backend in force (torch, tensorflow or theano).

    Each :meth:`step` takes ``ub.value_and_grad`` of the loss with respect to
    every parameter and hands the gradients to the optimizer.  On theano the
    value-and-grad is wrapped in ``ub.function``, so a step runs one graph
    compiled on the first batch (and again only for a new input signature).
    On numpy it raises ``ub.CapabilityError`` saying which backends can.
    """

    def __init__(self, model, optimizer=None, output=None):
        _autodiff_backend("Trainer", ())  # no autodiff here: CapabilityError now, not mid-epoch
        self.model = model
        self.optimizer = optimizer if optimizer is not None else Adam()
        names, single = model._wanted(output)
        if not single:
            raise ValueError("Trainer: train one output at a time")
        layer = model.by_name[names[0]]
        if not (isinstance(layer, Dense) and layer.activation == "softmax"):
            raise ValueError(f"Trainer: the trained output {layer.name!r} must be a Dense softmax layer")
        self.output = names[0]
        order = model.param_names
        k = len(order)

        def loss(*args):
            params = dict(zip(order, args[:k]))
            values, onehot = list(args[k:-1]), asarray(args[-1])
            z = model.forward(params, values, self.output, logits=True)
            return softmax_cross_entropy(z, onehot)

        self._vg = value_and_grad(loss, argnums=tuple(range(k)))
        self._compiled = {}

    def _step_fn(self):
        B = R.get_backend()
        if not _compiles(B):
            return self._vg
        fn = self._compiled.get(B.name)
        if fn is None:
            vg = self._vg

            def flat(*args):  # a flat tuple of outputs: (loss, *grads)
                value, grads = vg(*args)
                return (value, *grads)

            compiled = function(flat)

            def fn(*args):
                value, *grads = compiled(*args)
                return value, grads

            self._compiled[B.name] = fn
        return fn

    def step(self, data, labels):
        """One optimizer step on a batch; returns its mean loss (a float).
        ``labels``: integer class ids (n,)."""
        model = self.model
        values = model._feed(data)
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise TypeError("Trainer.step: labels must be a 1-D array of integer class ids")
        n_cls = model.by_name[self.output].units
        if labels.size and (labels.min() < 0 or labels.max() >= n_cls):
            raise ValueError(f"Trainer.step: labels must be in [0, {n_cls})")
        onehot = np.zeros((labels.size, n_cls), model.dtype)
        onehot[np.arange(labels.size), labels] = 1
        order = model.param_names
        value, grads = self._step_fn()(*[model.params[n] for n in order], *values, onehot)
        grads = {n: np.asarray(to_numpy(g), dtype=model.dtype) for n, g in zip(order, grads)}
        model.params = self.optimizer.update(model.params, grads)
        return float(to_numpy(value))
