"""jax: the best native call and the naive formulation of each op, eager
(every jnp call dispatches a cached XLA computation), and the same pairs
inside ``jax.jit``.

JAX dispatches asynchronously: every timed call of every candidate ends with
``jax.block_until_ready`` on its result (``block``), so a batch times the
work and not only its enqueueing; the unified op and the native call pay the
same wait.
"""
from __future__ import annotations

import time

from .timing import Candidate


class Natives:
    backend = "jax"
    memory_tool = ""
    sync = None
    copy_bandwidth = None
    compiler = "jax.jit"

    def __init__(self, device=None):
        from unibackend import _registry

        # The plugin turns jax_enable_x64 on at load; the natives run under
        # the same setting (float32 inputs stay float32 either way).
        _registry.backend("jax")
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp, self.lax = jax, jnp, jax.lax
        self.block = jax.block_until_ready
        self.device = "cpu"
        self._cpu = jax.devices("cpu")[0]

    def put(self, x):
        return self.jax.device_put(x, self._cpu)

    def put_sparse(self, csr):
        from unibackend import _registry

        return _registry.backend("jax").sparse_from_scipy(csr)   # a BCOO, as a jax user holds it

    def peak_memory(self, fn, args):
        return None  # no per-call allocator statistics on the CPU client

    # -- ops ---------------------------------------------------------------
    def dispatch(self, a, b):
        return [Candidate("native", "native", "jnp.dot(a, b)", self.jnp.dot, (a, b))]

    def keep_topk(self, x, k):
        return [
            Candidate("native", "native", "lax.top_k + .at[].set", _topk_scatter, (self.jnp, self.lax, x, k)),
            Candidate("naive", "naive", "argsort + .at[].set", _argsort_way, (self.jnp, x, k)),
        ]

    def embedding_mean(self, table, ids):
        return [Candidate("native", "native", "table[ids] * mask, sum", _gather_mean, (self.jnp, table, ids))]

    def sparse_dot(self, x, w):
        return [
            Candidate("native", "native", "x @ w (BCOO)", _matmul, (x, w)),
            Candidate("naive", "naive", "x.todense() @ w", _dense_matmul, (x, w)),
        ]

    # -- compiled (jax.jit) --------------------------------------------------
    def compiled_natives(self, k):
        jnp, lax = self.jnp, self.lax
        return {
            "keep_topk": ("lax.top_k + .at[].set", lambda x: _topk_scatter(jnp, lax, x, k)),
            "embedding_mean": ("table[ids] * mask, sum", lambda table, ids: _gather_mean(jnp, table, ids)),
        }

    def compile(self, fn, args):
        """(compiled fn, info): the first call's seconds (trace + XLA compile)."""
        f = self.jax.jit(fn)
        t0 = time.perf_counter()
        try:
            self.block(f(*args))
        except Exception as e:  # a op that does not trace: reported, not fatal
            return None, {"compile_s": None, "error": f"{type(e).__name__}: {e}"}
        return f, {"compile_s": time.perf_counter() - t0, "error": None}


def _topk_scatter(jnp, lax, x, k):
    vals, idx = lax.top_k(x, k)
    rows = jnp.arange(x.shape[0])[:, None]
    return jnp.full_like(x, -jnp.inf).at[rows, idx].set(vals)


def _argsort_way(jnp, x, k):
    idx = jnp.argsort(x, axis=-1, descending=True)[:, :k]
    rows = jnp.arange(x.shape[0])[:, None]
    return jnp.full_like(x, -jnp.inf).at[rows, idx].set(x[rows, idx])


def _gather_mean(jnp, table, ids):
    mask = (ids != 0).astype(table.dtype)
    total = (table[ids] * mask[:, :, None]).sum(axis=1)
    return total / jnp.maximum(mask.sum(axis=1), 1)[:, None]


def _matmul(x, w):
    return x @ w


def _dense_matmul(x, w):
    return x.todense() @ w
