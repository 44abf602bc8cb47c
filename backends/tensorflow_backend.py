"""The TensorFlow backend: eager tensors and tf.function graphs alike.

TensorFlow is imported in ``load()`` only.  Where TF's own op differs from the
contract (NaN order in sorts, tie order of ``top_k`` across devices, duplicate
indices in scatters, no dtype promotion), the primitive pins the contract's
behaviour explicitly instead of relying on a kernel's habit.  Inside a
``tf.function`` values are symbolic: the checks that need values become
in-graph asserts whose failures ``ub.function`` turns back into the
contract's exception.
"""
from __future__ import annotations

import inspect
import math
import re
import sys
import weakref

import numpy as np

from unibackend.plugin import (
    Backend,
    Capabilities,
    GraphIndex,
    cannot_order,
    check_broadcast,
    check_scalar_output,
    entry_outside_shape,
    fill,
    id_bounds,
    id_out_of_range,
    index_out_of_range,
    k_out_of_range,
    no_value_yet,
    scipy_grad_input,
    unknown_rank,
    unsupported_in_mode,
)

# An in-graph check that fails raises tf.errors.InvalidArgumentError carrying
# a tag; ub.function turns it back into the named Python exception.
_TAG = "[unibackend {}] "
_TAGGED = re.compile(r"\[unibackend (IndexError|ValueError)\] ([^\]]*)")
_KINDS = {"IndexError": IndexError, "ValueError": ValueError, "TypeError": TypeError}
_TRACED = re.compile(r"(IndexError|ValueError|TypeError): (.*)\Z", re.S)


class TensorflowBackend(Backend):
    name = "tensorflow"
    modules = ("tensorflow",)
    extra = "tensorflow"
    distributions = ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly")
    capabilities = Capabilities(autodiff=True, sparse=True, symbolic=True, devices=False, vmap=True,
                                transform_grad=True)
    #: a plain tf.function graph (default Grappler rewrites), and XLA (jit_compile=True)
    compile_modes = ("graph", "xla")

    @staticmethod
    def trace_constant(fn):
        # AutoGraph calls an "artifact" as it is instead of rewriting it (the
        # first look at a type would otherwise be converted, plugins and all).
        fn.autograph_info__ = {}
        # Called when unibackend is imported: with TF already imported, the
        # rule below keeps AutoGraph out of unibackend from the first trace on.
        if "tensorflow" in sys.modules:
            _autograph_leaves_unibackend_alone()

    # -- set-up ------------------------------------------------------------
    def load(self):
        import scipy.sparse as sp
        import tensorflow as tf

        self.tf = tf
        self.sp = sp
        self._getitem = _numpy_getitem()
        _autograph_leaves_unibackend_alone()
        # The eager tensor type, taken outside any graph: load() may run first
        # inside a tf.function, where tf.constant gives a symbolic tensor.
        with tf.init_scope():
            self._eager_type = type(tf.constant(0))
        takes = inspect.signature(tf.sparse.segment_mean).parameters
        self._sparse_gradient = {"sparse_gradient": True} if "sparse_gradient" in takes else {}
        self._to_tf = {}      # numpy dtype -> tf.DType
        self._to_np = {}      # tf dtype enum -> numpy dtype
        self._fast_enum = hasattr(self._eager_type, "_datatype_enum")
        self._float_enums = {t.as_datatype_enum for t in (tf.float16, tf.float32, tf.float64)}
        # The op itself: tf.linalg.matmul's Python wrapper costs ~20 µs a call.
        self._matmul = tf.raw_ops.MatMul
        self._from_scipy = lambda: None  # the last sparse_from_scipy result (weak)
        self._in_xla = _xla_probe(tf)
        self._gpu = None  # whether TF sees a GPU (asked on first need)

    def version(self):
        from importlib.metadata import PackageNotFoundError, version

        for dist in self.distributions:
            try:
                return version(dist)
            except PackageNotFoundError:
                continue
        return ""

    def native_types(self):
        tf = self.tf
        # tf.Tensor is the base of eager and graph (symbolic) tensors alike.
        return (tf.Tensor, tf.Variable, tf.SparseTensor)

    def _tf_dtype(self, dtype):
        dt = self._to_tf.get(dtype)
        if dt is None:
            dt = self._to_tf[dtype] = self.tf.as_dtype(dtype)
        return dt

    # -- conversion --------------------------------------------------------
    def asarray(self, x, dtype=None):
        tf = self.tf
        if isinstance(x, tf.Tensor):
            if dtype is None or self.dtype(x) == dtype:
                return x
            return tf.cast(x, self._tf_dtype(dtype))
        if isinstance(x, tf.Variable):
            x = tf.convert_to_tensor(x)  # a read: differentiable, never mutates
            return x if dtype is None else self.asarray(x, dtype)
        if isinstance(x, tf.IndexedSlices):  # a gradient: made dense
            return self.asarray(tf.convert_to_tensor(x), dtype)
        if isinstance(x, tf.SparseTensor):
            return x if dtype is None else self.sparse_cast(x, dtype)
        # numpy's dtype rules (a Python float is float64, not TF's float32).
        return tf.convert_to_tensor(np.asarray(x, dtype=dtype))

    def to_numpy(self, x):
        tf = self.tf
        if isinstance(x, tf.IndexedSlices):
            x = tf.convert_to_tensor(x)
        if self.is_symbolic(x):
            value = tf.get_static_value(x)
            if value is None:
                raise no_value_yet("x, a symbolic tf.Tensor (inside a tf.function),",
                                   "call it on the result outside the tf.function")
            return np.asarray(value)
        return x.numpy()

    def shape(self, x):
        s = x.shape
        if s.rank is None:
            raise unknown_rank("tensorflow", "tf.TensorSpec(shape=None)")
        return tuple(s.as_list())

    def dtype(self, x):
        # Keyed by the dtype's enum: EagerTensor hands it out in 0.1 µs, where
        # x.dtype takes ~1 µs and hashing a tf.DType another ~1 µs.
        if self._fast_enum and type(x) is self._eager_type:
            out = self._to_np.get(x._datatype_enum())
            if out is not None:
                return out
        dt = x.dtype
        out = self._to_np.get(dt.as_datatype_enum)
        if out is None:
            out = self._to_np[dt.as_datatype_enum] = np.dtype(dt.as_numpy_dtype)
        return out

    def plain_float_dtype(self, x):
        # Eager tensors only: a graph tensor's shape may hold None dims.  A
        # scalar is left to the full path (its TensorShape is truthy).
        if type(x) is self._eager_type:
            dt = self.dtype(x)  # a dict lookup; tf.DType.is_floating costs ~2 µs
            if dt.kind == "f" and x.shape.rank:
                return dt
        return None

    def is_symbolic(self, x):
        return isinstance(x, self.tf.Tensor) and not isinstance(x, self._eager_type)

    def is_sparse(self, x):
        return isinstance(x, self.tf.SparseTensor)

    def sparse_from_scipy(self, csr):
        # Canonical CSR (sorted, no duplicates): its COO order is row-major.
        rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
        indices = np.stack([rows, csr.indices.astype(np.int64)], axis=1)
        st = self.tf.SparseTensor(indices, self.tf.convert_to_tensor(csr.data), csr.shape)
        # sparse_dot need not check nor reorder what it gets straight from here.
        self._from_scipy = weakref.ref(st)
        return st

    def sparse_to_scipy(self, x):
        idx, vals = self.to_numpy(x.indices), self.to_numpy(x.values)
        shape = tuple(int(d) for d in self.to_numpy(x.dense_shape))
        # coo -> csr sums duplicates, as the contract reads a COO tensor.
        return self.sp.coo_matrix((vals, (idx[:, 0], idx[:, 1])), shape=shape).tocsr()

    def sparse_info(self, x):
        s = x.shape
        return (tuple(s.as_list()) if s.rank is not None else (None, None)), self.dtype(x.values)

    def sparse_cast(self, x, dtype):
        tf = self.tf
        return tf.SparseTensor(x.indices, tf.cast(x.values, self._tf_dtype(dtype)), x.dense_shape)

    def id_bounds(self, ids, pad_id):
        tf = self.tf
        if self.is_symbolic(ids):
            value = tf.get_static_value(ids)
            return None if value is None else id_bounds(value, pad_id)  # else checked in-graph
        if self._eager_cpu(ids):
            return id_bounds(ids.numpy(), pad_id)  # .numpy() of a CPU tensor is no copy
        return self._device_bounds(ids, pad_id)

    def _device_bounds(self, ids, pad_id):
        """id_bounds where the ids live (a GPU): two reductions, two numbers back."""
        tf = self.tf
        ids = tf.cast(ids, tf.int64) if ids.dtype != tf.int64 else ids
        real = self._not_pad(ids, pad_id)
        big = np.iinfo(np.int64)
        lo = tf.reduce_min(tf.where(real, ids, big.max))
        hi = tf.reduce_max(tf.where(real, ids, big.min))
        lo, hi = (int(v) for v in tf.stack([lo, hi]).numpy())
        return None if lo > hi else (lo, hi)

    def _not_pad(self, ids, pad_id):
        tf = self.tf
        info = np.iinfo(self.dtype(ids))
        if not info.min <= pad_id <= info.max:
            return tf.ones_like(ids, dtype=tf.bool)  # no id can equal pad_id
        return tf.not_equal(ids, tf.constant(pad_id, ids.dtype))

    # -- ops ---------------------------------------------------------------
    def dot(self, a, b):
        tf = self.tf
        ra, rb = a.shape.rank, b.shape.rank
        if ra == 2 and rb == 2:
            return self._matmul(a=a, b=b)
        if ra == 2 and rb == 1:
            return tf.linalg.matvec(a, b)
        # numpy dot: contract a's last axis with b's first.
        return tf.tensordot(a, b, axes=1)

    def fast_dot(self, a, b):
        """Two eager tensors of one float dtype with aligned shapes: their
        product without the core's conversions; anything else None."""
        if type(a) is self._eager_type and self._fast_enum:
            dt = a._datatype_enum()
            if dt in self._float_enums and dt == b._datatype_enum():
                sa, sb = a.shape, b.shape
                ra, rb = sa.rank, sb.rank
                if ra and 0 < rb < 3 and sa[-1] == sb[0]:
                    return self._matmul(a=a, b=b) if ra == 2 and rb == 2 else self.dot(a, b)
        return None

    def sparse_dot(self, x, w):
        tf = self.tf
        if self._in_xla():
            return self._sparse_dot_xla(x, w)
        if x is not self._from_scipy():
            if not self.is_symbolic(x.indices):
                self._check_sparse_indices(x)
            # A user's tensor may be in any order (and may hold duplicates,
            # which the product adds up); the kernel wants row-major order.
            x = tf.sparse.reorder(x)
        if w.shape.rank == 1:
            return tf.sparse.sparse_dense_matmul(x, w[:, None])[:, 0]
        return tf.sparse.sparse_dense_matmul(x, w)

    def _sparse_dot_xla(self, x, w):
        """XLA has no sparse kernels: gather the rows of w each stored entry
        needs and add them up per row of x (duplicates add, any order)."""
        tf = self.tf
        n = x.shape[0] if x.shape[0] is not None else x.dense_shape[0]
        w2 = w[:, None] if w.shape.rank == 1 else w
        terms = tf.gather(w2, x.indices[:, 1]) * x.values[:, None]
        out = tf.math.unsorted_segment_sum(terms, x.indices[:, 0], n)
        return out[:, 0] if w.shape.rank == 1 else out

    def _check_sparse_indices(self, x, host=None):
        """Every stored index inside dense_shape (IndexError, before the product);
        on the host for CPU tensors, else where the tensor lives."""
        tf = self.tf
        idx, shape = x.indices, x.dense_shape
        if idx.shape[0] == 0:
            return
        if self._eager_cpu(idx) if host is None else host:  # numpy reads a CPU tensor in place
            bad = ((idx.numpy() < 0) | (idx.numpy() >= shape.numpy()[None, :])).any(axis=1)
            if not bad.any():
                return
            i = int(np.argmax(bad))
        else:
            bad = tf.reduce_any((idx < 0) | (idx >= shape[None, :]), axis=1)
            if not bool(tf.reduce_any(bad)):
                return
            i = int(tf.argmax(tf.cast(bad, tf.int32)))
        pos = tuple(int(v) for v in idx[i].numpy())
        raise entry_outside_shape("sparse_dot", "x", pos, tuple(int(d) for d in shape.numpy()))

    def argsort(self, x, axis, descending):
        tf = self.tf
        key, perm = self._last_axis(self._order_key("argsort", x), axis)
        if not descending:
            key = tf.bitwise.invert(key)  # reverses a signed int order, no overflow
        n = tf.shape(key)[-1]
        # top_k on ints: ties are exact, and come lower index first.
        idx = tf.math.top_k(key, k=n, sorted=True).indices
        idx = tf.cast(idx, tf.int64)
        return idx if perm is None else tf.transpose(idx, _inverse(perm))

    def _order_key(self, op, x):
        """Signed integers that order like x under the contract: -0.0 == +0.0,
        every NaN equal and greater than +inf; equal keys iff equal values."""
        tf = self.tf
        dt = x.dtype
        if dt.is_floating:
            itype = {2: tf.int16, 4: tf.int32, 8: tf.int64}[dt.size]
            zero = tf.zeros((), dt)
            bits = tf.bitcast(tf.where(tf.equal(x, zero), zero, x), itype)
            # Negative floats order backwards as ints: flip all but the sign bit.
            key = tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, tf.constant(itype.max, itype)), bits)
            key = tf.where(tf.math.is_nan(x), tf.constant(itype.max, itype), key)
            return key if dt.size > 2 else tf.cast(key, tf.int32)
        if dt == tf.bool:
            return tf.cast(x, tf.int32)
        if dt == tf.uint64:
            # Flip the top bit: unsigned order becomes signed order.
            return tf.bitwise.bitwise_xor(tf.bitcast(x, tf.int64), tf.constant(np.iinfo(np.int64).min, tf.int64))
        if dt.is_integer:
            return tf.cast(x, tf.int64) if dt != tf.int64 else x
        raise cannot_order(op, dt.name, "tensorflow")

    def _last_axis(self, x, axis):
        """x with ``axis`` moved last, and the permutation (None: no move)."""
        nd = x.shape.rank
        if axis == nd - 1:
            return x, None
        perm = [i for i in range(nd) if i != axis] + [axis]
        return self.tf.transpose(x, perm), perm

    def set_subtensor(self, x, index, value, accumulate):
        tf = self.tf
        if accumulate and x.dtype == tf.bool:
            # TensorScatterAdd and AddV2 take no bool; numpy adds bools as a
            # logical or, which is an int32 sum tested against 0
            out = self.set_subtensor(tf.cast(x, tf.int32), index, tf.cast(value, tf.int32), True)
            return tf.not_equal(out, 0)
        if isinstance(index, GraphIndex):  # symbolic shape or index
            return self._set_in_graph(x, index, value, accumulate)
        if 0 in index.shape or 0 in index.xshape:
            return self.tf.identity(x)  # nothing to write (TF's scatters refuse an empty x)
        parts, lead = _leading_parts(index.index, index.xshape)
        if index.basic and lead == len(index.xshape) and lead:
            # A block that reaches the last axis: one strided-slice update
            # (whole rows go to the row scatter below, several times faster).
            return self._set_slices(x, index, value, accumulate)
        return self._set_rows(x, index, value, accumulate, parts, lead)

    def _set_slices(self, x, sub, value, accumulate):
        """ints and forward slices: one strided-slice update of a copy."""
        tf = self.tf
        begin, end, strides, shrink = [], [], [], 0
        for axis, p in enumerate(sub.index):
            if isinstance(p, slice):
                begin.append(p.start)
                end.append(p.stop)
                strides.append(p.step)
            else:
                begin.append(p)
                end.append(p + 1)
                strides.append(1)
                shrink |= 1 << axis
        value = tf.broadcast_to(value, sub.shape)
        if accumulate:
            value = tf.strided_slice(x, begin, end, strides, shrink_axis_mask=shrink) + value
        return tf.raw_ops.TensorStridedSliceUpdate(
            input=x, begin=begin, end=end, strides=strides, value=value, shrink_axis_mask=shrink)

    def _set_rows(self, x, sub, value, accumulate, parts, lead):
        """Advanced indices: x seen as (rows, cols), where cols are the trailing
        axes the index leaves whole; the index picks rows (flat positions when
        it reaches the last axis), scattered once per row."""
        tf = self.tf
        xshape = sub.xshape
        rows = np.arange(int(np.prod(xshape[:lead], dtype=np.int64)), dtype=np.int64)
        rows = rows.reshape(xshape[:lead])[tuple(parts)]
        cols = int(np.prod(xshape[lead:], dtype=np.int64))
        # int32 where it fits: tf.vectorized_map's scatter rule mixes int32
        # batch indices with int64 ones and fails (TF pfor, TensorScatterUpdate)
        rows = rows.reshape(-1).astype(np.int32 if rows.size < 2**31 and x.shape[0] is not None
                                       and math.prod(xshape[:lead]) < 2**31 else np.int64)
        x2 = tf.reshape(x, [-1, cols])
        vals = tf.reshape(tf.broadcast_to(value, sub.shape), [-1, cols])
        if accumulate:
            out = tf.tensor_scatter_nd_add(x2, rows[:, None], vals)
        else:
            # TF leaves the order of duplicate writes undefined: scatter each
            # row once, with the value of its last write.
            uniq, first_rev = np.unique(rows[::-1], return_index=True)
            if uniq.size != rows.size:
                vals = tf.gather(vals, rows.size - 1 - first_rev)
                rows = uniq
            out = tf.tensor_scatter_nd_update(x2, rows[:, None], vals)
        return tf.reshape(out, xshape)

    def _set_in_graph(self, x, index, value, accumulate):
        """set/inc_subtensor with a GraphIndex (x's shape or an index known
        only when the graph runs): the index applies to a tensor of flat
        positions, with in-graph range checks of the parts the core left."""
        tf = self.tf
        single = len(index.parts) == 1
        size = tf.size(x, out_type=tf.int64)
        pos = tf.reshape(tf.range(size), tf.shape(x, out_type=tf.int64))
        op = index.op
        xla = self._in_xla()
        if any(isinstance(p, tf.Tensor) and p.dtype == tf.bool for p in index.parts) and _in_vectorized_map(tf):
            raise unsupported_in_mode(op, "tf.vectorized_map", "a boolean mask index selects a different number "
                                      "of positions in each example; batch an integer index instead")
        checks, parts = self._index_checks(x, index, xla)
        if not xla:
            with tf.control_dependencies(checks):
                pos = tf.identity(pos)
        sel = self._getitem(pos, parts[0] if single else parts)
        check_broadcast(op, "value", self.shape(value), self.shape(sel))
        vals = tf.reshape(tf.broadcast_to(value, tf.shape(sel)), [-1])
        sel = tf.reshape(sel, [-1])
        if x.shape.is_fully_defined() and x.shape.num_elements() < 2**31:
            sel, size = tf.cast(sel, tf.int32), tf.cast(size, tf.int32)  # (int32: as in _set_rows)
        flat = tf.reshape(x, [-1])
        if accumulate:
            out = tf.tensor_scatter_nd_add(flat, sel[:, None], vals)
        else:
            # For each position, the index of its last write (-1: untouched).
            # A select, not a scatter to tf.where(hit): no shape depends on the
            # values, so tf.vectorized_map can batch it.
            last = tf.math.unsorted_segment_max(tf.range(tf.size(sel, out_type=sel.dtype)), sel, size)
            hit = last >= 0
            out = tf.where(hit, tf.gather(vals, tf.maximum(last, 0)), flat)
        out = tf.reshape(out, tf.shape(x))
        if xla and checks:
            # XLA keeps no runtime check: a bad index (read as 0 above, never
            # outside x) makes a float result NaN throughout; others keep x.
            out = tf.where(tf.reduce_all(tf.stack(checks)), out, self._poison(x))
        return out

    def _poison(self, x):
        """What a call with bad values returns under XLA: NaN for floats."""
        tf = self.tf
        if x.dtype.is_floating or x.dtype.is_complex:
            return tf.fill(tf.shape(x), tf.constant(np.nan, x.dtype))
        return x

    def _graph_check(self, ok, kind, msg, **values):
        """An in-graph assert with message ``msg``, its placeholders filled
        with the named tensors' values, tagged for ub.function."""
        tf = self.tf
        pieces = fill(msg)
        strs = [p if i % 2 == 0 else tf.strings.as_string(values[p]) for i, p in enumerate(pieces)]
        msg = tf.strings.join([_TAG.format(kind)] + strs)
        # Under tf.vectorized_map the assert reports every example's message
        # (up to summarize of them): a passing example's is empty, so the
        # first tag names a bad value.
        return tf.debugging.Assert(ok, [tf.where(ok, "", msg)], summarize=1000)

    def _index_checks(self, x, index, xla=False):
        """(checks, parts): in-graph asserts that every part the core could not
        check is in range of its axis, naming the worst bad value.  Under XLA
        (no runtime asserts) the checks are bool tensors and the bad entries
        of the parts are replaced by 0."""
        tf = self.tf
        parts = list(index.parts)
        dims = tf.shape(x, out_type=tf.int64)
        checks = []
        for j, axis, _ in index.unchecked():
            p = parts[j]
            n = dims[axis]
            i = tf.cast(p, tf.int64)
            inside = (i >= -n) & (i < n)
            ok = tf.reduce_all(inside)
            if xla:
                checks.append(ok)
                if isinstance(p, tf.Tensor):
                    parts[j] = tf.where(inside, p, tf.zeros((), p.dtype))
            else:
                # numpy names the first bad index; the smallest one too
                # low, else the largest one too high, is as good a witness
                lo, hi = tf.reduce_min(i), tf.reduce_max(i)
                bad = tf.where(lo < -n, lo, hi)
                msg = str(index_out_of_range(index.op, "{bad}", axis, "{size}"))
                checks.append(self._graph_check(ok, "IndexError", msg, bad=bad, size=n))
        return checks, tuple(parts)

    def masked_mean(self, x, mask, axes):
        tf = self.tf
        keep = mask if mask.dtype == tf.bool else tf.not_equal(mask, tf.zeros((), mask.dtype))
        if keep.shape != x.shape or not x.shape.is_fully_defined():
            keep = tf.broadcast_to(keep, tf.shape(x))
        # where, not multiply: a masked-out NaN or inf never reaches the sum.
        total = tf.reduce_sum(tf.where(keep, x, tf.zeros((), x.dtype)), axis=axes)
        # Counted in integers (exact), int32 unless a slice could overflow it.
        size = int(np.prod([x.shape[a] or 2**31 for a in axes], dtype=np.float64))
        count = tf.reduce_sum(tf.cast(keep, tf.int32 if size < 2**31 else tf.int64), axis=axes)
        return total / tf.cast(tf.maximum(count, 1), x.dtype)

    def keep_topk(self, x, k, axis, fill):
        tf = self.tf
        n = x.shape[axis]
        if k == n:
            return tf.identity(x)
        if n is None:  # a graph's unknown dim: the core could not check k
            size = tf.shape(x)[axis]
            msg = str(k_out_of_range("keep_topk", k, "{n}", axis))
            check = self._graph_check(size >= k, "ValueError", msg, n=size)
            with tf.control_dependencies([check]):
                x = tf.identity(x)
        fill = tf.constant(fill, x.dtype)
        if k == 0:
            return tf.fill(tf.shape(x), fill)
        # A NaN-free sum proves x NaN-free in one cheap pass (a NaN sum, from
        # NaN or from inf - inf, just takes the careful path below).
        if self._eager_cpu(x) and self.dtype(x).kind == "f" and not np.isnan(tf.reduce_sum(x).numpy()):
            # TF's CPU top_k ranks equal values lower index first (-0.0 == +0.0
            # included): its indices are the contract's, once NaN is ruled out.
            xt, perm = self._last_axis(x, axis)
            rows = tf.reshape(xt, [-1, n])
            top = tf.math.top_k(rows, k=k, sorted=False)
            m = tf.shape(rows)[0]
            at = tf.stack([tf.broadcast_to(tf.range(m)[:, None], [m, k]), top.indices], axis=-1)
            out = tf.reshape(tf.tensor_scatter_nd_update(tf.fill(tf.shape(rows), fill), at, top.values), tf.shape(xt))
            return out if perm is None else tf.transpose(out, _inverse(perm))
        xt, perm = self._last_axis(x, axis)
        v = tf.stop_gradient(xt)
        if self.is_symbolic(x) and not self._has_gpu():
            xla = self._in_xla()
            # XLA's CPU top_k is fast on float32 only: on integers, other
            # floats or with its output sliced it becomes a full sort (~80x).
            # float16 and bfloat16 fit float32 exactly; float64 rounds,
            # monotonically, so the float32 tests still prove its answer.
            y = v if v.dtype == tf.float32 or v.dtype == tf.float64 and not xla else tf.cast(v, tf.float32)
            if xla:
                return self._moved_back(self._keep_topk_xla(xt, v, y, k, fill), perm)
            # The k-th value t as the min of the k values (not a slice of
            # them).  If exactly k entries per slice are not below t (a NaN is
            # not below anything), they are the k largest, no NaN and no tie
            # at the k-th place: the plain answer, else the exact rule.
            top = tf.math.top_k(y, k=k)
            t = tf.reduce_min(top.values, axis=-1, keepdims=True)
            # "Not below t" spelled with an explicit NaN flag, never as
            # ~(y < t): Grappler's arithmetic optimizer (RemoveLogicalNot)
            # rewrites that into y >= t, false for a NaN, and a slice with a
            # NaN then looked plain.  A NaN t (top_k's NaN placement differs
            # between kernels) is never plain.
            kept = (y >= t) | tf.math.is_nan(y)
            plain = tf.reduce_all(tf.equal(tf.reduce_sum(tf.cast(kept, tf.int32), axis=-1), k)) \
                & tf.logical_not(tf.reduce_any(tf.math.is_nan(t)))
            # TF's graph runs each op apart: the plain branch's own select is cheaper
            return self._moved_back(tf.cond(plain, lambda: tf.where(kept, xt, fill),
                                            lambda: tf.where(self._topk_keep(v, *self._topk_rule(v, k)), xt, fill)), perm)
        # eager with a NaN, or a GPU (whose tf.cond reads its predicate on the host)
        return self._moved_back(tf.where(self._topk_keep(v, *self._topk_rule(v, k)), xt, fill), perm)

    def _keep_topk_xla(self, xt, v, y, k, fill):
        """keep_topk on the last axis inside XLA on the CPU: one top_k of
        k + 1 on the float32 ``y`` tells, from its own (m, k + 1) output,
        whether the k-th place is unambiguous: the smallest of the k + 1
        values is unique in every slice (-0.0 == +0.0 counts as a tie) and
        ``y`` holds no NaN anywhere (XLA's top_k ranks a NaN with its sign
        bit set last, so its output cannot tell; a NaN among the k + 1 is
        caught by the same test, whatever the min makes of it).  Then the
        first k indices are the answer, scattered into a fill array as a
        native user does; else the exact rule.  float64 is ranked in float32: a k-th value above the (k+1)-th
        in float32 is above it in float64 too (rounding is monotonic).

        Paired under tf.function(jit_compile=True) against top_k +
        tensor_scatter_nd_update, k=4, float32, load 5-8 on 2 cores: 1.13x
        at 512x4096 and 1.12x at 2048x4096 (bench, 31 rounds; 1.05-1.17x
        over five runs), where the earlier count of entries not below t
        and a select pass were 1.24-1.28x.  By CPU time, 41 rounds, at
        512x4096: top_k of k + 1 and the scatter alone 1.00-1.03x, with
        the conditional 1.06-1.07x, with the NaN test 1.08-1.13x.  The NaN
        test is a float sum (NaN iff a NaN is summed, or inf - inf: then
        the exact rule, which is right anyway), 0.4 ms of native's 4.5:
        reduce_any(is_nan) cost 3x the sum, and a max (NaN-propagating
        only while XLA's fast-min-max flag is off), a matvec with ones and
        row sums cost the same 0.4 ms.  Returning only indices and values
        from the conditional and scattering after it, or scattering
        top_k's own k values, measured the same."""
        tf = self.tf
        if _in_vectorized_map(tf):
            # pfor's rule for TensorScatterUpdate builds a shape XLA cannot
            # fix at compile time: under tf.vectorized_map the exact rule alone
            return tf.where(self._topk_keep(v, *self._topk_rule(v, k)), xt, fill)
        shape = tf.shape(xt)
        n = shape[-1]
        x2, y2 = tf.reshape(xt, [-1, n]), tf.reshape(y, [-1, n])
        vals, idx = tf.math.top_k(y2, k=k + 1)  # k < n here: k == n returned x
        last = tf.equal(vals, tf.reduce_min(vals, axis=-1, keepdims=True))
        plain = tf.reduce_all(tf.equal(tf.reduce_sum(tf.cast(last, tf.int32), axis=-1), 1)) \
            & tf.logical_not(tf.math.is_nan(tf.reduce_sum(y2)))

        def scatter():
            m = tf.shape(x2)[0]
            # gathered from x, not from top_k's values: the gradient flows
            upd = tf.where(last, fill, tf.gather(x2, idx, batch_dims=1))
            at = tf.stack([tf.broadcast_to(tf.range(m)[:, None], tf.shape(idx)), idx], axis=-1)
            return tf.reshape(tf.tensor_scatter_nd_update(tf.fill(tf.shape(x2), fill), at, upd), shape)

        return tf.cond(plain, scatter, lambda: tf.where(self._topk_keep(v, *self._topk_rule(v, k)), xt, fill))

    def _moved_back(self, out, perm):
        return out if perm is None else self.tf.transpose(out, _inverse(perm))

    def _topk_keep(self, v, t, nan_full, last):
        """Entries above t stay, and those tied at t up to index ``last``.
        NaN ranks above +inf: with t = +inf and nan_full, only NaNs tie."""
        tf = self.tf
        nan = tf.math.is_nan(v)
        if v.dtype != t.dtype:
            v = tf.cast(v, t.dtype)
        inf = tf.constant(np.inf, v.dtype)
        # float == and > make -0.0 equal to +0.0
        y = tf.where(nan, inf, v)
        at_inf = tf.equal(t, inf)
        above = tf.where(at_inf, nan & ~nan_full, y > t)
        tied = tf.where(at_inf, tf.where(nan_full, nan, tf.equal(v, inf)), tf.equal(y, t))
        return above | (tied & (tf.range(tf.shape(v)[-1]) <= last))

    def _topk_rule(self, v, k):
        """The contract's rule per slice (last axis) as (t, nan_full, last)
        for _topk_keep, relying on no kernel's tie order or NaN placement:
        t the k-th value with NaN as +inf, nan_full whether k NaNs fill the
        slice, last the index of the last entry tied at t that stays."""
        tf = self.tf
        nan = tf.math.is_nan(v)
        if v.dtype != tf.float64:
            v = tf.cast(v, tf.float32)  # exact for float16/bfloat16; XLA's fast top_k
        inf = tf.constant(np.inf, v.dtype)
        y = tf.where(nan, inf, v)
        t = tf.reduce_min(tf.math.top_k(y, k=k).values, axis=-1, keepdims=True)
        nan_full = tf.reduce_sum(tf.cast(nan, tf.int32), axis=-1, keepdims=True) >= k
        # Of the entries tied at t the first ones by index fill the places
        # left after those above t.
        at_inf = tf.equal(t, inf)
        above = tf.where(at_inf, nan & ~nan_full, y > t)
        tied = tf.where(at_inf, tf.where(nan_full, nan, tf.equal(v, inf)), tf.equal(y, t))
        room = k - tf.reduce_sum(tf.cast(above, tf.int32), axis=-1, keepdims=True)
        stays = tied & (tf.cumsum(tf.cast(tied, tf.int32), axis=-1) <= room)
        idx = tf.range(tf.shape(v)[-1])
        last = tf.reduce_max(tf.where(stays, idx, -1), axis=-1, keepdims=True)
        return t, nan_full, last

    def _has_gpu(self):
        if self._gpu is None:
            self._gpu = bool(self.tf.config.list_logical_devices("GPU"))
        return self._gpu

    def _eager_cpu(self, x):
        return type(x) is self._eager_type and x.device.endswith("CPU:0")

    def softmax(self, x, axis):
        tf = self.tf
        if self._eager_cpu(x) and self.dtype(x).kind == "f":
            # TF's fused softmax is right on finite slices only (a NaN in a
            # float32 slice gives [0, nan, 0, 0]; an all -inf one NaN): a
            # finite sum proves every entry finite, else the careful path.
            if x.shape[axis] == 0 or np.isfinite(tf.reduce_sum(x).numpy()):
                return tf.nn.softmax(x, axis=axis)
        m = tf.reduce_max(x, axis=axis, keepdims=True)
        # An all -inf slice has max -inf: shift by 0 instead, e is then all 0.
        # A +inf or NaN max leaves the whole slice NaN, as the plain formula does.
        m = tf.where(tf.equal(m, -np.inf), tf.zeros((), x.dtype), m)
        e = tf.exp(x - tf.stop_gradient(m))
        s = tf.reduce_sum(e, axis=axis, keepdims=True)
        return e / tf.where(tf.equal(s, 0), tf.ones((), x.dtype), s)

    def embedding_mean(self, table, ids, pad_id):
        tf = self.tf
        real = self._not_pad(ids, pad_id)
        ids = tf.cast(ids, tf.int64) if ids.dtype != tf.int64 else ids
        V = tf.shape(table, out_type=tf.int64)[0]
        unchecked = self.is_symbolic(ids) and tf.get_static_value(ids) is None
        if self._in_xla():
            return self._embedding_mean_xla(table, ids, real, V, unchecked)
        if unchecked:
            big = np.iinfo(np.int64)
            lo = tf.reduce_min(tf.where(real, ids, big.max))
            hi = tf.reduce_max(tf.where(real, ids, big.min))
            msg = str(id_out_of_range("embedding_mean", "{bad}", "{rows}", pad_id, "{last}"))
            check = self._graph_check((lo >= 0) & (hi < V), "IndexError", msg,
                                      bad=tf.where(lo < 0, lo, hi), rows=V, last=V - 1)
            with tf.control_dependencies([check]):
                ids = tf.identity(ids)
        # A fused sparse segment mean: reads table rows in place, so memory is
        # O(n*d + nnz); a repeated id counts each time, a row of only padding
        # is an empty segment (zeros), and the table's gradient is zero on
        # rows never read (the pad row).  The gradient comes as IndexedSlices:
        # TF's dense SparseSegmentMeanGrad leaves the table's gradient
        # uninitialised when no id is real.
        n = tf.shape(ids, out_type=tf.int64)[0]
        if self.is_symbolic(ids):
            return self._exact_gradient_shape(self._embedding_mean_static(table, ids, real, n))
        where = tf.where(real)                                  # (nnz, 2), row-major
        return self._exact_gradient_shape(
            tf.sparse.segment_mean(table, tf.gather_nd(ids, where), where[:, 0], num_segments=n,
                                   **self._sparse_gradient))

    def _exact_gradient_shape(self, out):
        """``out``, through a reshape to its own shape when it may be empty:
        pfor (tape.jacobian, vectorized_map) batches a MatMul's gradient with
        a reshape to [x, y, -1], which makes an empty (0, 0) gradient (0, 1)
        (tensorflow/python/ops/parallel_for/pfor.py, _convert_matmul), and
        SparseSegmentMeanGrad's while-loop fallback then fails on it; the
        reshape's own gradient restores the shape.  Free when not empty."""
        if out.shape.is_fully_defined() and out.shape.num_elements():
            return out
        return self.tf.reshape(out, self.tf.shape(out))

    def _embedding_mean_static(self, table, ids, real, n):
        """The same segment mean over all n * L entries (no shape depends on
        the values, so tf.vectorized_map can batch it): the real ids first in
        row-major order (a stable sort on the pad flag), then the padding, in
        one extra segment n (segment ids sorted, as the kernel wants) that is
        dropped, so neither its values (row 0 is read) nor its gradient
        (exactly 0) reach anything.  Memory O((n + 1) * d + n * L)."""
        tf = self.tf
        # int32 where it fits: vectorized_map's rule for the segment ops mixes
        # int32 offsets with int64 ids and fails (TF 2.x pfor._convert_sparse_segment)
        small = all(d is not None and d < 2**31 - 1 for d in (table.shape[0], ids.shape[0])) \
            and ids.shape.is_fully_defined() and ids.shape.num_elements() < 2**31
        it = tf.int32 if small else tf.int64
        n = tf.cast(n, it)
        flat_real = tf.reshape(real, [-1])
        order = tf.argsort(tf.cast(tf.logical_not(flat_real), tf.int32), stable=True)
        kept = tf.gather(flat_real, order)
        rows = tf.reshape(tf.broadcast_to(tf.range(n)[:, None], tf.shape(ids, out_type=it)), [-1])
        seg = tf.where(kept, tf.gather(rows, order), n)
        safe = tf.where(kept, tf.gather(tf.cast(tf.reshape(ids, [-1]), it), order), tf.zeros((), it))
        out = tf.sparse.segment_mean(table, safe, seg, num_segments=n + 1, **self._sparse_gradient)
        return out[:-1]

    def _embedding_mean_xla(self, table, ids, real, V, unchecked):
        """embedding_mean inside XLA, which has no sparse segment kernels:
        one column of ids at a time in a while loop, each step gathering
        (n, d) rows and adding them, so memory is O(n*d + nnz).  XLA's CPU
        does not fuse a gather into a reduction: the masked gather-sum
        stores the (n, L, d) gather (105 MB at n=4096, L=50, d=128).
        Paired under tf.function(jit_compile=True) against that masked
        gather (15 rounds, load ~7 on 2 cores): this loop 0.55x, the loop
        unrolled in Python 0.51x (its gradient took 5.3 s to compile),
        unsorted_segment_sum 0.92x, the masked gather with the plugin's
        selects 1.25x.  Padding reads row 0 and is masked out by a select,
        so its values (NaN, inf) reach nothing; a row holding an id out of
        range (no runtime check survives XLA) reads row 0 too and comes out
        NaN.

        The gradient is written out (a segment sum of the output's
        cotangent over the real ids, so the pad row's is exactly 0): TF's
        own gradient of the loop keeps each step's ids in a TensorList,
        which XLA cannot compile under pfor (``tape.jacobian`` inside
        jit_compile failed with ``TensorListReserve``)."""
        tf = self.tf
        n, d = tf.shape(ids)[0], tf.shape(table)[1]
        if table.shape[0] == 0:  # only padding can be here (else checked, or NaN below)
            return tf.where(tf.reduce_any(real, axis=1, keepdims=True),
                            tf.constant(np.nan, table.dtype), tf.zeros([n, d], table.dtype))
        use = real
        if unchecked:
            bad = real & ((ids < 0) | (ids >= V))
            use = real & ~bad
        safe = tf.where(use, ids, tf.zeros((), ids.dtype))
        count = tf.reduce_sum(tf.cast(real, table.dtype), axis=1, keepdims=True)
        scale = 1 / tf.maximum(count, tf.ones((), table.dtype))
        zero = tf.zeros((), table.dtype)
        if ids.shape.num_elements() == 0 or table.shape[1] == 0:
            # nothing to add up: the masked gather-sum holds no element (pfor
            # fails on the loop's empty slices and segment sums)
            total = tf.reduce_sum(tf.where(use[..., None], tf.gather(table, safe), zero), axis=1)
            out = total * scale
            return tf.where(tf.reduce_any(bad, axis=1, keepdims=True), tf.constant(np.nan, table.dtype), out) \
                if unchecked else out
        L = tf.shape(ids)[1]
        # (L + 1, n): one row of ids per step, and one more that no step
        # reads, so that XLA can slice a row even when L is 0
        cols = tf.concat([tf.transpose(safe), tf.zeros([1, n], safe.dtype)], axis=0)
        use_cols = tf.concat([tf.transpose(use), tf.zeros([1, n], tf.bool)], axis=0)

        @tf.custom_gradient
        def mean(table):
            def column(j, total):
                return j + 1, total + tf.where(use_cols[j][:, None], tf.gather(table, cols[j]), zero)

            _, total = tf.while_loop(lambda j, _: j < L, column, (tf.constant(0), tf.zeros([n, d], table.dtype)),
                                     maximum_iterations=L)

            def grad(g):
                rows = tf.where(use[..., None], (g * scale)[:, None, :], zero)
                return tf.math.unsorted_segment_sum(tf.reshape(rows, [-1, d]), tf.reshape(safe, [-1]),
                                                    tf.shape(table)[0])

            return total * scale, grad

        out = mean(table)
        if unchecked:
            out = tf.where(tf.reduce_any(bad, axis=1, keepdims=True), tf.constant(np.nan, table.dtype), out)
        return out

    # -- math for nn (TF's own functions: tapes and graphs record them) ----
    def tanh(self, x):
        return self.tf.math.tanh(self.asarray(x))

    def relu(self, x):
        return self.tf.nn.relu(self.asarray(x))

    def exp(self, x):
        return self.tf.math.exp(self.asarray(x))

    def log(self, x):
        return self.tf.math.log(self.asarray(x))

    def reduce_sum(self, x, axis, keepdims):
        return self.tf.reduce_sum(self.asarray(x), axis=axis, keepdims=keepdims)

    def reduce_max(self, x, axis, keepdims):
        return self.tf.reduce_max(self.asarray(x), axis=axis, keepdims=keepdims)

    # -- autodiff and compilation ------------------------------------------
    def value_and_grad(self, f, argnums, args, kwargs):
        tf = self.tf
        args = list(args)
        with tf.GradientTape() as tape:
            sources = [self._watched(tape, args, i) for i in argnums]
            value = self.asarray(f(*args, **kwargs))
        check_scalar_output(tuple(value.shape.as_list()) if value.shape.rank is not None else (None,))
        grads = tape.gradient(value, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        out = []
        for i, g in zip(argnums, grads):
            a = args[i]
            if isinstance(g, tf.IndexedSlices):
                g = tf.convert_to_tensor(g)
            if isinstance(a, tf.SparseTensor):
                g = tf.SparseTensor(a.indices, g, a.dense_shape)
            out.append(g)
        return value, tuple(out)

    def _watched(self, tape, args, i):
        """Watch ``args[i]`` (replaced by the tensor to differentiate) and
        return the source its gradient is taken of."""
        tf = self.tf
        a = args[i]
        if self.sp.issparse(a):
            a = self.sparse_from_scipy(scipy_grad_input(a))
        if isinstance(a, tf.SparseTensor):
            # Structured gradient: only w.r.t. the stored values.
            values = tf.identity(a.values)
            tape.watch(values)
            args[i] = tf.SparseTensor(a.indices, values, a.dense_shape)
            return values
        if not isinstance(a, tf.Variable):
            a = self.asarray(a)
            if not (a.dtype.is_floating or a.dtype.is_complex):
                a = tf.cast(a, tf.float64)  # as the ops promote integers
            args[i] = a
        tape.watch(a)
        return a

    def function(self, f):
        return self._graph_function(f, jit_compile=None)

    def compile(self, f, mode=None):
        # The default path stays XLA: no runtime assert survives it, so a bad
        # id or index gives NaN (docs/backends/tensorflow.md); the static
        # checks still raise.  "graph" is a plain tf.function, what
        # ub.function and a user's own tf.function give.
        if mode == "graph":
            return self._graph_function(f, jit_compile=None)
        self._compile_mode(mode)
        return self._graph_function(f, jit_compile=True)

    def vmap(self, f):
        tf = self.tf

        def mapped(*args):
            return tf.vectorized_map(lambda a: f(*a), tuple(args))

        return mapped

    def transform_grad(self, f, how="grad"):
        tf = self.tf

        def gradient(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = f(x)
            if how == "jacrev":  # (tape.jacobian vectorizes with pfor)
                return tape.jacobian(y, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            g = tape.gradient(y, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return tf.convert_to_tensor(g)  # (an IndexedSlices from a gather)

        return gradient

    def _graph_function(self, f, jit_compile):
        """tf.function of ``f``; an in-graph check's failure comes back as the
        contract's exception."""
        tf = self.tf
        compiled = tf.function(f, jit_compile=jit_compile)

        def run(*args):
            try:
                return compiled(*args)
            except tf.errors.InvalidArgumentError as e:
                found = _TAGGED.search(e.message or "")
                if found is None:
                    raise
                raise _KINDS[found.group(1)](found.group(2).strip()) from None
            except Exception as e:
                # AutoGraph rewrites an error raised while tracing f (the
                # core's check of a bad argument) to start "in user code:",
                # an IndexError even into a StagingError; the check's own
                # words are kept in its metadata ("IndexError: ...").
                cause = getattr(getattr(e, "ag_error_metadata", None), "cause_message", None)
                found = _TRACED.match(cause.strip()) if isinstance(cause, str) else None
                if found is None:
                    raise
                raise _KINDS[found.group(1)](found.group(2)) from None

        return run


def _xla_probe(tf):
    """A function telling whether ops are being traced for XLA (a
    tf.function with jit_compile=True, or code it calls)."""
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util

        def in_xla():
            return not tf.executing_eagerly() and control_flow_util.GraphOrParentsInXlaContext(
                ops.get_default_graph())

        return in_xla
    except (ImportError, AttributeError):  # pragma: no cover - a future TF
        return lambda: False


def _in_vectorized_map(tf):
    """Whether ops are being traced as the body of tf.vectorized_map (pfor
    traces it in a "loop_body" name scope that starts with its iteration
    placeholder; TF has no public way to ask)."""
    scope = tf.get_current_name_scope().split("/")
    if "loop_body" not in scope:
        return False
    prefix = "/".join(scope[: len(scope) - scope[::-1].index("loop_body")])
    try:
        op = tf.compat.v1.get_default_graph().get_operation_by_name(prefix + "/PlaceholderWithDefault")
    except (KeyError, ValueError):
        return False
    return op.type == "PlaceholderWithDefault"


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def _dims_used(p):
    """How many axes of x an index part consumes."""
    if p is None:
        return 0
    if isinstance(p, slice):
        return 1
    nd = getattr(p, "ndim", None)
    if nd is None:
        shape = getattr(p, "shape", None)
        nd = len(shape) if shape is not None else 0
    dt = getattr(p, "dtype", None)
    if dt is not None and (dt == np.bool_ or getattr(dt, "is_bool", False)):
        return nd
    return 1


def _numpy_getitem():
    """numpy-style indexing (integer arrays, masks) of a tf.Tensor, from TF's
    numpy layer; only the symbolic set_subtensor path needs it."""
    try:
        from tensorflow.python.ops.numpy_ops import np_array_ops

        return np_array_ops._getitem
    except (ImportError, AttributeError):  # pragma: no cover - a future TF
        return lambda x, index: x[index]


def _autograph_leaves_unibackend_alone():
    """Inside a user's tf.function, AutoGraph would rewrite unibackend's own
    (graph-safe) Python; let it call the ops as they are, as it does for keras."""
    try:
        from tensorflow.python.autograph.core import config

        rule = config.DoNotConvert("unibackend")
        if not any(getattr(r, "_prefix", None) == "unibackend" for r in config.CONVERSION_RULES):
            config.CONVERSION_RULES = (rule,) + tuple(config.CONVERSION_RULES)
    except (ImportError, AttributeError):  # pragma: no cover - a future TF
        pass


def _leading_parts(index, xshape):
    """(parts, lead): the index without its trailing whole axes, and how many
    leading axes of x it reaches (all of them when an Ellipsis sits inside)."""
    parts = list(index)
    if parts and parts[-1] is Ellipsis:
        parts.pop()
    if any(p is Ellipsis for p in parts):
        return list(index), len(xshape)
    lead = sum(_dims_used(p) for p in parts)
    while parts and isinstance(parts[-1], slice) and lead > 0 and \
            parts[-1].indices(xshape[lead - 1]) == (0, xshape[lead - 1], 1):
        parts.pop()
        lead -= 1
    return parts, lead
