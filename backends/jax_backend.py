"""The JAX backend: jax.Array eagerly, and the tracers inside jax.jit and grad.

JAX is imported in ``load()`` only, which also turns on ``jax_enable_x64``:
without it a float64 input would silently become float32 (and argsort's
int64 result int32).  Each op is one small ``jax.jit``-compiled function, so
an eager call runs one fused kernel (embedding_mean's gather is fused into its
row sums: no (n, L, d) buffer) and the same code traces inside a user's own
``jax.jit``.  Where JAX's own op differs from the contract, the primitive pins
the contract: duplicate scatter positions go through the core's unique
last-write positions (``.at[].set`` applies duplicates in an unspecified,
device-dependent order); keep_topk takes only the k-th value from
``lax.top_k`` (on the floats, NaN as +inf) and decides ties and NaN itself,
never by ``lax.top_k``'s order; out-of-range ids and indices are
refused, never filled or dropped.  On tracers the value checks run in the
graph: through ``checkify`` inside ``ub.function`` (the contract's exception,
raised after the call), through a host callback inside a user's own
``jax.jit`` (the call fails with a ``JaxRuntimeError`` carrying the message).
"""
from __future__ import annotations

import contextvars
import functools
import math
import re
import sys
from typing import Any

import numpy as np

from unibackend.plugin import (
    Backend,
    Capabilities,
    GraphIndex,
    check_broadcast,
    check_scalar_output,
    id_out_of_range,
    index_out_of_range,
    no_device,
    no_value_yet,
    scipy_grad_input,
    stable_descending,
    sync_free_checks,
    two_devices,
    unsupported_dtype,
    unsupported_in_mode,
)

# Inside ub.function the user's f is traced under checkify: value checks are
# checkify.check calls (a check that no checkify functionalises fails to trace).
_FUNCTIONALISED: contextvars.ContextVar = contextvars.ContextVar("unibackend_jax_checkify", default=False)
# A failed in-graph check carries a tag; ub.function turns it back into the exception.
_TAG = "[unibackend {}] "
_TAGGED = re.compile(r"\[unibackend (IndexError|ValueError)\] (.*?)(?: \(`check` failed\))?\s*$", re.S)
_KINDS = {"IndexError": IndexError, "ValueError": ValueError}


class JaxBackend(Backend):
    name = "jax"
    modules = ("jax",)
    extra = "jax"
    distributions = ("jax",)
    capabilities = Capabilities(autodiff=True, sparse=True, symbolic=False, devices=True, vmap=True,
                                transform_grad=True)
    # the jitted kernels, set by _build_kernels at load
    _k_check: Any
    _k_bounds: Any
    _k_dot: Any
    _k_fast_dot: Any
    _k_sparse_dot: Any
    _k_argsort: Any
    _k_keep_topk: Any
    _k_softmax: Any
    _k_masked_mean: Any
    _k_embedding_mean: Any
    _k_embedding_mean_checked: Any
    #: jax.jit (the plugin's ``function``, with checkify)
    compile_modes = ("jit",)

    # -- set-up ------------------------------------------------------------
    def load(self):
        import jax
        import jax.numpy as jnp
        import scipy.sparse as sp
        from jax.experimental import checkify

        # The contract promises numpy's dtypes; with x64 off JAX turns float64
        # into float32 and int64 into int32 without a word.
        jax.config.update("jax_enable_x64", True)
        self.jax, self.jnp, self.lax, self.sp = jax, jnp, jax.lax, sp
        self.checkify = checkify
        self._Array = jax.Array
        self._Tracer = jax.core.Tracer
        self._impl = type(jnp.zeros(()))
        self._dev = _jax_device(jax, self.device)
        self._cpu = (self._dev.platform if self._dev is not None else jax.default_backend()) == "cpu"
        self._sparse = None   # jax.experimental.sparse, imported at first sparse use
        _build_kernels(self)

    def version(self):
        from importlib.metadata import version

        return version("jax")

    def native_types(self):
        types = (self._Array, self._Tracer)
        # BCOO/BCSR exist only once jax.experimental.sparse is imported.
        sparse = sys.modules.get("jax.experimental.sparse")
        return types + (sparse.JAXSparse,) if sparse is not None else types

    def check_devices(self, op, tensors):
        first = None
        for x in tensors:
            devs = getattr(x, "devices", None)
            if devs is None or isinstance(x, self._Tracer):
                continue
            d = devs()
            if first is None:
                first = d
            elif d != first:
                raise two_devices(op, sorted(map(str, first)), sorted(map(str, d)), "jax.device_put")

    # -- conversion --------------------------------------------------------
    def asarray(self, x, dtype=None):
        if isinstance(x, (self._Array, self._Tracer)):
            if dtype is None or x.dtype == dtype:
                return x
            out = x.astype(dtype)
        else:
            a = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
            dtype = a.dtype
            out = self.jax.device_put(a, self._dev)
        if out.dtype != dtype:
            # x64 switched off again after load: refuse rather than downcast.
            raise unsupported_dtype("jax", dtype, f"would become {out.dtype}; unibackend needs jax_enable_x64 "
                                    "(jax.config.update('jax_enable_x64', True))")
        return out

    def to_numpy(self, x):
        if isinstance(x, self._Tracer):
            raise no_value_yet("a jax tracer (inside jax.jit or grad)",
                               "call it on the result outside the traced function")
        return np.asarray(x)

    def shape(self, x):
        return tuple(x.shape)

    def dtype(self, x):
        return np.dtype(x.dtype)

    def plain_float_dtype(self, x):
        if type(x) is self._impl or isinstance(x, self._Tracer):
            dt = x.dtype
            if dt.kind == "f":
                return dt
        return None

    def is_symbolic(self, x):
        return isinstance(x, self._Tracer)

    def is_tracing(self, x):
        return isinstance(x, self._Tracer)

    def is_sparse(self, x):
        sparse = sys.modules.get("jax.experimental.sparse")
        return sparse is not None and isinstance(x, sparse.JAXSparse)

    def _sparse_module(self):
        if self._sparse is None:
            from jax.experimental import sparse

            self._sparse = sparse
        return self._sparse

    def sparse_from_scipy(self, csr):
        sparse = self._sparse_module()
        coo = csr.tocoo()
        indices = np.stack([coo.row, coo.col], axis=1).astype(np.int64)
        return sparse.BCOO((self.asarray(coo.data), self.asarray(indices)), shape=csr.shape)

    def sparse_to_scipy(self, x):
        x = self._bcoo(x)
        idx = np.asarray(x.indices)
        n, m = x.shape
        inside = (idx[:, 0] < n) & (idx[:, 1] < m)  # BCOO pads with out-of-range indices
        coo = self.sp.coo_matrix((np.asarray(x.data)[inside], (idx[inside, 0], idx[inside, 1])), shape=x.shape)
        return coo.tocsr()  # sums duplicates

    def _bcoo(self, x):
        sparse = self._sparse_module()
        return x if isinstance(x, sparse.BCOO) else x.to_bcoo()

    def sparse_info(self, x):
        return tuple(x.shape), np.dtype(x.dtype)

    def sparse_cast(self, x, dtype):
        x = self._bcoo(x)
        return self._sparse_module().BCOO((self.asarray(x.data, dtype), x.indices), shape=x.shape)

    def id_bounds(self, ids, pad_id):
        if isinstance(ids, self._Tracer) or sync_free_checks():
            return None  # checked in the graph by embedding_mean
        if ids.size == 0:
            return None
        lo, hi = (int(v) for v in np.asarray(self._k_bounds(ids, pad_id)))  # one transfer of two numbers
        return None if lo > hi else (lo, hi)

    # -- ops ---------------------------------------------------------------
    def dot(self, a, b):
        return self._k_dot(a, b)

    def fast_dot(self, a, b):
        # ops.dot calls this only for two arrays of one type it has seen
        # (this plugin's array or tracer type); whether they are plain (one
        # float dtype, aligned shapes) is decided when _k_fast_dot traces, so
        # a cached signature costs no attribute reads here (each read of a
        # jax.Array's dtype or shape is ~0.1-0.3 us; +2.6 us over jnp.dot
        # before, measured interleaved under load).
        return self._k_fast_dot(a, b)

    def sparse_dot(self, x, w):
        return self._k_sparse_dot(self._bcoo(x), w)

    def argsort(self, x, axis, descending):
        return self._k_argsort(x, axis, descending)

    def set_subtensor(self, x, sub, value, accumulate):
        jnp = self.jnp
        if accumulate and x.dtype == jnp.bool_:
            # jnp's scatter-add takes no bool; numpy adds bools as a logical or,
            # which is an int32 sum tested against 0
            out = self.set_subtensor(x.astype(jnp.int32), sub, jnp.asarray(value).astype(jnp.int32), True)
            return out != 0
        if isinstance(sub, GraphIndex):  # traced parts: checked in the graph
            return self._set_in_graph(x, sub, value, accumulate)
        if sub.basic:
            at = x.at[sub.index]
            return at.add(value) if accumulate else at.set(value)
        vals = jnp.broadcast_to(value, sub.shape).reshape(-1)
        flat = x.reshape(-1)
        if accumulate:
            out = flat.at[sub.positions().reshape(-1)].add(vals)
        else:
            # The core's unique last-write positions: JAX applies duplicate
            # positions in an unspecified order that differs between devices.
            pos, take = sub.last_writes()
            if take is not None:
                vals = vals[take]
            out = flat.at[pos].set(vals, unique_indices=True)
        return out.reshape(x.shape)

    def _set_in_graph(self, x, index, value, accumulate):
        """set/inc_subtensor with a GraphIndex (traced index parts): the index
        applies to the flat positions of x, with in-graph range checks of
        every part the core could not check."""
        jnp = self.jnp
        op = index.op
        parts = index.parts
        for p in parts:
            if isinstance(p, self._Tracer) and _is_mask(p):
                # (jax 0.10 exports no BatchTracer class: its name tells vmap from jit)
                vmapped = type(p).__name__ == "BatchTracer"
                raise unsupported_in_mode(op, "jax.vmap" if vmapped else "jax.jit",
                                          "a traced boolean mask index selects a number of positions known only "
                                          "from its values; pass the mask as a numpy array, or an integer index")
        for j, axis, n in index.unchecked():
            i = parts[j].astype(np.int64)
            bad = (i < -n) | (i >= n)
            if i.size:  # (min/max of nothing has no identity; nothing to check)
                worst = jnp.where(jnp.any(bad & (i < 0)), jnp.min(jnp.where(bad, i, 0)),
                                  jnp.max(jnp.where(bad, i, 0)))
                self._value_check(~jnp.any(bad), "IndexError", str(index_out_of_range(op, "{bad}", axis, n)),
                                  bad=worst)
        size = math.prod(x.shape)
        pos = jnp.arange(size).reshape(x.shape)[parts]
        check_broadcast(op, "value", tuple(value.shape), tuple(pos.shape))
        sel = pos.reshape(-1)
        vals = jnp.broadcast_to(value, pos.shape).reshape(-1)
        flat = x.reshape(-1)
        if accumulate:
            out = flat.at[sel].add(vals)
        elif sel.size == 0:
            out = flat
        else:
            # For each position the index of its last write (negative: untouched).
            last = self.jax.ops.segment_max(jnp.arange(sel.size), sel, num_segments=size)
            out = jnp.where(last >= 0, vals[jnp.clip(last, 0)], flat)
        return out.reshape(x.shape)

    def _value_check(self, ok, kind, fmt, **values):
        """A check on traced values: checkify's inside ub.function, else a host
        callback that fails the call (JAX wraps it in a JaxRuntimeError)."""
        if _FUNCTIONALISED.get():
            self.checkify.check(ok, _TAG.format(kind) + fmt, **values)
        else:
            self._k_check(ok, values, kind, fmt)  # compiled: on a device it runs without a host sync

    def masked_mean(self, x, mask, axes):
        return self._k_masked_mean(x, mask, axes)

    def keep_topk(self, x, k, axis, fill):
        n = x.shape[axis]
        if k == n:
            return x  # jax arrays are immutable: no copy needed (x + 0 would turn -0.0 into +0.0)
        return self._k_keep_topk(x, self.jnp.asarray(fill, x.dtype), k, axis, self._cpu)

    def softmax(self, x, axis):
        if x.shape[axis] == 0:
            return x
        return self._k_softmax(x, axis)

    def embedding_mean(self, table, ids, pad_id):
        n, L = ids.shape
        V, d = table.shape
        info = np.iinfo(np.dtype(ids.dtype))
        pad = pad_id if info.min <= pad_id <= info.max else None  # None: no id can be padding
        traced = isinstance(ids, self._Tracer) or sync_free_checks()  # sync-free: checked in the graph
        if n == 0 or L == 0 or d == 0 or V == 0:
            out = self.jnp.zeros((n, d), table.dtype)
            if traced and V == 0 and L and n:
                self._check_ids(ids, pad, V, pad_id)
            return out
        if traced:
            self._check_ids(ids, pad, V, pad_id)
            return self._k_embedding_mean_checked(table, ids, pad)
        return self._k_embedding_mean(table, ids, pad)

    def _check_ids(self, ids, pad, V, pad_id):
        jnp = self.jnp
        i = ids.astype(np.int64)
        real = jnp.ones(ids.shape, bool) if pad is None else ids != pad
        bad = real & ((i < 0) | (i >= V))
        worst = jnp.where(jnp.any(bad & (i < 0)), jnp.min(jnp.where(bad, i, 0)), jnp.max(jnp.where(bad, i, 0)))
        self._value_check(~jnp.any(bad), "IndexError", str(id_out_of_range("embedding_mean", "{bad}", V, pad_id)),
                          bad=worst)

    # -- math for nn -------------------------------------------------------
    def tanh(self, x):
        return self.jnp.tanh(x)

    def relu(self, x):
        return self.jnp.maximum(x, 0)

    def exp(self, x):
        return self.jnp.exp(x)

    def log(self, x):
        return self.jnp.log(x)

    def reduce_sum(self, x, axis, keepdims):
        return self.jnp.sum(x, axis=axis, keepdims=keepdims)

    def reduce_max(self, x, axis, keepdims):
        return self.jnp.max(x, axis=axis, keepdims=keepdims)

    # -- autodiff and compilation ------------------------------------------
    def keep_compiled_code(self, directory):
        """JAX's persistent compilation cache in ``directory``, every entry
        kept (eager ops compile one small XLA program per primitive and
        shape: none reaches JAX's default 1 s threshold); a cache directory
        the user set is left alone.  Measured on 4 conformance checks in a
        fresh process: 17.5 s with the cache empty, 5.8 s with it filled."""
        jax = self.jax
        if jax.config.jax_compilation_cache_dir:
            return False
        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        return True

    def value_and_grad(self, f, argnums, args, kwargs):
        jax = self.jax
        args = list(args)
        leaves: list = []
        rebuild: list[Any] = []  # how to rebuild each leaf: None for a dense one
        for i in argnums:
            a = args[i]
            if self.sp.issparse(a):
                a = self.sparse_from_scipy(scipy_grad_input(a))
            if self.is_sparse(a):
                # Structured gradient: only w.r.t. the stored values.
                a = self._bcoo(a)
                if a.dtype.kind not in "fc":
                    a = self.sparse_cast(a, np.dtype(np.float64))
                leaves.append(a.data)
                rebuild.append(functools.partial(_with_data, self._sparse_module().BCOO, a))
                continue
            a = self.asarray(a)
            if a.dtype.kind not in "fc":
                a = a.astype(np.float64)  # as the ops promote integers
            leaves.append(a)
            rebuild.append(None)

        def scalar_f(*diff):
            call = list(args)
            for i, leaf, make in zip(argnums, diff, rebuild):
                call[i] = leaf if make is None else make(leaf)
            value = self.asarray(f(*call, **kwargs))
            check_scalar_output(tuple(value.shape))
            return value.reshape(()), value

        (_, value), grads = jax.value_and_grad(scalar_f, argnums=tuple(range(len(leaves))), has_aux=True)(*leaves)
        out = tuple(g if make is None else make(g) for g, make in zip(grads, rebuild))
        return value, out

    def function(self, f):
        jax, checkify = self.jax, self.checkify

        def functionalised(*args):
            token = _FUNCTIONALISED.set(True)
            try:
                return f(*args)
            finally:
                _FUNCTIONALISED.reset(token)

        compiled = jax.jit(checkify.checkify(functionalised, errors=checkify.user_checks))
        neutral_sparse = self.sp.issparse

        @functools.wraps(f)
        def run(*args):
            # jit takes pytrees of arrays: scipy.sparse arguments become BCOO.
            args = tuple(self.sparse_from_scipy(a.tocsr()) if neutral_sparse(a) else a for a in args)
            err, out = compiled(*args)
            msg = err.get()  # one small transfer: whether a check failed
            if msg is not None:
                found = _TAGGED.search(msg)
                if found is None:
                    err.throw()
                else:
                    raise _KINDS[found.group(1)](found.group(2).strip()) from None
            return out

        run.traced = compiled  # type: ignore[attr-defined]  # for tests: jax's own trace cache
        return run

    def compile(self, f, mode=None):
        self._compile_mode(mode)
        return self.function(f)

    def vmap(self, f):
        return self.jax.vmap(f)

    def transform_grad(self, f, how="grad"):
        return self.jax.grad(f) if how == "grad" else self.jax.jacrev(f)


# --------------------------------------------------------------------------
# The compiled kernels, one jax.jit per op (static: axes, k, flags).

def _build_kernels(B):
    jax, jnp, lax = B.jax, B.jnp, B.lax
    jit = jax.jit
    highest = lax.Precision.HIGHEST  # numpy's float32 products, no TF32 on GPUs

    @functools.partial(jit, static_argnums=(1,))
    def bounds(ids, pad):
        i = ids.astype(jnp.int64)
        info = np.iinfo(np.int64)
        real = ids != pad if np.iinfo(np.dtype(ids.dtype)).min <= pad <= np.iinfo(np.dtype(ids.dtype)).max \
            else jnp.ones(ids.shape, bool)
        return jnp.stack([jnp.min(jnp.where(real, i, info.max)), jnp.max(jnp.where(real, i, info.min))])

    @jit
    def dot(a, b):
        return jnp.dot(a, b, precision=highest)

    @jit
    def fast_dot(a, b):
        # None (an empty pytree, cached like any output) tells ops.dot to
        # take its full path, which checks, promotes and explains.
        if a.dtype == b.dtype and jnp.issubdtype(a.dtype, jnp.floating) and a.ndim \
                and 0 < b.ndim < 3 and a.shape[-1] == b.shape[0]:
            return jnp.dot(a, b, precision=highest)
        return None

    @jit
    def sparse_dot(x, w):
        return x @ w

    def canonical(x):
        # One NaN (positive) and one zero: sorts order bit patterns, where
        # -0.0 < +0.0 and a negative NaN would come first.
        if jnp.issubdtype(x.dtype, jnp.floating):
            x = jnp.where(jnp.isnan(x), jnp.nan, jnp.where(x == 0, jnp.zeros((), x.dtype), x))
        return x

    @functools.partial(jit, static_argnums=(1, 2))
    def argsort(x, axis, descending):
        x = canonical(x)
        if x.dtype == bool:
            x = x.astype(jnp.uint8)
        asc = functools.partial(jnp.argsort, stable=True)
        if descending:
            out = stable_descending(lambda v, a: asc(v, axis=a), jnp.flip, x, axis, x.shape[axis])
        else:
            out = asc(x, axis=axis)
        return out.astype(jnp.int64)

    def topk_exact(v, k):
        """The kept entries of each slice (last axis) by the contract's rule."""
        nan = jnp.isnan(v)
        inf = jnp.array(np.inf, v.dtype)
        # top_k on the floats, NaN as +inf (told apart below); float == and >
        # make -0.0 equal to +0.0 whatever order top_k gives the zeros.
        y = jnp.where(nan, inf, v)
        t = jnp.min(lax.top_k(y, k)[0], axis=-1, keepdims=True)
        # Everything above t stays; of the entries equal to t the first ones
        # by index fill the places left (lax.top_k's tie order unused).  When
        # t is +inf the NaNs rank above the +infs: all NaNs stay if fewer than
        # k, else the first k NaNs.
        at_inf = t == inf
        nan_full = jnp.sum(nan, axis=-1, keepdims=True, dtype=jnp.int32) >= k
        above = jnp.where(at_inf, nan & ~nan_full, y > t)
        tied = jnp.where(at_inf, jnp.where(nan_full, nan, v == inf), y == t)
        room = k - jnp.sum(above, axis=-1, keepdims=True, dtype=jnp.int32)
        return above | (tied & (jnp.cumsum(tied, axis=-1, dtype=jnp.int32) <= room))

    @functools.partial(jit, static_argnums=(2, 3, 4))
    def keep_topk(x, fill, k, axis, branch):
        xm = jnp.moveaxis(x, axis, -1)
        if k == 0:
            return jnp.full_like(x, fill)
        v = lax.stop_gradient(xm)
        if branch:
            # XLA's CPU: the exact rule costs ~4x the top_k (a NaN map, three
            # counts, a cumsum), and it is needed only where a NaN or a tie
            # straddling the k-th place makes the k-th value ambiguous.  One
            # top_k of k + 1 tells, from its own (n, k + 1) output: if the
            # smallest of the k + 1 values is unique in every slice (the k-th
            # value beats the (k+1)-th; -0.0 == +0.0 counts as a tie) and x
            # holds no NaN (a read-only reduction), the first k indices
            # are the answer, scattered into a fill array as a native user
            # does.  top_k runs on the floats and its output is not sliced:
            # on integers, or sliced, XLA's CPU makes it a full sort (~70x).
            # The NaN test is a float sum (NaN iff a NaN is summed, or
            # inf - inf: then the exact rule, right anyway), not
            # any(isnan): XLA fuses a float sum into one vectorised kernel
            # (0.15 ms at 512x4096) where the boolean any took 1.1 ms.
            # Paired under jax.jit against lax.top_k + .at[].set, k=4,
            # float32, CPU time of 41-61 rounds at load 5-6 on 2 cores:
            # 1.10x at 512x4096 and 1.08x at 2048x4096 with the sum;
            # 1.35x with any(isnan); 1.04-1.06x with no NaN test (wrong: the
            # pinned negative-NaN test fails), so the second pass over x is
            # what is left.  Measured the same: scattering top_k's own
            # first k values (1.11x, 1.08x), the fill array built outside
            # the conditional (1.10x, 1.12x).  Not taken: approx_max_k is
            # the same TopK call on the CPU (1.02x alone, same NaN order);
            # a sort 77-97x.
            n = xm.shape[-1]
            x2, v2 = xm.reshape(-1, n), v.reshape(-1, n)
            vals, idx = lax.top_k(v2, k + 1)  # k < n here: the plugin returns x when k == n
            last = vals == jnp.min(vals, axis=-1, keepdims=True)
            # (NaN anywhere, not just among the k + 1: top_k ranks a NaN with
            # its sign bit set last)
            plain = jnp.all(jnp.sum(last, axis=-1, dtype=jnp.int32) == 1) & ~jnp.isnan(jnp.sum(v2))

            def scatter():
                rows = jnp.arange(x2.shape[0])[:, None]
                # gathered from x, not from top_k's values: the gradient flows
                upd = jnp.where(last, fill, jnp.take_along_axis(x2, idx, axis=-1))
                return jnp.full_like(x2, fill).at[rows, idx].set(upd).reshape(xm.shape)

            out = lax.cond(plain, scatter, lambda: jnp.where(topk_exact(v, k), xm, fill))
        else:
            out = jnp.where(topk_exact(v, k), xm, fill)  # GPU: a conditional would read its predicate on the host
        return jnp.moveaxis(out, -1, axis)

    @functools.partial(jit, static_argnums=(1,))
    def softmax(x, axis):
        m = jnp.max(x, axis=axis, keepdims=True)
        # Only an all -inf slice needs its max replaced (0: its entries give 0);
        # a NaN or +inf max makes the slice NaN, as the plain formula does.
        m = lax.stop_gradient(jnp.where(m == -jnp.inf, jnp.zeros((), x.dtype), m))
        e = jnp.exp(x - m)
        s = jnp.sum(e, axis=axis, keepdims=True)
        return e / jnp.where(s == 0, jnp.ones((), x.dtype), s)

    @functools.partial(jit, static_argnums=(2,))
    def masked_mean(x, mask, axes):
        keep = jnp.broadcast_to(mask != 0, x.shape)
        total = jnp.sum(jnp.where(keep, x, jnp.zeros((), x.dtype)), axis=axes)  # a select: masked NaN never leaks
        count = jnp.sum(keep, axis=axes).astype(x.dtype)
        return total / jnp.maximum(count, 1)

    def embedding_mean(table, ids, pad, checked):
        V = table.shape[0]
        i = ids.astype(jnp.int64) if ids.dtype != jnp.int64 else ids
        real = jnp.ones(ids.shape, bool) if pad is None else ids != pad
        if checked:  # traced ids: a bad id never reads outside, its row is NaN
            bad = real & ((i < 0) | (i >= V))
            real = real & ~bad
        # Padding (and a bad id) points one past the table: a gather in fill
        # mode reads 0 there, and its gradient drops those entries, so the
        # pad row's gradient is exactly 0 whatever the cotangent holds.
        safe = jnp.where(real, i, V)

        # One column of ids at a time: each step gathers (n, d) rows and adds
        # them up, so memory is O(n*d + nnz), never the (n, L, d) gather
        # (XLA on the CPU does not fuse a gather into a reduction: 105 MB vs
        # 5 MB at n=4096, L=50, d=128, and the loop is faster too); the
        # backward pass keeps only the ids of each step.
        def column(total, i_col):
            return total + table.at[i_col].get(mode="fill", fill_value=0), None

        total, _ = lax.scan(column, jnp.zeros((ids.shape[0], table.shape[1]), table.dtype), safe.T)
        count = jnp.sum(real, axis=1, keepdims=True).astype(table.dtype)
        out = total / jnp.maximum(count, 1)
        if checked:
            out = jnp.where(jnp.any(bad, axis=1, keepdims=True), jnp.nan, out)
        return out

    @functools.partial(jit, static_argnums=(2, 3))
    def check(ok, values, kind, fmt):
        jax.debug.callback(functools.partial(_raise_unless, _KINDS[kind], fmt), ok, **values)

    B._k_check = check
    B._k_bounds = bounds
    B._k_dot = dot
    B._k_fast_dot = fast_dot
    B._k_sparse_dot = sparse_dot
    B._k_argsort = argsort
    B._k_keep_topk = keep_topk
    B._k_softmax = softmax
    B._k_masked_mean = masked_mean
    B._k_embedding_mean = jit(functools.partial(embedding_mean, checked=False), static_argnums=(2,))
    B._k_embedding_mean_checked = jit(functools.partial(embedding_mean, checked=True), static_argnums=(2,))


def _raise_unless(kind, fmt, ok, **values):
    """Host side of an in-graph check inside a user's jax.jit."""
    if not np.all(ok):
        raise kind(fmt.format(**{k: np.asarray(v).tolist() for k, v in values.items()}))


def _with_data(bcoo, like, data):
    return bcoo((data, like.indices), shape=like.shape)


def _jax_device(jax, device):
    """The jax.Device for a device string ('cpu', 'gpu', 'cuda:1'), None: JAX's default."""
    if device is None:
        return None
    kind, _, num = str(device).partition(":")
    kind = {"cuda": "gpu"}.get(kind, kind)
    try:
        return jax.devices(kind)[int(num or 0)]
    except (RuntimeError, IndexError) as e:
        raise no_device("jax", device, e) from None


def _is_mask(p):
    """A boolean index part (a Python bool or a bool array)."""
    return isinstance(p, (bool, np.bool_)) or np.dtype(getattr(p, "dtype", object)) == np.bool_
