"""The public plugin interface: what a backend declares and the primitives it implements.

The public ops (:mod:`unibackend.ops`) check their arguments and pin every
semantic that can be pinned above the plugins (axis and ``k`` ranges, id
ranges, index normalisation, dtype promotion, last-write-wins, argnums).  A
plugin receives arguments that are already valid and normalised, and only
computes.

A plugin subclasses :class:`Backend`, sets the class attributes and
implements every abstract method; a class that misses one is refused when it
is registered or first loaded (``TypeError`` naming what is missing).  The
built-in plugins define the methods with the same names, in the same order as
here.  The math that :mod:`unibackend.nn` needs (``tanh``, ``relu``, ``exp``,
``log``, ``reduce_sum``, ``reduce_max``) has numpy defaults that go through
``to_numpy``/``asarray``; a plugin with autodiff or symbolic tensors
overrides them with its framework's own functions.
"""
from __future__ import annotations

import abc
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

import numpy as np

from ._checks import GraphIndex, Subtensor, check_broadcast, is_scipy_sparse, sync_free_checks
from ._checks import subtensor as check_subtensor
from ._errors import (
    CapabilityError,
    does_not_broadcast,
    fill,
    id_out_of_range,
    index_out_of_range,
    k_out_of_range,
    mask_shape_mismatch,
    mask_traced,
)

if TYPE_CHECKING:
    import scipy.sparse

#: A native tensor of some backend (a numpy array, a torch.Tensor, a tf.Tensor,
#: a symbolic variable, ...).  Plugins know the concrete type; the core does not.
Tensor = Any
#: A shape: a tuple of ints, ``None`` for a dim a symbolic tensor leaves open.
Shape = tuple[Optional[int], ...]

__all__ = [
    "Backend", "Capabilities", "CapabilityError", "GraphIndex", "Shape", "Subtensor", "Tensor",
    "check_broadcast", "check_scalar_output", "check_subtensor", "does_not_broadcast", "fill",
    "id_bounds", "id_out_of_range", "index_out_of_range", "is_scipy_sparse", "k_out_of_range",
    "mask_shape_mismatch", "mask_traced", "missing_primitives", "scipy_grad_input", "stable_descending", "sync_free_checks",
]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the core, ``nn`` and the suite read these
    instead of backend names."""

    #: ``ub.grad`` / ``ub.value_and_grad`` work (else ``CapabilityError``).
    autodiff: bool = False
    #: ``sparse_dot`` takes scipy.sparse input and the backend's own sparse tensors.
    sparse: bool = False
    #: ops take tensors whose values exist only when a graph runs.
    symbolic: bool = False
    #: tensors live on devices; ``set_backend(name, device=...)`` is meaningful.
    devices: bool = False
    #: every eager call of an op compiles a graph per new input signature
    #: (seconds): ``nn`` runs a whole training step as one ``ub.function`` and
    #: the conformance suite draws fewer examples.
    eager_compiles: bool = False
    #: results are lazy (computed on demand, e.g. chunked arrays).
    lazy: bool = False

    def names(self) -> tuple[str, ...]:
        """The names of the capabilities this backend has."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name))


def missing_primitives(cls: type) -> tuple[str, ...]:
    """The abstract methods ``cls`` leaves unimplemented, sorted."""
    return tuple(sorted(getattr(cls, "__abstractmethods__", ())))


class Backend(abc.ABC):
    """Base class of a plugin.

    Subclasses set the class attributes and implement every abstract
    primitive; ``load`` imports the framework (never at module level)."""

    #: the backend's name (``ub.set_backend(name)``), as in its entry point.
    name: ClassVar[str] = ""
    #: the top-level modules whose presence in ``sys.modules`` means native
    #: tensors of this backend may exist (dispatch never imports anything).
    modules: ClassVar[tuple[str, ...]] = ()
    #: the pip extra that brings the framework: ``pip install 'unibackend[extra]'``.
    extra: ClassVar[str] = ""
    #: the distributions whose version ``ub.backends()`` reports (first found).
    distributions: ClassVar[tuple[str, ...]] = ()
    #: the name of the backend this one is an alias of ("" for none); an alias
    #: shares its native types with that backend and is left out of dispatch.
    alias_of: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Optional: ``fast_dot(a, b)`` gives the product of two tensors of one
    #: type (``ops.dot`` checks that) that need no conversion (dense, one
    #: float dtype, aligned shapes, a N-D, b 1-D or 2-D), else None.  Once the
    #: full path has seen such a pair, ``ops.dot`` calls it first.
    fast_dot: ClassVar[Callable[[Any, Any, Any], Any] | None] = None

    def __init__(self, device: str | None = None) -> None:
        self.device = device

    # -- set-up ------------------------------------------------------------
    @abc.abstractmethod
    def load(self) -> None:
        """Import the framework.  Raise ImportError when it is missing."""

    @abc.abstractmethod
    def version(self) -> str:
        """The framework's version."""

    def is_available(self) -> tuple[bool, str]:
        """(True, "") or (False, why) without importing the framework."""
        if any(m in sys.modules for m in self.modules):
            return True, ""
        if not any(importlib.util.find_spec(m) is not None for m in self.modules):
            return False, f"{' or '.join(self.modules)} is not installed"
        return True, ""

    @abc.abstractmethod
    def native_types(self) -> tuple[type, ...]:
        """Types of this backend's tensors; called only once a module of
        ``modules`` is imported."""

    def check_devices(self, op: str, tensors: Sequence[Tensor]) -> None:  # noqa: B027 (an optional hook)
        """A plugin with devices raises ValueError when ``tensors`` (native,
        two or more) are not all on one device."""

    def for_tensor(self, x: Tensor) -> Backend:
        """The instance to run on when native tensor ``x`` chose this backend
        (a plugin with devices returns the instance for ``x``'s device)."""
        return self

    # -- conversion --------------------------------------------------------
    @abc.abstractmethod
    def asarray(self, x: Any, dtype: np.dtype | None = None) -> Tensor:
        """A native tensor of ``x`` (native: itself, cast when ``dtype`` differs;
        neutral: numpy's dtype rules)."""

    @abc.abstractmethod
    def to_numpy(self, x: Tensor) -> np.ndarray:
        """A dense native tensor as a numpy array."""

    @abc.abstractmethod
    def shape(self, x: Tensor) -> Shape:
        """The shape of a dense native tensor (``None`` for an open dim)."""

    @abc.abstractmethod
    def dtype(self, x: Tensor) -> np.dtype:
        """The numpy dtype of a dense native tensor."""

    def plain_float_dtype(self, x: Any) -> np.dtype | None:
        """x's dtype when x is a dense native float tensor with a concrete
        ``.shape`` (the ops' fast path), else None."""
        return None

    def is_symbolic(self, x: Any) -> bool:
        """True when x is a native tensor whose value exists only when a graph
        runs (an index part like that is checked in-graph by the plugin)."""
        return False

    def is_tracing(self, x: Any) -> bool:
        """True while a compiler traces the code that holds native tensor
        ``x`` (torch.compile): values are unknown, so the core hands index
        tensors over raw and the plugin checks values in its graph."""
        return False

    @staticmethod  # noqa: B027 (an optional hook)
    def trace_constant(fn: Callable[..., Any]) -> None:
        """Mark core function ``fn``, whose answer depends only on its
        arguments, for the framework's tracing compiler to call while tracing
        rather than follow (it loads plugins: imports, entry points)."""

    @abc.abstractmethod
    def is_sparse(self, x: Any) -> bool:
        """True when x is this backend's native sparse tensor."""

    def sparse_from_scipy(self, csr: scipy.sparse.csr_matrix) -> Tensor:
        """The native sparse tensor of a canonical scipy CSR matrix."""
        raise CapabilityError(f"backend {self.name!r} declares no sparse capability")

    def sparse_to_scipy(self, x: Tensor) -> scipy.sparse.csr_matrix:
        """A native sparse tensor as a scipy CSR matrix (duplicates summed)."""
        raise CapabilityError(f"backend {self.name!r} declares no sparse capability")

    def sparse_info(self, x: Tensor) -> tuple[Shape, np.dtype]:
        """(shape, dtype) of a native sparse tensor."""
        raise CapabilityError(f"backend {self.name!r} declares no sparse capability")

    def sparse_cast(self, x: Tensor, dtype: np.dtype) -> Tensor:
        """A native sparse tensor in another dtype."""
        raise CapabilityError(f"backend {self.name!r} declares no sparse capability")

    def id_bounds(self, ids: Tensor, pad_id: int) -> tuple[int, int] | None:
        """(min, max) of the ids that are not ``pad_id``, or None when there are
        none or when the plugin checks them itself (in a graph, lazily)."""
        return id_bounds(self.to_numpy(ids), pad_id)

    # -- ops (arguments already checked and normalised by unibackend.ops) ---
    @abc.abstractmethod
    def dot(self, a: Tensor, b: Tensor) -> Tensor:
        """numpy ``dot``: ``a`` N-D, ``b`` 1-D or 2-D, one float dtype, aligned."""

    @abc.abstractmethod
    def sparse_dot(self, x: Tensor, w: Tensor) -> Tensor:
        """Native sparse ``x`` (n, N) times dense ``w`` (N, M) or (N,), one dtype."""

    @abc.abstractmethod
    def argsort(self, x: Tensor, axis: int, descending: bool) -> Tensor:
        """Stable int64 argsort along ``axis`` (non-negative); NaN largest,
        -0.0 == +0.0.  :func:`stable_descending` builds the
        descending order from an ascending stable sort."""

    @abc.abstractmethod
    def set_subtensor(self, x: Tensor, index: Subtensor | GraphIndex, value: Tensor,
                      accumulate: bool) -> Tensor:
        """A copy of ``x`` with ``index`` set (``accumulate``: incremented) by
        ``value`` (already in ``x``'s dtype).  ``index`` is a checked
        :class:`Subtensor` when every value is known, else a :class:`GraphIndex`
        (``x``'s shape or an index tensor known only in a graph; the plugin
        checks the parts ``index.unchecked()`` names there, and ``value``'s
        broadcast where shapes were open).  The built-in plugins call that
        step ``_set_in_graph``."""

    @abc.abstractmethod
    def masked_mean(self, x: Tensor, mask: Tensor, axes: tuple[int, ...]) -> Tensor:
        """Mean over ``axes`` (sorted, distinct) where ``mask`` is nonzero; 0
        where nothing is; masked-out NaN/inf never touch the result."""

    @abc.abstractmethod
    def keep_topk(self, x: Tensor, k: int, axis: int, fill: float) -> Tensor:
        """Exactly ``k`` (0 <= k <= size) largest stay along ``axis``, lower
        index first among equals, NaN largest; the rest become ``fill``."""

    @abc.abstractmethod
    def softmax(self, x: Tensor, axis: int) -> Tensor:
        """Stable softmax; -inf gives 0, an all -inf slice all 0s, a NaN or
        +inf in a slice NaN throughout that slice."""

    @abc.abstractmethod
    def embedding_mean(self, table: Tensor, ids: Tensor, pad_id: int) -> Tensor:
        """Per row of ``ids`` (n, L), the mean of ``table[id]`` over non-pad ids
        (ids already checked in range where values were known)."""

    # -- math for nn (numpy defaults; autodiff/symbolic plugins override) --
    def tanh(self, x: Tensor) -> Tensor:
        return self.asarray(np.tanh(self.to_numpy(x)))

    def relu(self, x: Tensor) -> Tensor:
        return self.asarray(np.maximum(self.to_numpy(x), 0))

    def exp(self, x: Tensor) -> Tensor:
        return self.asarray(np.exp(self.to_numpy(x)))

    def log(self, x: Tensor) -> Tensor:
        return self.asarray(np.log(self.to_numpy(x)))

    def reduce_sum(self, x: Tensor, axis: int | None, keepdims: bool) -> Tensor:
        return self.asarray(np.sum(self.to_numpy(x), axis=axis, keepdims=keepdims))

    def reduce_max(self, x: Tensor, axis: int | None, keepdims: bool) -> Tensor:
        return self.asarray(np.max(self.to_numpy(x), axis=axis, keepdims=keepdims))

    # -- autodiff and compilation ------------------------------------------
    @abc.abstractmethod
    def value_and_grad(self, f: Callable[..., Any], argnums: tuple[int, ...], args: tuple[Any, ...],
                       kwargs: dict) -> tuple[Tensor, tuple[Tensor, ...]]:
        """``(f(*args), (df/dargs[n] for n in argnums))``; ``argnums`` is a
        tuple of non-negative ints (the core normalised it and packs the
        result).  A plugin without autodiff raises CapabilityError (the core
        never calls it)."""

    @abc.abstractmethod
    def function(self, f: Callable[..., Any]) -> Callable[..., Any]:
        """``f`` compiled for this backend (or ``f`` itself on an eager one)."""

    def compile(self, f: Callable[..., Any]) -> Callable[..., Any]:
        """``f`` (native tensors in, native tensors out) run inside the
        framework's own compiler: ``torch.compile(fullgraph=True)``,
        ``tf.function(jit_compile=True)``, ``jax.jit``, a compiled graph.
        The conformance suite's ``--compiled`` mode checks that it agrees with
        eager.  Default: :meth:`function`."""
        return self.function(f)


# --------------------------------------------------------------------------
# Rules several plugins need, written once.

def id_bounds(ids: np.ndarray, pad_id: int) -> tuple[int, int] | None:
    """(min, max) of the entries of numpy ``ids`` that are not ``pad_id``, or
    None when every entry is padding."""
    real = ids[ids != pad_id]
    if real.size == 0:
        return None
    return int(real.min()), int(real.max())


def stable_descending(argsort_ascending: Callable[[Tensor, int], Tensor],
                      flip: Callable[[Tensor, int], Tensor], x: Tensor, axis: int, n: Any) -> Tensor:
    """A stable descending argsort from a stable ascending one: sort the
    reversed ``x`` (equal values then come in reversed order), reverse the
    result, and map the positions back (``n - 1 - p``; ``n`` the axis' size)."""
    return n - 1 - flip(argsort_ascending(flip(x, axis), axis), axis)


def check_scalar_output(shape: Shape) -> None:
    """The error ``value_and_grad`` raises on every backend when ``f`` does not
    return a scalar (one element)."""
    dims = [d for d in shape if d is not None]
    if shape and not (len(dims) == len(shape) and int(np.prod(dims, dtype=np.int64)) == 1):
        raise TypeError(f"value_and_grad: f must return a scalar, got a value of shape {tuple(shape)}")


def scipy_grad_input(x: scipy.sparse.spmatrix) -> scipy.sparse.csr_matrix:
    """A scipy.sparse argument to differentiate, as a canonical float CSR
    matrix (duplicates summed, sorted): the plugin makes it its own sparse
    tensor whose stored values get the gradient."""
    from ._checks import canonical_csr, result_float

    return canonical_csr("value_and_grad", x, result_float("value_and_grad", x.dtype))
