"""The public ops: check arguments, pin the semantics, call the plugin.

Every op resolves the backend from its arguments (a native tensor selects its
own backend; numpy arrays, scipy.sparse matrices, scalars and lists go to the
backend in force), checks everything it can before any work, then calls the
plugin primitive of the same name with normalised arguments.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from . import _checks as C
from . import _errors as E
from . import _registry as R
from ._registry import _fast_dot, _unwrap, resolve
from .plugin import Tensor

#: What an op takes: a native tensor of any backend, a numpy array, a list, a scalar.
ArrayLike = Any

__all__ = [
    "dot", "sparse_dot", "argsort", "set_subtensor", "inc_subtensor",
    "masked_mean", "keep_topk", "softmax", "topk_gate", "embedding_mean",
    "pad_ids", "to_numpy", "asarray",
]


def _tensor(op, arg, B, x):
    """Native tensor of argument ``arg``, once it is known to hold numbers
    (TypeError naming ``arg`` before any plugin sees it)."""
    C.check_numeric(op, arg, x, R.owner(x) is not None)
    t = B.asarray(x)
    C.check_number_dtype(op, arg, t, B.dtype(t))
    return t


def _mask(op, arg, B, m):
    """Native tensor of mask ``m``: boolean or integer (TypeError otherwise)."""
    if m is None:
        raise E.bad_mask(op, arg, "None")
    C.check_numeric(op, arg, m, R.owner(m) is not None, E.bad_mask)
    t = B.asarray(m)
    C.check_mask(op, arg, t, B.dtype(t))
    return t


def _float_args(op, B, args):
    """Native tensors of ``args`` (name -> value) in their common float dtype."""
    native = [_tensor(op, name, B, x) for name, x in args.items()]
    dts = [B.dtype(x) for x in native]
    dt = C.result_float(op, *dts)
    # cast only what differs (the common case asks the plugin nothing more)
    return [x if d == dt else B.asarray(x, dt) for x, d in zip(native, dts)]


def dot(a: ArrayLike, b: ArrayLike) -> Tensor:
    """numpy ``dot``: the product of ``a`` and ``b``.

    A 1-D or 2-D ``a`` times a 1-D or 2-D ``b`` as numpy computes it; an N-D
    ``a`` contracts its last axis with ``b``'s first.  A sparse ``a`` (scipy.sparse
    or the backend's own) goes to :func:`sparse_dot`.  Floats are promoted to
    their common float dtype (integers become float64).

    Parameters
    ----------
    a : array_like or native tensor
        At least 1-D; dense or sparse.
    b : array_like or native tensor
        1-D (K,) or 2-D (K, M), with K equal to ``a``'s last dim.

    Returns
    -------
    Tensor
        A native tensor of the backend that ran: ``a``'s shape without its
        last dim, then ``b``'s without its first.

    Raises
    ------
    ValueError
        When ``a`` is 0-D, ``b`` is not 1-D or 2-D, or the dims are not aligned.
    TypeError
        When an argument is not numeric.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> a = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> ub.dot(a, np.array([1.0, -1.0]))
    array([-1., -1.])
    >>> ub.dot(a, np.eye(2))
    array([[1., 2.],
           [3., 4.]])
    """
    # Fastest path (dispatch cost matters on small products): a type seen here
    # before goes straight to its plugin's fast_dot -- keyed by the type alone
    # for a native tensor, by the type and the backend in force for a neutral
    # one (numpy arrays).  fast_dot returns None when its arguments are not
    # plain enough (two dense tensors of one float dtype, aligned shapes);
    # then the full path below checks, converts and explains.
    t = type(a)
    fast = _fast_dot.get(t)
    if fast is None and t is np.ndarray:
        # only a neutral type reads the backend in force (a context variable,
        # which torch.compile cannot trace)
        fast = _fast_dot.get((t, R._in_force_key()))
    if fast is not None and type(b) is t:
        out = fast(a, b)
        if out is not None:
            return out
    B = resolve("dot", a, b)
    if _unwrap:  # a wrapper type (an adapter's) has been seen: hand its native value on
        a, b = R.unwrap("dot", a, b)
    dt, db = B.plain_float_dtype(a), B.plain_float_dtype(b)
    if dt is not None and db is not None and dt == db:  # (np.dtype("float64") == None is True)
        sa, sb = a.shape, b.shape
        if sa and 0 < len(sb) < 3 and sa[-1] == sb[0]:
            if B.fast_dot is not None and type(b) is t:
                native = R.owner(a) is not None
                _fast_dot[t if native else (t, R.in_force())] = B.fast_dot
            return B.dot(a, b)
    if C.is_scipy_sparse(a) or B.is_sparse(a):
        return sparse_dot(a, b)
    a, b = _float_args("dot", B, {"a": a, "b": b})
    sa, sb = tuple(B.shape(a)), tuple(B.shape(b))
    if len(sa) < 1:
        raise ValueError(f"dot: a must have at least 1 dim, got shape {sa}")
    if len(sb) not in (1, 2):
        raise ValueError(f"dot: b must have 1 or 2 dims, got shape {sb}")
    if not C.same_dim(sa[-1], sb[0]):
        raise E.dot_not_aligned(sa, sb, sa[-1], sb[0])
    return B.dot(a, b)


def sparse_dot(x: Any, w: ArrayLike) -> Tensor:
    """Sparse ``x`` (n, N) times dense ``w`` (N, M) or (N,); the result is dense.

    Never densifies ``x``; COO duplicates add up; explicit zeros and unsorted
    indices are fine.

    Parameters
    ----------
    x : scipy.sparse matrix or array, or the backend's sparse tensor
        2-D, any format (CSR, CSC, COO).
    w : array_like or native tensor
        (N, M) or (N,).

    Returns
    -------
    Tensor
        Dense (n, M) or (n,), in the common float dtype of ``x`` and ``w``.

    Raises
    ------
    TypeError
        When ``x`` is dense (use :func:`dot`).
    ValueError
        When ``x`` is not 2-D, ``w`` not 1-D or 2-D, or the shapes do not align.
    CapabilityError
        On a backend without the ``sparse`` capability.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, unibackend as ub
    >>> x = sp.coo_matrix(([1.0, 2.0, 5.0], ([0, 0, 1], [1, 1, 0])), shape=(2, 3))  # a duplicate at (0, 1)
    >>> ub.sparse_dot(x, np.array([1.0, 10.0, 100.0]))
    array([30.,  5.])
    """
    op = "sparse_dot"
    if C.is_scipy_sparse(x):
        B = resolve(op, w)
        if _unwrap:
            (w,) = R.unwrap(op, w)
        if not B.capabilities.sparse:
            from ._errors import CapabilityError

            raise CapabilityError(f"{op}: backend {B.name!r} has no sparse support")
        if x.ndim != 2:
            raise ValueError(f"{op}: x must be a 2-D sparse matrix, got shape {x.shape}")
        C.check_number_dtype(op, "x", x, x.dtype)
        w = _tensor(op, "w", B, w)
        dt = C.result_float(op, x.dtype, B.dtype(w))
        w = B.asarray(w, dt)
        xshape = x.shape
        _check_sparse_dot_shapes(xshape, tuple(B.shape(w)))
        xs = B.sparse_from_scipy(C.canonical_csr(op, x, dt))
    else:
        B = resolve(op, x, w)
        if _unwrap:
            x, w = R.unwrap(op, x, w)
        C.check_numeric(op, "x", x, R.owner(x) is not None)
        if not B.is_sparse(x):
            raise TypeError(
                f"{op}: x must be sparse (scipy.sparse CSR/CSC/COO or the backend's "
                f"sparse tensor), got dense {type(x).__name__}; use ub.dot for dense inputs"
            )
        xshape, xdt = B.sparse_info(x)
        if len(xshape) != 2:
            raise ValueError(f"{op}: x must be a 2-D sparse matrix, got shape {tuple(xshape)}")
        C.check_number_dtype(op, "x", x, xdt)
        w = _tensor(op, "w", B, w)
        dt = C.result_float(op, xdt, B.dtype(w))
        w = B.asarray(w, dt)
        _check_sparse_dot_shapes(xshape, tuple(B.shape(w)))
        xs = B.sparse_cast(x, dt) if xdt != dt else x
    return B.sparse_dot(xs, w)


def _check_sparse_dot_shapes(xshape, wshape):
    if len(wshape) not in (1, 2):
        raise ValueError(f"sparse_dot: w must have 1 or 2 dims, got shape {tuple(wshape)}")
    if not C.same_dim(xshape[1], wshape[0]):
        raise E.sparse_dot_not_aligned(tuple(xshape), tuple(wshape), xshape[1], wshape[0])


def argsort(x: ArrayLike, axis: int = -1, descending: bool = False) -> Tensor:
    """Indices that sort ``x`` along ``axis``: stable in both directions.

    NaN is greater than +inf; -0.0 == +0.0; equal values keep their index
    order whether ``descending`` or not (so descending is not the reverse of
    ascending).

    Parameters
    ----------
    x : array_like or native tensor
        Real, at least 1-D.
    axis : int, default -1
    descending : bool, default False
        Largest first.

    Returns
    -------
    Tensor
        int64 indices, ``x``'s shape.

    Raises
    ------
    ValueError
        When ``x`` is 0-D.
    IndexError
        When ``axis`` is out of range.
    TypeError
        When ``x`` is complex or not numeric, or ``descending`` is not a bool.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> ub.argsort(np.array([2.0, np.nan, 1.0, 2.0]))
    array([2, 0, 3, 1])
    >>> ub.argsort(np.array([2.0, np.nan, 1.0, 2.0]), descending=True)
    array([1, 0, 3, 2])
    """
    op = "argsort"
    B = resolve(op, x)
    if _unwrap:
        (x,) = R.unwrap(op, x)
    x = _tensor(op, "x", B, x)
    C.check_real(op, "x", B.dtype(x))
    shape = tuple(B.shape(x))
    if len(shape) < 1:
        raise ValueError(f"{op}: x must have at least 1 dim, got a scalar")
    axis = C.axis_index(op, "axis", axis, len(shape))
    if not isinstance(descending, (bool, np.bool_)):
        raise TypeError(f"{op}: descending must be a bool, got {descending!r}")
    return B.argsort(x, axis, bool(descending))


def _subtensor(op, x, index, value, accumulate):
    parts = index if isinstance(index, tuple) else (index,)
    B = resolve(op, x, value, *parts)
    if _unwrap:
        x, value, *plist = R.unwrap(op, x, value, *parts)
        if any(p is not q for p, q in zip(parts, plist)):
            parts = tuple(plist)
            index = parts if isinstance(index, tuple) else parts[0]
    x = _tensor(op, "x", B, x)
    value = _tensor(op, "value", B, value)
    xdt = B.dtype(x)
    xshape = tuple(B.shape(x))
    native = _native_part
    # symbolic, traced by a compiler, or index tensors whose values must not
    # be read on the host (sync-free): the plugin checks them in its graph
    if (any(d is None for d in xshape) or any(B.is_symbolic(p) or B.is_tracing(p) for p in parts) or B.is_tracing(x)
            or (C.sync_free_checks() and any(native(p) for p in parts))):
        if B.is_tracing(x) and not B.is_symbolic(x):
            # a compiler that traces Python reading no numpy (torch.compile):
            # index arrays become its tensors (checked in its graph)
            index = tuple(B.asarray(p) if isinstance(p, (np.ndarray, list)) else p for p in parts)
        sync_free = C.sync_free_checks()

        def readable(p):  # values known now, and allowed to be read on the host
            return not (sync_free or B.is_symbolic(p) or B.is_tracing(p))

        gi = C.graph_index(op, B, index, xshape, native, readable)
        return B.set_subtensor(x, gi, B.asarray(value, xdt), accumulate)
    sub = C.subtensor(op, xshape, index, B.to_numpy, B, native)
    C.check_broadcast(op, "value", tuple(B.shape(value)), sub.shape)
    return B.set_subtensor(x, sub, B.asarray(value, xdt), accumulate)


def _native_part(p):
    """Whether index part ``p`` is a tensor of some backend (a numpy array
    counts only for a backend whose tensors are numpy arrays)."""
    return R.owner(p) is not None


def set_subtensor(x: ArrayLike, index: Any, value: ArrayLike) -> Tensor:
    """A copy of ``x`` with ``x[index] = value`` (Theano's functional assignment).

    ``x`` itself is never changed.  A position the index names twice: the last
    write wins, on every backend.

    Parameters
    ----------
    x : array_like or native tensor
    index : int, slice, Ellipsis, integer or boolean array, or a tuple of them
        What numpy's basic and (one) advanced indexing accept; negative ints
        count from the end.
    value : array_like or native tensor
        Broadcasts to the selection; cast to ``x``'s dtype.

    Returns
    -------
    Tensor
        ``x``'s shape and dtype.

    Raises
    ------
    IndexError
        An index out of range, or too many indices.
    ValueError
        When ``value`` does not broadcast to the selection.
    TypeError
        An index of another type (a float, say).

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> x = np.zeros(4)
    >>> ub.set_subtensor(x, np.array([1, 3, 1]), np.array([5.0, 6.0, 7.0]))
    array([0., 7., 0., 6.])
    >>> x
    array([0., 0., 0., 0.])
    """
    return _subtensor("set_subtensor", x, index, value, False)


def inc_subtensor(x: ArrayLike, index: Any, value: ArrayLike) -> Tensor:
    """A copy of ``x`` with ``x[index] += value``.

    A position the index names twice gets every addition (``np.add.at``), on
    every backend; ``x`` itself is never changed.

    Parameters
    ----------
    x : array_like or native tensor
    index : int, slice, Ellipsis, integer or boolean array, or a tuple of them
    value : array_like or native tensor
        Broadcasts to the selection; cast to ``x``'s dtype.

    Returns
    -------
    Tensor
        ``x``'s shape and dtype.

    Raises
    ------
    IndexError
        An index out of range, or too many indices.
    ValueError
        When ``value`` does not broadcast to the selection.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> ub.inc_subtensor(np.zeros(4), np.array([1, 3, 1]), 1.0)
    array([0., 2., 0., 1.])
    """
    return _subtensor("inc_subtensor", x, index, value, True)


def masked_mean(x: ArrayLike, mask: ArrayLike, axis: int | tuple[int, ...] | None = None) -> Tensor:
    """Mean over ``axis`` of the entries where ``mask`` holds.

    ``mask`` broadcasts to ``x``; it is boolean or integer (nonzero is True).  Where no entry holds, the
    mean is 0.  Masked-out entries never touch the result, NaN and inf
    included.

    Parameters
    ----------
    x : array_like or native tensor
        Promoted to float (integers to float64).
    mask : array_like or native tensor
        Boolean, or integers (0 is False, anything else True); broadcastable
        to ``x``.
    axis : int, tuple of int, or None, default None
        None: over every axis.

    Returns
    -------
    Tensor
        ``x`` reduced over ``axis``, in ``x``'s float dtype.

    Raises
    ------
    ValueError
        When ``mask`` does not broadcast to ``x``, or an axis is repeated.
    IndexError
        When an axis is out of range.
    TypeError
        When ``mask`` is not boolean or integer (a float, a string, None), or
        ``x`` is not numeric.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> x = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]])
    >>> mask = np.array([[1, 0, 1], [0, 0, 0]])
    >>> ub.masked_mean(x, mask, axis=1)
    array([2., 0.])
    """
    op = "masked_mean"
    B = resolve(op, x, mask)
    if _unwrap:
        x, mask = R.unwrap(op, x, mask)
    (x,) = _float_args(op, B, {"x": x})
    mask = _mask(op, "mask", B, mask)
    shape = tuple(B.shape(x))
    C.check_broadcast(op, "mask", tuple(B.shape(mask)), shape)
    axes = C.axes_tuple(op, "axis", axis, len(shape))
    return B.masked_mean(x, mask, axes)


def _topk_args(op, B, arg, x, k, axis):
    (x,) = _float_args(op, B, {arg: x})
    C.check_real(op, arg, B.dtype(x))
    shape = tuple(B.shape(x))
    if len(shape) < 1:
        raise ValueError(f"{op}: {arg} must have at least 1 dim, got a scalar")
    axis = C.axis_index(op, "axis", axis, len(shape))
    k = C.check_int(op, "k", k)
    n = shape[axis]
    if k < 0 or (n is not None and k > n):
        raise E.k_out_of_range(op, k, n, axis)
    return x, k, axis


def keep_topk(x: ArrayLike, k: int, axis: int = -1, fill: float = -math.inf) -> Tensor:
    """The ``k`` largest entries along ``axis`` stay; every other becomes ``fill``.

    Exactly ``k`` stay per slice: among equal values the lower index stays,
    and NaN counts as the largest.  Kept values are bit-identical (the sign of
    zero, NaN).

    Parameters
    ----------
    x : array_like or native tensor
        Real, at least 1-D.
    k : int
        ``0 <= k <=`` the size of ``axis``.
    axis : int, default -1
    fill : float, default -inf
        What the dropped entries become.

    Returns
    -------
    Tensor
        ``x``'s shape, in its float dtype.

    Raises
    ------
    ValueError
        When ``k`` is out of range or ``x`` is 0-D.
    IndexError
        When ``axis`` is out of range.
    TypeError
        When ``k`` is not an int or ``fill`` not a real number.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> ub.keep_topk(np.array([1.0, 3.0, 3.0, 2.0]), 2)
    array([-inf,   3.,   3., -inf])
    >>> ub.keep_topk(np.array([[3.0, 3.0, 1.0]]), 1, fill=0.0)  # a tie: the lower index stays
    array([[3., 0., 0.]])
    """
    op = "keep_topk"
    B = resolve(op, x)
    if _unwrap:
        (x,) = R.unwrap(op, x)
    x, k, axis = _topk_args(op, B, "x", x, k, axis)
    fill = _check_fill(op, fill)
    return B.keep_topk(x, k, axis, fill)


def _check_fill(op, fill):
    try:
        return float(fill)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: fill must be a real number, got {fill!r}") from None


def softmax(x: ArrayLike, axis: int = -1) -> Tensor:
    """Numerically stable softmax along ``axis``.

    The slice's maximum is subtracted first, so large logits do not overflow.
    ``-inf`` gives exactly 0, and a slice of only ``-inf`` gives all 0s (not
    NaN).  A slice that holds NaN or ``+inf`` gives NaN throughout that slice
    (docs/semantics.md).

    Parameters
    ----------
    x : array_like or native tensor
        Real, at least 1-D; promoted to float.
    axis : int, default -1

    Returns
    -------
    Tensor
        ``x``'s shape and float dtype; every other slice sums to 1.

    Raises
    ------
    ValueError
        When ``x`` is 0-D.
    IndexError
        When ``axis`` is out of range.
    TypeError
        When ``x`` is complex or not numeric.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> ub.softmax(np.array([[0.0, 0.0, -np.inf], [-np.inf, -np.inf, -np.inf]]))
    array([[0.5, 0.5, 0. ],
           [0. , 0. , 0. ]])
    >>> ub.softmax(np.array([1.0, np.inf]))
    array([nan, nan])
    """
    op = "softmax"
    B = resolve(op, x)
    if _unwrap:
        (x,) = R.unwrap(op, x)
    (x,) = _float_args(op, B, {"x": x})
    C.check_real(op, "x", B.dtype(x))
    shape = tuple(B.shape(x))
    if len(shape) < 1:
        raise ValueError(f"{op}: x must have at least 1 dim, got a scalar")
    return B.softmax(x, C.axis_index(op, "axis", axis, len(shape)))


def topk_gate(logits: ArrayLike, k: int, axis: int = -1) -> Tensor:
    """``softmax(keep_topk(logits, k))``: the gate of a mixture of experts.

    Exactly ``k`` nonzero weights per slice (ties to the lower index, as in
    :func:`keep_topk`), summing to 1.  The top-k gate of arXiv:1701.06538,
    without its noise.

    Parameters
    ----------
    logits : array_like or native tensor
        Real, at least 1-D.
    k : int
        ``1 <= k <=`` the size of ``axis``.
    axis : int, default -1

    Returns
    -------
    Tensor
        ``logits``' shape and float dtype.

    Raises
    ------
    ValueError
        When ``k`` is out of range (0 included: a gate keeps at least one expert).
    IndexError
        When ``axis`` is out of range.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> ub.topk_gate(np.array([[0.0, 5.0, 0.0, 5.0]]), k=2)
    array([[0. , 0.5, 0. , 0.5]])
    """
    op = "topk_gate"
    B = resolve(op, logits)
    if _unwrap:
        (logits,) = R.unwrap(op, logits)
    x, k, axis = _topk_args(op, B, "logits", logits, k, axis)
    if k < 1:
        raise ValueError(f"{op}: k={k} must be at least 1 (a gate keeps at least one expert)")
    return B.softmax(B.keep_topk(x, k, axis, -math.inf), axis)


def embedding_mean(table: ArrayLike, ids: ArrayLike, pad_id: int = 0) -> Tensor:
    """Per row of ``ids``, the mean of ``table[id]`` over the ids that are not ``pad_id``.

    Never builds the (n, L, d) gather.  A row of only padding gives zeros.

    Parameters
    ----------
    table : array_like or native tensor
        (V, d), promoted to float.
    ids : array_like or native tensor
        (n, L) integers in ``[0, V)``, or ``pad_id`` (which may lie outside).
        :func:`pad_ids` makes them from ragged lists.
    pad_id : int, default 0

    Returns
    -------
    Tensor
        (n, d), in ``table``'s float dtype.

    Raises
    ------
    IndexError
        An id outside ``[0, V)`` that is not ``pad_id`` (checked before any work
        where the values are known; inside a graph, when it runs).
    TypeError
        When ``ids`` are not integers.
    ValueError
        When ``table`` or ``ids`` is not 2-D.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> table = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]])
    >>> ub.embedding_mean(table, np.array([[1, 2, 0], [0, 0, 0]]))
    array([[2., 3.],
           [0., 0.]])
    """
    op = "embedding_mean"
    B = resolve(op, table, ids)
    if _unwrap:
        table, ids = R.unwrap(op, table, ids)
    (table,) = _float_args(op, B, {"table": table})
    ids = _tensor(op, "ids", B, ids)
    tshape, ishape = tuple(B.shape(table)), tuple(B.shape(ids))
    C.check_ndim(op, "table", tshape, (2,))
    C.check_ndim(op, "ids", ishape, (2,))
    idt = B.dtype(ids)
    if not (isinstance(idt, np.dtype) and idt.kind in "iu"):
        raise E.not_integer_ids(op, "ids", idt)
    pad_id = C.check_int(op, "pad_id", pad_id)
    bounds = B.id_bounds(ids, pad_id)
    V = tshape[0]
    if bounds is not None and V is not None:
        lo, hi = bounds
        if lo < 0 or hi >= V:
            bad = lo if lo < 0 else hi
            raise E.id_out_of_range(op, bad, V, pad_id)
    return B.embedding_mean(table, ids, pad_id)


def pad_ids(rows: Iterable[Sequence[int] | np.ndarray], pad_id: int = 0, shift: int = 1,
            length: int | None = None) -> np.ndarray:
    """Ragged lists of ids -> a padded int64 numpy matrix, for :func:`embedding_mean`.

    Each row's ids are shifted by ``shift`` (so that id 0 does not collide
    with ``pad_id``) and padded at the end with ``pad_id``.

    Parameters
    ----------
    rows : iterable of sequences of int
        One flat list (or array) of integer ids per row; rows may be empty.
    pad_id : int, default 0
        What fills the rest of each row.
    shift : int, default 1
        Added to every id; with the defaults, id ``i`` becomes ``i + 1`` and a
        table needs one more row (row 0, the padding, is never read).
    length : int, optional
        The width of the matrix; default: the longest row.

    Returns
    -------
    numpy.ndarray
        int64, (number of rows, length).

    Raises
    ------
    ValueError
        A row longer than ``length``, a negative ``length``, a row that is not
        flat, or an id that the shift turns into ``pad_id``.
    TypeError
        A row of non-integer ids.

    Examples
    --------
    >>> import unibackend as ub
    >>> ub.pad_ids([[4, 7], [], [1, 1, 9]])
    array([[ 5,  8,  0],
           [ 0,  0,  0],
           [ 2,  2, 10]])
    >>> ub.pad_ids([[0, 2]], pad_id=-1, shift=0, length=4)
    array([[ 0,  2, -1, -1]])
    """
    op = "pad_ids"
    pad_id = C.check_int(op, "pad_id", pad_id)
    shift = C.check_int(op, "shift", shift)
    arrays = [np.asarray(r) if not isinstance(r, np.ndarray) else r for r in rows]
    for i, r in enumerate(arrays):
        if r.ndim != 1:
            raise ValueError(f"{op}: row {i} must be a flat list of ids, got shape {r.shape}")
        if r.size and r.dtype.kind not in "iu":
            raise TypeError(f"{op}: row {i} holds non-integer ids (dtype {r.dtype})")
    width = max((r.size for r in arrays), default=0)
    if length is not None:
        length = C.check_int(op, "length", length)
        if length < 0:
            raise ValueError(f"{op}: length={length} must be >= 0")
        if width > length:
            i = next(i for i, r in enumerate(arrays) if r.size > length)
            raise ValueError(f"{op}: row {i} has {arrays[i].size} ids, more than length={length}")
        width = length
    out = np.full((len(arrays), width), pad_id, dtype=np.int64)
    if arrays:
        sizes = np.fromiter((r.size for r in arrays), np.int64, len(arrays))
        flat = np.concatenate([r.astype(np.int64, copy=False) for r in arrays]) + shift
        if flat.size and (flat == pad_id).any():
            i = int(np.searchsorted(np.cumsum(sizes), int(np.argmax(flat == pad_id)), side="right"))
            raise ValueError(
                f"{op}: row {i} holds id {pad_id - shift}, which the shift by {shift} turns into pad_id={pad_id}"
            )
        cols = np.arange(width)
        out[cols[None, :] < sizes[:, None]] = flat
    return out


def to_numpy(x: Any) -> Any:
    """Any result, of any backend, back as numpy.

    Parameters
    ----------
    x : native tensor, numpy array or scipy.sparse matrix
        A sparse tensor comes back as a scipy CSR matrix.

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
        A numpy array is returned as is.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> with ub.use_backend("torch"):
    ...     y = ub.softmax(np.zeros(2))
    >>> type(y).__name__, ub.to_numpy(y)
    ('Tensor', array([0.5, 0.5]))
    """
    if isinstance(x, np.ndarray):
        return x
    if C.is_scipy_sparse(x):
        import scipy.sparse as sp

        return sp.csr_matrix(x)
    B = resolve("to_numpy", x)
    if _unwrap:
        (x,) = R.unwrap("to_numpy", x)
    if B.is_sparse(x):
        return B.sparse_to_scipy(x)
    return B.to_numpy(x)


def asarray(x: ArrayLike, dtype: DTypeLike = None) -> Tensor:
    """A native tensor of ``x`` on the backend that ``x`` selects (or the one in force).

    Parameters
    ----------
    x : array_like or native tensor
        A native tensor selects its own backend; numpy arrays, lists and
        scalars go to the backend in force.
    dtype : numpy dtype-like, optional
        Cast to it; default: numpy's rules.

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import unibackend as ub
    >>> with ub.use_backend("torch"):
    ...     t = ub.asarray([1, 2], dtype="float32")
    >>> t
    tensor([1., 2.])
    """
    B = resolve("asarray", x)
    if _unwrap:
        (x,) = R.unwrap("asarray", x)
    C.check_numeric("asarray", "x", x, R.owner(x) is not None)
    return B.asarray(x, None if dtype is None else np.dtype(dtype))
