"""unibackend: one small set of tensor ops on numpy, Theano (PyTensor),
PyTorch, TensorFlow, JAX, Dask and ONNX Runtime, with a conformance suite that proves the
backends agree (``ub.backends()`` lists the plugins installed here).

``import unibackend`` imports no framework; a plugin imports its framework the
first time it is used.
"""
from ._autodiff import function, grad, value_and_grad
from ._checks import set_sync_free, sync_free
from ._errors import BackendNotAvailable, CapabilityError
from ._registry import backends, get_backend, register, register_adapter, set_backend, use_backend
from .ops import (
    argsort,
    asarray,
    dot,
    embedding_mean,
    inc_subtensor,
    keep_topk,
    masked_mean,
    pad_ids,
    set_subtensor,
    softmax,
    sparse_dot,
    to_numpy,
    topk_gate,
)

__version__ = "0.1.0"

__all__ = [
    "BackendNotAvailable", "CapabilityError", "backends", "get_backend",
    "register", "register_adapter", "set_backend", "use_backend", "set_sync_free", "sync_free", "function", "grad",
    "value_and_grad", "argsort", "asarray", "dot", "embedding_mean",
    "inc_subtensor", "keep_topk", "masked_mean", "pad_ids", "set_subtensor",
    "softmax", "sparse_dot", "to_numpy", "topk_gate",
]
