"""The theano backend: PyTensor (the maintained Theano) or the original Theano 1.0.x.

Symbolic: every op takes symbolic variables (dense, or sparse from
``sparse.csr_matrix()``/``csc_matrix()``) and returns symbolic variables, so
the ops compose into a user's own graph; what the core cannot check on
symbolic inputs is checked by check ops inside the graph, which raise the
contract's IndexError/ValueError when the function runs.

Eager: called with arrays, an op builds its graph once per signature (op,
static arguments, dtypes, ndims and size-1 dims, sparse format), compiles it,
keeps the compiled function in a bounded LRU cache and reuses it; results are
numpy arrays.  ``function`` and ``value_and_grad`` trace a whole user function
the same way.

Which implementation: PyTensor when installed, else Theano 1.0.x;
``UNIBACKEND_THEANO=pytensor|theano`` forces one, and the ``pytensor``
backend name is an alias that forces PyTensor.
"""
from __future__ import annotations

import numbers
import os
import sys
import threading
from collections import OrderedDict
from typing import ClassVar

import numpy as np

from unibackend._checks import Subtensor
from unibackend.plugin import Backend, Capabilities, check_scalar_output, id_bounds, stable_descending

ENV = "UNIBACKEND_THEANO"
IMPLEMENTATIONS = {"pytensor": "pytensor", "theano": "Theano"}  # module -> distribution


class GraphIndexError(IndexError):
    """An IndexError raised by a check inside a compiled graph."""


class GraphValueError(ValueError):
    """A ValueError raised by a check inside a compiled graph."""


_GRAPH_ERRORS = (GraphIndexError, GraphValueError)
_KINDS = {IndexError: GraphIndexError, ValueError: GraphValueError}


def _sig(a):
    """The part of an eager argument's type a compiled graph depends on."""
    if type(a) is np.ndarray:
        s = a.shape
        # Size-1 dims are marked broadcastable, as numpy broadcasting needs.
        return (a.dtype, tuple(d == 1 for d in s)) if 1 in s else (a.dtype, len(s))
    return (a.format, a.dtype)  # scipy.sparse CSR / CSC


class TheanoBackend(Backend):
    name = "theano"
    modules: ClassVar[tuple[str, ...]] = ("pytensor", "theano")  # the alias below narrows them
    extra = "theano"
    distributions: ClassVar[tuple[str, ...]] = ("pytensor", "Theano")
    capabilities = Capabilities(autodiff=True, sparse=True, symbolic=True, devices=False, eager_compiles=True)
    #: the compiled function (``function``)
    compile_modes = ("function",)
    #: the implementation this name forces ("" : PyTensor if installed, else Theano)
    forces = ""
    #: compiled eager functions kept (least recently used dropped first)
    cache_size = 512

    def __init__(self, device=None):
        super().__init__(device)
        self._cache = OrderedDict()
        # A compiled function keeps its inputs and outputs in its own storage,
        # so two threads must not run one at the same time (neither framework
        # releases the GIL inside a call, so this costs no parallelism).
        self._calling = threading.RLock()
        self._compiling = threading.RLock()  # graph building and compiling touch global state
        #: how many graphs this instance compiled (tests count them)
        self.compilations = 0
        self.implementation = ""

    # -- set-up ------------------------------------------------------------
    def _choice(self):
        """(implementation, why not) without importing anything."""
        import importlib.util

        forced = self.forces or os.environ.get(ENV, "").strip().lower()
        if forced and forced not in IMPLEMENTATIONS:
            return None, f"{ENV}={forced!r} is not one of: {', '.join(IMPLEMENTATIONS)}"
        for mod in (forced,) if forced else tuple(IMPLEMENTATIONS):
            if mod in sys.modules or importlib.util.find_spec(mod) is not None:
                return mod, ""
        if forced:
            how = f"{ENV}={forced}" if not self.forces else f"backend {self.name!r}"
            return None, f"{forced} is not installed ({how} forces it)"
        return None, "neither pytensor nor theano is installed"

    def load(self):
        if self.device not in (None, "cpu"):
            raise ValueError(f"backend {self.name!r} runs on the CPU only, got device={self.device!r}")
        impl, why = self._choice()
        if impl is None:
            raise ImportError(why)
        if impl == "pytensor":
            import pytensor as th
            import pytensor.sparse as S
            import pytensor.tensor as T
            from pytensor.compile.sharedvalue import SharedVariable
            from pytensor.graph.basic import Constant, Variable
            from pytensor.raise_op import CheckAndRaise
            from pytensor.sparse.type import SparseTensorType

            self._tensor = lambda dtype, bc: T.tensor(dtype=dtype, shape=tuple(1 if b else None for b in bc))
            self._check_op = CheckAndRaise
            self._sparse_type = SparseTensorType
            try:
                from pytensor.graph.traversal import graph_inputs
            except ImportError:  # older PyTensor
                from pytensor.graph.basic import graph_inputs

            self._graph_inputs = graph_inputs
        else:
            import theano as th
            import theano.sparse as S
            import theano.tensor as T
            from theano.compile.sharedvalue import SharedVariable
            from theano.gof import Constant, Variable
            from theano.sparse.type import SparseType

            self._tensor = lambda dtype, bc: T.TensorType(dtype, tuple(bc))()
            self._check_op = _theano_check_op()
            self._sparse_type = SparseType
            from theano.gof.graph import inputs as graph_inputs

            self._graph_inputs = graph_inputs
        import scipy.sparse as sp

        self.th, self.T, self.S, self.sp = th, T, S, sp
        self._Var, self._Const, self._Shared = Variable, Constant, SharedVariable
        self.implementation = impl
        self._loaded = True

    def version(self):
        from importlib.metadata import version

        impl, why = self._choice()
        if impl is None:
            raise ImportError(why)
        return f"{impl} {version(IMPLEMENTATIONS[impl])}"

    def is_available(self):
        impl, why = self._choice()
        return impl is not None, why

    def native_types(self):
        return (self._Var,)

    # -- conversion --------------------------------------------------------
    def asarray(self, x, dtype=None):
        if type(x) is np.ndarray:
            return x if dtype is None or x.dtype == dtype else x.astype(dtype)
        if isinstance(x, self._Var):
            if dtype is None or x.dtype == dtype:
                return x
            if self.is_sparse(x):
                return self.S.cast(x, str(dtype))
            return self.T.cast(x, str(dtype))
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        if not isinstance(x, self._Var):
            return np.asarray(x)
        if isinstance(x, self._Const):
            return np.asarray(x.data)
        if any(not isinstance(v, (self._Const, self._Shared)) for v in self._graph_inputs([x])):
            raise TypeError(
                f"to_numpy: {x} is a symbolic variable of a graph with inputs; compile it "
                f"(ub.function or {self.implementation}.function) to get values"
            )
        return np.asarray(x.eval())

    def shape(self, x):
        if type(x) is not np.ndarray and isinstance(x, self._Var):
            return (None,) * x.ndim  # the core skips shape checks; the graph checks
        return x.shape

    def dtype(self, x):
        if type(x) is not np.ndarray and isinstance(x, self._Var):
            return np.dtype(x.dtype)
        return x.dtype

    def plain_float_dtype(self, x):
        if type(x) is np.ndarray and (dt := x.dtype).kind == "f":  # an eager tensor: a numpy array
            return dt
        return None

    def is_symbolic(self, x):
        return type(x) is not np.ndarray and isinstance(x, self._Var)

    def is_sparse(self, x):
        if type(x) is np.ndarray:
            return False
        if isinstance(x, self._Var):
            return isinstance(x.type, self._sparse_type)
        return self.sp.issparse(x)

    def sparse_from_scipy(self, csr):
        return self._scipy_matrix(csr)  # the compiled sparse code reads int32 index arrays

    def sparse_to_scipy(self, x):
        if isinstance(x, self._Var):
            x = self.to_numpy(x) if not isinstance(x, self._Const) else x.data
        return self.sp.csr_matrix(x)

    def sparse_info(self, x):
        if isinstance(x, self._Var):
            return (None, None), np.dtype(x.dtype)
        return x.shape, x.dtype

    def sparse_cast(self, x, dtype):
        if isinstance(x, self._Var):
            return self.S.cast(x, str(dtype))
        return x.astype(dtype)

    def id_bounds(self, ids, pad_id):
        if isinstance(ids, self._Var):
            return None  # checked inside the graph
        return id_bounds(ids, pad_id)

    # -- ops ---------------------------------------------------------------
    def dot(self, a, b):
        if self._symbolic(a, b):
            return self._g_dot(self._sym(a), self._sym(b), True)
        return self._eager(("dot", _sig(a), _sig(b)), self._g_dot, (a, b), (False,))

    def fast_dot(self, a, b):
        if type(b) is np.ndarray and type(a) is np.ndarray:
            dt = a.dtype
            if dt is b.dtype and dt.kind == "f":
                sa, sb = a.shape, b.shape
                if sa and 0 < len(sb) < 3 and sa[-1] == sb[0]:
                    return self._eager(("dot", _sig(a), _sig(b)), self._g_dot, (a, b), (False,))
        return None  # not plain enough: the full path checks and converts

    def sparse_dot(self, x, w):
        if self._symbolic(x, w):
            return self._g_sparse_dot(self._sym(x), self._sym(w), True)
        return self._eager(("sparse_dot", _sig(x), _sig(w)), self._g_sparse_dot, (x, w), (False,))

    def argsort(self, x, axis, descending):
        if self._symbolic(x):
            return self._g_argsort(x, axis, descending)
        return self._eager(("argsort", axis, descending, _sig(x)), self._g_argsort, (x,), (axis, descending))

    def set_subtensor(self, x, index, value, accumulate):
        op = "inc_subtensor" if accumulate else "set_subtensor"
        if not isinstance(index, Subtensor):  # x or an index part is symbolic
            return self._g_subtensor_raw(op, self._sym(x), index, self._sym(value), accumulate)
        if not self._symbolic(x, value):
            return self._eager_subtensor(op, x, index, value, accumulate)
        # x or value symbolic, the index normalised by the core.
        x, value = self._sym(x), self._sym(value)
        if index.basic:
            return self._g_write(x[index.index], value, accumulate)
        pos, vals = index.positions().reshape(-1), self.T.alloc(value, *index.shape).flatten()
        if not accumulate:
            pos, take = index.last_writes()
            vals = vals if take is None else vals[take]
        return self._g_write(x.flatten()[pos], vals, accumulate).reshape(x.shape)

    def masked_mean(self, x, mask, axes):
        if self._symbolic(x, mask):
            return self._g_masked_mean(self._sym(x), self._sym(mask), axes, True)
        return self._eager(("masked_mean", axes, _sig(x), _sig(mask)), self._g_masked_mean, (x, mask), (axes, False))

    def keep_topk(self, x, k, axis, fill):
        if self._symbolic(x):
            return self._g_keep_topk(x, self.T.constant(k, dtype="int64"),
                                     self.T.constant(fill, dtype=x.dtype), axis, True)
        args = (x, np.array(k, np.int64), np.array(fill, x.dtype))
        return self._eager(("keep_topk", axis, _sig(x)), self._g_keep_topk, args, (axis, False))

    def softmax(self, x, axis):
        if self._symbolic(x):
            return self._g_softmax(x, axis)
        return self._eager(("softmax", axis, _sig(x)), self._g_softmax, (x,), (axis,))

    def embedding_mean(self, table, ids, pad_id):
        if self._symbolic(table, ids):
            pad = self.T.constant(pad_id, dtype="int64")
            return self._g_embedding_mean(self._sym(table), self._sym(ids), pad, True)
        args = (table, ids, np.array(pad_id, np.int64))
        return self._eager(("embedding_mean", _sig(table), _sig(ids)), self._g_embedding_mean, args, (False,))

    # -- math for nn: graph ops on symbolic variables; numpy arrays (eager
    # results) keep the base's numpy defaults rather than compile a graph.
    def tanh(self, x):
        return self.T.tanh(x) if self._symbolic(x) else super().tanh(x)

    def relu(self, x):
        return self.T.maximum(x, 0) if self._symbolic(x) else super().relu(x)

    def exp(self, x):
        return self.T.exp(x) if self._symbolic(x) else super().exp(x)

    def log(self, x):
        return self.T.log(x) if self._symbolic(x) else super().log(x)

    def reduce_sum(self, x, axis, keepdims):
        if self._symbolic(x):
            return self.T.sum(x, axis=axis, keepdims=keepdims)
        return super().reduce_sum(x, axis, keepdims)

    def reduce_max(self, x, axis, keepdims):
        if self._symbolic(x):
            return self.T.max(x, axis=axis, keepdims=keepdims)
        return super().reduce_max(x, axis, keepdims)

    # -- autodiff and compilation ------------------------------------------
    def value_and_grad(self, f, argnums, args, kwargs):
        if self._any_symbolic(args, kwargs):
            value = self._scalar_cost(f(*args, **kwargs))
            return value, tuple(self._grads(value, [self._sym(args[n]) for n in argnums]))
        inputs, key = self._trace_signature(("value_and_grad", f, argnums), args, kwargs, argnums)

        def build(*syms):
            a, kw = self._rebuild(args, kwargs, inputs, syms)
            value = self._scalar_cost(f(*a, **kw))
            return [value] + self._grads(value, [a[n] for n in argnums]), None

        out, _ = self._run_traced(key, build, inputs)
        return self._result(out[0]), tuple(self._result(g) for g in out[1:])

    def function(self, f):
        def compiled(*args):
            if self._any_symbolic(args, {}):
                return f(*args)
            inputs, key = self._trace_signature(("function", f), args, {}, ())

            def build(*syms):
                a, _ = self._rebuild(args, {}, inputs, syms)
                out = f(*a)
                kind = type(out) if isinstance(out, (tuple, list)) else None
                return [self._sym(o) for o in (out if kind else [out])], kind

            out, kind = self._run_traced(key, build, inputs)
            res = [self._result(o) for o in out]
            return kind(res) if kind else res[0]

        return compiled

    # -- eager machinery ---------------------------------------------------
    def _symbolic(self, *args):
        """Whether any argument is a symbolic variable (numpy arrays first:
        the eager path stays cheap)."""
        for a in args:
            if type(a) is not np.ndarray and isinstance(a, self._Var):
                return True
        return False

    def _eager(self, key, build, args, static):
        """Run the graph ``build(*inputs, *static)`` on ``args``; compile on the
        first call per key only."""
        args, half = _widen_half(args)
        fn = self._cache.get(key)
        if fn is None:
            with self._compiling:
                fn = self._cache.get(key)  # another thread may have compiled it
                if fn is None:
                    syms = [self._input(a) for a in args]
                    fn = self._compile(syms, build(*syms, *static))
                    self._store(key, fn)
        else:
            self._touch(key)
        with self._calling:
            out = fn(*args)
        return _narrow_half(out) if half else out

    def _touch(self, key):
        try:
            self._cache.move_to_end(key)  # most recently used
        except KeyError:  # another thread dropped it meanwhile
            pass

    def _compile(self, inputs, outputs):
        change_flags = getattr(self.th.config, "change_flags", None)
        if change_flags is None:  # Theano 1.0.5
            fn = self.th.function(inputs, outputs, on_unused_input="ignore")
        else:
            # PyTensor logs a full traceback when one of its optional rewrites
            # fails and is skipped (e.g. dot_diag_to_elemwise on a constant
            # [[-inf]]: ConflictingAssumptionsError); the graph stays correct.
            with change_flags(on_opt_error="ignore"):
                fn = self.th.function(inputs, outputs, on_unused_input="ignore")
        fn.trust_input = True  # the key pins every input's type: skip re-validation
        self.compilations += 1
        return fn

    def _store(self, key, entry):
        self._cache[key] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)  # the least recently used

    def _input(self, a):
        """A fresh symbolic input of ``a``'s signature."""
        if type(a) is np.ndarray:
            return self._tensor(str(a.dtype), [d == 1 for d in a.shape])
        return (self.S.csr_matrix if a.format == "csr" else self.S.csc_matrix)(dtype=str(a.dtype))

    def _sym(self, a):
        """``a`` as a symbolic variable (arrays become constants)."""
        if isinstance(a, self._Var):
            return a
        if self.sp.issparse(a):
            return self.S.as_sparse_variable(self._scipy_matrix(a))
        return self.T.as_tensor_variable(a)

    def _scipy_matrix(self, a):
        """A scipy CSR/CSC *matrix* (Theano 1.0 knows no sparse arrays) with
        int32 index arrays; other formats become CSR."""
        sp = self.sp
        cls = sp.csc_matrix if a.format == "csc" else sp.csr_matrix
        if type(a) is not cls:
            a = cls(a)
        if a.indices.dtype != np.int32 or a.indptr.dtype != np.int32:
            a = cls((a.data, a.indices.astype(np.int32), a.indptr.astype(np.int32)), shape=a.shape)
        return a

    def _check(self, exc, msg, value, *conds):
        """``value``, passed through a check that raises ``exc(msg)`` at run
        time unless every condition holds."""
        conds = [self.T.all(c) if c.ndim else c for c in conds]
        return self._check_op(_KINDS[exc], msg)(value, *conds)

    def _eager_subtensor(self, op, x, sub, value, accumulate):
        if sub.basic:
            pattern, scalars = [], []
            for p in sub.index:
                if isinstance(p, slice):
                    pattern.append("s")
                    scalars += [p.start, p.stop, p.step]
                else:
                    pattern.append("i")
                    scalars.append(p)
            pattern = "".join(pattern)
            key = ("subtensor", accumulate, pattern, _sig(x), _sig(value))
            args = (x, value, *[np.array(s, np.int64) for s in scalars])
            return self._eager(key, self._g_subtensor_basic, args, (pattern, accumulate))
        # Advanced: write the flat positions the core worked out, one graph per dtype.
        vals = np.broadcast_to(value, sub.shape).reshape(-1)
        if accumulate:
            pos = sub.positions().reshape(-1)
        else:
            pos, take = sub.last_writes()  # each position once, with its last write
            vals = vals if take is None else vals[take]
        flat = np.ascontiguousarray(x).reshape(-1)
        key = ("scatter", accumulate, x.dtype)
        out = self._eager(key, self._g_scatter, (flat, pos.astype(np.int64, copy=False), vals), (accumulate,))
        return out.reshape(x.shape)

    # -- traced functions (function / value_and_grad) ------------------------
    def _any_symbolic(self, args, kwargs):
        return any(isinstance(a, self._Var) for a in args) or any(
            isinstance(v, self._Var) for v in kwargs.values()
        )

    def _trace_signature(self, head, args, kwargs, nums):
        """Which arguments become graph inputs (arrays, floats, the
        differentiated ones) and the cache key of the traced graph; every
        other argument (ints, strings, None...) is baked into the graph."""
        inputs, key = [], list(head)
        for i, a in enumerate(args):
            v = self._as_input(a, i in nums)
            inputs.append(v)
            key.append(_sig(v) if v is not None else ("static", _hashable(a)))
        for name in sorted(kwargs):
            v = self._as_input(kwargs[name], False)
            inputs.append(v)
            key.append((name, _sig(v) if v is not None else ("static", _hashable(kwargs[name]))))
        return inputs, tuple(key)

    def _as_input(self, a, differentiated):
        if self.sp.issparse(a):
            return self._scipy_matrix(a)
        if isinstance(a, (np.ndarray, np.generic, list, float)) or (
            differentiated and isinstance(a, numbers.Number)
        ):
            a = np.asarray(a)
            # A gradient w.r.t. integers is taken at their float64 values.
            return a.astype(np.float64) if differentiated and a.dtype.kind in "biu" else a
        return None

    def _rebuild(self, args, kwargs, inputs, syms):
        it = iter(syms)
        arrays = [next(it) if v is not None else None for v in inputs]
        a = [s if s is not None else args[i] for i, s in enumerate(arrays[: len(args)])]
        names = sorted(kwargs)
        kw = {n: (s if s is not None else kwargs[n]) for n, s in zip(names, arrays[len(args):])}
        return a, kw

    def _run_traced(self, key, build, inputs):
        """Outputs of the traced graph ``build`` on ``inputs``, and the meta
        that ``build`` returned with them; traced and compiled once per key."""
        vals, half = _widen_half([v for v in inputs if v is not None])
        entry = self._cache.get(key)
        if entry is None:
            with self._compiling:
                entry = self._cache.get(key)
                if entry is None:
                    syms = [self._input(v) for v in vals]
                    outputs, meta = build(*syms)
                    entry = (self._compile(syms, outputs), meta)
                    self._store(key, entry)
        else:
            self._touch(key)
        try:
            with self._calling:
                out = entry[0](*vals)
            return (_narrow_half(out) if half else out), entry[1]
        except _GRAPH_ERRORS as e:
            # A check in the graph failed: the contract's error, without the
            # framework's debugging notes appended to it.
            raise type(e).__mro__[1](str(e).split("\n", 1)[0]) from None

    def _scalar_cost(self, value):
        value = self._sym(value)
        check_scalar_output((None,) * value.ndim)  # a graph's dims are open: only a 0-dim value passes
        return value

    def _grads(self, value, wrt):
        # Each gradient in its argument's dtype, as on torch and tensorflow
        # (a float32 argument promoted inside f would otherwise get float64).
        grads = self.th.grad(value, wrt, disconnected_inputs="ignore", return_disconnected="zero")
        return [g if self.is_sparse(g) or g.dtype == w.dtype else g.astype(w.dtype)
                for g, w in zip(grads, wrt)]

    def _result(self, out):
        """An eager result: numpy, or scipy CSR for sparse."""
        if self.sp.issparse(out):
            return self.sp.csr_matrix(out)
        return out

    # -- graphs ------------------------------------------------------------
    def _g_dot(self, a, b, checks):
        if checks:
            a = self._check(ValueError, "dot: shapes are not aligned: a's last dim differs from b's first dim",
                            a, self.T.eq(a.shape[-1], b.shape[0]))
        return self.T.dot(a, b)

    def _g_sparse_dot(self, x, w, checks):
        T = self.T
        if checks:
            w = self._check(ValueError, "sparse_dot: shapes are not aligned: x's columns differ from w's rows",
                            w, T.eq(x.shape[1], w.shape[0]))
        if w.ndim == 1:
            return self.S.structured_dot(x, w.dimshuffle(0, "x"))[:, 0]
        return self.S.structured_dot(x, w)

    def _g_argsort(self, x, axis, descending):
        # numpy's mergesort (Python and numba implementations alike) is stable
        # and sorts NaN last; comparisons treat -0.0 and +0.0 as equal.
        T = self.T
        if not descending:
            return T.cast(T.argsort(x, axis=axis, kind="mergesort"), "int64")
        out = stable_descending(lambda v, a: T.argsort(v, axis=a, kind="mergesort"), _flip, x, axis, x.shape[axis])
        return T.cast(out, "int64")

    def _shape_with(self, x, axis, n):
        """x's symbolic shape with dim ``axis`` set to ``n``."""
        return [n if a == axis else x.shape[a] for a in range(x.ndim)]

    def _g_write(self, sub, value, accumulate):
        return (self.T.inc_subtensor if accumulate else self.T.set_subtensor)(sub, value)

    def _g_subtensor_basic(self, x, value, *args):
        *scalars, pattern, accumulate = args
        it = iter(scalars)
        idx = tuple(slice(next(it), next(it), next(it)) if p == "s" else next(it) for p in pattern)
        return self._g_write(x[idx], value, accumulate)

    def _g_scatter(self, flat, pos, vals, accumulate):
        return self._g_write(flat[pos], vals, accumulate)

    def _g_subtensor_raw(self, op, x, index, value, accumulate):
        """``x[index] = value`` (or ``+=``) for a symbolic ``x`` of unknown
        shape: numpy's index rules checked here where static, in the graph
        where not."""
        T = self.T
        parts = []
        for p in index if isinstance(index, tuple) else (index,):
            if isinstance(p, list):
                p = np.asarray(p)
            if isinstance(p, (np.ndarray, self._Var)):
                if np.dtype(p.dtype).kind not in "biu":
                    raise IndexError(f"{op}: index arrays must be of integer or boolean type, got {p.dtype}")
            elif isinstance(p, (bool, np.bool_)) or not (
                p is Ellipsis or isinstance(p, (slice, numbers.Integral))
            ):
                raise IndexError(f"{op}: unsupported index {p!r} (use ints, slices, ..., integer or boolean arrays)")
            parts.append(p)
        is_mask = [getattr(p, "dtype", None) is not None and np.dtype(p.dtype).kind == "b" for p in parts]
        width = [p.ndim if m else (0 if p is Ellipsis else 1) for p, m in zip(parts, is_mask)]
        if sum(p is Ellipsis for p in parts) > 1:
            raise IndexError(f"{op}: an index can only have a single ellipsis ('...')")
        if sum(width) > x.ndim:
            raise IndexError(f"{op}: too many indices: {sum(width)} for an array of {x.ndim} dims")
        in_range, masks, d = [], [], 0
        for p, m, w in zip(parts, is_mask, width):
            if p is Ellipsis:
                d += x.ndim - sum(width)
            elif m:
                masks += [T.eq(p.shape[i], x.shape[d + i]) for i in range(w)]
            elif not isinstance(p, slice):
                n = x.shape[d]
                in_range.append(T.and_(T.all(T.ge(p, -n)), T.all(T.lt(p, n))))
            d += w
        if in_range:
            x = self._check(IndexError, f"{op}: an index is out of range for the array's shape", x, *in_range)
        if masks:
            x = self._check(IndexError, f"{op}: a boolean index does not match the array's shape", x, *masks)
        sub = x[tuple(parts)]
        if value.ndim > sub.ndim:
            raise ValueError(f"{op}: value of {value.ndim} dims does not broadcast to the {sub.ndim}-dim selection")
        fits = [T.or_(T.eq(value.shape[-i], 1), T.eq(value.shape[-i], sub.shape[-i]))
                for i in range(1, value.ndim + 1)]
        if fits:
            value = self._check(ValueError, f"{op}: value does not broadcast to the selection's shape", value, *fits)
        return self._g_write(sub, value, accumulate)

    def _g_masked_mean(self, x, mask, axes, checks):
        T = self.T
        if checks:
            if mask.ndim > x.ndim:
                raise ValueError(f"masked_mean: mask of {mask.ndim} dims does not broadcast to x of {x.ndim} dims")
            fits = [T.or_(T.eq(mask.shape[-i], 1), T.eq(mask.shape[-i], x.shape[-i]))
                    for i in range(1, mask.ndim + 1)]
            if fits:
                mask = self._check(ValueError, "masked_mean: mask does not broadcast to x's shape", mask, *fits)
        # switch, not multiply: a masked-out NaN or inf never reaches the sum.
        keep = T.neq(mask, 0)
        zero = T.zeros_like(x)
        total = T.switch(keep, x, zero).sum(axis=axes)
        count = T.switch(keep, T.ones_like(x), zero).sum(axis=axes)
        return T.cast(total / T.maximum(count, 1), x.dtype)

    def _g_keep_topk(self, x, k, fill, axis, checks):
        T = self.T
        n = x.shape[axis]
        if checks:
            x = self._check(ValueError, f"keep_topk: k is larger than the size of axis {axis}", x, T.le(k, n))
        # The k-th largest value t per slice (sort puts NaN last, so NaN
        # counts as largest).  Entries above t stay; among the entries equal
        # to t the first ones by index fill the remaining places.  k = 0
        # needs no special case: t is then the largest value and room is 0.
        # A -inf in front of each slice keeps the pick in range when n = 0.
        lead = T.alloc(np.asarray(-np.inf, x.dtype), *self._shape_with(x, axis, 1))
        ranked = T.sort(T.concatenate([lead, x], axis=axis), axis=axis)
        pattern = list(range(x.ndim - 1))
        pattern.insert(axis, "x")  # t keeps a broadcastable axis
        t = ranked[(slice(None),) * axis + (n + 1 - T.maximum(k, 1),)].dimshuffle(*pattern)
        nan_x, nan_t = T.isnan(x), T.isnan(t)
        # (switch, not a bool invert: Theano 1.0's fused Python code computes
        # ~True as -2; nor t == t: optimizers fold that to True.)
        above = T.switch(nan_t, T.zeros_like(nan_x), T.or_(T.gt(x, t), nan_x))
        tied = T.switch(nan_t, nan_x, T.eq(x, t))
        room = k - T.cast(above, "int64").sum(axis=axis, keepdims=True)
        keep = T.or_(above, T.and_(tied, T.le(T.cumsum(T.cast(tied, "int64"), axis=axis), room)))
        return T.switch(keep, x, fill)

    def _g_softmax(self, x, axis):
        T = self.T
        xm = x
        if self.implementation == "theano":  # its max of an empty axis raises: give it a -inf
            xm = T.concatenate([T.alloc(np.asarray(-np.inf, x.dtype), *self._shape_with(x, axis, 1)), x], axis=axis)
        m = T.max(xm, axis=axis, keepdims=True)
        # An all -inf slice shifts by 0 (e all 0, the result all 0).  A +inf
        # max must stay: x - inf is NaN at the +inf and the slice comes out
        # NaN throughout (shifting it by 0 gave inf / inf at the +inf only).
        m = T.switch(T.eq(m, -np.inf), T.zeros_like(m), m)
        e = T.exp(x - m)
        s = e.sum(axis=axis, keepdims=True)
        return T.cast(e / T.switch(T.eq(s, 0), T.ones_like(s), s), x.dtype)

    def _g_embedding_mean(self, table, ids, pad, checks):
        # A row-normalised CSR (n, V) built in the graph, times the table:
        # O(n*d + nnz) memory; padding stores nothing, so the pad row's
        # gradient is exactly 0 and a NaN in it never leaks.
        T = self.T
        V = table.shape[0]
        real = T.neq(ids, pad)
        if checks:
            ok = T.or_(T.eq(ids, pad), T.and_(T.ge(ids, 0), T.lt(ids, V)))
            ids = self._check(IndexError, "embedding_mean: an id is out of range for the table's rows "
                              "(valid: 0..V-1, other than pad_id)", ids, ok)
            real = T.neq(ids, pad)
        n, L = ids.shape[0], ids.shape[1]
        counts = T.cast(real, "int64").sum(axis=1)
        where = T.flatten(real).nonzero()[0]
        weight = T.ones((), dtype=table.dtype) / T.cast(T.maximum(counts, 1), table.dtype)
        data = weight[where // L]
        cols = T.cast(T.flatten(ids)[where], "int32")
        indptr = T.cast(T.concatenate([T.zeros((1,), dtype="int64"), T.cumsum(counts)]), "int32")
        csr = self.S.CSR(data, cols, indptr, T.cast(T.stack([n, V]), "int32"))
        return self.S.structured_dot(csr, table)


class PytensorBackend(TheanoBackend):
    """``pytensor``: the theano backend with PyTensor forced."""

    name = "pytensor"
    modules = ("pytensor",)
    distributions = ("pytensor",)
    alias_of = "theano"
    forces = "pytensor"


def _widen_half(args):
    """(args, half): float16 arrays as float32, and whether every float
    array was float16.  PyTensor's numba linker has no float16; float32
    holds every float16 exactly, and a float32 sum or product rounded back
    to float16 is at least as close as numpy's float16 arithmetic."""
    kinds = [a.dtype for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    if not kinds or any(d != np.float16 for d in kinds):
        return args, False
    return [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float16 else a
            for a in args], True


def _narrow_half(out):
    """A graph's float32 results back in float16 (see _widen_half)."""
    if isinstance(out, (list, tuple)):
        return type(out)(_narrow_half(o) for o in out)
    if isinstance(out, np.ndarray) and out.dtype == np.float32:
        return out.astype(np.float16)
    return out


def _flip(x, axis):
    return x[(slice(None),) * axis + (slice(None, None, -1),)]


def _hashable(a):
    try:
        hash(a)
    except TypeError:
        raise TypeError(
            f"function: argument {a!r} of type {type(a).__name__} is neither an array nor hashable"
        ) from None
    return a


def _theano_check_op():
    """Theano 1.0.x's Assert raises AssertionError; this check raises the
    contract's exception instead (PyTensor has CheckAndRaise built in)."""
    import theano.tensor as T
    from theano import gof
    from theano.gradient import DisconnectedType

    class CheckAndRaise(gof.Op):
        """Passes ``value`` through; raises ``exc_type(msg)`` unless every
        condition holds.  Python only, so no C compile per message."""

        __props__ = ("exc_type", "msg")
        view_map = {0: [0]}

        def __init__(self, exc_type, msg):
            self.exc_type, self.msg = exc_type, msg

        def make_node(self, value, *conds):
            conds = [T.as_tensor_variable(c) for c in conds]
            return gof.Apply(self, [value] + conds, [value.type()])

        def perform(self, node, inputs, out):
            if not all(bool(c) for c in inputs[1:]):
                raise self.exc_type(self.msg)
            out[0][0] = inputs[0]

        def grad(self, inputs, grads):
            return [grads[0]] + [DisconnectedType()() for _ in inputs[1:]]

        def connection_pattern(self, node):
            return [[True]] + [[False]] * (len(node.inputs) - 1)

        def infer_shape(self, node, shapes):
            return [shapes[0]]

        def do_constant_folding(self, node):
            return False  # a failing check must fail when the function runs

    return CheckAndRaise
