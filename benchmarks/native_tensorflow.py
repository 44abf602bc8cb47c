"""tensorflow: the best native call and the naive formulation of each op
(eager mode, CPU)."""
from __future__ import annotations

import time

from .timing import Candidate


class Natives:
    backend = "tensorflow"
    memory_tool = ""
    sync = None                 # eager CPU ops return when they are done
    copy_bandwidth = None
    compiler = "tf.function(jit_compile=True)"

    def __init__(self, device=None):
        import tensorflow as tf

        self.tf = tf
        self.device = "cpu"

    def put(self, x):
        with self.tf.device("/CPU:0"):
            return self.tf.constant(x)

    def put_sparse(self, csr):
        import numpy as np

        coo = csr.tocoo()
        idx = np.stack([coo.row, coo.col], axis=1).astype(np.int64)
        return self.tf.sparse.reorder(self.tf.SparseTensor(idx, coo.data, coo.shape))

    def peak_memory(self, fn, args):
        return None  # no per-call allocator statistics on the CPU

    # -- ops ---------------------------------------------------------------
    def dispatch(self, a, b):
        return [Candidate("native", "native", "tf.linalg.matmul(a, b)", self.tf.linalg.matmul, (a, b))]

    def keep_topk(self, x, k):
        return [
            Candidate("native", "native", "tf.math.top_k + scatter", _topk_scatter, (self.tf, x, k)),
            Candidate("naive", "naive", "argsort + scatter", _argsort_way, (self.tf, x, k)),
        ]

    def embedding_mean(self, table, ids):
        return [
            Candidate("native", "native", "embedding_lookup_sparse(mean)", _lookup_sparse,
                      (self.tf, table, ids)),
            Candidate("naive", "naive", "gather(table, ids) * mask, sum", _gather_mean,
                      (self.tf, table, ids)),
        ]

    def sparse_dot(self, x, w):
        return [
            Candidate("native", "native", "sparse_dense_matmul(x, w)", self.tf.sparse.sparse_dense_matmul,
                      (x, w)),
            Candidate("naive", "naive", "sparse.to_dense(x) @ w", _dense_matmul, (self.tf, x, w)),
        ]

    # -- compiled (tf.function with XLA) -------------------------------------
    def compiled_natives(self, k):
        tf = self.tf
        # embedding_lookup_sparse's SparseSegmentMean has no XLA kernel: under
        # jit_compile the native formulation is the masked gather, which XLA fuses.
        return {
            "keep_topk": ("tf.math.top_k + scatter", lambda x: _topk_scatter(tf, x, k)),
            "embedding_mean": ("gather(table, ids) * mask, sum",
                               lambda table, ids: _gather_mean(tf, table, ids)),
        }

    def compile(self, fn, args):
        """(compiled fn, info): the first call's seconds (trace + XLA compile);
        an op XLA cannot compile is reported, not fatal."""
        f = self.tf.function(fn, jit_compile=True)
        t0 = time.perf_counter()
        try:
            f(*args)
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            return None, {"compile_s": None, "error": f"{type(e).__name__}: {msg}"}
        return f, {"compile_s": time.perf_counter() - t0, "error": None}


def _scatter_rows(tf, x, idx, vals):
    rows = tf.broadcast_to(tf.range(tf.shape(x)[0], dtype=idx.dtype)[:, None], tf.shape(idx))
    nd = tf.stack([rows, idx], axis=-1)
    return tf.tensor_scatter_nd_update(tf.fill(tf.shape(x), tf.constant(-float("inf"), x.dtype)), nd, vals)


def _topk_scatter(tf, x, k):
    vals, idx = tf.math.top_k(x, k)
    return _scatter_rows(tf, x, idx, vals)


def _argsort_way(tf, x, k):
    idx = tf.argsort(x, axis=-1, direction="DESCENDING")[:, :k]
    return _scatter_rows(tf, x, idx, tf.gather(x, idx, batch_dims=1))


def _lookup_sparse(tf, table, ids):
    # from_dense drops the zeros: exactly the padding (pad_id 0).
    return tf.nn.embedding_lookup_sparse(table, tf.sparse.from_dense(ids), None, combiner="mean")


def _gather_mean(tf, table, ids):
    mask = tf.cast(ids != 0, table.dtype)
    total = tf.reduce_sum(tf.gather(table, ids) * mask[:, :, None], axis=1)
    return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)[:, None]


def _dense_matmul(tf, x, w):
    return tf.sparse.to_dense(x) @ w
