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

from ._checks import GraphIndex, Subtensor, check_broadcast, is_scipy_sparse, slice_bounds, sync_free_checks
from ._checks import subtensor as check_subtensor
from ._errors import (
    CapabilityError,
    cannot_order,
    cpu_only,
    does_not_broadcast,
    dot_not_aligned,
    entry_outside_shape,
    fill,
    id_out_of_range,
    index_not_integer,
    index_out_of_range,
    k_out_of_range,
    mask_shape_mismatch,
    no_device,
    no_value_yet,
    not_hashable,
    sparse_dot_not_aligned,
    too_many_indices,
    two_devices,
    unknown_rank,
    unsupported_dtype,
    unsupported_in_mode,
)

if TYPE_CHECKING:
    import scipy.sparse

#: A native tensor of some backend (a numpy array, a torch.Tensor, a tf.Tensor,
#: a symbolic variable, ...).  Plugins know the concrete type; the core does not.
Tensor = Any
#: A shape: a tuple of ints, ``None`` for a dim a symbolic tensor leaves open.
Shape = tuple[Optional[int], ...]

__all__ = [
    "Adapter", "Backend", "Capabilities", "CapabilityError", "GRAD_TRANSFORMS", "GraphIndex", "GraphInput", "Shape", "Subtensor",
    "Tensor", "cannot_order", "check_broadcast", "check_scalar_output", "check_subtensor", "cpu_only",
    "does_not_broadcast", "dot_not_aligned", "entry_outside_shape", "fill", "id_bounds", "id_out_of_range",
    "index_not_integer", "index_out_of_range", "is_scipy_sparse", "k_out_of_range", "mask_shape_mismatch",
    "missing_primitives", "no_device", "no_value_yet", "not_hashable", "scipy_grad_input",
    "slice_bounds", "sparse_dot_not_aligned", "stable_descending", "sync_free_checks", "too_many_indices",
    "two_devices", "unknown_rank", "unsupported_dtype", "unsupported_in_mode",
]

#: the two ways :meth:`Backend.transform_grad` differentiates: a gradient
#: transform, and a reverse-mode Jacobian (of a scalar function: the gradient).
GRAD_TRANSFORMS = ("grad", "jacrev")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the core, ``nn`` and the suite read these
    instead of backend names.

    Parameters
    ----------
    autodiff, sparse, symbolic, devices, eager_compiles, lazy : bool
        Each False by default; see the attributes below.

    Examples
    --------
    >>> from unibackend.plugin import Capabilities
    >>> Capabilities(autodiff=True, sparse=True).names()
    ('autodiff', 'sparse')
    """

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
    #: :meth:`Backend.vmap` maps a function over a batch axis with the
    #: framework's own vectorizing transform (the suite's ``vmap`` mode).
    vmap: bool = False
    #: :meth:`Backend.transform_grad` differentiates a function with the
    #: framework's own function transforms (the suite's ``grad`` mode).
    transform_grad: bool = False

    def names(self) -> tuple[str, ...]:
        """The names of the capabilities this backend has.

        Returns
        -------
        tuple of str
            In declaration order.
        """
        return tuple(f.name for f in fields(self) if getattr(self, f.name))


@dataclass(frozen=True)
class GraphInput:
    """One input of a function a plugin exports (:meth:`Backend.export`):
    ``kind`` "dense" (batch, width) floats, "sparse" a CSR (batch, width)
    matrix, "ids" (batch, length) integer ids; the batch (and the length)
    stay open in the exported file."""

    name: str
    kind: str
    dtype: np.dtype
    width: int | None = None


def missing_primitives(cls: type) -> tuple[str, ...]:
    """The abstract methods ``cls`` leaves unimplemented, sorted.

    Parameters
    ----------
    cls : type
        A subclass of :class:`Backend`.

    Returns
    -------
    tuple of str
        The primitives it still has to implement; empty for a complete plugin.

    Examples
    --------
    >>> from unibackend.plugin import Backend, missing_primitives
    >>> class Half(Backend):
    ...     name = "half"
    >>> missing_primitives(Half)[:3]
    ('argsort', 'asarray', 'dot')
    """
    return tuple(sorted(getattr(cls, "__abstractmethods__", ())))


class Backend(abc.ABC):
    """Base class of a plugin.

    Subclasses set the class attributes and implement every abstract
    primitive; ``load`` imports the framework (never at module level).  The
    public ops call the primitives with arguments they already checked and
    normalised, so a primitive only computes.  docs/plugins.md has a complete
    minimal plugin and shows how to run the conformance suite on it.

    Parameters
    ----------
    device : str, optional
        The device of this instance, for a plugin that declares ``devices``
        (``ub.set_backend(name, device=...)``); None otherwise.

    Raises
    ------
    TypeError
        When the class is registered (``ub.register``, an entry point) with an
        abstract primitive left unimplemented, naming it.

    Examples
    --------
    >>> import unibackend as ub
    >>> from unibackend.plugins.numpy_backend import NumpyBackend
    >>> class Mine(NumpyBackend):   # numpy's primitives, under another name
    ...     name = "mine_doc"
    >>> ub.register("mine_doc", Mine)
    >>> with ub.use_backend("mine_doc"):
    ...     print(ub.get_backend().name, ub.argsort([3.0, 1.0, 2.0]))
    mine_doc [1 2 0]
    >>> from unibackend import _registry
    >>> _registry.unregister("mine_doc")
    """

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
    #: the named compile paths :meth:`compile` takes, the default first (e.g.
    #: a graph with its default rewrites and an XLA one); the conformance
    #: suite gives each its own column.  Empty: ``compile`` is ``function``.
    compile_modes: ClassVar[tuple[str, ...]] = ()

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
        """numpy ``dot``: ``a`` N-D, ``b`` 1-D or 2-D, one float dtype, aligned.

        Parameters
        ----------
        a, b : Tensor
            Dense native tensors of one float dtype; ``a``'s last dim equals
            ``b``'s first.

        Returns
        -------
        Tensor
            ``a @ b`` as numpy's ``dot`` defines it.
        """

    @abc.abstractmethod
    def sparse_dot(self, x: Tensor, w: Tensor) -> Tensor:
        """Native sparse ``x`` (n, N) times dense ``w`` (N, M) or (N,), one dtype.

        Parameters
        ----------
        x : Tensor
            What :meth:`sparse_from_scipy` made of the canonical CSR the core built.
        w : Tensor
            Dense, of ``x``'s dtype.

        Returns
        -------
        Tensor
            Dense (n, M) or (n,).
        """

    @abc.abstractmethod
    def argsort(self, x: Tensor, axis: int, descending: bool) -> Tensor:
        """Stable int64 argsort along ``axis`` (non-negative); NaN largest,
        -0.0 == +0.0.  :func:`stable_descending` builds the
        descending order from an ascending stable sort.

        Parameters
        ----------
        x : Tensor
            Dense, real.
        axis : int
            Non-negative, in range.
        descending : bool
            Largest first; equal values still in index order.

        Returns
        -------
        Tensor
            int64 indices, ``x``'s shape.
        """

    @abc.abstractmethod
    def set_subtensor(self, x: Tensor, index: Subtensor | GraphIndex, value: Tensor,
                      accumulate: bool) -> Tensor:
        """A copy of ``x`` with ``index`` set (``accumulate``: incremented) by
        ``value`` (already in ``x``'s dtype); returns the new tensor, ``x``
        unchanged; among repeated positions the last write wins.  ``index`` is a checked
        :class:`Subtensor` when every value is known, else a :class:`GraphIndex`
        (``x``'s shape or an index tensor known only in a graph; the plugin
        checks the parts ``index.unchecked()`` names there, and ``value``'s
        broadcast where shapes were open).  The built-in plugins call that
        step ``_set_in_graph``."""

    @abc.abstractmethod
    def masked_mean(self, x: Tensor, mask: Tensor, axes: tuple[int, ...]) -> Tensor:
        """Mean over ``axes`` (sorted, distinct) where ``mask`` is nonzero; 0
        where nothing is; masked-out NaN/inf never touch the result.

        Parameters
        ----------
        x : Tensor
            Dense, float.
        mask : Tensor
            Broadcastable to ``x``.
        axes : tuple of int
            Sorted, distinct, non-negative.

        Returns
        -------
        Tensor
            ``x`` reduced over ``axes``, in ``x``'s dtype.
        """

    @abc.abstractmethod
    def keep_topk(self, x: Tensor, k: int, axis: int, fill: float) -> Tensor:
        """Exactly ``k`` (0 <= k <= size) largest stay along ``axis``, lower
        index first among equals, NaN largest; the rest become ``fill``.

        Returns
        -------
        Tensor
            ``x``'s shape and dtype; kept values bit-identical.
        """

    @abc.abstractmethod
    def softmax(self, x: Tensor, axis: int) -> Tensor:
        """Stable softmax; -inf gives 0, an all -inf slice all 0s, a NaN or
        +inf in a slice NaN throughout that slice.

        Returns
        -------
        Tensor
            ``x``'s shape and float dtype; every other slice sums to 1.
        """

    @abc.abstractmethod
    def embedding_mean(self, table: Tensor, ids: Tensor, pad_id: int) -> Tensor:
        """Per row of ``ids`` (n, L), the mean of ``table[id]`` over non-pad ids
        (ids already checked in range where values were known).

        Returns
        -------
        Tensor
            (n, d) in ``table``'s dtype; a row of only padding gives zeros.
        """

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

    def keep_compiled_code(self, directory: str) -> bool:
        """Keep the framework's compiled code on disk in ``directory`` for
        later processes, where the framework can and does not already (jax:
        its persistent compilation cache, which is off by default); True if
        this call turned it on.  The same code runs, loaded instead of
        compiled.  Nothing here calls it: the conformance suite does, with its
        cache directory, and a user may.  Default: nothing (False)."""
        return False

    def export(self, f: Callable[..., Any], inputs: Sequence[GraphInput], path: str) -> str:
        """Trace ``f`` (native tensors in, a dict name -> tensor out) on
        symbolic ``inputs`` and write it to ``path`` as the backend's portable
        model file (onnx: an .onnx file); returns the path.  Optional: a
        plugin that cannot raises CapabilityError."""
        raise CapabilityError(f"backend {self.name!r} cannot export a traced function to a model file")

    def compile(self, f: Callable[..., Any], mode: str | None = None) -> Callable[..., Any]:
        """``f`` (native tensors in, native tensors out) run inside the
        framework's own compiler along compile path ``mode`` (one of
        :attr:`compile_modes`; None: the first): ``torch.compile(fullgraph=True)``
        (and ``dynamic=True``), ``tf.function`` (plain graph, and
        ``jit_compile=True``), ``jax.jit``, a compiled graph.  The conformance
        suite's ``compiled`` mode checks that every path agrees with eager.
        Default: :meth:`function`."""
        self._compile_mode(mode)
        return self.function(f)

    def _compile_mode(self, mode: str | None) -> str | None:
        """``mode`` checked against :attr:`compile_modes` (None: the first, or
        None for a backend that declares none)."""
        if mode is None:
            return self.compile_modes[0] if self.compile_modes else None
        if mode not in self.compile_modes:
            have = ", ".join(self.compile_modes) or "none"
            raise ValueError(f"compile: backend {self.name!r} has no compile path {mode!r} (it has: {have})")
        return mode

    def vmap(self, f: Callable[..., Any]) -> Callable[..., Any]:
        """With the ``vmap`` capability: ``f`` (native tensors of one example
        in, a tensor out) mapped over axis 0 of every argument by the
        framework's vectorizing transform; the result is the per-example
        results stacked on a new axis 0."""
        raise CapabilityError(f"vmap: backend {self.name!r} declares no vmap capability")

    def transform_grad(self, f: Callable[..., Any], how: str = "grad") -> Callable[..., Any]:
        """With the ``transform_grad`` capability: the gradient of scalar
        ``f`` of one native tensor, by the framework's function transform
        ``how`` (one of :data:`GRAD_TRANSFORMS`: a gradient transform or a
        reverse-mode Jacobian), as a function of that tensor."""
        raise CapabilityError(f"transform_grad: backend {self.name!r} declares no transform_grad capability")


class Adapter(abc.ABC):
    """Base class of an adapter: it lets the ops take the objects another
    library wraps native tensors in (a model library's variables, say) by
    unwrapping them to the native tensor they hold, which then selects its
    backend as any native tensor does.

    Adapters are found through the entry-point group ``unibackend.adapters``
    (or :func:`unibackend.register_adapter`).  One is consulted only once a
    module of ``modules`` is in ``sys.modules``, and only the first time a
    type is seen: the answer is cached per type, so dispatch on a wrapper
    costs one more dict lookup."""

    #: the adapter's name, as in its entry point.
    name: ClassVar[str] = ""
    #: the top-level modules whose presence in ``sys.modules`` means wrappers
    #: of this adapter may exist (nothing is ever imported to find out).
    modules: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def wrapper_types(self) -> tuple[type, ...]:
        """The wrapper types this adapter unwraps; called only once a module
        of ``modules`` is imported."""

    @abc.abstractmethod
    def unwrap(self, x: Any) -> Any:
        """The native value that wrapper ``x`` holds, live: a read that
        gradients flow through, never a copy.  A wrapper that holds no value
        (a symbolic placeholder) raises TypeError with a message saying what
        to do instead; the op's name is put in front of it by the core."""


# --------------------------------------------------------------------------
# Rules several plugins need, written once.

def id_bounds(ids: np.ndarray, pad_id: int) -> tuple[int, int] | None:
    """(min, max) of the entries of numpy ``ids`` that are not ``pad_id``, or
    None when every entry is padding.

    Parameters
    ----------
    ids : numpy.ndarray
        Integer ids.
    pad_id : int
        The padding id, left out.

    Returns
    -------
    tuple of (int, int), or None

    Examples
    --------
    >>> import numpy as np
    >>> from unibackend.plugin import id_bounds
    >>> id_bounds(np.array([[3, 0, 7], [0, 0, 0]]), 0)
    (3, 7)
    >>> id_bounds(np.zeros((2, 2), int), 0) is None
    True
    """
    real = ids[ids != pad_id]
    if real.size == 0:
        return None
    return int(real.min()), int(real.max())


def stable_descending(argsort_ascending: Callable[[Tensor, int], Tensor],
                      flip: Callable[[Tensor, int], Tensor], x: Tensor, axis: int, n: Any) -> Tensor:
    """A stable descending argsort from a stable ascending one: sort the
    reversed ``x`` (equal values then come in reversed order), reverse the
    result, and map the positions back (``n - 1 - p``; ``n`` the axis' size).

    Parameters
    ----------
    argsort_ascending : callable
        ``(x, axis) -> indices``, a stable ascending argsort (NaN last).
    flip : callable
        ``(x, axis) -> x`` reversed along ``axis``.
    x : Tensor
    axis : int
    n : int or Tensor
        The size of ``axis``.

    Returns
    -------
    Tensor
        The stable descending order: largest first, equal values in index order.

    Examples
    --------
    >>> import numpy as np
    >>> from unibackend.plugin import stable_descending
    >>> asc = lambda v, ax: np.argsort(v, axis=ax, kind="stable")
    >>> stable_descending(asc, np.flip, np.array([1.0, 3.0, 3.0, 2.0]), 0, 4)
    array([1, 2, 3, 0])
    """
    return n - 1 - flip(argsort_ascending(flip(x, axis), axis), axis)


def check_scalar_output(shape: Shape) -> None:
    """The error ``value_and_grad`` raises on every backend when ``f`` does not
    return a scalar (one element).

    Parameters
    ----------
    shape : tuple
        The shape of ``f``'s value (``None`` for an open dim).

    Raises
    ------
    TypeError
        Unless the shape has exactly one element.

    Examples
    --------
    >>> from unibackend.plugin import check_scalar_output
    >>> check_scalar_output((1, 1))
    >>> check_scalar_output((3,))
    Traceback (most recent call last):
    ...
    TypeError: value_and_grad: f must return a scalar, got a value of shape (3,)
    """
    dims = [d for d in shape if d is not None]
    if shape and not (len(dims) == len(shape) and int(np.prod(dims, dtype=np.int64)) == 1):
        raise TypeError(f"value_and_grad: f must return a scalar, got a value of shape {tuple(shape)}")


def scipy_grad_input(x: scipy.sparse.spmatrix) -> scipy.sparse.csr_matrix:
    """A scipy.sparse argument to differentiate, as a canonical float CSR
    matrix (duplicates summed, sorted): the plugin makes it its own sparse
    tensor whose stored values get the gradient.

    Parameters
    ----------
    x : scipy.sparse matrix or array
        Any format, any real dtype.

    Returns
    -------
    scipy.sparse.csr_matrix
        Canonical, in ``x``'s float dtype (float64 for integers).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from unibackend.plugin import scipy_grad_input
    >>> x = sp.coo_matrix((np.array([1, 2]), (np.array([0, 0]), np.array([1, 1]))), shape=(1, 2))
    >>> g = scipy_grad_input(x)
    >>> g.format, g.dtype, g.toarray()
    ('csr', dtype('float64'), array([[0., 3.]]))
    """
    from ._checks import canonical_csr, result_float

    return canonical_csr("value_and_grad", x, result_float("value_and_grad", x.dtype))

