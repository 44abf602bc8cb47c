"""The padded-embedding mean and its parts: embedding_mean, masked_mean,
pad_ids, and the gradients of embedding_mean and masked_mean.

The oracle of each mean is a float64 loop over the kept entries, within the
sum tolerance of :mod:`..tolerances`.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .. import strategies as S
from .. import tolerances as T
from ..cases import Arg, Case, Disagreement, assert_close, assert_exact, check_meta, fail, show
from .base import arr, check
from .gradient import cotangent_args, verify_grad


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


# ---------------------------------------------------------------------------
# embedding_mean

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


# pad_id 0 inside the table, -1 below it, 7 above it; a repeated id; a row of only padding
EMBEDDING_EXAMPLES = [
    Case("result = ub.embedding_mean(table, ids, pad_id=pad_id)",
         {"table": arr(np.arange(8.0).reshape(4, 2)), "ids": arr([[1, 1, 3, p], [p, p, p, p], [2, p, 2, p]], dt),
          "pad_id": p}, note="2")
    for p, dt in ((0, np.int64), (-1, np.int32), (7, np.int64))]


@check("embedding_mean", "embedding_mean", embedding_cases(), examples=EMBEDDING_EXAMPLES)
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


# ---------------------------------------------------------------------------
# masked_mean

@st.composite
def masked_mean_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
    dtype = draw(S.float_dtypes())
    base = draw(hnp.arrays(dtype, shape, elements=S.elements(dtype, nan=True, inf=True)))
    mshape = draw(S.broadcast_value_shapes(shape))
    mdt = draw(st.sampled_from([np.bool_, np.int32, np.uint8, np.int64]))
    if mdt is np.bool_:
        mask = draw(hnp.arrays(np.bool_, mshape))
    else:  # an integer mask: 0 is False, any other value True
        mask = draw(hnp.arrays(mdt, mshape, elements=st.sampled_from([0, 1, 2] if mdt is np.uint8 else [0, 1, 2, -3])))
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


# NaN and inf under the mask; masks bool and int, a row with no entry
MASKED_MEAN_EXAMPLES = [
    Case("result = ub.masked_mean(x, mask, axis=axis)",
         {"x": arr([[np.nan, 1.0, np.inf, 2.0], [np.nan, -np.inf, 3.0, 4.0]]),
          "mask": arr(m, mdt), "axis": ax})
    for m, mdt, ax in (([[False, True, False, True], [False, False, False, False]], np.bool_, 1),
                       ([0, 0, 1, 5], np.int64, None),
                       ([[0, 0, 0, 0]], np.int32, 0))] + [
    # a negative number is nonzero, so True
    Case("result = ub.masked_mean(x, mask, axis=axis)",
         {"x": arr([[1.0, 2.0, 4.0, np.nan]]), "mask": arr([[1, -3, 0, 0]], np.int32), "axis": 1})]


@check("masked_mean", "masked_mean", masked_mean_cases(), examples=MASKED_MEAN_EXAMPLES)
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


# ---------------------------------------------------------------------------
# pad_ids

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


PAD_IDS_EXAMPLES = [
    Case("ids = ub.pad_ids(rows, pad_id=pad_id, shift=shift, length=length)\n"
         "result = ub.embedding_mean(table, ids, pad_id=pad_id)",
         {"rows": [[], [3, 3, 1], [0]], "pad_id": 0, "shift": 1, "length": 5,
          "table": arr(np.arange(10.0).reshape(5, 2))})]


# not compiled: pad_ids turns host-side ragged lists into a numpy matrix
@check("pad_ids", "pad_ids", pad_ids_cases(), examples=PAD_IDS_EXAMPLES, compiles=False)
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
# grad embedding_mean

@st.composite
def grad_embedding_cases(draw):
    V = draw(st.integers(1, 6))
    d = draw(st.integers(0, 4))
    dtype = draw(S.float_dtypes())
    table = draw(S.float_arrays((V, d), dtype, lo=-10, hi=10, layouts=("C", "transposed")))
    ids, pad_id = draw(S.padded_ids(V, draw(S.id_dtypes()), max_rows=4, max_len=20))
    n = ids.value.shape[0]
    u, v = cotangent_args(draw, dtype, [(d,), (n,)])
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

    verify_grad(case, backend, device, "table", sel.T @ np.abs(g), ids.shape[1] + 2, props=pad_row_zero)


# ---------------------------------------------------------------------------
# grad masked_mean

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
        v = cotangent_args(draw, dtype, [(shape[1 - axis],)])[0]
        args["v"] = Arg(v, S.array_code(v))
        stmt = ("def f(x, mask, axis, v):\n    return ub.dot(ub.masked_mean(x, mask, axis=axis), v)\n\n"
                "result = ub.grad(f)(x, mask, axis, v)")
        want = ("count = np.expand_dims(mask.sum(axis=axis), axis)\n"
                "result = np.where(mask, np.expand_dims(v.astype(np.float64), axis) / np.maximum(count, 1), 0.0)")
    return Case(stmt, args, want=want)


GRAD_MASKED_MEAN_EXAMPLES = [
    # a NaN under the mask, two kept entries per row: (1/2, 0, 1/2) times v, in every mode
    Case("def f(x, mask, axis, v):\n    return ub.dot(ub.masked_mean(x, mask, axis=axis), v)\n\n"
         "result = ub.grad(f)(x, mask, axis, v)",
         {"x": arr([[1.0, np.nan, 2.0], [0.5, np.inf, -1.0]]), "mask": arr([[1, 0, 1], [1, 0, 1]], np.bool_),
          "axis": 1, "v": arr([1.0, -3.0])},
         want="count = np.expand_dims(mask.sum(axis=axis), axis)\n"
              "result = np.where(mask, np.expand_dims(v.astype(np.float64), axis) / np.maximum(count, 1), 0.0)"),
]


@check("grad masked_mean", "masked_mean", grad_masked_mean_cases(), needs=("autodiff",),
       examples=GRAD_MASKED_MEAN_EXAMPLES)
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

    verify_grad(case, backend, device, "x", bound, count + 2, props=masked_out_zero)
