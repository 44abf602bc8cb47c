"""numpy: the best native call and the naive formulation of each op.

Every ``native_*.py`` module defines the same class with the same methods in
the same order (like the plugins): ``put``/``put_sparse`` bring numpy inputs
onto the backend, and each op method returns the non-unified candidates.
"""
from __future__ import annotations

import numpy as np

from .timing import Candidate, peak_tracemalloc


class Natives:
    backend = "numpy"
    memory_tool = "tracemalloc"
    sync = None                      # numpy calls return when they are done

    def __init__(self, device=None):
        import scipy.sparse as sp

        self.sp = sp
        self.device = "cpu"

    def put(self, x):
        return x

    def put_sparse(self, csr):
        return csr

    def peak_memory(self, fn, args):
        return peak_tracemalloc(fn, args)

    # -- ops ---------------------------------------------------------------
    def dispatch(self, a, b):
        return [Candidate("native", "native", "np.dot(a, b)", np.dot, (a, b))]

    def keep_topk(self, x, k):
        return [
            Candidate("native", "native", "argpartition + put_along_axis", _topk_scatter, (x, k)),
            Candidate("naive", "naive", "argsort + assignment", _argsort_way, (x, k)),
        ]

    def embedding_mean(self, table, ids):
        return [
            Candidate("native", "native", "hand-built CSR @ table", _csr_mean, (self.sp, table, ids)),
            Candidate("naive", "naive", "table[ids] * mask, sum", _gather_mean, (table, ids)),
        ]

    def sparse_dot(self, x, w):
        return [
            Candidate("native", "native", "x @ w (scipy CSR)", _matmul, (x, w)),
            Candidate("naive", "naive", "x.toarray() @ w", _dense_matmul, (x, w)),
        ]


def _topk_scatter(x, k):
    idx = np.argpartition(x, x.shape[-1] - k, axis=-1)[:, x.shape[-1] - k:]
    out = np.full_like(x, -np.inf)
    np.put_along_axis(out, idx, np.take_along_axis(x, idx, axis=-1), axis=-1)
    return out


def _argsort_way(x, k):
    idx = np.argsort(x, axis=-1)[:, -k:]
    rows = np.arange(x.shape[0])[:, None]
    out = np.full_like(x, -np.inf)
    out[rows, idx] = x[rows, idx]
    return out


def _csr_mean(sp, table, ids):
    real = ids != 0
    counts = real.sum(axis=1)
    data = np.repeat((1.0 / np.maximum(counts, 1)).astype(table.dtype), counts)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    sel = sp.csr_matrix((data, ids[real], indptr), shape=(ids.shape[0], table.shape[0]))
    return sel @ table


def _gather_mean(table, ids):
    mask = (ids != 0).astype(table.dtype)
    total = (table[ids] * mask[:, :, None]).sum(axis=1)
    return total / np.maximum(mask.sum(axis=1), 1)[:, None]


def _matmul(x, w):
    return x @ w


def _dense_matmul(x, w):
    return x.toarray() @ w
