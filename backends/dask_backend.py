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
import warnings

import numpy as np

from unibackend.plugin import Backend, Capabilities, CapabilityError, GraphIndex, check_subtensor, id_out_of_range

__all__ = ["DaskBackend", "LargeChunkWarning", "chunking"]


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
    out, i = [], 0
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


def _embedding_block(ids, table, pad_id):
    ids, table = _one(ids), _one(table)
    V = table.shape[0]
    if ids.size:
        # min/max over the real ids without a copy of them
        real = ids != pad_id
        info = np.iinfo(ids.dtype)
        lo = int(ids.min(where=real, initial=info.max))
        hi = int(ids.max(where=real, initial=info.min))
        if lo <= hi and (lo < 0 or hi >= V):
            bad = lo if lo < 0 else hi
            raise id_out_of_range("embedding_mean", bad, V, pad_id)
    return _numpy_backend().embedding_mean(table, ids, pad_id)


def _sparse_dot_block(x, w):
    # x: the row block's blocks along the contraction axis, w: w's blocks there
    if len(x) == 1 and len(w) == 1:  # blockwise gives both the same chunks there
        return np.asarray(_one(x) @ _one(w))
    import scipy.sparse as sp

    xs = sp.hstack([_one(b) for b in x], format="csr")
    return np.asarray(xs @ np.concatenate([_one(b) for b in w], axis=0))


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

    def version(self):
        return self.dask.__version__

    def native_types(self):
        return (self._Array,)

    # -- conversion --------------------------------------------------------
    def asarray(self, x, dtype=None):
        if isinstance(x, self._Array):
            return x if dtype is None or x.dtype == dtype else x.astype(dtype)
        a = np.asarray(x, dtype=dtype)
        return self.da.from_array(a, chunks=_chunks_for(a.shape))

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
        # Row blocks of the one CSR matrix: it enters the graph once, each
        # block is a slice of it.
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
        return self.da.from_array(csr, chunks=(rows, (csr.shape[1],)), asarray=False,
                                  fancy=False, meta=csr[:0])

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
        spec = {a: "auto" for a in range(x.ndim)}
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
        # Rows of x keep their chunks; the contraction axis is concatenated
        # (sparse blocks by scipy, w's blocks by numpy) per row block, and
        # left alone when it is one chunk.
        meta = np.empty((0,) * w.ndim, dtype=w.dtype)
        if w.ndim == 1:
            return self.da.blockwise(_sparse_dot_block, "i", x, "ik", w, "k", concatenate=False,
                                     dtype=w.dtype, meta=meta)
        return self.da.blockwise(_sparse_dot_block, "ij", x, "ik", w, "kj", concatenate=False,
                                 dtype=w.dtype, meta=meta)

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
        dsk = {}
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
        # The table as ONE block (one key in the graph, whatever the number of
        # id chunks); ids keep their row chunks, each row block whole.
        table = table.rechunk(table.shape) if table.numblocks != (1, 1) else table
        ids = ids.rechunk({1: -1}) if ids.numblocks[1] != 1 else ids
        return self.da.blockwise(_embedding_block, "ij", ids, "il", table, "vj", pad_id, None,
                                 concatenate=False, dtype=table.dtype,
                                 meta=np.empty((0, 0), dtype=table.dtype))

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

