"""The dask backend: lazy results, the numpy backend's answers whatever the
chunking, value checks at compute time (threads and a 2-process cluster)."""
from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import numpy_ref
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import unibackend as ub
from unibackend.conformance.tolerances import assert_within

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
sp = pytest.importorskip("scipy.sparse")

from unibackend.plugins.dask_backend import LargeChunkWarning, chunking  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def on_dask(fn, *args, **kwargs):
    """``fn`` on the dask backend: a lazy dask array, then its numpy value."""
    with ub.use_backend("dask"):
        out = fn(*args, **kwargs)
    assert isinstance(out, da.Array), type(out)
    return ub.to_numpy(out)


@st.composite
def chunks_for(draw, n):
    """Chunk sizes of an axis of ``n``: cut anywhere (chunks of one element,
    uneven chunks, edges inside runs of equal values)."""
    if n == 0:
        return (0,)
    cuts = draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1))
    out, run = [], 1
    for c in cuts:
        if c:
            out.append(run)
            run = 1
        else:
            run += 1
    return tuple(out + [run])


@st.composite
def chunked(draw, x):
    """``x`` as a dask array with drawn chunks on every axis."""
    return da.from_array(x, chunks=tuple(draw(chunks_for(n)) for n in x.shape))


TIES = st.sampled_from([-1.0, 0.0, -0.0, 1.0, 2.0, np.nan, np.inf, -np.inf])


@st.composite
def tied_arrays(draw, min_dims=1, max_dims=3):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=7))
    x = draw(hnp.arrays(dtype, shape, elements=TIES))
    return x, draw(st.integers(0, len(shape) - 1))


# -- the plugin --------------------------------------------------------------

def test_backends_lists_dask_with_sparse_and_lazy_and_no_autodiff():
    info = {b.name: b for b in ub.backends()}["dask"]
    assert info.installed, info.reason
    assert set(info.capabilities) == {"sparse", "lazy"}
    with ub.use_backend("dask"), pytest.raises(ub.CapabilityError, match="autodiff"):
        ub.grad(lambda w: ub.dot(w, w))(np.ones(3))


def test_import_unibackend_does_not_import_dask():
    code = "import sys, unibackend as ub; ub.backends(); assert 'dask' not in sys.modules, 'dask imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_dask_array_selects_dask_while_numpy_is_in_force():
    x = da.from_array(np.array([[3.0, 1.0, 2.0]]), chunks=(1, 2))
    out = ub.argsort(x, axis=-1)
    assert isinstance(out, da.Array)
    np.testing.assert_array_equal(ub.to_numpy(out), [[1, 2, 0]])


def test_no_op_computes_anything_when_called():
    """Every op builds a graph only: the scheduler is never called until to_numpy."""
    calls = []

    def counting_get(dsk, keys, **kw):
        calls.append(keys)
        return dask.get(dsk, keys, **kw)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5))
    ids = rng.integers(0, 6, (4, 3))
    csr = sp.random(4, 6, density=0.5, format="csr", random_state=0)
    with ub.use_backend("dask"), chunking(2), dask.config.set(scheduler=counting_get):
        outs = [ub.dot(x, x.T), ub.sparse_dot(csr, x), ub.argsort(x, 0), ub.keep_topk(x, 2, 0),
                ub.softmax(x, 0), ub.topk_gate(x, 2), ub.masked_mean(x, x > 0, 0),
                ub.embedding_mean(x, ids), ub.set_subtensor(x, ([0, 0], [1, 1]), [1.0, 2.0]),
                ub.inc_subtensor(x, (slice(1, 3), 0), 1.0), ub.embedding_mean(x, ids + 10)]
        assert calls == []
        assert all(isinstance(o, da.Array) for o in outs)
        ub.to_numpy(outs[0])
    assert len(calls) == 1


def test_asarray_chunks_numpy_inputs_by_the_chunking_in_force():
    with ub.use_backend("dask"):
        with chunking("uneven"):
            assert ub.asarray(np.zeros((7, 2))).chunks == ((1, 3, 2, 1), (1, 1))
        with chunking(3):
            assert ub.asarray(np.zeros(7)).chunks == ((3, 3, 1),)


# -- chunk-invariance (property tests) ---------------------------------------

@SETTINGS
@given(data=st.data(), xa=tied_arrays(), descending=st.booleans())
def test_argsort_is_numpys_whatever_the_chunking(data, xa, descending):
    """argsort on any chunking equals the numpy backend's (stable, NaN largest, -0.0 == 0.0)."""
    x, axis = xa
    got = on_dask(ub.argsort, data.draw(chunked(x)), axis=axis, descending=descending)
    np.testing.assert_array_equal(got, numpy_ref(ub.argsort, x, axis=axis, descending=descending))


@SETTINGS
@given(data=st.data(), xa=tied_arrays())
def test_keep_topk_is_numpys_whatever_the_chunking(data, xa):
    """keep_topk keeps the same entries (ties across chunk edges: the lower index) as numpy."""
    x, axis = xa
    k = data.draw(st.integers(0, x.shape[axis]))
    got = on_dask(ub.keep_topk, data.draw(chunked(x)), k, axis=axis, fill=-7.0)
    np.testing.assert_array_equal(got, numpy_ref(ub.keep_topk, x, k, axis=axis, fill=-7.0))


def test_keep_topk_pinned_ties_across_a_chunk_edge_keep_the_lower_index():
    x = da.from_array(np.array([1.0, 1.0, 1.0, 1.0, np.nan]), chunks=(1, 3, 1))
    np.testing.assert_array_equal(ub.to_numpy(ub.keep_topk(x, 3, fill=0.0)), [1.0, 1.0, 0.0, 0.0, np.nan])
    np.testing.assert_array_equal(ub.to_numpy(ub.argsort(x, descending=True)), [4, 0, 1, 2, 3])


@SETTINGS
@given(data=st.data(), xa=tied_arrays())
def test_softmax_and_topk_gate_are_numpys_whatever_the_chunking(data, xa):
    """softmax across chunks equals numpy's (-inf gives 0, an all -inf slice 0s, NaN/+inf a NaN slice)."""
    x, axis = xa
    xd = data.draw(chunked(x))
    got = on_dask(ub.softmax, xd, axis=axis)
    assert_within(got, numpy_ref(ub.softmax, x, axis=axis), n_terms=x.shape[axis])
    assert got.dtype == x.dtype
    k = data.draw(st.integers(1, x.shape[axis]))
    got = on_dask(ub.topk_gate, xd, k, axis=axis)
    assert_within(got, numpy_ref(ub.topk_gate, x, k, axis=axis), n_terms=x.shape[axis])


@SETTINGS
@given(data=st.data(), xa=tied_arrays(max_dims=3))
def test_masked_mean_is_numpys_whatever_the_chunking(data, xa):
    """masked_mean over chunked axes equals numpy's; masked NaN/inf never leak, empty slices give 0."""
    x, axis = xa
    mask = data.draw(hnp.arrays(np.bool_, x.shape))
    x = np.where(mask, np.nan_to_num(x, nan=0.5, posinf=3.0, neginf=-3.0), np.nan).astype(x.dtype)
    axes = data.draw(st.sampled_from([axis, None, tuple(range(x.ndim))]))
    got = on_dask(ub.masked_mean, data.draw(chunked(x)), data.draw(chunked(mask)), axis=axes)
    want = numpy_ref(ub.masked_mean, x, mask, axis=axes)
    assert not np.isnan(got).any()
    assert_within(got, want, n_terms=x.size, abs_sum=numpy_ref(ub.masked_mean, np.abs(x), mask, axis=axes))


@SETTINGS
@given(data=st.data(), n=st.integers(0, 12), L=st.integers(1, 5), V=st.integers(1, 6))
def test_embedding_mean_is_numpys_with_ids_and_table_chunked(data, n, L, V):
    """embedding_mean on row- (and column-) chunked ids and a chunked table equals numpy's."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    table = rng.normal(size=(V, 3)).astype(np.float32)
    ids = rng.integers(0, V, (n, L))
    got = on_dask(ub.embedding_mean, data.draw(chunked(table)), data.draw(chunked(ids)))
    assert_within(got, numpy_ref(ub.embedding_mean, table, ids), n_terms=L,
                  abs_sum=numpy_ref(ub.embedding_mean, np.abs(table), ids))


@SETTINGS
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
       accumulate=st.booleans())
@example(data=None, shape=(6,), accumulate=False)
def test_subtensor_with_duplicates_in_different_chunks_is_numpys(data, shape, accumulate):
    """set_subtensor (last write wins) and inc_subtensor (every addition) with
    repeated positions spread over chunks equal numpy's."""
    op = ub.inc_subtensor if accumulate else ub.set_subtensor
    if data is None:  # pinned: position 0 and 5 written twice, from different chunks of x
        x = da.from_array(np.zeros(6), chunks=(1, 2, 3))
        index, value = np.array([5, 0, 5, 0, 3]), np.arange(1.0, 6.0)
        np.testing.assert_array_equal(ub.to_numpy(op(x, index, value)), numpy_ref(op, np.zeros(6), index, value))
        return
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    m = data.draw(st.integers(1, 8))
    index = tuple(np.array(data.draw(st.lists(st.integers(-s, s - 1), min_size=m, max_size=m))) for s in shape)
    if data.draw(st.booleans()):
        index = (slice(None),) + index[1:] if len(index) > 1 else index
    want_shape = numpy_ref(ub.set_subtensor, x, index, 0.0)[index].shape
    value = data.draw(hnp.arrays(np.float64, want_shape, elements=st.floats(-5, 5)))
    xd = data.draw(chunked(x))
    got = on_dask(op, xd, index, value)
    np.testing.assert_array_equal(got, numpy_ref(op, x, index, value))
    np.testing.assert_array_equal(ub.to_numpy(xd), x)  # the input is untouched
    got = on_dask(op, xd, index[0] if len(index) == 1 else (slice(1, None), 0), 2.5)
    want = numpy_ref(op, x, index[0] if len(index) == 1 else (slice(1, None), 0), 2.5)
    np.testing.assert_array_equal(got, want)


def _sparse_rows(csr, rows):
    return da.from_array(csr, chunks=(rows, (csr.shape[1],)), asarray=False, fancy=False, meta=csr[:0])


@SETTINGS
@given(data=st.data(), n=st.integers(1, 9), N=st.integers(1, 7), M=st.integers(0, 3))
def test_sparse_dot_of_row_chunks_of_scipy_rows_times_chunked_dense_is_numpys(data, n, N, M):
    """sparse_dot of a dask array of scipy.sparse row blocks (and of plain scipy
    input) times a chunked w equals numpy's."""
    seed = data.draw(st.integers(0, 2**16))
    csr = sp.random(n, N, density=0.4, format="csr", random_state=seed, dtype=np.float64)
    w = np.random.default_rng(seed).normal(size=(N, M) if M else (N,))
    wd = data.draw(chunked(w))
    want = numpy_ref(ub.sparse_dot, csr, w)
    bound = abs(csr) @ np.abs(w)
    assert_within(on_dask(ub.sparse_dot, _sparse_rows(csr, data.draw(chunks_for(n))), wd), want, n_terms=N, abs_sum=bound)
    with chunking("uneven"):
        assert_within(on_dask(ub.sparse_dot, csr, wd), want, n_terms=N, abs_sum=bound)


def test_sparse_dot_of_data_in_one_block_is_one_task_and_scipys_product():
    """A scipy x and a one-block w: the result's graph is one task holding
    both (no getter copying x on every compute), lazy, and exactly x @ w."""
    csr = sp.random(20, 30, density=0.2, format="csr", random_state=4, dtype=np.float32)
    w = np.random.default_rng(4).normal(size=(30, 3)).astype(np.float32)
    with ub.use_backend("dask"):
        out = ub.sparse_dot(csr, w)
    assert len(out.__dask_graph__()) == 1 and out.numblocks == (1, 1)
    np.testing.assert_array_equal(ub.to_numpy(out), csr @ w)


def test_a_dask_sparse_array_round_trips_to_scipy():
    csr = sp.random(7, 4, density=0.5, format="csr", random_state=3)
    x = _sparse_rows(csr, (2, 5))
    back = ub.to_numpy(x)
    assert sp.isspmatrix_csr(back) and (back != csr).nnz == 0


@SETTINGS
@given(data=st.data(), dims=st.sampled_from([((5,), (5,)), ((4, 6), (6,)), ((4, 6), (6, 3)), ((2, 3, 6), (6, 2))]))
def test_dot_with_a_chunked_contraction_axis_is_numpys(data, dims):
    """dot with a and b chunked anywhere (the contraction axis too) equals numpy's."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    a, b = rng.normal(size=dims[0]), rng.normal(size=dims[1])
    got = on_dask(ub.dot, data.draw(chunked(a)), data.draw(chunked(b)))
    assert_within(got, numpy_ref(ub.dot, a, b), n_terms=a.shape[-1], abs_sum=np.dot(np.abs(a), np.abs(b)))


# -- rechunking, graph size ----------------------------------------------------

def test_an_op_that_needs_a_whole_axis_warns_when_that_chunk_is_large():
    x = da.from_array(np.zeros((2, 4000)), chunks=(1, 100))
    with dask.config.set({"array.chunk-size": "16KiB"}), pytest.warns(LargeChunkWarning, match="axis 1 .* one chunk"):
        ub.argsort(x, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LargeChunkWarning)
        ub.keep_topk(x, 3, axis=1)  # 32 KB slices under the default 128 MiB: no warning
        ub.argsort(x, axis=0)  # axis 0 of a (1, 100) chunking: two chunks merged, small


def _task_inputs(graph):
    """key -> the keys its task reads (aliases followed)."""
    from dask._task_spec import Alias, convert_legacy_graph

    g = convert_legacy_graph(dict(graph))

    def resolve(k):
        while isinstance(g.get(k), Alias):
            (k,) = g[k].dependencies
        return k

    return {k: {resolve(d) for d in v.dependencies} for k, v in g.items()}


def test_embedding_mean_puts_the_table_in_the_graph_once():
    """40 chunks of ids, one table: the table's bytes are in the graph once
    (a numpy table as one key; a chunked dask table as its own chunks), never
    a copy per task, and no task reads more than one block of the table."""
    table = np.random.default_rng(0).normal(size=(5000, 8))  # 320 KB
    ids = da.from_array(np.random.default_rng(1).integers(0, 5000, (400, 6)), chunks=(10, 6))
    for t in (table, da.from_array(table, chunks=(1000, 8))):
        with ub.use_backend("dask"):
            out = ub.embedding_mean(t, ids)
        graph = dict(out.__dask_graph__())
        assert out.numblocks == (40, 1)
        big = {k: len(pickle.dumps(v)) for k, v in graph.items() if len(pickle.dumps(v)) >= 4096}
        if t is table:
            assert [n for n in big.values() if n >= table.nbytes] and len(big) == 1, big
        assert sum(big.values()) < 1.1 * table.nbytes, big
        assert all(len(deps & set(big)) <= 1 for deps in _task_inputs(graph).values())  # big: the table's blocks
        np.testing.assert_allclose(ub.to_numpy(out), numpy_ref(ub.embedding_mean, table, ids.compute()))


def test_a_numpy_table_larger_than_a_table_block_is_cut_into_row_blocks():
    """With unibackend.table-block set, a numpy table over that size is cut
    into row blocks of that size (whole rows, every column); each task reads
    one; the answer is numpy's within the sum tolerance; a table that fits
    stays one block and the answer is bitwise numpy's."""
    from unibackend.plugins.dask_backend import table_block_bytes

    rng = np.random.default_rng(2)
    table = rng.normal(size=(1000, 4)).astype(np.float32)   # 16 KB: 4 rows x 16 B per KiB
    ids = rng.integers(0, 1000, (300, 7))
    ids[5] = 0  # a row of only padding
    want = numpy_ref(ub.embedding_mean, table, ids)
    with dask.config.set({"unibackend.table-block": "2KiB"}):
        assert table_block_bytes() == 2048
        with ub.use_backend("dask"):
            out = ub.embedding_mean(table, da.from_array(ids, chunks=(64, 7)))
        (tname,) = [d for d in out.__dask_graph__().dependencies[out.name] if d.startswith("ub-table-")]
        tkeys = {k for k in out.__dask_graph__() if isinstance(k, tuple) and k[0] == tname}
        assert sorted(k[1] for k in tkeys) == list(range(8)) and {k[2] for k in tkeys} == {0}  # 128 rows each
        assert all(len(deps & tkeys) <= 1 for deps in _task_inputs(out.__dask_graph__()).values())
        got = ub.to_numpy(out)
    assert_within(got, want, n_terms=7, abs_sum=numpy_ref(ub.embedding_mean, np.abs(table), ids))
    assert not got[5].any()
    with dask.config.set({"unibackend.table-block": "1MiB"}):
        got = on_dask(ub.embedding_mean, table, da.from_array(ids, chunks=(64, 7)))
    np.testing.assert_array_equal(got, want)  # one block: bitwise


def test_a_table_block_is_a_fraction_of_the_smallest_workers_memory_on_a_cluster():
    """No client: array.chunk-size.  A client in force: the smallest worker's
    memory limit / TABLE_BLOCK_FRACTION (at most array.chunk-size)."""
    distributed = pytest.importorskip("distributed")
    from unibackend.plugins.dask_backend import TABLE_BLOCK_FRACTION, table_block_bytes

    chunk = dask.utils.parse_bytes(dask.config.get("array.chunk-size"))
    assert table_block_bytes() == chunk
    with distributed.LocalCluster(n_workers=1, processes=False, memory_limit="256MiB", dashboard_address=None) as c, \
            distributed.Client(c):
        assert table_block_bytes() == min(chunk, 2**28 // TABLE_BLOCK_FRACTION)
        table = np.ones((2**18, 64), np.float32)          # 64 MiB: cut into 2 blocks of 32 MiB
        with ub.use_backend("dask"), chunking("auto"):  # (whatever an earlier test left in force)
            out = ub.embedding_mean(table, da.from_array(np.array([[1, 2**18 - 1]]), chunks=1))
        deps = out.__dask_graph__().dependencies[out.name]
        tables = [d for d in deps if d.startswith("ub-table-")]
        assert len(tables) == 1, (sorted(deps), table_block_bytes())
        (tname,) = tables
        assert len([k for k in out.__dask_graph__() if isinstance(k, tuple) and k[0] == tname]) == 2
        # computed here: an in-process worker counts this whole process against its 256 MiB
        np.testing.assert_array_equal(out.compute(scheduler="threads"), np.ones((1, 64), np.float32))


@SETTINGS
@given(data=st.data(), V=st.integers(2, 12), L=st.integers(1, 4), one_block=st.booleans())
def test_embedding_mean_with_the_table_in_one_row_block_is_bitwise_numpys(data, V, L, one_block):
    """A table in one row block (any column chunks) gives numpy's answer bit
    for bit; in several row blocks, within the sum tolerance."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    table = rng.normal(size=(V, 3)).astype(np.float32)
    ids = rng.integers(0, V, (9, L))
    rows = (V,) if one_block else data.draw(chunks_for(V))
    t = da.from_array(table, chunks=(rows, data.draw(chunks_for(3))))
    got = on_dask(ub.embedding_mean, t, da.from_array(ids, chunks=(4, L)))
    want = numpy_ref(ub.embedding_mean, table, ids)
    if one_block:
        np.testing.assert_array_equal(got, want)
    else:
        assert_within(got, want, n_terms=L, abs_sum=numpy_ref(ub.embedding_mean, np.abs(table), ids))


def _sharded(op, blocks=4, cols=1, chunks=6):
    """``op`` ("embedding_mean" or "sparse_dot") with the table / w in
    ``blocks`` row blocks made by tasks (``+ 0``: as a table read from disk,
    a block exists once its task ran), ``chunks`` row blocks of ids / x; the
    result and the table's keys by row block."""
    rng = np.random.default_rng(4)
    V, d = 10 * blocks, 2 * cols
    table = da.from_array(rng.normal(size=(V, d)), chunks=(10, 2)) + 0
    if op == "embedding_mean":
        out = ub.embedding_mean(table, da.from_array(rng.integers(0, V, (5 * chunks, 3)), chunks=(5, 3)))
    else:
        x = sp.random(5 * chunks, V, density=0.3, format="csr", random_state=4)
        out = ub.sparse_dot(_sparse_rows(x, 5), table)
    return out, {b: {(table.name, b, j) for j in range(cols)} for b in range(blocks)}


def _readers(out, tkeys):
    """Row block -> the keys of the tasks that read it."""
    inputs = _task_inputs(out.__dask_graph__())
    return {b: {k for k, deps in inputs.items() if deps & keys} for b, keys in tkeys.items()}


def _run(out, scheduler, **kw):
    """Compute ``out``; the (event, key) of every task, in the order they
    happened (``start`` before it runs, ``end`` once its result is in)."""
    from dask.callbacks import Callback

    events: list = []
    with Callback(pretask=lambda key, dsk, state: events.append(("start", key)),
                  posttask=lambda key, res, dsk, state, worker: events.append(("end", key))):
        got = out.compute(scheduler=scheduler, **kw)
    return got, events


@pytest.mark.parametrize("op", ["embedding_mean", "sparse_dot"])
@pytest.mark.parametrize("cols", [1, 2])
def test_every_output_passes_a_table_block_before_any_reads_the_next(op, cols):
    """On 4 threads, whatever order they pick: every task that reads row block
    b has finished before any task that reads block b + 1 starts (the
    barriers; dask.order alone finishes one output at a time, every block
    again for each), and the answer is numpy's."""
    out, tkeys = _sharded(op, cols=cols)
    readers = _readers(out, tkeys)
    assert all(len(r) == 6 * cols for r in readers.values())     # one per (ids chunk, column block)
    got, events = _run(out, "threads", num_workers=4)
    at = {ev: i for i, ev in enumerate(events)}
    for b in range(len(tkeys) - 1):
        assert max(at["end", k] for k in readers[b]) < min(at["start", k] for k in readers[b + 1]), b
    np.testing.assert_allclose(got, out.compute(scheduler="sync"), rtol=1e-12)


@pytest.mark.parametrize("op", ["embedding_mean", "sparse_dot"])
def test_dasks_own_order_holds_one_table_block_at_a_time(op):
    """In dask.order's order (the synchronous scheduler runs it as is; a
    distributed worker breaks ties by it): blocks are made 0, 1, 2, ...
    and block b + 1 is made only after the last task that reads block b
    ran, so one block is held at a time and none is read again later."""
    out, tkeys = _sharded(op, blocks=5)
    readers = _readers(out, tkeys)
    _, events = _run(out, "sync")
    ends = [k for ev, k in events if ev == "end"]
    made = [b for k in ends for b, keys in tkeys.items() if k in keys]
    assert made == list(range(5))
    at = {k: i for i, k in enumerate(ends)}
    for b in range(4):
        (nxt,) = tkeys[b + 1]
        assert max(at[k] for k in readers[b]) < at[nxt]


def test_sparse_dot_with_w_in_row_blocks_never_reads_w_whole():
    """w chunked by rows: every task reads at most one block of w; x's
    columns are cut to match; the answer is numpy's within the sum tolerance."""
    rng = np.random.default_rng(3)
    csr = sp.random(30, 40, density=0.3, format="csr", random_state=3)
    w = rng.normal(size=(40, 5))
    wd = da.from_array(w, chunks=((10, 7, 13, 10), (5,)))
    for x in (csr, _sparse_rows(csr, (12, 18)), da.from_array(csr, chunks=(15, (20, 20)), asarray=False,
                                                                fancy=False, meta=csr[:0])):
        with ub.use_backend("dask"):
            out = ub.sparse_dot(x, wd)
        wkeys = {k for k in out.__dask_graph__() if isinstance(k, tuple) and k[0] == wd.name}
        assert len(wkeys) == 4
        assert all(len(deps & wkeys) <= 1 for deps in _task_inputs(out.__dask_graph__()).values())
        assert_within(ub.to_numpy(out), csr @ w, n_terms=40, abs_sum=abs(csr) @ np.abs(w))


# -- value checks at compute time ---------------------------------------------

BAD_ID = "embedding_mean: id {} is out of range for a table of 6 rows (valid: 0..5, pad_id=0)"


@pytest.mark.parametrize("rows", [(6,), (2, 3, 1)])
@pytest.mark.parametrize("bad", [6, 99, -1])
def test_an_id_outside_the_table_raises_index_error_at_compute_from_its_chunk(bad, rows):
    """The table in one row block or in several: the same error, at compute."""
    ids = np.ones((30, 4), dtype=np.int64)
    ids[23, 2] = bad  # in the 5th of 6 row chunks
    table = da.from_array(np.ones((6, 2)), chunks=(rows, 2))
    out = ub.embedding_mean(table, da.from_array(ids, chunks=(5, 2)))  # no error: lazy
    with pytest.raises(IndexError) as e:
        ub.to_numpy(out)
    assert str(e.value) == BAD_ID.format(bad)
    with ub.use_backend("numpy"), pytest.raises(IndexError) as ref:
        ub.embedding_mean(np.ones((6, 2)), ids)
    assert str(ref.value) == str(e.value)  # the same message as the eager check


def test_padding_is_never_checked_against_the_table():
    ids = da.from_array(np.array([[0, 0], [0, 2]]), chunks=1)
    np.testing.assert_allclose(ub.to_numpy(ub.embedding_mean(np.eye(3), ids, pad_id=0)), [[0, 0, 0], [0, 0, 1]])


def test_an_index_out_of_bounds_raises_index_error_when_called():
    x = da.from_array(np.zeros((4, 3)), chunks=2)
    with pytest.raises(IndexError, match="set_subtensor: index 4 is out of bounds for axis 0 with size 4"):
        ub.set_subtensor(x, (da.from_array(np.array([0, 4])), 0), 1.0)
    with pytest.raises(IndexError, match="inc_subtensor"):
        ub.inc_subtensor(x, (slice(None), 3), 1.0)


def test_static_errors_are_raised_when_called():
    x = da.from_array(np.zeros((4, 3)), chunks=2)
    with pytest.raises(ValueError, match="keep_topk: k=4 is out of range"):
        ub.keep_topk(x, 4)
    with pytest.raises(ValueError, match="softmax: axis=2"):
        ub.softmax(x, axis=2)
    with pytest.raises(TypeError, match="embedding_mean: ids must be integers"):
        ub.embedding_mean(x, x)


# -- nn models on dask inputs -------------------------------------------------

#: terms summed along one forward pass of _moe_model, layer by layer (bow and tag
#: mean into hidden, hidden into the gate and the experts, experts into classes,
#: its softmax): the n_terms of the suite's sum tolerance for its predictions
MOE_TERMS = (50 + 4) + 8 + 8 + 6 + 3


def _moe_model():
    from unibackend import nn

    bow, tags = nn.Input("bow", 50, sparse=True), nn.Input("tags", ids=True)
    hidden = nn.Dense(8, "tanh", name="hidden")(bow, nn.EmbeddingMean(21, 4, name="tag_mean")(tags))
    moe = nn.MixtureOfExperts(6, 4, "relu", name="moe")(hidden, nn.TopKGate(4, 2, name="gate")(hidden))
    return nn.Model([bow, tags], nn.Dense(3, "softmax", name="classes")(moe), seed=0)


def _moe_data():
    X = sp.random(30, 50, density=0.1, format="csr", random_state=1, dtype=np.float32)
    ids = np.random.default_rng(0).integers(0, 21, (30, 5))
    ids[4] = 0  # a row of only padding
    return X, ids


def test_an_nn_model_predicts_lazily_on_dask_inputs_as_on_numpy():
    """forward on chunked inputs builds a graph only; its values (and predict's)
    equal the numpy backend's predictions on the same rows."""
    model = _moe_model()
    X, ids = _moe_data()
    want = numpy_ref(model.predict, {"bow": X, "tags": ids})
    data = {"bow": _sparse_rows(X, (7, 8, 15)), "tags": da.from_array(ids, chunks=(6, 5))}
    calls = []

    def counting_get(dsk, keys, **kw):
        calls.append(keys)
        return dask.get(dsk, keys, **kw)

    with dask.config.set(scheduler=counting_get):
        out = model.forward(model.params, data)
    assert isinstance(out, da.Array) and calls == []
    assert_within(ub.to_numpy(out), want, n_terms=MOE_TERMS)
    assert_within(model.predict(data), want, n_terms=MOE_TERMS)


# -- on a cluster of two worker processes (module end: the client is the default here on) --

@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="1GiB") as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.slow
def test_ops_on_a_cluster_of_two_processes_are_numpys(cluster_client):
    rng = np.random.default_rng(5)
    x = rng.integers(-2, 3, (12, 9)).astype(np.float64)
    x[3, 4] = np.nan
    xd = da.from_array(x, chunks=(5, 4))
    pairs = [(ub.argsort, (x, 1)), (ub.keep_topk, (x, 3, 1)), (ub.softmax, (x, 0)),
             (ub.masked_mean, (x, x > 0, 1)), (ub.dot, (x, x.T[:, :4]))]
    for fn, args in pairs:
        got = ub.to_numpy(fn(xd, *args[1:]))
        assert_within(got, numpy_ref(fn, *args), n_terms=x.size, err_msg=fn.__name__)
    ids = rng.integers(0, 9, (12, 3))
    got = ub.to_numpy(ub.embedding_mean(x[:9], da.from_array(ids, chunks=(4, 3))))
    np.testing.assert_allclose(got, numpy_ref(ub.embedding_mean, x[:9], ids))
    got = ub.to_numpy(ub.set_subtensor(xd, (np.array([0, 11, 0]), np.array([0, 8, 0])), np.array([1.0, 2.0, 3.0])))
    np.testing.assert_array_equal(got, numpy_ref(ub.set_subtensor, x, (np.array([0, 11, 0]), np.array([0, 8, 0])),
                                                 np.array([1.0, 2.0, 3.0])))
    assert len(cluster_client.scheduler_info()["workers"]) == 2


@pytest.mark.slow
def test_an_id_outside_the_table_raises_index_error_on_the_cluster(cluster_client):
    ids = np.ones((30, 4), dtype=np.int64)
    ids[17, 0] = 6
    out = ub.embedding_mean(np.ones((6, 2)), da.from_array(ids, chunks=(5, 4)))
    with pytest.raises(IndexError) as e:
        ub.to_numpy(out)
    assert type(e.value) is IndexError and str(e.value) == BAD_ID.format(6)
    with pytest.raises(IndexError) as e:
        cluster_client.compute(out).result()
    assert str(e.value) == BAD_ID.format(6)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["embedding_mean", "sparse_dot"])
def test_on_the_cluster_every_task_of_a_table_block_ends_before_the_next_blocks_start(cluster_client, op):
    """On two worker processes (the workers' own clocks, from the task
    stream): every task that reads row block b has ended before any task
    that reads block b + 1 starts, on whichever worker."""
    from distributed import get_task_stream

    out, tkeys = _sharded(op, blocks=5)
    readers = _readers(out, tkeys)
    with get_task_stream(cluster_client) as ts:
        got = cluster_client.compute(out).result()
    span = {t["key"]: [s for s in t["startstops"] if s["action"] == "compute"][0] for t in ts.data}
    for b in range(4):
        assert max(span[k]["stop"] for k in readers[b]) <= min(span[k]["start"] for k in readers[b + 1]), b
    np.testing.assert_allclose(got, out.compute(scheduler="sync"), rtol=1e-12)


@pytest.mark.slow
def test_conformance_scheduler_option_runs_the_suite_on_the_cluster(cluster_client):
    def transitions(dask_scheduler):
        return dask_scheduler.transition_counter

    before = cluster_client.run_on_scheduler(transitions)
    proc = subprocess.run(
        [sys.executable, "-m", "unibackend", "conformance", "--backends", "dask", "--ops", "keep_topk,embedding_mean",
         "--max-examples", "5", "--quiet", "--scheduler", cluster_client.scheduler.address],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed, 0 failed" in proc.stdout
    assert cluster_client.run_on_scheduler(transitions) > before  # the suite's graphs ran there


@pytest.mark.slow
def test_an_nn_model_predicts_on_the_cluster_as_on_numpy(cluster_client):
    model = _moe_model()
    X, ids = _moe_data()
    want = numpy_ref(model.predict, {"bow": X, "tags": ids})
    out = model.forward(model.params, {"bow": _sparse_rows(X, (10, 20)), "tags": da.from_array(ids, chunks=(10, 5))})
    assert_within(cluster_client.compute(out).result(), want, n_terms=MOE_TERMS)


@pytest.mark.slow
def test_the_score_at_scale_example_runs_small(tmp_path):
    import os

    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "score_at_scale.py")
    proc = subprocess.run([sys.executable, script, "--rows", "20000", "--chunk-rows", "5000", "--workers", "1",
                           "--memory-limit", "512MiB", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("rows/s: ")
    assert len(list((tmp_path / "predictions").glob("*.npy"))) == 4
