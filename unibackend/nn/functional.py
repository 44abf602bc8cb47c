"""The math layers and the loss need beyond the unified ops: activations,
``exp``/``log``, reductions, and the stable cross-entropy built on them.

Each function takes the plugin the tensor selects (its own backend, or the
backend in force for a numpy array or a scalar), exactly as an op does, and
calls that plugin's primitive of the same name
(:meth:`unibackend.plugin.Backend.tanh` and the others).  The base class
computes them in numpy; a backend with autodiff or symbolic tensors overrides
them with its own functions, so gradients flow through them.  Python
operators (``+ - * /``, slicing) already work on every backend's tensors.
"""
from __future__ import annotations

from typing import Any

from .. import _registry as R
from ..ops import softmax

__all__ = [
    "ACTIVATIONS", "exp", "log", "log_softmax", "reduce_max", "reduce_sum", "relu",
    "softmax_cross_entropy", "tanh",
]


def _native(op: str, x: Any):
    """The plugin ``x`` selects and ``x`` as its native tensor."""
    B = R.resolve(op, x)
    if R._unwrap:
        (x,) = R.unwrap(op, x)
    return B, B.asarray(x)


def tanh(x: Any) -> Any:
    B, x = _native("tanh", x)
    return B.tanh(x)


def relu(x: Any) -> Any:
    B, x = _native("relu", x)
    return B.relu(x)


def exp(x: Any) -> Any:
    B, x = _native("exp", x)
    return B.exp(x)


def log(x: Any) -> Any:
    B, x = _native("log", x)
    return B.log(x)


def reduce_sum(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
    B, x = _native("reduce_sum", x)
    return B.reduce_sum(x, axis, keepdims)


def reduce_max(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
    B, x = _native("reduce_max", x)
    return B.reduce_max(x, axis, keepdims)


def _softmax_last(x: Any) -> Any:
    return softmax(x, axis=-1)


def _linear(x: Any) -> Any:
    return x


#: activation name -> function, for :class:`~unibackend.nn.Dense` and
#: :class:`~unibackend.nn.MixtureOfExperts`.
ACTIVATIONS = {
    "linear": _linear,
    "relu": relu,
    "tanh": tanh,
    "softmax": _softmax_last,
}


def log_softmax(z: Any) -> Any:
    """``log(softmax(z))`` along the last axis, stable (max-shifted)."""
    m = reduce_max(z, axis=-1, keepdims=True)
    s = z - m
    return s - log(reduce_sum(exp(s), axis=-1, keepdims=True))


def softmax_cross_entropy(logits: Any, onehot: Any) -> Any:
    """Mean over rows of ``-sum(onehot * log_softmax(logits))``.  The row
    count is ``sum(onehot)``, so no static shape is needed (symbolic graphs)."""
    return -reduce_sum(onehot * log_softmax(logits)) / reduce_sum(onehot)
