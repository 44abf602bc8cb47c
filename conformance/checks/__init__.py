"""The checks: for each op, a strategy of cases and what must hold on them.

Every check compares the backend under test with the numpy reference on the
same case (integer results exactly, float results within
:mod:`tolerances`), then checks the contract's properties on the backend's
own result against an independent oracle (a float64 loop or a lexsort), so
the ``numpy`` column proves the reference itself.  The gradient checks
compare ``ub.grad`` with the analytic gradient in float64 and with a float64
finite difference of the numpy reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from . import strategies as S
from . import tolerances as T
from .cases import Arg, Case, Disagreement, assert_close, assert_exact, check_meta, fail, show


@dataclass
class Check:
    name: str                  # the row of the matrix, e.g. "keep_topk", "grad sparse_dot"
    op: str                    # the op it is about (what --ops selects)
    strategy: st.SearchStrategy
    verify: Callable           # verify(case, backend, device): raises Disagreement
    needs: tuple = ()          # capabilities the backend must declare
    doc: str = ""
    examples: tuple = ()       # explicit cases, run before the generated ones


CHECKS: dict = {}


def check(name, op, strategy, needs=()):
    def deco(fn):
        CHECKS[name] = Check(name, op, strategy, fn, tuple(needs), (fn.__doc__ or "").strip())
        return fn
    return deco


# ---------------------------------------------------------------------------
# helpers

def _slices(a, axis):
    """``a`` with ``axis`` last, as (rows, n)."""
    m = np.moveaxis(np.asarray(a), axis, -1)
    return m.reshape(-1, m.shape[-1]) if m.size or m.shape[-1] else m.reshape(0, m.shape[-1])


def _from_slices(rows, shape, axis):
    moved = list(np.moveaxis(np.empty(shape, dtype=np.int8), axis, -1).shape)
    return np.moveaxis(rows.reshape(moved), -1, axis)


def descending_order(x, axis):
    """The contract's descending order along ``axis``, by lexsort (independent
    of any argsort): NaN first, then by value (-0.0 == 0.0), ties by index."""
    rows = _slices(x, axis)
    n = rows.shape[-1]
    idx = np.broadcast_to(np.arange(n), rows.shape)
    if rows.dtype.kind == "f":
        nan = np.isnan(rows)
        val = np.where(nan, 0, rows).astype(np.float64)
        return np.lexsort((idx, -val, ~nan), axis=-1), rows
    return np.lexsort((idx, -rows.astype(np.float64)), axis=-1), rows


def ascending_order(x, axis):
    rows = _slices(x, axis)
    n = rows.shape[-1]
    idx = np.broadcast_to(np.arange(n), rows.shape)
    if rows.dtype.kind == "f":
        nan = np.isnan(rows)
        val = np.where(nan, 0, rows).astype(np.float64)
        return np.lexsort((idx, val, nan), axis=-1), rows
    return np.lexsort((idx, rows.astype(np.float64)), axis=-1), rows


def kept_mask(x, k, axis):
    """Which entries keep_topk(x, k) keeps, per the contract, by lexsort."""
    order, rows = descending_order(x, axis)
    keep = np.zeros(rows.shape, bool)
    np.put_along_axis(keep, order[:, :k], True, axis=-1)
    return _from_slices(keep, np.shape(x), axis)


def _is(a, v):
    """Element-wise ``a is the value v`` (NaN is NaN, -0.0 is not 0.0)."""
    if np.isnan(v):
        return np.isnan(a)
    return (a == v) & (np.signbit(a) == np.signbit(v))


def _cotangent_args(draw, dtype, shapes):
    el = S.elements(dtype, lo=-4, hi=4)
    return [draw(hnp.arrays(dtype, s, elements=el, fill=el)) for s in shapes]


# ---------------------------------------------------------------------------
# argsort

@st.composite
def argsort_cases(draw):
    shape, axis = draw(S.axis_shapes())
    if draw(st.integers(0, 4)) == 0:
        dtype = draw(S.id_dtypes())
        x = draw(S.laid_out(draw(hnp.arrays(dtype, shape, elements=st.integers(-3, 3)))))
    else:
        dtype = draw(S.float_dtypes())
        x = draw(S.float_arrays(shape, dtype, nan=True, inf=True))
    descending = draw(st.booleans())
    return Case("result = ub.argsort(x, axis=axis, descending=descending)",
                {"x": x, "axis": axis, "descending": descending})


@check("argsort", "argsort", argsort_cases())
def verify_argsort(case, backend, device):
    """argsort is the stable sort order in both directions (ties keep their
    index order, NaN greater than +inf, -0.0 == +0.0), int64, and equals numpy."""
    got = case.run(backend, device)
    v = case.values()
    x, axis = v["x"], v["axis"]
    if got.dtype != np.int64:
        fail(f"argsort returned dtype {got.dtype}, the contract says int64", got=got)
    order = (descending_order if v["descending"] else ascending_order)(x, axis)[0]
    want = _from_slices(order, x.shape, axis).astype(np.int64)
    assert_exact(got, want, "indices (against the stable order by lexsort)")
    assert_exact(got, case.reference(), "indices")


# ---------------------------------------------------------------------------
# keep_topk, topk_gate, softmax

FILLS = (None, 0.0, -1.0, np.nan, 2.0, -np.inf)


@st.composite
def keep_topk_cases(draw):
    shape, axis = draw(S.axis_shapes())
    dtype = draw(S.float_dtypes())
    x = draw(S.float_arrays(shape, dtype, nan=True, inf=True))
    n = shape[axis]
    k = draw(st.one_of(st.just(0), st.just(n), st.integers(0, n)))
    fill = draw(st.sampled_from(FILLS))
    args = {"x": x, "k": k, "axis": axis}
    if fill is None:
        return Case("result = ub.keep_topk(x, k, axis=axis)", args)
    args["fill"] = fill
    return Case("result = ub.keep_topk(x, k, axis=axis, fill=fill)", args)


@check("keep_topk", "keep_topk", keep_topk_cases())
def verify_keep_topk(case, backend, device):
    """Exactly k entries stay per slice, the k largest (NaN largest, ties to
    the lower index), the rest become fill; no arithmetic touches the kept
    values; equals numpy."""
    got = case.run(backend, device)
    v = case.values()
    x, k, axis = v["x"], v["k"], v["axis"]
    fill = v.get("fill", -np.inf)
    keep = kept_mask(x, k, axis)
    check_meta(got, x)
    if not _is(x, fill).any():
        counts = _slices(~_is(got, fill), axis).sum(axis=-1)
        bad = np.flatnonzero(counts != k)
        if bad.size:
            fail(f"slice {int(bad[0])} (axis {axis} moved last, batch flattened) keeps "
                 f"{int(counts[bad[0]])} entries, want exactly k={k}", got=got)
    want = np.where(keep, x, np.asarray(fill, dtype=x.dtype))
    assert_exact(got, want, "kept entries (against the k largest, ties to the lower index)")
    assert_exact(got, case.reference())


@st.composite
def topk_gate_cases(draw):
    shape, axis = draw(S.axis_shapes(min_len=1))
    dtype = draw(S.float_dtypes())
    # |logits| <= 20: every kept weight is a normal number, so "k nonzero" is exact
    x = draw(S.float_arrays(shape, dtype, lo=-20, hi=20))
    n = shape[axis]
    k = draw(st.one_of(st.just(1), st.just(n), st.integers(1, n)))
    return Case("result = ub.topk_gate(logits, k, axis=axis)", {"logits": x, "k": k, "axis": axis})


def _sum_to_one(got, x, axis, dtype, rows_to_check=None):
    s = got.astype(np.float64).sum(axis=axis)
    tol = T.softmax_tol(x, got, axis, dtype).sum(axis=axis)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(s - 1) <= tol)
    if rows_to_check is not None:
        bad &= rows_to_check
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        fail(f"the weights of slice {i} (axis {axis} removed) sum to {show(s[i])}, want 1 "
             f"(tolerance {tol[i]:.3g})", got=got)


@check("topk_gate", "topk_gate", topk_gate_cases())
def verify_topk_gate(case, backend, device):
    """Exactly k nonzero weights per slice, at the k largest logits (ties to
    the lower index), summing to 1; equals numpy within the softmax tolerance."""
    got = case.run(backend, device)
    v = case.values()
    x, k, axis = v["logits"], v["k"], v["axis"]
    check_meta(got, x)
    keep = kept_mask(x, k, axis)
    nz = got != 0
    if (nz != keep).any():
        counts = _slices(nz, axis).sum(axis=-1)
        bad = np.flatnonzero(counts != k)
        if bad.size:
            fail(f"slice {int(bad[0])} (axis {axis} moved last, batch flattened) has "
                 f"{int(counts[bad[0]])} nonzero weights, want exactly k={k}", got=got)
        i = tuple(int(j) for j in np.argwhere(nz != keep)[0])
        fail(f"nonzero weights at the wrong positions: at index {i} the weight is {show(got[i])}, "
             f"but that logit is {'' if keep[i] else 'not '}among the k={k} largest "
             f"(ties go to the lower index)", index=i, got=got)
    kept = np.where(keep, x.astype(np.float64), -np.inf)
    _sum_to_one(got, kept, axis, x.dtype)
    want = case.reference()
    assert_close(got, want, T.softmax_tol(kept, want, axis, x.dtype))


@st.composite
def softmax_cases(draw):
    shape, axis = draw(S.axis_shapes())
    dtype = draw(S.float_dtypes())
    x = draw(S.float_arrays(shape, dtype, lo=-200, hi=200, neg_inf=True))
    return Case("result = ub.softmax(x, axis=axis)", {"x": x, "axis": axis})


@check("softmax", "softmax", softmax_cases())
def verify_softmax(case, backend, device):
    """-inf gives exactly 0, an all -inf slice all 0s (not NaN), every other
    slice sums to 1; equals numpy within the softmax tolerance."""
    got = case.run(backend, device)
    v = case.values()
    x, axis = v["x"], v["axis"]
    check_meta(got, x)
    ninf = np.isneginf(x)
    if (got[ninf] != 0).any():
        i = tuple(int(j) for j in np.argwhere(ninf & (got != 0))[0])
        fail(f"softmax of -inf at index {i} is {show(got[i])}, want exactly 0", index=i, got=got)
    live = ~np.all(ninf, axis=axis)  # an empty or all -inf slice sums to 0
    _sum_to_one(got, x, axis, x.dtype, live)
    want = case.reference()
    assert_close(got, want, T.softmax_tol(x, want, axis, x.dtype))


# ---------------------------------------------------------------------------
# sparse projection: sparse_dot and dot

@st.composite
def sparse_dot_cases(draw, op="sparse_dot"):
    xdt = draw(S.float_dtypes())
    wdt = draw(st.sampled_from([xdt, np.dtype(np.float32), np.dtype(np.float64)]))
    x, dense = draw(S.sparse_matrices(xdt))
    N = dense.shape[1]
    wshape = (N,) if draw(st.integers(0, 3)) == 0 else (N, draw(st.integers(0, 5)))
    w = draw(S.float_arrays(wshape, wdt, lo=-100, hi=100))
    fn = "ub.sparse_dot" if op == "sparse_dot" else "ub.dot"
    return Case(f"result = {fn}(x, w)", {"x": x, "w": w})


def _abs_dense(x):
    """|x| densified (duplicates' absolute values summed), without calling
    scipy's abs(x), which sums a COO's duplicates in place."""
    coo = x.tocoo(copy=True)
    out = np.zeros(x.shape)
    np.add.at(out, (coo.row, coo.col), np.abs(coo.data.astype(np.float64)))
    return out, coo


def _verify_sparse_product(case, backend, device):
    got = case.run(backend, device)
    v = case.values()
    x, w = v["x"], v["w"]
    dt = np.result_type(x.dtype, w.dtype)
    xd = x.toarray().astype(np.float64)   # the densified input: duplicates summed
    xa, coo = _abs_dense(x)
    per_row = np.bincount(coo.row, minlength=x.shape[0]) if x.shape[0] else np.zeros(0, np.int64)
    per_row = per_row.reshape((-1,) + (1,) * (w.ndim - 1))
    w64 = w.astype(np.float64)
    # duplicates add up in x's own dtype, before the cast to the result dtype
    tol_dt = x.dtype if coo.nnz and T.eps(x.dtype) > T.eps(dt) and not x.has_canonical_format else dt
    tol = T.sum_tol(xa @ np.abs(w64), per_row + 1, tol_dt)
    assert_close(got, (xd @ w64).astype(dt), tol,
                 "values (against the dense product of the densified x, float64)")
    assert_close(got, case.reference(), tol)


@check("sparse_dot", "sparse_dot", sparse_dot_cases(), needs=("sparse",))
def verify_sparse_dot(case, backend, device):
    """sparse_dot(x, w) equals the dense product of the densified x (COO
    duplicates add up, explicit zeros and unsorted indices are fine) within
    the sum tolerance; result dtype numpy's result_type; equals numpy."""
    _verify_sparse_product(case, backend, device)


@st.composite
def dot_cases(draw):
    if draw(st.booleans()):
        return draw(sparse_dot_cases(op="dot"))
    adt, bdt = draw(S.float_dtypes()), draw(S.float_dtypes())
    K = draw(st.one_of(st.integers(0, 6), st.integers(17, 30)))
    lead = draw(st.lists(st.integers(0, 4), max_size=2))
    bshape = (K,) if draw(st.integers(0, 3)) == 0 else (K, draw(st.integers(0, 5)))
    a = draw(S.float_arrays(tuple(lead) + (K,), adt, lo=-100, hi=100))
    b = draw(S.float_arrays(bshape, bdt, lo=-100, hi=100))
    return Case("result = ub.dot(a, b)", {"a": a, "b": b})


@check("dot", "dot", dot_cases())
def verify_dot(case, backend, device):
    """dot equals numpy's dot (N-D a contracts its last axis with b's first);
    a sparse a equals the dense product of the densified a."""
    v = case.values()
    if "x" in v:
        return _verify_sparse_product(case, backend, device)
    got = case.run(backend, device)
    a, b = v["a"], v["b"]
    dt = np.result_type(a.dtype, b.dtype)
    K = a.shape[-1]
    tol = T.sum_tol(np.dot(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64))), K, dt)
    assert_close(got, np.dot(a.astype(np.float64), b.astype(np.float64)).astype(dt), tol,
                 "values (against numpy dot in float64)")
    assert_close(got, case.reference(), tol)


# ---------------------------------------------------------------------------
# padded-embedding mean: embedding_mean, masked_mean, pad_ids

def embedding_oracle(table, ids, pad_id):
    """Per row, the float64 mean of table[id] over the non-pad ids, and the
    same mean of |table| (the sum bound)."""
    t = table.astype(np.float64)
    n, d = ids.shape[0], table.shape[1]
    mean, absmean = np.zeros((n, d)), np.zeros((n, d))
    for i in range(n):
        real = ids[i][ids[i] != pad_id]
        if real.size:
            mean[i] = t[real].mean(axis=0)
            absmean[i] = np.abs(t[real]).mean(axis=0)
    return mean, absmean


@st.composite
def embedding_cases(draw):
    V = draw(st.integers(1, 10))
    d = draw(st.integers(0, 5))
    dtype = draw(S.float_dtypes())
    table = draw(S.float_arrays((V, d), dtype, lo=-100, hi=100, layouts=("C", "transposed", "strided")))
    ids, pad_id = draw(S.padded_ids(V, draw(S.id_dtypes())))
    more = draw(st.integers(1, 20))
    return Case("result = ub.embedding_mean(table, ids, pad_id=pad_id)",
                {"table": table, "ids": ids, "pad_id": pad_id}, note=str(more))


@check("embedding_mean", "embedding_mean", embedding_cases())
def verify_embedding_mean(case, backend, device):
    """Each row is the mean of table[id] over its non-pad ids (a repeated id
    counts each time; only padding: zeros); appending pad columns changes
    nothing; equals numpy within the sum tolerance."""
    got = case.run(backend, device)
    v = case.values()
    table, ids, pad_id = v["table"], v["ids"], v["pad_id"]
    mean, absmean = embedding_oracle(table, ids, pad_id)
    check_meta(got, mean.astype(table.dtype))
    L = ids.shape[1]
    tol = T.sum_tol(absmean, L, table.dtype)
    only_pad = np.all(ids == pad_id, axis=1)
    if only_pad.any() and (got[only_pad] != 0).any():
        i = int(np.flatnonzero(only_pad & (got != 0).any(axis=1))[0])
        fail(f"row {i} of ids is only padding, its mean is {show(got[i])}, want zeros", index=(i,), got=got)
    assert_close(got, mean.astype(table.dtype), tol, "values (against the float64 per-row mean)")
    assert_close(got, case.reference(), tol)
    # the same ids with pad columns appended: the same means
    extra = int(case.note or 3)
    wider = np.concatenate([ids, np.full((ids.shape[0], extra), pad_id, ids.dtype)], axis=1)
    wide_case = case.replace(ids=Arg(wider, S.array_code(wider)))
    try:
        got_wide = wide_case.run(backend, device)
        wide_tol = T.sum_tol(absmean, L + extra, table.dtype)
        assert_close(got_wide, wide_case.reference(), wide_tol)
        assert_close(got_wide, got, wide_tol, f"values after appending {extra} pad columns")
    except Disagreement as e:
        e.case = wide_case
        raise


@st.composite
def masked_mean_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
    dtype = draw(S.float_dtypes())
    base = draw(hnp.arrays(dtype, shape, elements=S.elements(dtype, nan=True, inf=True)))
    mshape = draw(S.broadcast_value_shapes(shape))
    mdt = draw(st.sampled_from([np.bool_, np.int32, np.float32, np.float64]))
    if mdt is np.bool_:
        mask = draw(hnp.arrays(np.bool_, mshape))
    else:
        mask = draw(hnp.arrays(mdt, mshape, elements=st.sampled_from([0, 1, 2, -3]) if mdt is np.int32
                               else st.sampled_from([0.0, -0.0, 1.0, 0.5, -2.0])))
    keep = np.broadcast_to(mask != 0, shape)
    if draw(st.integers(0, 5)) != 5:
        # kept entries finite (NaN and inf only where masked out), mostly
        finite = draw(hnp.arrays(dtype, shape, elements=S.elements(dtype)))
        base = np.where(keep & ~np.isfinite(base), finite, base).astype(dtype)
    x = draw(S.laid_out(base))
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                          st.sets(st.integers(0, len(shape) - 1), min_size=1).map(tuple)))
    return Case("result = ub.masked_mean(x, mask, axis=axis)",
                {"x": x, "mask": draw(S.laid_out(mask, ("C", "transposed"))), "axis": axis})


@check("masked_mean", "masked_mean", masked_mean_cases())
def verify_masked_mean(case, backend, device):
    """The mean over axis of the entries where mask is nonzero; no entry: 0;
    a masked-out NaN or inf never reaches the result; equals numpy within the
    sum tolerance."""
    got = case.run(backend, device)
    v = case.values()
    x, mask, axis = v["x"], v["mask"], v["axis"]
    keep = np.broadcast_to(mask != 0, x.shape)
    ax = tuple(range(x.ndim)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    x64 = np.where(keep, x.astype(np.float64), 0.0)
    count = keep.sum(axis=ax)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = x64.sum(axis=ax) / np.maximum(count, 1)
        absmean = np.abs(x64).sum(axis=ax) / np.maximum(count, 1)
    check_meta(got, np.asarray(mean).astype(x.dtype))
    clean = np.all(np.where(keep, np.isfinite(x), True), axis=ax)
    leaked = clean & ~np.isfinite(got)
    if np.any(leaked):
        i = tuple(int(j) for j in np.argwhere(np.atleast_1d(leaked))[0]) if got.ndim else ()
        fail(f"result {show(got[i])} at index {i} is not finite although every kept entry is: "
             f"a masked-out NaN or inf leaked in", index=i or None, got=got)
    tol = T.sum_tol(np.where(np.isfinite(absmean), absmean, 0), count, x.dtype)
    assert_close(got, np.asarray(mean).astype(x.dtype), tol, "values (against the float64 masked mean)")
    assert_close(got, case.reference(), tol)


@st.composite
def pad_ids_cases(draw):
    pad_id, shift = draw(st.sampled_from([(0, 1), (-1, 0), (0, 2)]))
    V = draw(st.integers(shift + 1, 12))
    rows = draw(S.ragged_rows(V, shift))
    width = max((len(r) for r in rows), default=0)
    length = draw(st.one_of(st.none(), st.integers(width, width + 20)))
    dtype = draw(S.float_dtypes())
    d = draw(st.integers(0, 4))
    table = draw(S.float_arrays((V, d), dtype, lo=-100, hi=100, layouts=("C", "transposed")))
    return Case("ids = ub.pad_ids(rows, pad_id=pad_id, shift=shift, length=length)\n"
                "result = ub.embedding_mean(table, ids, pad_id=pad_id)",
                {"rows": rows, "pad_id": pad_id, "shift": shift, "length": length, "table": table})


@check("pad_ids", "pad_ids", pad_ids_cases())
def verify_pad_ids(case, backend, device):
    """pad_ids pads ragged rows at the end (int64, ids shifted so pad_id is
    free, as wide as the longest row or length); embedding_mean over it is the
    float64 mean of table[id + shift] over each ragged row."""
    import unibackend as ub

    v = case.values()
    rows, pad_id, shift, length, table = v["rows"], v["pad_id"], v["shift"], v["length"], v["table"]
    width = length if length is not None else max((len(r) for r in rows), default=0)
    want_ids = np.full((len(rows), width), pad_id, np.int64)
    for i, r in enumerate(rows):
        want_ids[i, :len(r)] = np.asarray(r, np.int64) + shift
    assert_exact(ub.pad_ids(rows, pad_id=pad_id, shift=shift, length=length), want_ids, "padded ids")
    got = case.run(backend, device)
    mean, absmean = embedding_oracle(table, want_ids, pad_id)
    tol = T.sum_tol(absmean, width, table.dtype)
    assert_close(got, mean.astype(table.dtype), tol, "values (against the float64 mean of each ragged row)")
    assert_close(got, case.reference(), tol)


# ---------------------------------------------------------------------------
# set_subtensor, inc_subtensor

@st.composite
def subtensor_cases(draw, op):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
    dtype = draw(S.float_dtypes())
    x = draw(S.float_arrays(shape, dtype, lo=-100, hi=100, nan=op == "set_subtensor"))
    index = draw(S.subtensor_indices(shape))
    sel = np.empty(shape, np.int8)[index].shape
    vshape = draw(S.broadcast_value_shapes(sel))
    vdt = draw(S.float_dtypes())
    if vshape == () and draw(st.booleans()):
        value = float(draw(S.elements(vdt, lo=-100, hi=100)))
    elif draw(st.integers(0, 2)) == 0:
        # distinct values: a position named twice must show which write won
        v = np.arange(1, int(np.prod(vshape)) + 1, dtype=vdt).reshape(vshape)
        value = Arg(v, S.array_code(v))
    else:
        value = draw(S.float_arrays(vshape, vdt, lo=-100, hi=100, nan=op == "set_subtensor",
                                    layouts=("C", "transposed")))
    return Case(f"result = ub.{op}(x, index, value)", {"x": x, "index": index, "value": value})


def _writes(x, index, value):
    """(flat positions, broadcast values) of ``x[index] = value`` in numpy's order."""
    pos = np.arange(x.size, dtype=np.int64).reshape(x.shape)[index].reshape(-1)
    vals = np.broadcast_to(np.asarray(value), np.empty(x.shape, np.int8)[index].shape).reshape(-1)
    return pos, vals


@check("set_subtensor", "set_subtensor", subtensor_cases("set_subtensor"))
def verify_set_subtensor(case, backend, device):
    """A copy of x with x[index] = value (numpy's index meaning; a position
    named twice: the last write wins); every value exact; equals numpy."""
    got = case.run(backend, device)
    v = case.values()
    x, index, value = v["x"], v["index"], v["value"]
    want = x.copy().reshape(-1)
    pos, vals = _writes(x, index, value)
    for p, val in zip(pos, vals):  # one write at a time: the last one wins
        want[p] = val
    assert_exact(got, want.reshape(x.shape), "values (against one write at a time, the last wins)")
    assert_exact(got, case.reference())


@check("inc_subtensor", "inc_subtensor", subtensor_cases("inc_subtensor"))
def verify_inc_subtensor(case, backend, device):
    """A copy of x with x[index] += value, a position named twice getting
    every addition (np.add.at); within the sum tolerance; equals numpy."""
    got = case.run(backend, device)
    v = case.values()
    x, index, value = v["x"], v["index"], v["value"]
    pos, vals = _writes(x, index, value)
    want = x.astype(np.float64).reshape(-1)
    absum = np.abs(want)
    terms = np.ones(x.size)
    vals64 = vals.astype(x.dtype).astype(np.float64)
    np.add.at(want, pos, vals64)
    np.add.at(absum, pos, np.abs(vals64))
    np.add.at(terms, pos, 1)
    tol = T.sum_tol(absum, terms, x.dtype).reshape(x.shape)
    assert_close(got, want.reshape(x.shape).astype(x.dtype), tol,
                 "values (against np.add.at in float64)")
    assert_close(got, case.reference(), tol)


# ---------------------------------------------------------------------------
# gradients (autodiff backends): ub.grad against the analytic gradient in
# float64 and a float64 finite difference of the numpy reference


def _fd_grad(case, argname, linear):
    """Central finite difference in float64 of the case's ``f`` run on the
    numpy reference: 2 points for a linear f (exact up to rounding), else 4."""
    import inspect

    import unibackend as ub
    from .cases import function_of

    vals = {k: (a.astype(np.float64) if getattr(a, "dtype", None) is not None and a.dtype.kind == "f" else a)
            for k, a in case.values().items()}
    f = function_of(case.stmt.split("\nresult =")[0])
    params = list(inspect.signature(f).parameters)
    x0 = vals[argname]
    scale = max(1.0, float(np.max(np.abs(np.where(np.isfinite(x0), x0, 0)), initial=0)))
    h = 2.0 ** np.ceil(np.log2(scale)) if linear else T.FD_STEP * scale
    g = np.zeros_like(x0)
    with ub.use_backend("numpy"):
        def at(i, step):
            x = x0.copy()
            x[i] += step
            return float(np.asarray(f(*[x if p == argname else vals[p] for p in params])))
        for i in np.ndindex(x0.shape):
            if linear:
                g[i] = (at(i, h) - at(i, -h)) / (2 * h)
            else:
                g[i] = (8 * (at(i, h) - at(i, -h)) - (at(i, 2 * h) - at(i, -2 * h))) / (12 * h)
    return g


def _verify_grad(case, backend, device, argname, abs_bound, n_terms, linear=True, fd_ok=True, props=None):
    """The gradient ``ub.grad`` gives on ``backend`` against the case's
    analytic float64 gradient (its numpy ``want`` statement) and against a
    float64 finite difference of the numpy reference."""
    got = case.run(backend, device)
    x = case.values()[argname]
    if got.shape != x.shape:
        fail(f"the gradient has shape {got.shape}, want {x.shape} (the shape of {argname})", got=got)
    if got.dtype != x.dtype:
        fail(f"the gradient has dtype {got.dtype}, want {x.dtype} (the dtype of {argname})", got=got)
    if props is not None:
        props(got)
    tol = T.sum_tol(abs_bound, n_terms, x.dtype)
    assert_close(got, case.reference().astype(x.dtype), tol, "gradient entries (against the analytic gradient in float64)")
    if fd_ok:
        fd = _fd_grad(case, argname, linear)
        assert_close(got, fd.astype(x.dtype), np.maximum(tol, T.fd_tol(abs_bound)),
                     "gradient entries (against a float64 finite difference of the numpy reference)")
    return got


GRAD_SPARSE_1D = ("def f(w, x, v):\n    return ub.dot(ub.sparse_dot(x, w), v)\n\nresult = ub.grad(f)(w, x, v)",
                  "result = x.toarray().astype(np.float64).T @ v.astype(np.float64)")
GRAD_SPARSE_2D = ("def f(w, x, u, v):\n    return ub.dot(ub.dot(ub.sparse_dot(x, w), u), v)\n\n"
                  "result = ub.grad(f)(w, x, u, v)",
                  "result = x.toarray().astype(np.float64).T @ np.outer(v, u).astype(np.float64)")


@st.composite
def grad_sparse_dot_cases(draw):
    dtype = draw(S.float_dtypes())
    x, dense = draw(S.sparse_matrices(dtype, max_rows=4, max_cols=8))
    n, N = dense.shape
    M = draw(st.integers(0, 4))
    one_d = draw(st.integers(0, 3)) == 0
    w = draw(S.float_arrays((N,) if one_d else (N, M), dtype, lo=-10, hi=10))
    u, v = _cotangent_args(draw, dtype, [(M,), (n,)])
    args = {"x": x, "w": w, "v": Arg(v, S.array_code(v))}
    if one_d:
        stmt, want = GRAD_SPARSE_1D
    else:
        args["u"] = Arg(u, S.array_code(u))
        stmt, want = GRAD_SPARSE_2D
    return Case(stmt, args, want=want)


@check("grad sparse_dot", "sparse_dot", grad_sparse_dot_cases(), needs=("autodiff", "sparse"))
def verify_grad_sparse_dot(case, backend, device):
    """The gradient of <sparse_dot(x, w), g> w.r.t. w is x^T g (g = v u^T)."""
    v = case.values()
    x, w = v["x"], v["w"]
    xa, _ = _abs_dense(x)
    g = v["v"].astype(np.float64)
    if "u" in v:
        g = np.outer(g, v["u"].astype(np.float64))
    per_col = np.bincount(x.tocoo().col, minlength=x.shape[1]).reshape((-1,) + (1,) * (w.ndim - 1))
    _verify_grad(case, backend, device, "w", xa.T @ np.abs(g), per_col + 2)


@st.composite
def grad_embedding_cases(draw):
    V = draw(st.integers(1, 6))
    d = draw(st.integers(0, 4))
    dtype = draw(S.float_dtypes())
    table = draw(S.float_arrays((V, d), dtype, lo=-10, hi=10, layouts=("C", "transposed")))
    ids, pad_id = draw(S.padded_ids(V, draw(S.id_dtypes()), max_rows=4, max_len=20))
    n = ids.value.shape[0]
    u, v = _cotangent_args(draw, dtype, [(d,), (n,)])
    stmt = ("def f(table, ids, pad_id, u, v):\n"
            "    return ub.dot(ub.dot(ub.embedding_mean(table, ids, pad_id=pad_id), u), v)\n\n"
            "result = ub.grad(f)(table, ids, pad_id, u, v)")
    want = ("sel = np.zeros((ids.shape[0], table.shape[0]))  # row i: 1/count at each non-pad id\n"
            "for i, row in enumerate(ids):\n"
            "    real = row[row != pad_id]\n"
            "    np.add.at(sel[i], real, 1.0 / max(real.size, 1))\n"
            "result = sel.T @ np.outer(v, u).astype(np.float64)")
    return Case(stmt, {"table": table, "ids": ids, "pad_id": pad_id,
                       "u": Arg(u, S.array_code(u)), "v": Arg(v, S.array_code(v))}, want=want)


@check("grad embedding_mean", "embedding_mean", grad_embedding_cases(), needs=("autodiff",))
def verify_grad_embedding_mean(case, backend, device):
    """The gradient w.r.t. the table: row r gets sum_i g_i * (times r occurs
    among row i's non-pad ids) / (row i's count); the pad_id row exactly 0."""
    v = case.values()
    table, ids, pad_id = v["table"], v["ids"], v["pad_id"]
    g = np.outer(v["v"].astype(np.float64), v["u"].astype(np.float64))
    sel = np.zeros((ids.shape[0], table.shape[0]))
    for i in range(ids.shape[0]):
        real = ids[i][ids[i] != pad_id]
        np.add.at(sel[i], real, 1.0 / max(real.size, 1))
    def pad_row_zero(got):
        if 0 <= pad_id < table.shape[0] and (got[pad_id] != 0).any():
            fail(f"the gradient of the pad_id row {pad_id} is {show(got[pad_id])}, want exactly 0",
                 index=(pad_id,), got=got)

    _verify_grad(case, backend, device, "table", sel.T @ np.abs(g), ids.shape[1] + 2,
                 props=pad_row_zero)


@st.composite
def grad_topk_gate_cases(draw):
    n = draw(st.integers(0, 4))
    E = draw(st.integers(1, 20))
    axis = draw(st.sampled_from([-1, 0])) if n else -1
    dtype = draw(S.float_dtypes())
    x = draw(S.float_arrays((n, E), dtype, lo=-5, hi=5, layouts=("C", "transposed")))
    k = draw(st.integers(1, (n, E)[axis]))
    u, v = _cotangent_args(draw, dtype, [(E,), (n,)])  # the cotangent g = v u^T
    stmt = ("def f(logits, k, axis, u, v):\n    return ub.dot(ub.dot(ub.topk_gate(logits, k, axis=axis), u), v)\n\n"
            "result = ub.grad(f)(logits, k, axis, u, v)")
    want = ("with ub.use_backend('numpy'):\n"
            "    s = ub.topk_gate(logits.astype(np.float64), k, axis=axis)\n"
            "g = np.outer(v, u).astype(np.float64)\n"
            "result = s * (g - (s * g).sum(axis=axis, keepdims=True))")
    return Case(stmt, {"logits": x, "k": k, "axis": axis,
                       "u": Arg(u, S.array_code(u)), "v": Arg(v, S.array_code(v))}, want=want)


@check("grad topk_gate", "topk_gate", grad_topk_gate_cases(), needs=("autodiff",))
def verify_grad_topk_gate(case, backend, device):
    """The gradient w.r.t. the logits: s * (g - <s, g>) along the axis, where s
    is the gate (0 off the k kept logits); finite differences where no tie
    sits at the k-th place."""
    v = case.values()
    x, k, axis = v["logits"], v["k"], v["axis"]
    g = np.outer(v["v"].astype(np.float64), v["u"].astype(np.float64))
    keep = kept_mask(x, k, axis)
    z = np.where(keep, x.astype(np.float64), -np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(z, axis=axis, keepdims=True) if z.size else z
        e = np.where(keep, np.exp(z - m), 0.0)
        s = e / e.sum(axis=axis, keepdims=True) if z.size else e
    bound = s * (np.abs(g) + (s * np.abs(g)).sum(axis=axis, keepdims=True))
    # finite differences only where a step cannot change which logits are kept
    order, rows = descending_order(x, axis)
    srt = np.take_along_axis(rows.astype(np.float64), order, axis=-1)
    scale = max(1.0, float(np.max(np.abs(x), initial=0)))
    gaps = srt[:, k - 1] - srt[:, k] if rows.shape[-1] > k else np.full(rows.shape[0], np.inf)
    fd_ok = bool(np.all(gaps > 8 * T.FD_STEP * scale))
    # the softmax bound's (n + |x - max|) terms, with |x - max| <= 2 max|x|
    spread = float(np.max(np.abs(x), initial=0)) * 2 + x.shape[axis] + 2
    _verify_grad(case, backend, device, "logits", bound, spread, linear=False, fd_ok=fd_ok)


@st.composite
def grad_masked_mean_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=5))
    dtype = draw(S.float_dtypes())
    mask = draw(hnp.arrays(np.bool_, shape))
    finite = draw(hnp.arrays(dtype, shape, elements=S.elements(dtype, lo=-10, hi=10)))
    junk = draw(hnp.arrays(dtype, shape, elements=S.elements(dtype, nan=True, inf=True)))
    x = draw(S.laid_out(np.where(mask, finite, junk).astype(dtype), ("C", "transposed")))
    axis = draw(st.sampled_from([None, 0, 1]))
    args = {"x": x, "mask": Arg(mask, S.array_code(mask)), "axis": axis}
    if axis is None:
        stmt = "def f(x, mask, axis):\n    return ub.masked_mean(x, mask, axis=axis)\n\nresult = ub.grad(f)(x, mask, axis)"
        want = "result = np.where(mask, 1.0 / max(mask.sum(), 1), 0.0)"
    else:
        v = _cotangent_args(draw, dtype, [(shape[1 - axis],)])[0]
        args["v"] = Arg(v, S.array_code(v))
        stmt = ("def f(x, mask, axis, v):\n    return ub.dot(ub.masked_mean(x, mask, axis=axis), v)\n\n"
                "result = ub.grad(f)(x, mask, axis, v)")
        want = ("count = np.expand_dims(mask.sum(axis=axis), axis)\n"
                "result = np.where(mask, np.expand_dims(v.astype(np.float64), axis) / np.maximum(count, 1), 0.0)")
    return Case(stmt, args, want=want)


@check("grad masked_mean", "masked_mean", grad_masked_mean_cases(), needs=("autodiff",))
def verify_grad_masked_mean(case, backend, device):
    """The gradient w.r.t. x: g / count where the mask holds, exactly 0 (not
    NaN) where it does not, even under a masked-out NaN or inf."""
    v = case.values()
    x, mask, axis = v["x"], v["mask"], v["axis"]
    if axis is None:
        count = np.broadcast_to(mask.sum(), x.shape)
        g = np.ones(x.shape)
    else:
        count = np.broadcast_to(np.expand_dims(mask.sum(axis=axis), axis), x.shape)
        g = np.broadcast_to(np.expand_dims(v["v"].astype(np.float64), axis), x.shape)
    bound = np.where(mask, np.abs(g) / np.maximum(count, 1), 0.0)

    def masked_out_zero(got):
        if (got[~mask] != 0).any():
            i = tuple(int(j) for j in np.argwhere(~mask & (got != 0))[0])
            fail(f"the gradient at masked-out index {i} is {show(got[i])}, want exactly 0", index=i, got=got)

    _verify_grad(case, backend, device, "x", bound, count + 2, props=masked_out_zero)


# ---------------------------------------------------------------------------
# explicit cases: the known trouble, run first on every run whatever the
# profile draws (each one a difference some framework has)

def _arr(values, dtype=np.float64):
    a = np.array(values, dtype=dtype)
    return Arg(a, S.array_code(a))


def _ties40(dtype=np.float32):
    x = np.zeros(40, dtype)
    x[[3, 17, 30]] = 1  # torch's CPU topk keeps [30, 17] for k=2; the contract wants [3, 17]
    return Arg(x, S.array_code(x))


def _coo_duplicates():
    import scipy.sparse as sp

    data, row, col = np.array([1.0, 2.0, 0.0, -1.0]), np.array([0, 0, 1, 1]), np.array([1, 1, 0, 2])
    x = sp.coo_matrix((data, (row, col)), shape=(3, 3))
    return Arg(x, f"sp.coo_matrix(({S.array_code(data)}, ({S.array_code(row)}, {S.array_code(col)})), shape=(3, 3))")


def _csr_unsorted():
    import scipy.sparse as sp

    data, indices, indptr = np.array([3.0, 1.0, 2.0, 5.0]), np.array([2, 0, 2, 1]), np.array([0, 3, 3, 4])
    x = sp.csr_matrix((data, indices, indptr), shape=(3, 3))
    return Arg(x, f"sp.csr_matrix(({S.array_code(data)}, {S.array_code(indices)}, {S.array_code(indptr)}), shape=(3, 3))")


_ARGSORT = "result = ub.argsort(x, axis=axis, descending=descending)"
_TOPK = "result = ub.keep_topk(x, k, axis=axis)"
_TOPK_FILL = "result = ub.keep_topk(x, k, axis=axis, fill=fill)"
_SPECIALS = [np.nan, 1.0, -np.inf, np.inf, -0.0, 0.0, np.nan, 1.0, 0.0, -0.0]
EXAMPLES = {
    "argsort": [Case(_ARGSORT, {"x": _ties40(), "axis": -1, "descending": d}) for d in (False, True)]
    + [Case(_ARGSORT, {"x": _arr(_SPECIALS), "axis": 0, "descending": d}) for d in (False, True)],
    "keep_topk": [
        Case(_TOPK, {"x": _ties40(), "k": 2, "axis": -1}),
        Case(_TOPK, {"x": _arr([1.0, np.nan, 2.0, np.nan, 0.0]), "k": 3, "axis": 0}),  # TF's top_k ranks NaN anywhere
        Case(_TOPK_FILL, {"x": _arr(_SPECIALS, np.float32), "k": 5, "axis": 0, "fill": np.nan}),
        Case(_TOPK_FILL, {"x": _arr([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0]]), "k": 1, "axis": 0, "fill": 0.0}),
        Case(_TOPK, {"x": _arr([[2.0, 1.0, 2.0]]), "k": 0, "axis": 1}),
        Case(_TOPK, {"x": _arr([[2.0, 1.0, 2.0]]), "k": 3, "axis": 1}),
    ],
    "topk_gate": [
        Case("result = ub.topk_gate(logits, k, axis=axis)", {"logits": _ties40(), "k": 2, "axis": -1}),
        Case("result = ub.topk_gate(logits, k, axis=axis)", {"logits": _arr([[0.0, 0.0, 0.0]]), "k": 2, "axis": 1}),
    ],
    "softmax": [Case("result = ub.softmax(x, axis=axis)",
                     {"x": _arr([[-np.inf, -np.inf], [0.0, -np.inf]], np.float32), "axis": a}) for a in (0, 1)],
    "sparse_dot": [Case("result = ub.sparse_dot(x, w)", {"x": _coo_duplicates(), "w": _arr(np.eye(3)[:, :2])}),
                   Case("result = ub.sparse_dot(x, w)", {"x": _csr_unsorted(), "w": _arr([1.0, 10.0, 100.0])})],
    "dot": [Case("result = ub.dot(x, w)", {"x": _coo_duplicates(), "w": _arr([1.0, 10.0, 100.0], np.float32)}),
            Case("result = ub.dot(a, b)", {"a": _arr(np.arange(12.0).reshape(2, 2, 3)), "b": _arr(np.ones((3, 2)))})],
    "embedding_mean": [
        Case("result = ub.embedding_mean(table, ids, pad_id=pad_id)",
             {"table": _arr(np.arange(8.0).reshape(4, 2)), "ids": _arr([[1, 1, 3, p], [p, p, p, p], [2, p, 2, p]], dt),
              "pad_id": p}, note="2")
        for p, dt in ((0, np.int64), (-1, np.int32), (7, np.int64))],
    "masked_mean": [
        Case("result = ub.masked_mean(x, mask, axis=axis)",
             {"x": _arr([[np.nan, 1.0, np.inf, 2.0], [np.nan, -np.inf, 3.0, 4.0]]),
              "mask": _arr(m, mdt), "axis": ax})
        for m, mdt, ax in (([[False, True, False, True], [False, False, False, False]], np.bool_, 1),
                           ([0.0, -0.0, 1.0, 0.5], np.float64, None),
                           ([[0, 0, 0, 0]], np.int32, 0))],
    "pad_ids": [Case("ids = ub.pad_ids(rows, pad_id=pad_id, shift=shift, length=length)\n"
                     "result = ub.embedding_mean(table, ids, pad_id=pad_id)",
                     {"rows": [[], [3, 3, 1], [0]], "pad_id": 0, "shift": 1, "length": 5,
                      "table": _arr(np.arange(10.0).reshape(5, 2))})],
    "set_subtensor": [Case("result = ub.set_subtensor(x, index, value)",
                           {"x": _arr(np.zeros(5)), "index": np.array([1, 1, -4]), "value": _arr([1.0, 2.0, 3.0])}),
                      Case("result = ub.set_subtensor(x, index, value)",
                           {"x": _arr(np.zeros((3, 2))), "index": (slice(None, None, -2), 1), "value": _arr([5.0, 6.0])})],
    "inc_subtensor": [Case("result = ub.inc_subtensor(x, index, value)",
                           {"x": _arr(np.zeros(5)), "index": np.array([1, 1, -4]), "value": _arr([1.0, 2.0, 3.0])}),
                      Case("result = ub.inc_subtensor(x, index, value)",
                           {"x": _arr(np.zeros((2, 3), np.float32)), "index": (Ellipsis, np.array([0, 0])),
                            "value": 1.0})],
}

def _csr_array():
    import scipy.sparse as sp

    data, indices, indptr = np.array([1.0, 2.0, 2.0], np.float32), np.array([1, 0, 1]), np.array([0, 1, 3])
    x = sp.csr_array((data, indices, indptr), shape=(2, 2))
    return Arg(x, f"sp.csr_array(({S.array_code(data)}, {S.array_code(indices)}, {S.array_code(indptr)}), shape=(2, 2))")


EXAMPLES["grad sparse_dot"] = [
    Case(GRAD_SPARSE_2D[0], {"x": _coo_duplicates(), "w": _arr(np.arange(6.0).reshape(3, 2)),
                             "v": _arr([1.0, -2.0, 0.5]), "u": _arr([1.0, 3.0])}, want=GRAD_SPARSE_2D[1]),
    # a scipy sparse *array* as a traced argument (theano's numba linker once could not type it)
    Case(GRAD_SPARSE_1D[0], {"x": _csr_array(), "w": _arr([1.0, 2.0], np.float32), "v": _arr([1.0, 1.0], np.float32)},
         want=GRAD_SPARSE_1D[1]),
]
for _name, _cases in EXAMPLES.items():
    CHECKS[_name].examples = tuple(_cases)


OPS = tuple(dict.fromkeys(c.op for c in CHECKS.values()))
