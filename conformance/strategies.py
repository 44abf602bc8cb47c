"""Hypothesis strategies that look for trouble.

Every array comes with the source that rebuilds it (:class:`cases.Arg`).
What they aim at: ties (a small pool of values plus hypothesis' fill values),
axes longer than 16 (where an insertion sort stops looking stable), NaN,
+-inf and -0.0 where the contract defines them, k = 0 and k = size, empty
batches, rows of only padding, repeated ids, COO duplicates, unsorted CSR
indices, explicit zeros, int32 and int64 ids, float32 and float64,
transposed, strided and reversed (non-contiguous) inputs, extra batch axes.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .cases import Arg, array_code

FLOATS = (np.float32, np.float64)
#: every float dtype numpy has: the ops whose rules are about special values
#: (order, NaN, +-inf) draw float16 too, where rounding collapses values into ties.
ALL_FLOATS = (np.float16, np.float32, np.float64)
ID_DTYPES = (np.int32, np.int64)

#: values that collide: ties, signed zeros, halves that are exact in float32.
TIE_POOL = (0.0, -0.0, 1.0, -1.0, 2.0, 0.5, -0.5, 3.0)

#: layouts of a generated array; each is rebuilt by its code in a reproducer.
LAYOUTS = ("C", "transposed", "strided", "reversed")


def float_dtypes(half=False):
    """float32 or float64; with ``half``, float16 too."""
    return st.sampled_from(ALL_FLOATS if half else FLOATS).map(np.dtype)


def id_dtypes():
    return st.sampled_from(ID_DTYPES).map(np.dtype)


def elements(dtype, *, lo=-1e3, hi=1e3, nan=False, inf=False, neg_inf=False, pos_inf=False):
    """Float elements of ``dtype``: mostly colliding values, some arbitrary
    finite ones in [lo, hi], and the special values asked for (``inf``: both
    infinities; ``neg_inf``/``pos_inf``: one)."""
    width: Literal[16, 32, 64] = {2: 16, 4: 32}.get(np.dtype(dtype).itemsize, 64)  # type: ignore[assignment]
    parts = [
        st.sampled_from([v for v in TIE_POOL if lo <= v <= hi]),
        st.floats(lo, hi, width=width, allow_subnormal=False),
    ]
    specials = []
    if nan:
        specials.append(np.nan)
    if inf or pos_inf:
        specials.append(np.inf)
    if inf or neg_inf:
        specials.append(-np.inf)
    if specials:
        parts.append(st.sampled_from(specials))
    return st.one_of(*parts)


def _layout(a, layout, junk):
    """A view with ``a``'s values in the given memory layout, and its source."""
    if layout == "transposed" and a.ndim >= 2:
        base = np.array(a.T, order="C")
        return base.T, f"{array_code(base)}.T"
    if layout == "strided" and a.ndim >= 1 and a.size:
        base = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        base[..., ::2] = a
        base[..., 1::2] = junk  # a plugin that ignores strides reads these
        return base[..., ::2], f"{array_code(base)}[..., ::2]"
    if layout == "reversed" and a.ndim >= 1 and a.size:
        base = np.array(a[..., ::-1], order="C")
        return base[..., ::-1], f"{array_code(base)}[..., ::-1]"
    a = np.array(a, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    return a, array_code(a)


@st.composite
def laid_out(draw, a, layouts=LAYOUTS):
    """``a`` as an :class:`Arg` in a drawn memory layout."""
    layout = draw(st.sampled_from(layouts))
    junk = 7777 if a.dtype.kind in "iu" else np.nan
    value, code = _layout(np.asarray(a), layout, np.asarray(junk).astype(a.dtype) if a.dtype.kind != "b" else True)
    return Arg(value, code)


@st.composite
def float_arrays(draw, shape, dtype, layouts=LAYOUTS, **kw):
    """A float array of ``shape``; many ties (a sampled pool and hypothesis'
    fill value), special values as asked, in a drawn layout."""
    el = elements(dtype, **kw)
    a = draw(hnp.arrays(dtype, shape, elements=el, fill=el))
    if a.size and draw(st.integers(0, 3)) == 3:
        # all distinct (no tie at all), in a drawn order: what tie-free fast paths see
        lo, hi = kw.get("lo", -1e3), kw.get("hi", 1e3)
        perm = np.array(draw(st.permutations(range(a.size))), dtype=np.float64)
        a = (lo + (hi - lo) * (perm + 0.5) / a.size).astype(dtype).reshape(a.shape)
    signed_zero = draw(st.sampled_from(["as drawn", "zeros negative", "sprinkled"]))
    if signed_zero == "zeros negative":
        a[a == 0] = -0.0
    elif signed_zero == "sprinkled" and a.size:
        a[draw(hnp.arrays(np.bool_, a.shape))] = -0.0
    return draw(laid_out(a, layouts))


@st.composite
def axis_shapes(draw, *, min_dims=1, max_dims=3, min_len=0, max_len=40, max_side=4, long_axis=True):
    """(shape, axis): up to ``max_dims`` dims (batch sizes 0..max_side: empty
    batches too), the reduced axis short, longer than 16, or now and then
    longer than 60; ``axis`` is drawn negative or positive."""
    nd = draw(st.integers(min_dims, max_dims))
    shape = [draw(st.integers(0, max_side)) for _ in range(nd)]
    axis = draw(st.integers(-nd, nd - 1))
    lengths = [st.integers(min_len, 8), st.integers(max(min_len, 17), max(min_len, max_len))]
    if long_axis and draw(st.integers(0, 9)) == 9:  # (shrinks towards the short axes)
        # past torch's topk algorithm switch at 64 * k == n (batch kept small)
        shape = [min(d, 2) for d in shape]
        lengths = [st.integers(60, 140)]
    shape[axis] = draw(st.one_of(*lengths))
    return tuple(shape), axis


@st.composite
def sparse_matrices(draw, dtype, *, n=None, N=None, max_rows=6, max_cols=20):
    """A scipy sparse (n, N) matrix in a format that stresses the canonical
    form: COO with duplicates, CSR/CSC with unsorted indices and duplicates,
    explicit zeros, matrix and array classes.  Returns (Arg, dense float64)."""
    import scipy.sparse as sp

    n = draw(st.integers(0, max_rows)) if n is None else n
    N = draw(st.integers(0, max_cols)) if N is None else N
    nnz = draw(st.integers(0, min(3 * n * N, 40))) if n * N else 0
    row = draw(hnp.arrays(np.int32, nnz, elements=st.integers(0, max(n - 1, 0))))
    col = draw(hnp.arrays(np.int32, nnz, elements=st.integers(0, max(N - 1, 0))))
    data = draw(hnp.arrays(dtype, nnz, elements=elements(dtype, lo=-100, hi=100)))
    # explicit zeros: some stored values are exactly 0.0
    data = np.ascontiguousarray(data)
    fmt = draw(st.sampled_from(["coo", "coo_array", "csr_unsorted", "csr", "csc_unsorted", "csr_array"]))
    dense = np.zeros((n, N))
    np.add.at(dense, (row, col), data.astype(np.float64))
    shape = (n, N)
    if fmt in ("coo", "coo_array"):
        cls = "coo_matrix" if fmt == "coo" else "coo_array"
        x = getattr(sp, cls)((data, (row, col)), shape=shape)
        code = f"sp.{cls}(({array_code(data)}, ({array_code(row)}, {array_code(col)})), shape={shape!r})"
        return Arg(x, code), dense
    major, minor, size = (row, col, n) if fmt.startswith("csr") else (col, row, N)
    if fmt.endswith("unsorted"):
        # grouped by the major axis, minor indices in a shuffled order (duplicates kept)
        perm = np.array(draw(st.permutations(range(nnz))), dtype=np.int64) if nnz else np.zeros(0, np.int64)
        order = np.lexsort((perm, major))
    else:
        order = np.lexsort((minor, major))
    indices = np.ascontiguousarray(minor[order])
    vals = np.ascontiguousarray(data[order])
    indptr = np.zeros(size + 1, dtype=np.int32)
    indptr[1:] = np.cumsum(np.bincount(major, minlength=size))
    cls = {"csr": "csr_matrix", "csr_unsorted": "csr_matrix", "csr_array": "csr_array",
           "csc_unsorted": "csc_matrix"}[fmt]
    x = getattr(sp, cls)((vals, indices, indptr), shape=shape)
    code = f"sp.{cls}(({array_code(vals)}, {array_code(indices)}, {array_code(indptr)}), shape={shape!r})"
    return Arg(x, code), dense


@st.composite
def padded_ids(draw, V, dtype, *, max_rows=6, max_len=24):
    """(ids Arg, pad_id): an (n, L) integer matrix of ids in [0, V) and
    ``pad_id`` entries: repeated ids, rows of only padding, padding in the
    middle, empty batches, rows longer than 16; ``pad_id`` inside or outside
    the table's range."""
    pads = [0, -1, V - 1, V + 3] if V > 1 else [0, -1, V + 3]
    pad_id = draw(st.sampled_from(pads))
    n = draw(st.integers(0, max_rows))
    L = draw(st.one_of(st.integers(0, 6), st.integers(17, max_len)))
    real = [i for i in range(V) if i != pad_id]
    if not real:
        real = [pad_id]
    cell = st.one_of(st.just(pad_id), st.sampled_from(real))
    ids = draw(hnp.arrays(dtype, (n, L), elements=cell, fill=cell))
    if n and L and draw(st.booleans()):
        ids[draw(st.integers(0, n - 1))] = pad_id  # a row of only padding
    return draw(laid_out(ids, ("C", "transposed", "strided"))), pad_id


@st.composite
def ragged_rows(draw, V, shift, *, max_rows=6, max_len=24):
    """Ragged lists of ids in [0, V - shift), some empty, some longer than 16."""
    hi = V - shift - 1
    row = st.lists(st.integers(0, hi), max_size=max_len) if hi >= 0 else st.just([])
    return draw(st.lists(row, max_size=max_rows))


@st.composite
def subtensor_indices(draw, shape):
    """An index for ``x[index]`` with numpy's meaning: ints (negative too),
    slices (any step, out-of-range bounds), ``...``, integer arrays with
    repeats and negatives, boolean masks, and tuples of these."""
    nd = len(shape)
    kind = draw(st.sampled_from(["basic", "array", "mask", "ellipsis"]))
    if kind == "mask":
        k = draw(st.integers(1, nd))
        return draw(hnp.arrays(np.bool_, shape[:k]))
    # parts for the first ``a`` axes, then (with an Ellipsis) for the last ``b``
    a = draw(st.integers(0 if kind == "ellipsis" else 1, nd))
    b = draw(st.integers(0, nd - a)) if kind == "ellipsis" else 0
    axes = list(range(a)) + list(range(nd - b, nd))
    use_array_at = draw(st.sampled_from(axes)) if kind == "array" else -1
    parts: list[Any] = []
    for ax in axes:
        size = shape[ax]
        if ax == use_array_at:
            m = draw(st.integers(0, 6)) if size else 0
            dt = draw(id_dtypes())
            parts.append(np.array([draw(st.integers(-size, size - 1)) for _ in range(m)], dtype=dt))
            continue
        options: list[st.SearchStrategy] = [st.builds(slice, st.none() | st.integers(-size - 2, size + 2),
                             st.none() | st.integers(-size - 2, size + 2),
                             st.none() | st.sampled_from([1, 2, 3, -1, -2]))]
        if size:
            options.append(st.integers(-size, size - 1))
        parts.append(draw(st.one_of(*options)))
    if kind == "ellipsis":
        parts.insert(a, Ellipsis)
    if len(parts) == 1 and draw(st.booleans()):
        return parts[0]
    return tuple(parts)


@st.composite
def broadcast_value_shapes(draw, target):
    """A shape that broadcasts to ``target``: leading dims dropped, some dims 1."""
    drop = draw(st.integers(0, len(target)))
    shape = list(target[drop:])
    for i in range(len(shape)):
        if draw(st.booleans()) and draw(st.booleans()):
            shape[i] = 1
    return tuple(shape)


#: the special conditions a whole-tensor shortcut may test for (a flag
#: computed over the whole tensor: "no NaN", "no ties", "all finite").
CONDITIONS = ("nan", "ties", "pos_inf", "neg_inf", "signed_zero")


@st.composite
def one_condition_arrays(draw, shape, dtype, *, lo=-1e3, hi=1e3, conditions=CONDITIONS):
    """A float array of ``shape`` in which exactly one special condition
    holds over the whole tensor: all values distinct and finite, then one
    condition of ``conditions`` added at drawn positions: ``nan`` (NaN, but
    no ties and no infinity), ``ties`` (a repeated finite value, no NaN),
    ``pos_inf`` (+inf without NaN), ``neg_inf`` (-inf only), ``signed_zero``
    (-0.0 beside 0.0: equal, bitwise different).  A fast path chosen by a
    flag over the whole tensor then meets every other condition absent.  (A
    one-element array holds no tie: it gets the condition only if it is a
    special value.)"""
    a = np.zeros(shape, dtype)
    if a.size:
        perm = np.array(draw(st.permutations(range(a.size))), dtype=np.float64)
        # (p + 1/4: no value is exactly 0, so the signed-zero condition is the only zero)
        a = (lo + (hi - lo) * (perm + 0.25) / a.size).astype(dtype).reshape(shape)
        cond = draw(st.sampled_from(conditions))
        flat = a.reshape(-1)
        where = st.integers(0, a.size - 1)
        if cond in ("ties", "signed_zero") and a.size > 1:
            i = draw(where)
            j = (i + draw(st.integers(1, a.size - 1))) % a.size
            if cond == "ties":
                flat[j] = flat[i]
            else:
                flat[i], flat[j] = 0.0, -0.0
        elif cond in ("nan", "pos_inf", "neg_inf"):
            v = {"nan": np.nan, "pos_inf": np.inf, "neg_inf": -np.inf}[cond]
            for i in draw(st.lists(where, min_size=1, max_size=1 if cond == "nan" else 3)):
                flat[i] = v
    return draw(laid_out(a, ("C", "transposed")))
