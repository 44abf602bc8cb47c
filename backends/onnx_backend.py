"""The onnx backend: graphs built with spox, run by ONNX Runtime.

Symbolic like theano's: every op takes :class:`OnnxTensor` graph values (and
:class:`OnnxSparse` CSR triplets) and returns graph values, so the ops
compose into one ONNX graph; ``ub.function`` traces a whole function that way
into one model and one ``InferenceSession`` per input signature (dtypes and
shapes).

Eager: called with numpy arrays, an op builds a small model once per
signature (op, static arguments, dtypes and ndims: every dim is dynamic),
keeps its ``InferenceSession`` in a bounded LRU cache and reuses it; results
are numpy arrays.

Opset :data:`OPSET` (18: ``ScatterElements`` with ``reduction="max"`` and
``ReduceMax`` with axes as an input need it).  No behaviour the ONNX spec
leaves open is used: the order of NaN in ``TopK`` (onnx/onnx#4716) and
``ScatterND``/``ScatterElements`` without a reduction on repeated indices
never decide an answer; docs/backends/onnx.md says how each op is lowered.

Value checks: an eager call's values are checked by the core before the
graph runs.  A traced function's graph computes each check as an extra
boolean output; the call raises the contract's exception from it before
returning anything.  A model exported for serving has no such outputs: a bad
id or index is routed past the end of its table, so ONNX Runtime's own
``Gather`` bounds check fails the run (never a wrong row).
"""
from __future__ import annotations

import contextvars
import sys
import threading
from collections import OrderedDict
from typing import Any, ClassVar

import numpy as np

from unibackend.plugin import (
    Backend,
    Capabilities,
    CapabilityError,
    Subtensor,
    cpu_only,
    id_out_of_range,
    index_not_integer,
    index_out_of_range,
    no_value_yet,
    not_hashable,
    too_many_indices,
    unsupported_in_mode,
)

#: the ONNX opset every graph of this backend declares.
OPSET = 18

# While a function is traced: the list its value checks are appended to.
_tracing: contextvars.ContextVar = contextvars.ContextVar("unibackend_onnx_tracing", default=None)


# The mode named in an op's TypeError when a traced onnx graph cannot take it.
MODE = "ub.function on backend 'onnx'"


# --------------------------------------------------------------------------
# Graph values

class OnnxTensor:
    """A dense value in an ONNX graph being built (a spox ``Var``), with the
    Python operators the ``nn`` layers use.  ``shape`` has ``None`` for a
    dynamic dim."""

    __array_ufunc__ = None  # numpy array (op) OnnxTensor: numpy defers to our reflected operator

    def __init__(self, var: Any, backend: OnnxBackend):
        self.var = var
        self._B = backend
        t = var.unwrap_tensor()
        self.dtype = np.dtype(t.dtype)
        self.shape = tuple(d if isinstance(d, int) else None for d in t.shape) if t.shape is not None else None
        self.ndim = len(self.shape) if self.shape is not None else None

    def __repr__(self):
        return f"OnnxTensor(dtype={self.dtype}, shape={self.shape})"

    def _binary(self, other, fn, reflected=False):
        B = self._B
        a, b = B._sym(self), B._sym(other, like=self.dtype)
        a, b = B._promote(a, b)
        return B._wrap(fn(b, a) if reflected else fn(a, b))

    def __add__(self, o):
        return self._binary(o, self._B.op.add)

    def __radd__(self, o):
        return self._binary(o, self._B.op.add, True)

    def __sub__(self, o):
        return self._binary(o, self._B.op.sub)

    def __rsub__(self, o):
        return self._binary(o, self._B.op.sub, True)

    def __mul__(self, o):
        return self._binary(o, self._B.op.mul)

    def __rmul__(self, o):
        return self._binary(o, self._B.op.mul, True)

    def __truediv__(self, o):
        return self._binary(o, self._B.op.div)

    def __rtruediv__(self, o):
        return self._binary(o, self._B.op.div, True)

    def __neg__(self):
        return self._B._wrap(self._B.op.neg(self.var))

    def __getitem__(self, index):
        raise unsupported_in_mode("__getitem__", MODE, "index graph values with ub ops (set_subtensor) or outside the function")


class OnnxSparse:
    """A sparse (n, N) CSR matrix in an ONNX graph: data, column indices and
    row pointers as graph values (how an exported model takes sparse input)."""

    def __init__(self, data: Any, indices: Any, indptr: Any, shape: tuple, dtype: np.dtype):
        self.data, self.indices, self.indptr = data, indices, indptr
        self.shape, self.dtype = shape, np.dtype(dtype)


def _sig(a):
    """The part of an eager argument's type a graph depends on (every dim dynamic)."""
    if type(a) is np.ndarray:
        return (a.dtype.str, a.ndim)
    return ("csr", a.dtype.str)


class OnnxBackend(Backend):
    name = "onnx"
    modules: ClassVar[tuple[str, ...]] = ("onnxruntime", "spox")
    extra = "onnx"
    distributions: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    # sparse: scipy.sparse input (eagerly) and OnnxSparse CSR triplets (in graphs).
    capabilities = Capabilities(autodiff=False, sparse=True, symbolic=True, devices=False, eager_compiles=True)
    #: sessions kept for eager calls and traced functions (least recently used dropped first)
    cache_size = 512
    #: intra-op threads of the sessions this backend builds (0: ONNX Runtime's
    #: default, every core).  One: its thread pool's hand-offs cost more than
    #: they gave on the graphs of single ops (docs/backends/onnx.md).
    threads = 1

    def __init__(self, device=None):
        super().__init__(device)
        self._cache = OrderedDict()
        self._lock = threading.RLock()
        #: how many models this instance built (tests count them)
        self.compilations = 0

    # -- set-up ------------------------------------------------------------
    def load(self):
        if self.device not in (None, "cpu"):
            raise cpu_only(self.name, self.device)
        import onnxruntime as ort
        import scipy.sparse as sp
        import spox
        import spox.opset.ai.onnx.v18 as op

        self.ort, self.spox, self.op, self.sp = ort, spox, op, sp

    def version(self):
        from importlib.metadata import version

        return f"onnxruntime {version('onnxruntime')}, spox {version('spox')}, opset {OPSET}"

    def is_available(self):
        import importlib.util

        missing = [m for m in self.modules if m not in sys.modules and importlib.util.find_spec(m) is None]
        return (not missing), (f"{' and '.join(missing)} not installed" if missing else "")

    def native_types(self):
        return (OnnxTensor, OnnxSparse)

    # -- conversion --------------------------------------------------------
    def asarray(self, x, dtype=None):
        if isinstance(x, OnnxTensor):
            if dtype is None or x.dtype == dtype:
                return x
            return self._wrap(self.op.cast(x.var, to=np.dtype(dtype)))
        if type(x) is np.ndarray:
            return x if dtype is None or x.dtype == dtype else x.astype(dtype)
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        if isinstance(x, (OnnxTensor, OnnxSparse)):
            raise no_value_yet(f"{x!r}, a value of an ONNX graph being built,", "run it (ub.function) to get values")
        return np.asarray(x)

    def shape(self, x):
        if isinstance(x, OnnxTensor):
            return x.shape
        return x.shape

    def dtype(self, x):
        return x.dtype

    def plain_float_dtype(self, x):
        if type(x) is np.ndarray and (dt := x.dtype).kind == "f":
            return dt
        return None

    def is_symbolic(self, x):
        return isinstance(x, (OnnxTensor, OnnxSparse))

    def is_sparse(self, x):
        if isinstance(x, OnnxSparse):
            return True
        if type(x) is np.ndarray or isinstance(x, OnnxTensor):
            return False
        return self.sp.issparse(x)

    def sparse_from_scipy(self, csr):
        return csr

    def sparse_to_scipy(self, x):
        if isinstance(x, OnnxSparse):
            raise no_value_yet("a sparse value of an ONNX graph being built", "run it (ub.function) to get values")
        return self.sp.csr_matrix(x)

    def sparse_info(self, x):
        return x.shape, x.dtype

    def sparse_cast(self, x, dtype):
        if isinstance(x, OnnxSparse):
            return OnnxSparse(self.op.cast(x.data, to=np.dtype(dtype)), x.indices, x.indptr, x.shape, dtype)
        return x.astype(dtype)

    def id_bounds(self, ids, pad_id):
        if isinstance(ids, OnnxTensor):
            return None  # checked in the graph
        return super().id_bounds(ids, pad_id)

    # -- ops ---------------------------------------------------------------
    def dot(self, a, b):
        if self._symbolic(a, b):
            return self._wrap(self._g_dot(self._sym(a), self._sym(b)))
        return self._eager(("dot", _sig(a), _sig(b)), self._g_dot, (a, b))

    def fast_dot(self, a, b):
        if type(b) is np.ndarray and type(a) is np.ndarray:
            dt = a.dtype
            if dt is b.dtype and dt.kind == "f":
                sa, sb = a.shape, b.shape
                if sa and 0 < len(sb) < 3 and sa[-1] == sb[0]:
                    return self._eager(("dot", _sig(a), _sig(b)), self._g_dot, (a, b))
        return None

    def sparse_dot(self, x, w):
        if self._symbolic(x, w):
            return self._wrap(self._g_sparse_dot(x.data, x.indices, x.indptr, self._sym(w)))
        csr = self.sp.csr_matrix(x)
        args = (csr.data, csr.indices.astype(np.int64), csr.indptr.astype(np.int64), w)
        return self._eager(("sparse_dot", csr.dtype.str, _sig(w)), self._g_sparse_dot, args)

    def argsort(self, x, axis, descending):
        if self._symbolic(x):
            return self._wrap(self._g_argsort(x.var, axis, descending))
        return self._eager(("argsort", axis, descending, _sig(x)), self._g_argsort, (x,), (axis, descending))

    def set_subtensor(self, x, index, value, accumulate):
        op = "inc_subtensor" if accumulate else "set_subtensor"
        if not isinstance(index, Subtensor):  # a GraphIndex: an index part is a graph value
            return self._traced_subtensor(op, x, index.parts, value, accumulate)
        if 0 in index.shape:
            # nothing is selected: onnxruntime's Expand of a 1 to a 0 dim keeps the 1, and
            # ScatterElements then refuses the updates' size (pinned: a (0,) x, a (1,) value)
            return x if self._symbolic(x, value) else np.array(x, copy=True)
        if self._symbolic(x, value):
            pos = self.op.const(index.positions().reshape(-1).astype(np.int64))
            xs, vs = self._sym(x), self._sym(value, like=x.dtype)
            vals = self._flat(self.op.expand(vs, self.op.const(np.array(index.shape, np.int64))))
            return self._wrap(self._g_scatter(xs, pos, vals, accumulate))
        pos = index.positions().reshape(-1).astype(np.int64)
        vals = np.broadcast_to(np.asarray(value, x.dtype), index.shape).reshape(-1)
        return self._eager(("scatter", accumulate, _sig(x)), self._g_scatter, (x, pos, vals), (accumulate,))

    def masked_mean(self, x, mask, axes):
        if self._symbolic(x, mask):
            return self._wrap(self._g_masked_mean(self._sym(x), self._sym(mask), axes))
        return self._eager(("masked_mean", axes, _sig(x), _sig(mask)), self._g_masked_mean, (x, mask), (axes,))

    def keep_topk(self, x, k, axis, fill):
        if self._symbolic(x):
            return self._wrap(self._g_keep_topk(x.var, self.op.const(np.int64(k)),
                                                self.op.const(np.asarray(fill, x.dtype)), axis))
        args = (x, np.array(k, np.int64), np.array(fill, x.dtype))
        return self._eager(("keep_topk", axis, _sig(x)), self._g_keep_topk, args, (axis,))

    def softmax(self, x, axis):
        if self._symbolic(x):
            return self._wrap(self._g_softmax(x.var, axis))
        return self._eager(("softmax", axis, _sig(x)), self._g_softmax, (x,), (axis,))

    def embedding_mean(self, table, ids, pad_id):
        if self._symbolic(table, ids):
            return self._wrap(self._g_embedding_mean(self._sym(table), self._sym(ids), pad_id, True))
        return self._eager(("embedding_mean", pad_id, _sig(table), _sig(ids)), self._g_embedding_mean,
                           (table, ids), (pad_id, False))

    # -- math for nn: graph ops on graph values, numpy on arrays -------------
    def tanh(self, x):
        return self._wrap(self.op.tanh(x.var)) if self._symbolic(x) else super().tanh(x)

    def relu(self, x):
        return self._wrap(self.op.relu(x.var)) if self._symbolic(x) else super().relu(x)

    def exp(self, x):
        return self._wrap(self.op.exp(x.var)) if self._symbolic(x) else super().exp(x)

    def log(self, x):
        return self._wrap(self.op.log(x.var)) if self._symbolic(x) else super().log(x)

    def reduce_sum(self, x, axis, keepdims):
        if self._symbolic(x):
            axes = None if axis is None else self.op.const(np.array([axis], np.int64))
            return self._wrap(self.op.reduce_sum(x.var, axes, keepdims=int(keepdims)))
        return super().reduce_sum(x, axis, keepdims)

    def reduce_max(self, x, axis, keepdims):
        if self._symbolic(x):
            axes = None if axis is None else self.op.const(np.array([axis], np.int64))
            return self._wrap(self.op.reduce_max(x.var, axes, keepdims=int(keepdims)))
        return super().reduce_max(x, axis, keepdims)

    # -- autodiff and compilation ------------------------------------------
    def value_and_grad(self, f, argnums, args, kwargs):
        raise CapabilityError("value_and_grad: backend 'onnx' has no autodiff")  # the core checks first

    def function(self, f):
        def compiled(*args):
            if any(self.is_symbolic(a) for a in args):
                return f(*args)  # inside a graph being built: compose
            key: list[Any] = ["function", f]
            feeds: list[Any] = []
            specs: list[tuple[Any, ...]] = []
            for a in args:
                if self.sp.issparse(a):
                    csr = self.sp.csr_matrix(a)
                    feeds += [csr.data, csr.indices.astype(np.int64), csr.indptr.astype(np.int64)]
                    specs.append(("csr", csr.dtype, csr.shape))
                    key.append(("csr", csr.dtype.str, csr.shape))
                elif isinstance(a, (np.ndarray, np.generic, list, float)):
                    a = np.asarray(a)
                    feeds.append(a)
                    specs.append(("dense", a.dtype, a.shape))
                    key.append((a.dtype.str, a.shape))
                else:
                    specs.append(("static", a))
                    key.append(("static", _hashable(a)))

            def build(*vars_):
                it = iter(vars_)
                call = []
                for s in specs:
                    if s[0] == "csr":
                        d, i, p = next(it), next(it), next(it)
                        call.append(OnnxSparse(d, i, p, s[2], s[1]))
                    elif s[0] == "dense":
                        call.append(self._wrap(next(it)))
                    else:
                        call.append(s[1])
                out = f(*call)
                kind = type(out) if isinstance(out, (tuple, list)) else None
                return [self.op.identity(self._sym(o)) for o in (out if kind else [out])], kind

            shapes = [a.shape for a in feeds]
            out, kind = self._run(tuple(key), build, feeds, shapes)
            return kind(out) if kind else out[0]

        return compiled

    def export(self, f, inputs, path):
        """``f`` traced on graph inputs with an open batch axis, written to
        ``path`` as one .onnx file (opset :data:`OPSET`) that passes
        ``onnx.checker.check_model``.  A "sparse" input becomes three inputs,
        ``<name>_data``, ``<name>_indices`` and ``<name>_indptr`` (a CSR
        matrix's arrays, indices int64); "ids" are int64.  The file holds no
        value checks: an id outside the table fails the run in ONNX Runtime's
        Gather (docs/backends/onnx.md)."""
        import onnx
        from spox import Tensor, argument

        if _tracing.get() is not None:
            raise unsupported_in_mode("export", MODE, "export outside a traced function")
        args, call = {}, []
        for g in inputs:
            dt = np.dtype(g.dtype)
            if g.kind == "sparse":
                nnz = f"{g.name}_nnz"
                d, i, p = (argument(Tensor(dt, (nnz,))), argument(Tensor(np.int64, (nnz,))),
                           argument(Tensor(np.int64, ("batch_plus_1",))))
                args.update({f"{g.name}_data": d, f"{g.name}_indices": i, f"{g.name}_indptr": p})
                call.append(OnnxSparse(d, i, p, (None, g.width), dt))
            elif g.kind == "ids":
                v = argument(Tensor(np.int64, ("batch", f"{g.name}_length")))
                args[g.name] = v
                call.append(self._wrap(v))
            elif g.kind == "dense":
                v = argument(Tensor(dt, ("batch", g.width)))
                args[g.name] = v
                call.append(self._wrap(v))
            else:
                # nn.export builds every GraphInput with one of the kinds above
                raise AssertionError(f"export: GraphInput {g.name!r} has unknown kind {g.kind!r}")
        outs = f(*call)
        model = self.spox.build(args, {k: self.op.identity(self._sym(v)) for k, v in outs.items()})
        model.producer_name = "unibackend"
        for o in model.graph.output:  # every output has a row per input row: name its first axis too
            dims = o.type.tensor_type.shape.dim
            if len(dims) and not dims[0].HasField("dim_value"):
                dims[0].dim_param = "batch"
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, path)
        return str(path)

    # -- machinery ---------------------------------------------------------
    def _symbolic(self, *args):
        for a in args:
            if type(a) is not np.ndarray and isinstance(a, (OnnxTensor, OnnxSparse)):
                return True
        return False

    def _wrap(self, var):
        return OnnxTensor(var, self)

    def _sym(self, a, like=None):
        """``a`` as a spox Var (arrays and scalars become constants; a Python
        scalar takes the dtype ``like``)."""
        if isinstance(a, OnnxTensor):
            return a.var
        if isinstance(a, (int, float)) and not isinstance(a, bool) and like is not None:
            return self.op.const(np.asarray(a, like))
        if hasattr(a, "unwrap_tensor"):  # already a Var
            return a
        return self.op.const(np.asarray(a))

    def _promote(self, a, b):
        da, db = np.dtype(a.unwrap_tensor().dtype), np.dtype(b.unwrap_tensor().dtype)
        if da == db:
            return a, b
        dt = np.result_type(da, db)
        return (a if da == dt else self.op.cast(a, to=dt)), (b if db == dt else self.op.cast(b, to=dt))

    def _eager(self, key, build, args, static=()):
        """Run graph ``build(*vars, *static)`` on numpy ``args``; the model is
        built on the first call per key only.  Every dim is dynamic."""
        def builder(*vars_):
            return [build(*vars_, *static)], None

        out, _ = self._run(key, builder, list(args), [(None,) * np.ndim(a) for a in args])
        return out[0]

    def _run(self, key, build, feeds, shapes):
        """Outputs (numpy) of the model ``build`` makes, on ``feeds``; built
        and loaded into a session once per key.  float16 runs in float32
        (ONNX Runtime's CPU kernels lack most float16 ops; float32 holds every
        float16 exactly and a float32 result rounded back is at least as close
        as float16 arithmetic)."""
        floats = [a.dtype for a in feeds if a.dtype.kind == "f"]
        half = bool(floats) and all(d == np.float16 for d in floats)
        if half:
            feeds = [a.astype(np.float32) if a.dtype == np.float16 else a for a in feeds]
        entry = self._cache.get(key)
        if entry is None:
            with self._lock:
                entry = self._cache.get(key)
                if entry is None:
                    entry = self._build(build, feeds, shapes)
                    self._cache[key] = entry
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        else:
            try:
                self._cache.move_to_end(key)
            except KeyError:
                pass
        session, names, n_out, checks, meta = entry
        res = session.run(None, dict(zip(names, feeds)))
        for (make, _), (ok, bad) in zip(checks, zip(res[n_out::2], res[n_out + 1::2])):
            if not bool(ok):
                raise make(bad.item())
        out = res[:n_out]
        if half:
            out = [o.astype(np.float16) if o.dtype == np.float32 else o for o in out]
        return out, meta

    def _build(self, build, feeds, shapes):
        from spox import Tensor, argument

        checks: list[Any] = []
        token = _tracing.set(checks)
        try:
            args = [argument(Tensor(a.dtype, s)) for a, s in zip(feeds, shapes)]
            outs, meta = build(*args)
        finally:
            _tracing.reset(token)
        names = [f"in{i}" for i in range(len(args))]
        outputs = {f"out{i}": o for i, o in enumerate(outs)}
        for j, (_, (ok, bad)) in enumerate(checks):
            outputs[f"check{j}"] = ok
            outputs[f"bad{j}"] = bad
        model = self.spox.build(dict(zip(names, args)), outputs)
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        session = self.ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.compilations += 1
        return session, names, len(outs), checks, meta

    def _check(self, make, ok, bad):
        """While a function is traced: raise ``make(bad)`` after the run
        unless graph value ``ok`` (bool scalar) holds."""
        checks = _tracing.get()
        if checks is not None:
            checks.append((make, (ok, bad)))

    # -- graph helpers -------------------------------------------------------
    def _c(self, v, dtype=np.int64):
        return self.op.const(np.asarray(v, dtype))

    def _like(self, v, x):
        """A constant in graph value ``x``'s dtype (no CastLike: ONNX Runtime
        cannot fold it)."""
        return self.op.const(np.asarray(v, x.unwrap_tensor().dtype))

    def _dim(self, x, axis):
        """x's size along ``axis`` as a 1-element int64 Var."""
        return self.op.shape(x, start=axis, end=axis + 1)

    def _flat(self, x):
        return self.op.reshape(x, self._c([-1]))

    def _iota(self, x, axis):
        """int64 positions 0..n-1 along ``axis``, shaped like x."""
        op = self.op
        ones = op.cast(op.expand(self._c(1), op.shape(x)), to=np.int64)
        return op.sub(op.cum_sum(ones, self._c(axis)), self._c(1))

    def _select(self, cond, a, b):
        """``cond ? a : b`` elementwise, every bit of the chosen float kept
        (ONNX Runtime's CPU ``Where`` turns a chosen -0.0 into +0.0,
        microsoft/onnxruntime#32191): both stacked, one gathered."""
        op = self.op
        # the broadcast shape, from int64 stand-ins (Where has no kernel for
        # uint16, uint64 or bool values; Expand, Concat and GatherElements do)
        zero = np.array([0], np.int64)
        shape = op.shape(op.where(cond, op.constant_of_shape(op.shape(a), value=zero),
                                  op.constant_of_shape(op.shape(b), value=zero)))
        both = op.concat([op.unsqueeze(op.expand(a, shape), self._c([0])),
                          op.unsqueeze(op.expand(b, shape), self._c([0]))], axis=0)
        pick = op.unsqueeze(op.cast(op.not_(op.expand(cond, shape)), to=np.int64), self._c([0]))
        return op.squeeze(op.gather_elements(both, pick, axis=0), self._c([0]))

    # -- graphs --------------------------------------------------------------
    def _g_dot(self, a, b):
        return self.op.matmul(a, b)

    def _g_sparse_dot(self, data, cols, indptr, w):
        """Gather + multiply + scatter-add over the nonzeros: ``x`` stays its
        (data, indices, indptr) triplet; memory O(nnz * M + n * M)."""
        op = self.op
        nnz = op.shape(data)
        n = op.sub(op.shape(indptr), self._c([1]))
        # The row of each stored entry: a 1 where each row after the first
        # starts (ScatterElements adds: empty rows add twice), summed up.
        starts = op.slice(indptr, self._c([1]), self._c([-1]))
        mark = op.scatter_elements(op.constant_of_shape(op.add(nnz, self._c([1])), value=np.array([0], np.int64)),
                                   starts, op.cast(op.expand(self._c(1), op.shape(starts)), to=np.int64),
                                   reduction="add")
        rows = op.slice(op.cum_sum(mark, self._c(0)), self._c([0]), nnz)
        # A column outside [0, N) (a served model's malformed input; a negative
        # one Gather would wrap) goes to N: Gather's bounds check fails the run.
        N = op.shape(w, end=1)
        cols = op.where(op.and_(op.greater_or_equal(cols, self._c(0)), op.less(cols, N)), cols, N)
        picked = op.gather(w, cols, axis=0)  # (nnz, M) or (nnz,)
        dt = w.unwrap_tensor().dtype
        wnd = len(w.unwrap_tensor().shape)
        vals = op.mul(op.unsqueeze(data, self._c([1])) if wnd == 2 else data, picked)
        out_shape = op.concat([n, op.shape(w, start=1)], axis=0) if wnd == 2 else n
        zeros = op.constant_of_shape(out_shape, value=np.array([0], dt))
        return op.scatter_nd(zeros, op.unsqueeze(rows, self._c([1])), vals, reduction="add")

    def _g_argsort(self, x, axis, descending, nan_largest=True):
        """Stable argsort with NaN largest, every order decided in the graph:
        TopK only ever sees distinct int64 keys (its NaN order, which the spec
        leaves open, and its tie rule never matter).

        1. Sort the values with NaN replaced by 0 (any order among equals).
        2. Number the distinct values in sorted order (a dense rank ``g``,
           scattered back to the original positions: a permutation, so every
           position is written once).
        3. Key = (NaN group, g) * n + position: distinct integers whose order
           is the contract's order; TopK ascending on them."""
        op = self.op
        n = self._dim(x, axis)
        if np.dtype(x.unwrap_tensor().dtype).kind in "biu":  # no NaN; TopK takes int64
            xv = op.cast(x, to=np.int64)
            if np.dtype(x.unwrap_tensor().dtype) == np.uint64:
                # the cast wraps 2**63 and above to negatives: flipping the
                # sign bit maps uint64's order onto int64's
                xv = op.bitwise_xor(xv, self._c(np.iinfo(np.int64).min))
            isn = op.cast(op.mul(xv, self._c(0)), to=np.bool_)
        else:
            isn = op.isnan(x)
            xv = op.where(isn, self._like(0, x), x)
        _, p1 = op.top_k(xv, n, axis=axis, largest=int(descending), sorted=1)
        vs = op.gather_elements(xv, p1, axis=axis)
        prev = op.concat([op.slice(vs, self._c([0]), self._c([1]), self._c([axis])),
                          op.slice(vs, self._c([0]), self._c([-1]), self._c([axis]))], axis=axis)
        step = op.cast(op.not_(op.equal(vs, prev)), to=np.int64)
        g_sorted = op.cum_sum(step, self._c(axis))
        zeros = op.cast(op.mul(op.cast(isn, to=np.int64), self._c(0)), to=np.int64)
        g = op.scatter_elements(zeros, p1, g_sorted, axis=axis)
        n0 = op.squeeze(n, self._c([0]))
        nan_first = descending == nan_largest
        if nan_first:
            group = op.where(isn, self._c(0), op.add(g, self._c(1)))
        else:
            group = op.where(isn, n0, g)
        key = op.add(op.mul(group, n0), self._iota(x, axis))
        _, perm = op.top_k(key, n, axis=axis, largest=0, sorted=1)
        return perm

    def _g_scatter(self, x, pos, vals, accumulate):
        """``x`` with flat positions ``pos`` written by ``vals``.  Adding:
        ScatterElements with reduction "add" (every repeat adds).  Setting:
        the last write of each position is found explicitly (the largest
        write number per position, ScatterElements "max"), then each position
        gathers its winning value: no scatter ever sees a repeated index
        without a reduction."""
        op = self.op
        flat = self._flat(x)
        if accumulate:
            return op.reshape(op.scatter_elements(flat, pos, vals, axis=0, reduction="add"), op.shape(x), allowzero=1)
        return op.reshape(self._last_write(flat, pos, vals), op.shape(x), allowzero=1)

    def _last_write(self, flat, pos, vals):
        op = self.op
        m = op.shape(pos)
        writes = op.range(self._c(0), op.squeeze(m, self._c([0])), self._c(1))
        none = op.constant_of_shape(op.shape(flat), value=np.array([-1], np.int64))
        winner = op.scatter_elements(none, pos, writes, axis=0, reduction="max")
        written = op.greater_or_equal(winner, self._c(0))
        picked = op.gather(op.concat([vals, self._like([0], vals)], axis=0),
                           op.where(written, winner, op.squeeze(m, self._c([0]))), axis=0)
        return self._select(written, picked, flat)

    def _traced_subtensor(self, op_name, x, index, value, accumulate):
        """``x[index] = value`` (``+=``) with an index array that is a graph
        value: one integer array among slices and an Ellipsis, on an ``x`` of
        static shape; its range is checked in the graph."""
        op = self.op
        if not isinstance(x, OnnxTensor) or x.shape is None or any(d is None for d in x.shape):
            raise unsupported_in_mode(op_name, MODE, "x needs a static shape")
        parts = index if isinstance(index, tuple) else (index,)
        sym = [i for i, p in enumerate(parts) if isinstance(p, OnnxTensor)]
        others_ok = all(isinstance(p, slice) or p is Ellipsis for i, p in enumerate(parts) if i not in sym)
        if len(sym) != 1 or not others_ok:
            raise unsupported_in_mode(op_name, MODE, "an index array that is a graph value must be the only non-slice part")
        p = parts[sym[0]]
        if p.dtype.kind not in "iu":
            raise index_not_integer(op_name, p.dtype)
        n_real = len(parts) - (1 if Ellipsis in parts else 0)
        if n_real > len(x.shape):
            raise too_many_indices(op_name, n_real, len(x.shape))
        full = []
        for q in parts:
            full.extend([slice(None)] * (len(x.shape) - n_real) if q is Ellipsis else [q])
        full.extend([slice(None)] * (len(x.shape) - len(full)))
        axis = next(i for i, q in enumerate(full) if isinstance(q, OnnxTensor))
        shape = tuple(d for d in x.shape if d is not None)  # every dim static: checked above
        n = shape[axis]
        grid = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)
        grid = grid[tuple(slice(None) if i == axis else q for i, q in enumerate(full))]
        idx = op.cast(p.var, to=np.int64)
        bad = op.or_(op.less(idx, self._c(-n)), op.greater_or_equal(idx, self._c(n)))
        any_bad = op.cast(op.reduce_max(op.cast(op.concat([op.cast(self._flat(bad), to=np.int64), self._c([0])],
                                                          axis=0), to=np.int64)), to=np.bool_)
        first_bad = op.gather(op.concat([self._flat(idx), self._c([0])], axis=0),
                              op.arg_max(op.concat([op.cast(self._flat(bad), to=np.int64), self._c([0])], axis=0),
                                         keepdims=0))
        self._check(lambda b: index_out_of_range(op_name, b, axis, n), op.not_(any_bad), first_bad)
        safe = op.where(bad, self._c(0), op.where(op.less(idx, self._c(0)), op.add(idx, self._c(n)), idx))
        pos_sel = op.gather(self._c(grid), safe, axis=axis)
        vs = op.expand(self._sym(value, like=x.dtype), op.shape(pos_sel))
        return self._wrap(self._g_scatter(x.var, self._flat(pos_sel), self._flat(vs), accumulate))

    def _g_masked_mean(self, x, mask, axes):
        # Where, not multiply: a masked-out NaN or inf never reaches the sum.
        op = self.op
        keep = op.expand(op.cast(mask, to=np.bool_), op.shape(x))
        zero = self._like(0, x)
        one = self._like(1, x)
        ax = self._c(list(axes))
        total = op.reduce_sum(op.where(keep, x, zero), ax, keepdims=0)
        count = op.reduce_sum(op.where(keep, one, zero), ax, keepdims=0)
        return op.div(total, op.max([count, one]))

    def _g_keep_topk(self, x, k, fill, axis):
        """Rank of each entry in the contract's descending order (the inverse
        of the explicit argsort: a permutation, scattered once per position);
        the ``k`` first stay."""
        op = self.op
        perm = self._g_argsort(x, axis, True)
        rank = op.scatter_elements(op.mul(perm, self._c(0)), perm, self._iota(x, axis), axis=axis)
        return self._select(op.less(rank, k), x, fill)

    def _g_softmax(self, x, axis):
        op = self.op
        # A -inf in front of each slice: ReduceMax of an empty axis has no value.
        lead_shape = op.concat([op.shape(x, end=axis), self._c([1]), op.shape(x, start=axis + 1)], axis=0)
        lead = op.constant_of_shape(lead_shape, value=np.array([-np.inf], x.unwrap_tensor().dtype))
        m = op.reduce_max(op.concat([lead, x], axis=axis), self._c([axis]), keepdims=1)
        # ReduceMax may skip a NaN; a NaN anywhere still makes the sum, and so
        # the whole slice, NaN.  An all -inf slice shifts by 0 (all 0s out); a
        # +inf max stays (x - inf is NaN there: the slice comes out NaN).
        zero = self._like(0, x)
        m = op.where(op.equal(m, self._like(-np.inf, x)), zero, m)
        e = op.exp(op.sub(x, m))
        s = op.reduce_sum(e, self._c([axis]), keepdims=1)
        return op.div(e, op.where(op.equal(s, zero), self._like(1, x), s))

    def _g_embedding_mean(self, table, ids, pad_id, checks):
        """Gather + scale + scatter-add over the non-pad ids: per stored id its
        table row times 1/count, added into its output row (ScatterND "add":
        repeated ids add).  Padding is never gathered (its row's NaN or
        gradient never leaks); a row of only padding stays 0.  An id outside
        [0, V) is sent to row V, so Gather's own bounds check fails the run
        (never a wrong row, e.g. a negative id that Gather would wrap)."""
        op = self.op
        dt = table.unwrap_tensor().dtype
        ids64 = op.cast(ids, to=np.int64)
        V = op.squeeze(self._dim(table, 0), self._c([0]))
        real = op.not_(op.equal(ids64, self._c(pad_id)))
        counts = op.reduce_sum(op.cast(real, to=dt), self._c([1]), keepdims=0)  # (n,)
        weight = op.div(self._like(1, table), op.max([counts, self._like(1, table)]))
        L = self._dim(ids, 1)
        nz = op.squeeze(op.non_zero(self._flat(real)), self._c([0]))  # flat positions of real ids
        rows = op.div(nz, op.max([op.squeeze(L, self._c([0])), self._c(1)]))  # L = 0: no ids at all
        sel = op.gather(self._flat(ids64), nz, axis=0)
        inside = op.and_(op.greater_or_equal(sel, self._c(0)), op.less(sel, V))
        checking = checks and _tracing.get() is not None
        if checking:
            outside = op.not_(inside)
            flags = op.concat([op.cast(outside, to=np.int64), self._c([0])], axis=0)
            first = op.arg_max(flags, keepdims=0)
            bad = op.gather(op.concat([sel, self._c([0])], axis=0), first)
            any_bad = op.cast(op.reduce_max(flags, keepdims=0), to=np.bool_)
            V_static = table.unwrap_tensor().shape[0]
            self._check(lambda b, V=V_static: id_out_of_range("embedding_mean", b, V if isinstance(V, int) else -1,
                                                               pad_id),
                        op.not_(any_bad), bad)
        # Traced: the check raises after the run, so gather row 0 meanwhile.
        # Served (no check outputs): row V, so Gather's bounds check fails the run.
        sel = op.where(inside, sel, self._c(0) if checking else V)
        vals = op.mul(op.gather(table, sel, axis=0), op.unsqueeze(op.gather(weight, rows, axis=0), self._c([1])))
        out_shape = op.concat([self._dim(ids, 0), self._dim(table, 1)], axis=0)
        zeros = op.constant_of_shape(out_shape, value=np.array([0], dt))
        return op.scatter_nd(zeros, op.unsqueeze(rows, self._c([1])), vals, reduction="add")


def _hashable(a):
    try:
        hash(a)
    except TypeError:
        raise not_hashable("function", a) from None
    return a
