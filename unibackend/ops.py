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
from ._registry import _fast_dot, resolve
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
    """numpy ``dot`` for 1-D and 2-D; an N-D ``a`` with a 2-D ``b`` contracts
    ``a``'s last axis with ``b``'s first.  A sparse ``a`` goes to sparse_dot."""
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
        raise ValueError(
            f"dot: shapes {sa} and {sb} are not aligned: a's last dim {sa[-1]} != b's first dim {sb[0]}"
        )
    return B.dot(a, b)


def sparse_dot(x: Any, w: ArrayLike) -> Tensor:
    """``x`` sparse (n, N) times dense ``w`` (N, M) or (N,); result dense.
    Never densifies ``x``; COO duplicates add up."""
    op = "sparse_dot"
    if C.is_scipy_sparse(x):
        B = resolve(op, w)
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
        raise ValueError(
            f"sparse_dot: shapes {tuple(xshape)} and {tuple(wshape)} are not aligned: "
            f"x has {xshape[1]} columns but w has {wshape[0]} rows"
        )


def argsort(x: ArrayLike, axis: int = -1, descending: bool = False) -> Tensor:
    """Stable in both directions; NaN is greater than +inf; -0.0 == +0.0.
    Result int64."""
    op = "argsort"
    B = resolve(op, x)
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
    x = _tensor(op, "x", B, x)
    value = _tensor(op, "value", B, value)
    xdt = B.dtype(x)
    xshape = tuple(B.shape(x))
    native = _native_part
    # symbolic, traced by a compiler, or index tensors whose values must not
    # be read on the host (sync-free): the plugin checks them in its graph
    if (any(d is None for d in xshape) or any(B.is_symbolic(p) for p in parts) or B.is_tracing(x)
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
    """A copy of ``x`` with ``x[index] = value``; a position named twice: the
    last write wins.  ``value`` broadcasts; out of range: IndexError."""
    return _subtensor("set_subtensor", x, index, value, False)


def inc_subtensor(x: ArrayLike, index: Any, value: ArrayLike) -> Tensor:
    """A copy of ``x`` with ``x[index] += value``; a position named twice gets
    every addition (``np.add.at``)."""
    return _subtensor("inc_subtensor", x, index, value, True)


def masked_mean(x: ArrayLike, mask: ArrayLike, axis: int | tuple[int, ...] | None = None) -> Tensor:
    """Mean over ``axis`` of the entries where ``mask`` holds (nonzero is
    True; broadcast to ``x``).  No entry holds: 0.  Masked-out entries never
    touch the result, NaN and inf included."""
    op = "masked_mean"
    B = resolve(op, x, mask)
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
    """The k largest along ``axis`` stay, every other entry becomes ``fill``.
    Among equal values the lower index stays; NaN counts as largest."""
    op = "keep_topk"
    B = resolve(op, x)
    x, k, axis = _topk_args(op, B, "x", x, k, axis)
    fill = _check_fill(op, fill)
    return B.keep_topk(x, k, axis, fill)


def _check_fill(op, fill):
    try:
        return float(fill)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: fill must be a real number, got {fill!r}") from None


def softmax(x: ArrayLike, axis: int = -1) -> Tensor:
    """Numerically stable softmax; -inf gives exactly 0; an all -inf slice
    gives all 0s, not NaN."""
    op = "softmax"
    B = resolve(op, x)
    (x,) = _float_args(op, B, {"x": x})
    C.check_real(op, "x", B.dtype(x))
    shape = tuple(B.shape(x))
    if len(shape) < 1:
        raise ValueError(f"{op}: x must have at least 1 dim, got a scalar")
    return B.softmax(x, C.axis_index(op, "axis", axis, len(shape)))


def topk_gate(logits: ArrayLike, k: int, axis: int = -1) -> Tensor:
    """``softmax(keep_topk(logits, k))``: exactly k nonzero weights per slice,
    summing to 1 (k >= 1).  The gate of arXiv:1701.06538."""
    op = "topk_gate"
    B = resolve(op, logits)
    x, k, axis = _topk_args(op, B, "logits", logits, k, axis)
    if k < 1:
        raise ValueError(f"{op}: k={k} must be at least 1 (a gate keeps at least one expert)")
    return B.softmax(B.keep_topk(x, k, axis, -math.inf), axis)


def embedding_mean(table: ArrayLike, ids: ArrayLike, pad_id: int = 0) -> Tensor:
    """Per row of ``ids`` (n, L), the mean of ``table[id]`` over the ids that
    are not ``pad_id``; a row of only padding gives zeros."""
    op = "embedding_mean"
    B = resolve(op, table, ids)
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
    """Ragged lists of ids -> padded int64 numpy matrix, padding at the end,
    ids shifted by ``shift`` so that ``pad_id`` is free."""
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
    """Any result back as numpy (sparse -> scipy CSR)."""
    if isinstance(x, np.ndarray):
        return x
    if C.is_scipy_sparse(x):
        import scipy.sparse as sp

        return sp.csr_matrix(x)
    B = resolve("to_numpy", x)
    if B.is_sparse(x):
        return B.sparse_to_scipy(x)
    return B.to_numpy(x)


def asarray(x: ArrayLike, dtype: DTypeLike = None) -> Tensor:
    """A native tensor of the backend that ``x`` selects (or the one in force)."""
    B = resolve("asarray", x)
    C.check_numeric("asarray", "x", x, R.owner(x) is not None)
    return B.asarray(x, None if dtype is None else np.dtype(dtype))
