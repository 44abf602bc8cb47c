"""The Dask backend: the same ops on chunked ``dask.array`` arrays.

Results stay lazy (dask arrays) until ``ub.to_numpy`` or ``.compute()``; they
run on whatever scheduler dask picks (the local threads by default, a
``distributed.Client`` the user created once it is the default).  No answer
depends on the chunking: an op that needs a whole axis at once (argsort,
keep_topk) rechunks that axis into one chunk and runs the numpy reference's
own code per block (dask's ``topk``/``argtopk`` break ties arbitrarily);
reductions (softmax, masked_mean, dot) combine per-chunk partial results.
Value checks that need the data (an id outside the table) run in the graph,
in the block that holds the bad value, and raise the contract's exception.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import warnings
import weakref
from typing import Any

import numpy as np

from unibackend.plugin import Backend, Capabilities, CapabilityError, GraphIndex, check_subtensor, id_out_of_range

__all__ = ["DaskBackend", "LargeChunkWarning", "chunking", "table_block_bytes"]


class LargeChunkWarning(UserWarning):
    """An op had to put a whole axis into one chunk and that chunk is larger
    than dask's ``array.chunk-size``."""


#: How ``asarray`` chunks a numpy input: "auto" (dask's choice), an int or a
#: tuple (dask's ``chunks=``), or "uneven" (small chunks of varying sizes 1, 3,
#: 2, 5, ... on every axis: the suite's way to put chunk edges everywhere).
_CHUNKS: contextvars.ContextVar = contextvars.ContextVar("unibackend_dask_chunks", default=None)
_UNEVEN = (1, 3, 2, 5, 1, 4)


@contextlib.contextmanager
def chunking(spec):
    """Within the block, ``asarray`` chunks numpy inputs by ``spec`` ("auto",
    "uneven", an int or a tuple); the environment variable
    ``UNIBACKEND_DASK_CHUNKS`` sets the default."""
    token = _CHUNKS.set(spec)
    try:
        yield
    finally:
        _CHUNKS.reset(token)


def _uneven(n):
    out: list[int] = []
    i = 0
    while sum(out) < n:
        out.append(min(_UNEVEN[i % len(_UNEVEN)], n - sum(out)))
        i += 1
    return tuple(out) or (0,)


def _chunks_for(shape):
    spec = _CHUNKS.get()
    if spec is None:
        spec = os.environ.get("UNIBACKEND_DASK_CHUNKS", "auto")
    if isinstance(spec, str):
        if spec == "uneven":
            return tuple(_uneven(int(n)) for n in shape)
        if spec.isdigit():
            return int(spec)
    return spec


#: What a table block may hold, as a fraction of the smallest worker's memory
#: limit, when a distributed client is in force: a worker holds a block, the
#: ids of a chunk, a partial sum and its own Python (~100 MiB); blocks of a
#: quarter of a worker's memory and more killed workers (issue 23).
TABLE_BLOCK_FRACTION = 8


def table_block_bytes():
    """Bytes of a row block of a numpy table in embedding_mean: the dask
    config ``unibackend.table-block`` when set; else the smallest worker's
    memory limit / TABLE_BLOCK_FRACTION when a ``distributed`` client is in
    force, at most ``array.chunk-size``; else ``array.chunk-size`` (128 MiB)."""
    import dask
    from dask.utils import parse_bytes

    set_ = dask.config.get("unibackend.table-block", None)
    if set_ is not None:
        return parse_bytes(set_)
    limit = parse_bytes(dask.config.get("array.chunk-size"))
    dist = sys.modules.get("distributed")  # never imported here: only a client already made counts
    if dist is not None:
        try:
            client = dist.default_client()
        except ValueError:
            return limit
        mems = [w.get("memory_limit") or 0 for w in client.scheduler_info(n_workers=-1)["workers"].values()]
        mems = [m for m in mems if m]
        if mems:
            return min(limit, min(mems) // TABLE_BLOCK_FRACTION)
    return limit


_NP = None


def _numpy_backend():
    """The numpy reference plugin, whose per-block code the whole-axis ops run
    (imported here, in the process that runs the block: a worker too)."""
    global _NP
    if _NP is None:
        from unibackend.plugins.numpy_backend import NumpyBackend

        b = NumpyBackend()
        b.load()
        _NP = b
    return _NP


# -- per-block functions (module level: a distributed worker unpickles them) --

def _argsort_block(x, axis, descending):
    return _numpy_backend().argsort(x, axis, descending)


def _keep_topk_block(x, k, axis, fill):
    return _numpy_backend().keep_topk(x, k, axis, fill)


def _exp_shifted(x, m):
    with np.errstate(invalid="ignore", over="ignore"):
        return np.exp(x - m)


def _divide_sum(e, s):
    with np.errstate(invalid="ignore"):
        return (e / np.where(s == 0, 1, s)).astype(e.dtype, copy=False)


def _one(blocks):
    """The one block blockwise hands over (concatenate=False) for an index
    the op keeps in a single chunk: no copy (dask's concatenate copies even
    one block, the whole table on every compute)."""
    while isinstance(blocks, list):
        (blocks,) = blocks
    return blocks


def _check_ids(ids, V, pad_id):
    if ids.size:
        # min/max over the real ids without a copy of them
        real = ids != pad_id
        info = np.iinfo(ids.dtype)
        lo = int(ids.min(where=real, initial=info.max))
        hi = int(ids.max(where=real, initial=info.min))
        if lo <= hi and (lo < 0 or hi >= V):
            raise id_out_of_range("embedding_mean", lo if lo < 0 else hi, V, pad_id)


def _embedding_block(ids, table, pad_id):
    ids, table = _one(ids), _one(table)
    _check_ids(ids, table.shape[0], pad_id)
    return _numpy_backend().embedding_mean(table, ids, pad_id)


def _id_pieces(ids, pad_id, starts, dtype):
    """One ids chunk split by table block: per block, the CSR (rows of the
    chunk x rows of the block) of the weights 1/count(row) of the ids that
    fall in it.  Every row of ids is whole here, so count is the row's own
    and each term is rounded as the one-block path rounds it."""
    import scipy.sparse as sp

    V = int(starts[-1])
    _check_ids(ids, V, pad_id)
    n = ids.shape[0]
    real = ids != pad_id
    counts = real.sum(axis=1)
    weight = (1.0 / np.maximum(counts, 1)).astype(dtype)
    rows = np.repeat(np.arange(n), counts)
    cols = ids[real]
    data = weight[rows]
    blk = np.searchsorted(starts, cols, side="right") - 1
    order = np.argsort(blk, kind="stable")  # row-major within a block, as numpy's CSR
    bounds = np.searchsorted(blk[order], np.arange(len(starts)))
    out = []
    for b in range(len(starts) - 1):
        sel = order[bounds[b]:bounds[b + 1]]
        r = rows[sel]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n))])
        out.append(sp.csr_matrix((data[sel], cols[sel] - starts[b], indptr),
                                 shape=(n, int(starts[b + 1] - starts[b]))))
    return out


def _piece(pieces, b):
    return pieces[b]


def _data_of(a):
    """The array a dask array of one key holds as data, else None."""
    from dask._task_spec import DataNode

    g = a.__dask_graph__()
    if len(g) != 1:
        return None
    (v,) = g.values()
    if isinstance(v, DataNode):
        v = v.value
    import scipy.sparse as sp

    return v if isinstance(v, np.ndarray) or sp.issparse(v) else None


def _sparse_times(x, w):
    return np.asarray(x @ w)


def _sparse_cols_times(x, w, lo, hi):
    # x's columns lo:hi (the rows of w's block) times that block
    if lo != 0 or hi != x.shape[1]:
        x = x[:, lo:hi]
    return np.asarray(x @ w)


def _step(prev, gate, part, *args):
    """The running sum over table blocks: ``prev`` plus this block's partial
    product ``part(*args)`` (a new array: ``prev`` is left as it is).
    ``gate`` (None) is the barrier of the block before: it only orders."""
    return prev + part(*args)


def _done(*_):
    """A barrier's token: None, made once its inputs exist (nothing is read
    from them, so a token costs a worker no transfer)."""
    return None


def _write_block(block, local, vals, accumulate):
    out = np.array(block, copy=True, order="C")
    flat = out.reshape(-1)
    if accumulate:
        np.add.at(flat, local, vals)
    else:
        flat[local] = vals
    return out


def _astype_block(b, dtype):
    return b.astype(dtype)


class DaskBackend(Backend):
    name = "dask"
    modules = ("dask",)
    extra = "dask"
    distributions = ("dask",)
    capabilities = Capabilities(autodiff=False, sparse=True, symbolic=False, devices=False, lazy=True)

    # -- set-up ------------------------------------------------------------
    def load(self):
        import dask
        import dask.array as da
        import scipy.sparse as sp

        self.dask = dask
        self.da = da
        self.sp = sp
        self._Array = da.Array
        self._numpy_sources: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def version(self):
        return self.dask.__version__

    def native_types(self):
        return (self._Array,)

    # -- conversion --------------------------------------------------------
    def asarray(self, x, dtype=None):
        if isinstance(x, self._Array):
            return x if dtype is None or x.dtype == dtype else x.astype(dtype)
        a = np.asarray(x, dtype=dtype)
        d = self.da.from_array(a, chunks=_chunks_for(a.shape))
        if a.ndim == 2:
            # embedding_mean re-cuts a large numpy table by rows from here
            self._numpy_sources[d.name] = a
        return d

    def to_numpy(self, x):
        if isinstance(x, self._Array):
            x = x.compute()
        return np.asarray(x)

    def shape(self, x):
        return tuple(None if d != d else int(d) for d in x.shape)  # nan: unknown chunk sizes

    def dtype(self, x):
        return x.dtype

    def plain_float_dtype(self, x):
        if type(x) is self._Array and x.dtype.kind == "f" and not any(d != d for d in x.shape):
            return x.dtype
        return None

    def is_sparse(self, x):
        return isinstance(x, self._Array) and self.sp.issparse(x._meta)

    def sparse_from_scipy(self, csr):
        # Row blocks of the CSR matrix, sliced once here and held by the
        # graph as data (as dask does with a numpy array): from_array's
        # getter task would slice (copy) the matrix again on every compute,
        # and one block is the matrix itself.
        from dask.base import tokenize

        n = csr.shape[0]
        spec = _chunks_for(csr.shape)
        if isinstance(spec, tuple):
            rows = spec[0] if isinstance(spec[0], tuple) else spec[0]
        elif isinstance(spec, int):
            rows = spec
        else:  # "auto": blocks of about array.chunk-size bytes of stored entries
            limit = self.dask.utils.parse_bytes(self.dask.config.get("array.chunk-size"))
            per_row = max(1.0, csr.nnz * (csr.dtype.itemsize + 4) / max(n, 1))
            rows = max(1, int(limit // per_row))
        chunks = self.da.core.normalize_chunks((rows, (csr.shape[1],)), csr.shape)
        name = "ub-csr-" + tokenize(csr)
        starts = np.concatenate([[0], np.cumsum(chunks[0])]).tolist()
        dsk = {(name, i, 0): csr if len(chunks[0]) == 1 else csr[starts[i]:starts[i + 1]]
               for i in range(len(chunks[0]))}
        return self.da.Array(dsk, name, chunks=chunks, dtype=csr.dtype, meta=csr[:0])

    def sparse_to_scipy(self, x):
        blocks = [b for b in self.dask.compute(*x.to_delayed().ravel())]
        n = x.numblocks
        grid = np.empty(n, dtype=object)
        for idx, b in zip(np.ndindex(*n), blocks):
            grid[idx] = self.sp.csr_matrix(b)
        return self.sp.csr_matrix(self.sp.bmat(grid.tolist(), format="csr"))

    def sparse_info(self, x):
        return self.shape(x), x.dtype

    def sparse_cast(self, x, dtype):
        return x.map_blocks(_astype_block, dtype, dtype=dtype, meta=x._meta.astype(dtype))

    def id_bounds(self, ids, pad_id):
        return None  # checked lazily, per block, in embedding_mean's graph

    # -- helpers -------------------------------------------------------------
    def _whole_axis(self, x, axis, op):
        """``x`` with ``axis`` in one chunk (the other axes as dask likes), and
        a LargeChunkWarning when a block then exceeds ``array.chunk-size``."""
        if x.numblocks[axis] == 1:
            return x
        spec: dict[int, int | str] = {a: "auto" for a in range(x.ndim)}
        spec[axis] = -1
        y = x.rechunk(spec)
        limit = self.dask.utils.parse_bytes(self.dask.config.get("array.chunk-size"))
        block = int(np.prod([max(c) if c else 0 for c in y.chunks], dtype=np.int64)) * x.dtype.itemsize
        if block > limit:
            warnings.warn(
                f"{op}: axis {axis} is rechunked into one chunk of {block / 2**20:.0f} MiB "
                f"(array.chunk-size is {limit / 2**20:.0f} MiB); the op needs the whole axis in one block",
                LargeChunkWarning, stacklevel=4)
        return y

    # -- ops ---------------------------------------------------------------
    def dot(self, a, b):
        # tensordot sums the products of matching chunks of the contraction
        # axis (dask aligns a's and b's chunks there).
        return self.da.tensordot(a, b, axes=(a.ndim - 1, 0))

    def sparse_dot(self, x, w):
        # Row blocks of x times w.  When w's rows (the contraction axis) are
        # in one chunk, one task per output block, x @ w, and nothing else (the
        # one-chunk case pays dask's own compute only).  When they are in
        # several, x's columns are cut to match them and the partial products
        # of each (x row block, w row block) are summed block by block (see
        # _block_by_block): w is never gathered whole.
        from dask.base import tokenize
        from dask.task_spec import DataNode, Task, TaskRef

        if x.numblocks[1] > 1 and x.chunks[1] != w.chunks[0]:
            x = x.rechunk({1: -1})  # a row block of x is small next to w
        if x.numblocks[0] == 1 and all(n == 1 for n in w.numblocks):
            xv, wv = _data_of(x), _data_of(w)
            if xv is not None and wv is not None:
                # Both inputs are data in one block: a graph of one task holding
                # them (three keys cost dask's compute about twice the product
                # at the size of issue 21).
                name = "ub-sparse-dot-" + tokenize(x.name, w.name)
                key: tuple = (name, 0) if w.ndim == 1 else (name, 0, 0)
                return self._array(name, {key: Task(key, _sparse_times, DataNode(None, xv), DataNode(None, wv))},
                                   [], tuple((c,) for c in (x.shape[0],) + w.shape[1:]), w.dtype)
        same = x.chunks[1] == w.chunks[0]
        starts = np.concatenate([[0], np.cumsum(w.chunks[0])]).tolist()
        name = "ub-sparse-dot-" + tokenize(x.name, w.name)
        vec = w.ndim == 1
        J = 1 if vec else w.numblocks[1]
        partials: dict[tuple, list] = {}
        for i in range(x.numblocks[0]):
            for j in range(J):
                parts = partials[self._out_key(name, i, j, vec)] = []
                for b in range(w.numblocks[0]):
                    wk = TaskRef((w.name, b) if vec else (w.name, b, j))
                    if same:
                        parts.append((_sparse_times, TaskRef((x.name, i, b)), wk))
                    else:
                        parts.append((_sparse_cols_times, TaskRef((x.name, i, 0)), wk, starts[b], starts[b + 1]))
        dsk: dict = {}
        self._block_by_block(dsk, name, partials)
        chunks = (x.chunks[0],) if vec else (x.chunks[0], w.chunks[1])
        return self._array(name, dsk, [x, w], chunks, w.dtype)

    @staticmethod
    def _out_key(name, i, j, vec):
        return (name, i) if vec else (name, i, j)

    @staticmethod
    def _block_by_block(dsk, name, partials):
        """Into ``dsk``: each output key of ``partials`` (key -> the partial
        products (func, *args) of table blocks 0..B-1) as the running sum
        S_0 = p_0, S_b = S_{b-1} + p_b, in block order.  Block b's steps
        (b >= 1) wait on a barrier made from a token of every S_{b-1}, so
        every output passes block b - 1 before any reads block b: whatever
        order dask.order or a worker picks, a table block's tasks run
        together and the block is read once per pass (without the barrier
        dask.order finishes one output at a time, every block again for
        each).  A token is None, made where its S is: the barrier moves no
        data."""
        from dask.task_spec import Task, TaskRef

        prev: dict = {}
        B = len(next(iter(partials.values())))
        for b in range(B):
            gate = (f"{name}-barrier", b - 1)
            if b:
                dsk[gate] = Task(gate, _done, *(TaskRef((f"{name}-done", b - 1) + out[1:]) for out in partials))
            for out, parts in partials.items():
                key = out if b == B - 1 else (f"{name}-acc", b) + out[1:]
                if b == 0:
                    dsk[key] = Task(key, *parts[b])
                else:
                    dsk[key] = Task(key, _step, TaskRef(prev[out]), TaskRef(gate), *parts[b])
                if b < B - 1:
                    done = (f"{name}-done", b) + out[1:]
                    dsk[done] = Task(done, _done, TaskRef(key))
                prev[out] = key

    def _array(self, name, dsk, deps, chunks, dtype):
        """The dask array of layer ``dsk`` over ``deps``."""
        from dask.highlevelgraph import HighLevelGraph

        graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
        meta = np.empty((0,) * len(chunks), dtype=dtype)
        return self.da.Array(graph, name, chunks=chunks, dtype=dtype, meta=meta)

    def argsort(self, x, axis, descending):
        x = self._whole_axis(x, axis, "argsort")
        return x.map_blocks(_argsort_block, axis, descending, dtype=np.int64)

    def set_subtensor(self, x, index, value, accumulate):
        if isinstance(index, GraphIndex):  # unknown chunk sizes: learn them, then check as usual
            x = x.compute_chunk_sizes()
            index = check_subtensor(index.op, x.shape, index.parts, self.to_numpy)
        if 0 in index.shape:  # nothing selected (dask's setitem refuses an empty value)
            return x.copy()
        if index.basic:
            out = x.copy()  # a new collection: assigning into it leaves x's graph alone
            out[index.index] = (x[index.index] + value) if accumulate else value
            return out
        return self._write_positions(x, index, value, accumulate)

    def _write_positions(self, x, index, value, accumulate):
        """Scatter into the blocks of ``x`` from the flat positions: each block
        gets its own writes (in numpy's order) and their values as one chunk
        of a value array reordered by block, so duplicates in different
        chunks follow the same rule as numpy's."""
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        da = self.da
        if accumulate:
            pos, take = index.positions().reshape(-1), None
        else:
            pos, take = index.last_writes()
        if pos.size == 0:
            return x.copy()
        vals = da.broadcast_to(value, index.shape)
        # dask flattens only when the trailing axes are whole chunks
        vals = vals.rechunk({a: -1 for a in range(1, vals.ndim)}).reshape(-1)
        if take is not None:
            vals = vals[take]
        # block of each position along every axis, and its offset there
        coords = np.unravel_index(pos, x.shape)
        bidx, local = [], []
        for c, ch in zip(coords, x.chunks):
            starts = np.concatenate([[0], np.cumsum(ch)])
            b = np.searchsorted(starts, c, side="right") - 1
            bidx.append(b)
            local.append(c - starts[b])
        block_id = np.ravel_multi_index(bidx, x.numblocks)
        order = np.argsort(block_id, kind="stable")
        blocks, counts = np.unique(block_id[order], return_counts=True)
        vsorted = vals[order].rechunk((tuple(int(c) for c in counts),))
        name = "ub-subtensor-" + tokenize(x, vsorted, pos, accumulate)
        dsk: dict[Any, Any] = {}
        touched = {int(b): i for i, b in enumerate(blocks)}
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for idx in np.ndindex(*x.numblocks):
            flat_b = int(np.ravel_multi_index(idx, x.numblocks))
            key = (name,) + idx
            i = touched.get(flat_b)
            if i is None:
                dsk[key] = (x.name,) + idx  # an alias of the unchanged block
                continue
            sel = order[bounds[i]:bounds[i + 1]]
            shape = tuple(ch[j] for ch, j in zip(x.chunks, idx))
            lp = np.ravel_multi_index(tuple(loc[sel] for loc in local), shape) if shape else np.zeros(sel.size, np.int64)
            dsk[key] = (_write_block, (x.name,) + idx, lp, (vsorted.name, i), accumulate)
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x, vsorted])
        return da.Array(graph, name, chunks=x.chunks, dtype=x.dtype, meta=x._meta)

    def masked_mean(self, x, mask, axes):
        da = self.da
        keep = da.broadcast_to(mask != 0, x.shape)
        zero = x.dtype.type(0)
        total = da.where(keep, x, zero).sum(axis=axes)
        count = keep.sum(axis=axes).astype(x.dtype)
        return (total / da.maximum(count, 1)).astype(x.dtype)

    def keep_topk(self, x, k, axis, fill):
        n = x.shape[axis]
        if k == n:
            return x.copy()
        if k == 0:
            return self.da.full_like(x, fill)
        x = self._whole_axis(x, axis, "keep_topk")
        return x.map_blocks(_keep_topk_block, k, axis, fill, dtype=x.dtype)

    def softmax(self, x, axis):
        da = self.da
        if 0 in x.shape:
            return x.copy()
        m = x.max(axis=axis, keepdims=True)
        # Only an all -inf slice needs its max replaced (by 0, so it gives 0s).
        m = da.where(m == -np.inf, x.dtype.type(0), m).astype(x.dtype)
        e = da.map_blocks(_exp_shifted, x, m, dtype=x.dtype)
        s = e.sum(axis=axis, keepdims=True)
        return da.map_blocks(_divide_sum, e, s, dtype=x.dtype)

    def embedding_mean(self, table, ids, pad_id):
        # ids keep their row chunks, each row whole.  A table of one row
        # block goes to every task as it is (concatenate=False: no copy): the
        # numpy backend's code per ids chunk, bitwise its answer.  A table of
        # several row blocks stays in them: see _sharded_embedding.
        ids = ids.rechunk({1: -1}) if ids.numblocks[1] != 1 else ids
        table = self._table_rows(table)
        if table.numblocks[0] > 1:
            return self._sharded_embedding(table, ids, pad_id)
        return self.da.blockwise(_embedding_block, "ij", ids, "il", table, "vj", pad_id, None,
                                 concatenate=False, dtype=table.dtype,
                                 meta=np.empty((0, 0), dtype=table.dtype))

    def _table_rows(self, table):
        """A numpy table larger than a table block (see table_block_bytes) in
        row blocks of that size, sliced from the numpy array (no copy); any
        other table as it is."""
        src = self._numpy_sources.get(table.name)
        block = table_block_bytes()
        if src is None or src.nbytes <= block or table.shape[0] < 2:
            return table
        from dask.base import tokenize

        rows = max(1, int(block // max(1, src.shape[1] * src.itemsize)))
        return self.da.from_array(src, chunks=(rows, -1), name="ub-table-" + tokenize(table.name, rows))

    def _sharded_embedding(self, table, ids, pad_id):
        """Per ids chunk i, one task splits the chunk's ids by table block
        (and checks them); per (i, table block b, column block j) one task
        adds that piece times block (b, j) to the running sum of (i, j), block
        by block (see _block_by_block).  No task holds more than one table
        block."""
        from dask.base import tokenize
        from dask.task_spec import Task, TaskRef

        name = "ub-embedding-mean-" + tokenize(table.name, ids.name, pad_id)
        starts = tuple(np.concatenate([[0], np.cumsum(table.chunks[0])]).tolist())
        B, J = table.numblocks
        dsk: dict[tuple, Any] = {}
        partials: dict[tuple, list] = {}
        for i in range(ids.numblocks[0]):
            split = (f"{name}-ids", i)
            dsk[split] = Task(split, _id_pieces, TaskRef((ids.name, i, 0)), pad_id, starts, table.dtype)
            for b in range(B):
                piece = (f"{name}-piece", i, b)
                dsk[piece] = Task(piece, _piece, TaskRef(split), b)
            for j in range(J):
                partials[(name, i, j)] = [(_sparse_times, TaskRef((f"{name}-piece", i, b)), TaskRef((table.name, b, j)))
                                          for b in range(B)]
        self._block_by_block(dsk, name, partials)
        return self._array(name, dsk, [table, ids], (ids.chunks[0], table.chunks[1]), table.dtype)

    # -- math for nn (dask functions: results stay lazy) -------------------
    def tanh(self, x):
        return self.da.tanh(self.asarray(x))

    def relu(self, x):
        return self.da.maximum(self.asarray(x), 0)

    def exp(self, x):
        return self.da.exp(self.asarray(x))

    def log(self, x):
        return self.da.log(self.asarray(x))

    def reduce_sum(self, x, axis, keepdims):
        return self.asarray(x).sum(axis=axis, keepdims=keepdims)

    def reduce_max(self, x, axis, keepdims):
        return self.asarray(x).max(axis=axis, keepdims=keepdims)

    # -- autodiff and compilation ------------------------------------------
    def value_and_grad(self, f, argnums, args, kwargs):
        raise CapabilityError("value_and_grad: backend 'dask' has no autodiff")  # the core checks first

    def function(self, f):
        return f

