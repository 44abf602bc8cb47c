"""The numpy backend: the reference every other plugin is compared with.

Written for obvious correctness first, yet never naive where the contract
says more (no (n, L, d) gather in embedding_mean, no full sort in keep_topk).
"""
from __future__ import annotations

import numpy as np

from unibackend.plugin import Backend, Capabilities, CapabilityError, stable_descending


class NumpyBackend(Backend):
    name = "numpy"
    modules = ("numpy",)
    extra = "numpy"
    distributions = ("numpy",)
    capabilities = Capabilities(autodiff=False, sparse=True, symbolic=False, devices=False)

    # -- set-up ------------------------------------------------------------
    def load(self):
        import scipy.sparse as sp

        self.sp = sp

    def version(self):
        return np.__version__

    def native_types(self):
        return (np.ndarray,)

    # -- conversion --------------------------------------------------------
    def asarray(self, x, dtype=None):
        if type(x) is np.ndarray and (dtype is None or x.dtype == dtype):
            return x
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x)

    def shape(self, x):
        return x.shape

    def dtype(self, x):
        return x.dtype

    def plain_float_dtype(self, x):
        if type(x) is np.ndarray:
            dt = x.dtype
            if dt.kind == "f":
                return dt
        return None

    def is_sparse(self, x):
        return self.sp.issparse(x)

    def sparse_from_scipy(self, csr):
        return csr

    def sparse_to_scipy(self, x):
        return self.sp.csr_matrix(x)

    def sparse_info(self, x):
        return x.shape, x.dtype

    def sparse_cast(self, x, dtype):
        return x.astype(dtype)

    # -- ops ---------------------------------------------------------------
    def dot(self, a, b):
        return np.dot(a, b)

    def fast_dot(self, a, b):
        if type(b) is np.ndarray and type(a) is np.ndarray:
            dt = a.dtype
            if dt is b.dtype and dt.kind == "f" and a.ndim and 0 < b.ndim < 3:
                try:  # np.dot checks the alignment itself, cheaper than reading shapes
                    return np.dot(a, b)
                except ValueError:  # misaligned: the full path says why
                    return None
        return None

    def sparse_dot(self, x, w):
        return np.asarray(x @ w)

    def argsort(self, x, axis, descending):
        if not descending:
            return np.argsort(x, axis=axis, kind="stable").astype(np.int64, copy=False)
        out = stable_descending(lambda v, a: np.argsort(v, axis=a, kind="stable"), np.flip, x, axis, x.shape[axis])
        return out.astype(np.int64, copy=False)

    def set_subtensor(self, x, index, value, accumulate):
        out = x.copy()
        if index.basic:
            if accumulate:
                out[index.index] += value
            else:
                out[index.index] = value
            return out
        vals = np.broadcast_to(value, index.shape).reshape(-1)
        flat = out.reshape(-1)
        if accumulate:
            np.add.at(flat, index.positions().reshape(-1), vals)
        else:
            pos, take = index.last_writes()
            flat[pos] = vals if take is None else vals[take]
        return out

    def masked_mean(self, x, mask, axes):
        keep = np.broadcast_to(mask != 0, x.shape)
        total = np.where(keep, x, 0).sum(axis=axes)
        count = keep.sum(axis=axes).astype(x.dtype)
        return (total / np.maximum(count, 1)).astype(x.dtype, copy=False)

    def keep_topk(self, x, k, axis, fill):
        n = x.shape[axis]
        if k == n:
            return x.copy()
        if k == 0:
            return np.full_like(x, fill)
        fill = np.asarray(fill, dtype=x.dtype)
        # Fast path: argpartition picks some k largest per slice; that set is
        # the contract's answer when no NaN is among them and no slice has a
        # tie straddling its k-th place.  Every slice has at least k entries
        # >= its k-th largest, so the total count is k per slice exactly then.
        top = np.take(np.argpartition(x, n - k, axis=axis), np.arange(n - k, n), axis=axis)
        vals = np.take_along_axis(x, top, axis=axis)
        if not np.isnan(vals).any():
            t = vals.min(axis=axis, keepdims=True)
            if np.count_nonzero(x >= t) == k * (x.size // n):
                out = np.full_like(x, fill)
                np.put_along_axis(out, top, vals, axis=axis)
                return out
        # Exact tie rule: everything above the k-th largest value t stays
        # (np.partition sorts NaN last, so NaN counts as largest); of the
        # entries equal to t, the first ones by index fill the places left.
        t = np.take(np.partition(x, n - k, axis=axis), [n - k], axis=axis)
        nan_x, nan_t = np.isnan(x), np.isnan(t)
        with np.errstate(invalid="ignore"):
            above = np.where(nan_t, False, (x > t) | nan_x)
            tied = np.where(nan_t, nan_x, x == t)
        room = k - above.sum(axis=axis, keepdims=True)
        keep = above | (tied & (np.cumsum(tied, axis=axis) <= room))
        return np.where(keep, x, fill)

    def softmax(self, x, axis):
        m = np.max(x, axis=axis, keepdims=True) if x.size else np.zeros_like(x)
        # Only an all -inf slice needs its max replaced (by 0, so it gives 0s);
        # a +inf or NaN max makes the whole slice NaN, as the plain formula does.
        m = np.where(m == -np.inf, 0, m).astype(x.dtype, copy=False)
        with np.errstate(invalid="ignore", over="ignore"):
            e = np.exp(x - m)
            s = e.sum(axis=axis, keepdims=True)
            return (e / np.where(s == 0, 1, s)).astype(x.dtype, copy=False)

    def embedding_mean(self, table, ids, pad_id):
        # A row-normalised CSR (n, V) times the table: O(n*d + nnz) memory,
        # repeated ids add up, rows of only padding have no entries.
        n = ids.shape[0]
        real = ids != pad_id
        counts = real.sum(axis=1)
        cols = ids[real]
        data = np.repeat((1.0 / np.maximum(counts, 1)).astype(table.dtype), counts)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        sel = self.sp.csr_matrix((data, cols, indptr), shape=(n, table.shape[0]))
        return np.asarray(sel @ table, dtype=table.dtype)

    # -- autodiff and compilation ------------------------------------------
    def value_and_grad(self, f, argnums, args, kwargs):
        raise CapabilityError("value_and_grad: backend 'numpy' has no autodiff")  # the core checks first

    def function(self, f):
        return f
