"""The layers: each is connected by calling it on the layer(s) it reads
from, and computes its output with unified ops, Python operators and
:mod:`unibackend.nn.functional`, so it runs on every backend."""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..ops import dot, embedding_mean, topk_gate
from .functional import ACTIVATIONS

__all__ = [
    "LAYERS", "Dense", "EmbeddingMean", "Input", "Layer", "MixtureOfExperts", "Projection", "TopKGate",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


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
    functions of :mod:`unibackend.nn.functional`, so it runs on every backend."""

    #: how many inputs the layer takes: an int, or None for "one or more"
    n_inputs: int | None = 1

    def __init__(self, name=None):
        self.name = None if name is None else _check_name(name)
        self.inputs: tuple[Layer, ...] = ()
        self.dim: Any = None  # width of the output (an int), known once connected

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
        shapes: dict[str, tuple[int, ...]] = {self._wname(i): (x.dim, self.units) for i, x in enumerate(self.inputs)}
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
