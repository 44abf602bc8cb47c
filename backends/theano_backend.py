"""The theano backend: PyTensor (the maintained Theano) or the original Theano 1.0.x.

Symbolic: every op takes symbolic variables (dense, or sparse from
``sparse.csr_matrix()``/``csc_matrix()``) and returns symbolic variables, so
the ops compose into a user's own graph; what the core cannot check on
symbolic inputs is checked by check ops inside the graph, which raise the
contract's IndexError/ValueError when the function runs.

Eager: called with arrays, an op builds its graph once per signature (op,
static arguments, dtypes, ndims, sparse format, and size-1 dims where inputs
broadcast against each other), compiles it, keeps the compiled function in a
bounded LRU cache and reuses it; results are numpy arrays.  Like a JIT, a new
signature first runs a cheaply compiled graph (Python implementations, no
machine code) and is compiled fully once it is called often.  ``function`` and ``value_and_grad`` trace a whole user function
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
import time
from collections import OrderedDict
from typing import Any, ClassVar

import numpy as np

from unibackend.plugin import (
    Backend,
    Capabilities,
    GraphIndex,
    check_scalar_output,
    cpu_only,
    does_not_broadcast,
    dot_not_aligned,
    id_bounds,
    id_out_of_range,
    index_out_of_range,
    k_out_of_range,
    mask_shape_mismatch,
    no_value_yet,
    not_hashable,
    sparse_dot_not_aligned,
    stable_descending,
)

ENV = "UNIBACKEND_THEANO"
IMPLEMENTATIONS = {"pytensor": "pytensor", "theano": "Theano"}  # module -> distribution


class GraphIndexError(IndexError):
    """An IndexError raised by a check inside a compiled graph."""


class GraphValueError(ValueError):
    """A ValueError raised by a check inside a compiled graph."""


class GraphIndexErrorNoValues(GraphIndexError):
    """A failed check of the plugin's own graph, raised by its machine code
    with the message's placeholders unfilled; the plugin raises the filled
    words instead (``_with_values``)."""


class GraphValueErrorNoValues(GraphValueError):
    """As ``GraphIndexErrorNoValues``, for a ValueError."""


_GRAPH_ERRORS = (GraphIndexError, GraphValueError)
_KINDS = {IndexError: GraphIndexError, ValueError: GraphValueError}
_NO_VALUES = {GraphIndexError: GraphIndexErrorNoValues, GraphValueError: GraphValueErrorNoValues}


def _contract_error(e):
    """The contract's class of a check's error (IndexError or ValueError),
    with its first line only (no framework notes)."""
    cls = next(c for c in type(e).__mro__ if c in (IndexError, ValueError))
    return cls(str(e).split("\n", 1)[0])


def _sig(a):
    """The part of an eager argument's type a compiled graph depends on, for
    an input that broadcasts against another one."""
    if type(a) is np.ndarray:
        s = a.shape
        # Size-1 dims are marked broadcastable, as numpy broadcasting needs.
        return (a.dtype, tuple(d == 1 for d in s)) if 1 in s else (a.dtype, len(s))
    return (a.format, a.dtype)  # scipy.sparse CSR / CSC


def _sig_nd(a):
    """``_sig`` for an input that broadcasts against nothing (the only array
    of its graph, a dot operand, the ids or table of embedding_mean): its
    size-1 dims need no graph of their own, so dtype and ndim are the key and
    its symbolic input leaves every dim open (see ``_input``)."""
    if type(a) is np.ndarray:
        return (a.dtype, a.ndim)
    return (a.format, a.dtype)


class TheanoBackend(Backend):
    name = "theano"
    modules: ClassVar[tuple[str, ...]] = ("pytensor", "theano")  # the alias below narrows them
    # the framework's graph classes, from PyTensor or Theano (set by load)
    _Var: Any
    _Const: Any
    _Shared: Any
    extra = "theano"
    distributions: ClassVar[tuple[str, ...]] = ("pytensor", "Theano")
    capabilities = Capabilities(autodiff=True, sparse=True, symbolic=True, devices=False, eager_compiles=True)
    #: the compiled function (``function``)
    compile_modes = ("function",)
    #: the implementation this name forces ("" : PyTensor if installed, else Theano)
    forces = ""
    #: compiled eager functions kept (least recently used dropped first)
    cache_size = 512
    #: Eager tiers.  A new signature first runs its graph compiled cheaply:
    #: PyTensor's FAST_COMPILE (Python ``perform`` of each op, no Numba or C
    #: code) with casts as ``astype`` (``_cheap_mode``).  Measured on the
    #: keep_topk graph, empty compiledir, loaded 2-core machine (load 15,
    #: python -m unibackend.benchmarks.theano_modes): compile + first call
    #: 3.2 s against 105 s for the default (Numba) mode; per call 8x16:
    #: 0.78 ms against 49 us; 512x4096: 1.0 s against 0.99 s.  The signature
    #: is compiled fully (the default mode, the one ``ub.function`` uses) once
    #: its cheap calls number ``promote_calls`` or have taken
    #: ``promote_seconds`` in all, i.e. once it is called often enough that a
    #: full compile (0.02-0.5 s with the on-disk cache warm, 2-100 s cold)
    #: pays for itself.  ``promote_calls = 0``: compile fully at once.
    promote_calls = 1000
    promote_seconds = 1.0

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
        #: how many of them were cheap first-tier graphs (``promote_calls``)
        self.cheap_compilations = 0
        self.implementation = ""
        self._cheap = None  # the first tier's mode, made at the first eager compile
        self._building_cheap = False  # a first-tier graph is being built (see _g_softmax)
        self._own_thread = None  # the thread building a graph the plugin compiles itself (see _check)
        self._value_check_op = None  # the check whose message names values, built on first use

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
            raise cpu_only(self.name, self.device)
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
                from pytensor.graph.basic import graph_inputs  # type: ignore[no-redef]

            self._graph_inputs = graph_inputs
        else:
            import theano as th  # type: ignore[no-redef]
            import theano.sparse as S  # type: ignore[no-redef]
            import theano.tensor as T  # type: ignore[no-redef]
            from theano.compile.sharedvalue import SharedVariable  # type: ignore[no-redef]
            from theano.gof import Constant, Variable  # type: ignore[no-redef]
            from theano.sparse.type import SparseType

            self._tensor = lambda dtype, bc: T.TensorType(dtype, tuple(bc))()
            self._check_op = _theano_check_op("theano")
            self._sparse_type = SparseType
            from theano.gof.graph import inputs as graph_inputs  # type: ignore[no-redef]

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
            raise no_value_yet(f"{x}, a symbolic variable of a graph with inputs,",
                               f"compile it (ub.function or {self.implementation}.function) to get values")
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
        return self._eager(("dot", _sig_nd(a), _sig_nd(b)), self._g_dot, (a, b), (False,), True)

    def fast_dot(self, a, b):
        if type(b) is np.ndarray and type(a) is np.ndarray:
            dt = a.dtype
            if dt is b.dtype and dt.kind == "f":
                sa, sb = a.shape, b.shape
                if sa and 0 < len(sb) < 3 and sa[-1] == sb[0]:
                    return self._eager(("dot", _sig_nd(a), _sig_nd(b)), self._g_dot, (a, b), (False,), True)
        return None  # not plain enough: the full path checks and converts

    def sparse_dot(self, x, w):
        if self._symbolic(x, w):
            return self._g_sparse_dot(self._sym(x), self._sym(w), True)
        return self._eager(("sparse_dot", _sig_nd(x), _sig_nd(w)), self._g_sparse_dot, (x, w), (False,), True)

    def argsort(self, x, axis, descending):
        if self._symbolic(x):
            return self._g_argsort(x, axis, descending)
        return self._eager(("argsort", axis, descending, _sig_nd(x)), self._g_argsort, (x,), (axis, descending), True)

    def set_subtensor(self, x, index, value, accumulate):
        op = "inc_subtensor" if accumulate else "set_subtensor"
        if isinstance(index, GraphIndex):  # x or an index part is symbolic
            return self._set_in_graph(self._sym(x), index, self._sym(value), accumulate)
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
        return self._eager(("keep_topk", axis, _sig_nd(x)), self._g_keep_topk, args, (axis, False), True)

    def softmax(self, x, axis):
        if self._symbolic(x):
            return self._g_softmax(x, axis)
        return self._eager(("softmax", axis, _sig_nd(x)), self._g_softmax, (x,), (axis,), True)

    def embedding_mean(self, table, ids, pad_id):
        if self._symbolic(table, ids):
            pad = self.T.constant(pad_id, dtype="int64")
            return self._g_embedding_mean(self._sym(table), self._sym(ids), pad, True)
        args = (table, ids, np.array(pad_id, np.int64))
        return self._eager(("embedding_mean", _sig_nd(table), _sig_nd(ids)), self._g_embedding_mean, args,
                           (False,), True)

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

        # Tiered like an eager op (a training step called eagerly is called
        # often: it is promoted after ``promote_calls``); ``function`` below
        # compiles fully at once.
        out, _ = self._run_traced(key, build, inputs, tiered=True)
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

    def _eager(self, key, build, args, static, open_dims=False):
        """Run the graph ``build(*inputs, *static)`` on ``args``; compile on the
        first call per key only (cheaply first, fully once called often: see
        ``promote_calls``).  ``open_dims``: the key ignores size-1 dims
        (``_sig_nd``), so the inputs leave every dim open."""
        args, half = _widen_half(args)
        out, _ = self._cached_call(key, lambda syms: (build(*syms, *static), None), args, open_dims)
        return _narrow_half(out) if half else out

    def _cached_call(self, key, make, vals, open_dims=False, tiered=True):
        """``(outputs, meta)`` of the graph ``make(inputs) -> (outputs, meta)``
        run on ``vals``; built and compiled on the first call per key only
        (``tiered``: cheaply first, fully once its cheap calls number
        ``promote_calls`` or have taken ``promote_seconds``).  A check of
        the compiled code that fails without its values is raised with them
        (``_with_values``)."""
        entry = self._cache.get(key)
        if entry is None:
            with self._compiling:
                entry = self._cache.get(key)  # another thread may have compiled it
                if entry is None:
                    cheap = tiered and self.promote_calls > 0
                    fn, meta = self._build(make, vals, open_dims, cheap)
                    # [function, meta, cheap calls left, cheap seconds left]; None: full
                    entry = [fn, meta] + ([self.promote_calls, self.promote_seconds] if cheap else [None, None])
                    self._store(key, entry)
        else:
            self._touch(key)
        try:
            with self._calling:
                if entry[2] is None:
                    out = entry[0](*vals)
                else:
                    start = time.perf_counter()
                    out = entry[0](*vals)
                    entry[2] -= 1
                    entry[3] -= time.perf_counter() - start
                    if entry[2] <= 0 or entry[3] <= 0:
                        self._promote(entry, make, vals, open_dims)
        except (GraphIndexErrorNoValues, GraphValueErrorNoValues) as e:
            self._with_values(e, make, vals, open_dims)
        return out, entry[1]

    def _build(self, make, vals, open_dims, cheap):
        """(compiled function, meta) of ``make``'s graph on fresh inputs of
        ``vals``' signature, built as the plugin's own graph (see ``_check``);
        ``cheap``: the first tier."""
        self._building_cheap = cheap
        self._own_thread = threading.get_ident()
        try:
            syms = [self._input(v, open_dims) for v in vals]
            outputs, meta = make(syms)
        finally:
            self._building_cheap = False
            self._own_thread = None
        return self._compile(syms, outputs, cheap), meta

    def _promote(self, entry, make, vals, open_dims):
        """Replace a cheap first-tier function by the fully compiled graph."""
        with self._compiling:
            if entry[2] is not None:
                entry[0], _ = self._build(make, vals, open_dims, False)
                entry[2] = entry[3] = None

    def _with_values(self, error, make, vals, open_dims=False):
        """A check in a graph's machine code failed: it raises its words
        without the values (Numba cannot cache a message built at run time).
        The same graph, built again and run by the checks' Python
        ``perform`` (the first tier) on the same inputs, raises them with
        the values filled in: the contract's words, as from every tier."""
        with self._compiling:
            fn, _ = self._build(make, vals, open_dims, True)
        try:
            with self._calling:
                fn(*vals)
        except _GRAPH_ERRORS as e:
            raise _contract_error(e) from None
        raise _contract_error(error) from None  # not expected: the same check passed in Python

    def _touch(self, key):
        try:
            self._cache.move_to_end(key)  # most recently used
        except KeyError:  # another thread dropped it meanwhile
            pass

    def _compile(self, inputs, outputs, cheap=False):
        mode = self._cheap_mode() if cheap else None
        change_flags = getattr(self.th.config, "change_flags", None)
        if change_flags is None:  # Theano 1.0.5
            fn = self.th.function(inputs, outputs, on_unused_input="ignore", mode=mode)
        else:
            # PyTensor logs a full traceback when one of its optional rewrites
            # fails and is skipped (e.g. dot_diag_to_elemwise on a constant
            # [[-inf]]: ConflictingAssumptionsError); the graph stays correct.
            with change_flags(on_opt_error="ignore"):
                fn = self.th.function(inputs, outputs, on_unused_input="ignore", mode=mode)
        fn.trust_input = True  # the key pins every input's type: skip re-validation
        self.compilations += 1
        self.cheap_compilations += cheap
        return fn

    def _cheap_mode(self):
        """The first tier's compile mode: FAST_COMPILE; on PyTensor with every
        cast an ``astype`` (its Python Cast has no numpy ufunc and runs once
        per element: 5.2-8.7 s of a 512x4096 keep_topk call, 0.3-1.0 s with astype)."""
        if self._cheap is None:
            if self.implementation == "pytensor":
                from pytensor.compile.mode import get_mode
                from pytensor.graph.rewriting.basic import in2out

                self._cheap = get_mode("FAST_COMPILE").register((in2out(_pytensor_cast_as_astype()), 100))
            else:
                self._cheap = "FAST_COMPILE"
        return self._cheap

    def _store(self, key, entry):
        self._cache[key] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)  # the least recently used

    def _input(self, a, open_dims=False):
        """A fresh symbolic input of ``a``'s signature (``open_dims``: no dim
        known to be 1)."""
        if type(a) is np.ndarray:
            return self._tensor(str(a.dtype), [False] * a.ndim if open_dims else [d == 1 for d in a.shape])
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

    def _check(self, exc, msg, value, *conds, **values):
        """``value``, passed through a check that raises ``exc(msg)`` at run
        time unless every condition holds; ``values`` fill ``msg``'s
        placeholders of the same names."""
        checks = [self.T.all(c) if c.ndim else c for c in conds]
        if values:
            if self._value_check_op is None:
                self._value_check_op = _theano_check_op(self.implementation)
            names = sorted(values)
            # In a graph the plugin compiles itself (eager, function, value_and_grad),
            # the check is cacheable machine code that raises without values, and the
            # plugin fills them in (_with_values); in a user's own graph, perform.
            own = self._own_thread == threading.get_ident() and not self._building_cheap
            op = self._value_check_op(_KINDS[exc], msg, names, own and self.implementation == "pytensor")
            return op(value, *checks, *[values[n] for n in names])
        return self._check_op(_KINDS[exc], msg)(value, *checks)

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
            kinds = "".join(pattern)
            key: tuple = ("subtensor", accumulate, kinds, _sig(x), _sig(value))
            args = (x, value, *[np.array(s, np.int64) for s in scalars])
            return self._eager(key, self._g_subtensor_basic, args, (kinds, accumulate))
        # Advanced: write the flat positions the core worked out, one graph per dtype.
        vals = np.broadcast_to(value, sub.shape).reshape(-1)
        if accumulate:
            pos = sub.positions().reshape(-1)
        else:
            pos, take = sub.last_writes()  # each position once, with its last write
            vals = vals if take is None else vals[take]
        flat = np.ascontiguousarray(x).reshape(-1)
        key = ("scatter", accumulate, x.dtype)
        # Open dims: the key holds no shape, so a first call on one element
        # must not compile a graph that takes every flat array as size 1.
        out = self._eager(key, self._g_scatter, (flat, pos.astype(np.int64, copy=False), vals), (accumulate,), True)
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

    def _run_traced(self, key, build, inputs, tiered=False):
        """Outputs of the traced graph ``build`` on ``inputs``, and the meta
        that ``build`` returned with them; traced and compiled once per key
        (``tiered``: cheaply first, fully once called often, as ``_eager``)."""
        vals, half = _widen_half([v for v in inputs if v is not None])
        try:
            out, meta = self._cached_call(key, lambda syms: build(*syms), vals, tiered=tiered)
        except _GRAPH_ERRORS as e:
            # A check in the graph failed: the contract's error, without the
            # framework's debugging notes appended to it.
            raise _contract_error(e) from None
        return (_narrow_half(out) if half else out), meta

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
            msg = str(dot_not_aligned("{sa}", "{sb}", "{k}", "{m}"))
            a = self._check(ValueError, msg, a, self.T.eq(a.shape[-1], b.shape[0]),
                            sa=self.T.as_tensor_variable(a.shape), sb=self.T.as_tensor_variable(b.shape),
                            k=a.shape[-1], m=b.shape[0])
        return self.T.dot(a, b)

    def _g_sparse_dot(self, x, w, checks):
        T = self.T
        if checks:
            msg = str(sparse_dot_not_aligned("{sx}", "{sw}", "{k}", "{m}"))
            w = self._check(ValueError, msg, w, T.eq(x.shape[1], w.shape[0]),
                            sx=T.as_tensor_variable(x.shape), sw=T.as_tensor_variable(w.shape),
                            k=x.shape[1], m=w.shape[0])
        if w.ndim == 1:
            return self.S.structured_dot(x, w.dimshuffle(0, "x"))[:, 0]
        return self.S.structured_dot(x, w)

    def _g_argsort(self, x, axis, descending):
        # numpy's mergesort (Python and numba implementations alike) is stable
        # and sorts NaN last; comparisons treat -0.0 and +0.0 as equal.
        T = self.T
        x, back = self._as_rows(x, axis)
        if not descending:
            return back(T.cast(T.argsort(x, axis=1, kind="mergesort"), "int64"))
        out = stable_descending(lambda v, a: T.argsort(v, axis=a, kind="mergesort"), _flip, x, 1, x.shape[1])
        return back(T.cast(out, "int64"))

    def _shape_with(self, x, axis, n):
        """x's symbolic shape with dim ``axis`` set to ``n``."""
        return [n if a == axis else x.shape[a] for a in range(x.ndim)]

    def _as_rows(self, x, axis):
        """``(x2, back)``: ``x`` as a matrix whose rows are its slices along
        ``axis`` (the axis moved last, the others flattened), and the
        function that puts a result laid out as ``x2`` back into ``x``'s
        layout and broadcastable pattern.  The per-slice ops (argsort,
        keep_topk, softmax) then build the same graph, and Numba compiles the
        same kernels, whatever ``x``'s ndim and axis: the compiled code is
        specialised per ndim and axis, and ~5-8 s of a cold compile go to
        each new one.  Theano's compiled column of the conformance suite,
        cold (empty compiledir), one process: 365 s as they were, 319 s on
        rows (argsort 56 -> 36 s, topk_gate 61 -> 40 s; ``HOME=$(mktemp -d)
        unibackend conformance --backends theano --modes compiled``).  A
        matrix along axis 1 is left as it is."""
        nd = x.ndim
        if nd == 2 and axis == 1:
            return x, lambda y: y
        perm = [a for a in range(nd) if a != axis] + [axis]
        moved = perm != list(range(nd))
        xt = x.dimshuffle(*perm) if moved else x
        rows = 1
        for a in range(nd - 1):
            rows = rows * xt.shape[a]
        x2 = xt.reshape((rows, xt.shape[nd - 1]), ndim=2)
        pattern = tuple(x.broadcastable)

        def back(y):
            y = y.reshape(xt.shape, ndim=nd)
            if moved:
                y = y.dimshuffle(*np.argsort(perm).tolist())
            if any(pattern):  # a known size-1 dim stays known (the graph's users may broadcast it)
                if hasattr(self.T, "specify_broadcastable"):
                    y = self.T.specify_broadcastable(y, *[a for a, b in enumerate(pattern) if b])
                else:  # Theano 1.0.5
                    y = self.T.patternbroadcast(y, pattern)
            return y

        return x2, back

    def _g_write(self, sub, value, accumulate):
        return (self.T.inc_subtensor if accumulate else self.T.set_subtensor)(sub, value)

    def _g_subtensor_basic(self, x, value, *args):
        *scalars, pattern, accumulate = args
        it = iter(scalars)
        idx = tuple(slice(next(it), next(it), next(it)) if p == "s" else next(it) for p in pattern)
        return self._g_write(x[idx], value, accumulate)

    def _g_scatter(self, flat, pos, vals, accumulate):
        return self._g_write(flat[pos], vals, accumulate)

    def _min_max(self, x, lo_empty, hi_empty):
        """(min, max) of symbolic ``x``, (lo_empty, hi_empty) when it is empty:
        Theano 1.0.5's min/max of a zero-size array raise (no identity)."""
        T = self.T
        flat = T.flatten(T.as_tensor_variable(x))  # a part may be a plain int or array
        return (T.min(T.concatenate([flat, T.as_tensor_variable(np.array([lo_empty], flat.dtype))])),
                T.max(T.concatenate([flat, T.as_tensor_variable(np.array([hi_empty], flat.dtype))])))

    def _set_in_graph(self, x, index, value, accumulate):
        """``x[index] = value`` (or ``+=``) for a symbolic ``x`` or index: the
        core checked what it could; the rest is checked in the graph."""
        T = self.T
        op = index.op
        parts = list(index.parts)
        # a constant value has no gradient; else integer arrays that may name
        # a position twice need _last_writes_only (a set only)
        last_only = not accumulate and not isinstance(value, T.TensorConstant) and any(
            np.dtype(str(getattr(p, "dtype", "bool"))).kind in "iu" for p in parts)
        checks = []  # (args of _check after the checked value)
        for j, axis, _ in index.unchecked():
            p, n = parts[j], x.shape[axis]
            ok = T.and_(T.all(T.ge(p, -n)), T.all(T.lt(p, n)))
            lo, hi = self._min_max(p, 0, 0)
            checks.append(((IndexError, str(index_out_of_range(op, "{bad}", axis, "{size}"))), (ok,),
                           dict(bad=T.switch(T.lt(lo, -n), lo, hi), size=n)))
        for p, axis in zip(parts, index.axes):
            if getattr(p, "dtype", None) is None or np.dtype(str(p.dtype)) != np.bool_:
                continue
            for i in range(p.ndim):
                got, size = T.as_tensor_variable(p.shape[i]), x.shape[axis + i]
                msg = str(mask_shape_mismatch(op, axis + i, "{got}", "{size}"))
                checks.append(((IndexError, msg), (T.eq(got, size),), dict(got=got, size=size)))
        grid = T.arange(x.size).reshape(x.shape, ndim=x.ndim) if last_only else None
        for (exc, msg), conds, values in checks:
            x = self._check(exc, msg, x, *conds, **values)
            if last_only:  # the flat positions are read under the same checks
                grid = self._check(exc, msg, grid, *conds, **values)
        sub = x[tuple(parts)]
        fits = [T.or_(T.eq(value.shape[-i], 1), T.eq(value.shape[-i], sub.shape[-i]))
                for i in range(1, min(value.ndim, sub.ndim) + 1)]
        if value.ndim > sub.ndim:  # more dims than the selection: known now
            vshape = tuple(value.data.shape) if hasattr(value, "data") else f"<{value.ndim} dims>"
            raise does_not_broadcast(op, "value", vshape, f"<{sub.ndim} dims>")
        if fits:
            msg = str(does_not_broadcast(op, "value", "{shape}", "{target}"))
            value = self._check(ValueError, msg, value, *fits, shape=T.as_tensor_variable(value.shape),
                                target=T.as_tensor_variable(sub.shape))
        if last_only:
            value = self._last_writes_only(grid, parts, sub, value)
        return self._g_write(sub, value, accumulate)

    def _last_writes_only(self, grid, parts, sub, value):
        """``value`` broadcast to ``sub`` with every write that a later write
        to the same position overwrites made 0: the same result (the last
        write wins), but only the last write gets a gradient (the framework's
        gradient of a set gives every write its position's gradient).
        ``grid``: the flat position of each entry of x."""
        T = self.T
        pos = grid[tuple(parts)].flatten()
        # a stable sort groups each position's writes in write order: the last
        # of a group is the last write (PyTensor rewrites a set read back at
        # the same positions to the values written, duplicates or not)
        perm = T.argsort(pos, kind="mergesort")
        s = pos[perm]
        last = T.neq(s, T.concatenate([s[1:], s[:1] * 0 - 1]))[T.argsort(perm)]
        vals = T.alloc(value, *[sub.shape[i] for i in range(sub.ndim)]).flatten()
        return T.switch(last, vals, T.zeros_like(vals)).reshape(sub.shape, ndim=sub.ndim)

    def _g_masked_mean(self, x, mask, axes, checks):
        T = self.T
        if checks:
            fits = [T.or_(T.eq(mask.shape[-i], 1), T.eq(mask.shape[-i], x.shape[-i]))
                    for i in range(1, min(mask.ndim, x.ndim) + 1)]
            if mask.ndim > x.ndim:
                fits.append(T.eq(0, 1))  # more dims than x: never broadcasts
            if fits:
                msg = str(does_not_broadcast("masked_mean", "mask", "{shape}", "{target}"))
                mask = self._check(ValueError, msg, mask, *fits, shape=T.as_tensor_variable(mask.shape),
                                   target=T.as_tensor_variable(x.shape))
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
            x = self._check(ValueError, str(k_out_of_range("keep_topk", "{k}", "{n}", axis)), x, T.le(k, n), k=k, n=n)
        x, back = self._as_rows(x, axis)
        axis, n = 1, x.shape[1]
        # The k-th largest value t per slice (sort puts NaN last, so NaN
        # counts as largest).  Entries above t stay; among the entries equal
        # to t the first ones by index fill the remaining places.  k = 0
        # needs no special case: t is then the largest value and room is 0.
        # A -inf in front of each slice keeps the pick in range when n = 0.
        lead = T.alloc(np.asarray(-np.inf, x.dtype), *self._shape_with(x, axis, 1))
        ranked = T.sort(T.concatenate([lead, x], axis=axis), axis=axis)
        pattern: list[int | str] = list(range(x.ndim - 1))
        pattern.insert(axis, "x")  # t keeps a broadcastable axis
        t = ranked[(slice(None),) * axis + (n + 1 - T.maximum(k, 1),)].dimshuffle(*pattern)
        nan_x, nan_t = T.isnan(x), T.isnan(t)
        # (switch, not a bool invert: Theano 1.0's fused Python code computes
        # ~True as -2; nor t == t: optimizers fold that to True.)
        above = T.switch(nan_t, T.zeros_like(nan_x), T.or_(T.gt(x, t), nan_x))
        tied = T.switch(nan_t, nan_x, T.eq(x, t))
        room = k - T.cast(above, "int64").sum(axis=axis, keepdims=True)
        keep = T.or_(above, T.and_(tied, T.le(T.cumsum(T.cast(tied, "int64"), axis=axis), room)))
        return back(T.switch(keep, x, fill))

    def _g_softmax(self, x, axis):
        T = self.T
        x, back = self._as_rows(x, axis)
        axis = 1
        xm = x
        # Theano's max of an empty axis raises, and so does PyTensor's Python
        # one (the cheap eager tier): give it a -inf.
        if self.implementation == "theano" or self._building_cheap:
            xm = T.concatenate([T.alloc(np.asarray(-np.inf, x.dtype), *self._shape_with(x, axis, 1)), x], axis=axis)
        m = T.max(xm, axis=axis, keepdims=True)
        # An all -inf slice shifts by 0 (e all 0, the result all 0).  A +inf
        # max must stay: x - inf is NaN at the +inf and the slice comes out
        # NaN throughout (shifting it by 0 gave inf / inf at the +inf only).
        m = T.switch(T.eq(m, -np.inf), T.zeros_like(m), m)
        e = T.exp(x - m)
        s = e.sum(axis=axis, keepdims=True)
        return back(T.cast(e / T.switch(T.eq(s, 0), T.ones_like(s), s), x.dtype))

    def _g_embedding_mean(self, table, ids, pad, checks):
        # A row-normalised CSR (n, V) built in the graph, times the table:
        # O(n*d + nnz) memory; padding stores nothing, so the pad row's
        # gradient is exactly 0 and a NaN in it never leaks.
        T = self.T
        V = table.shape[0]
        real = T.neq(ids, pad)
        if checks:
            ok = T.or_(T.eq(ids, pad), T.and_(T.ge(ids, 0), T.lt(ids, V)))
            big = np.iinfo(np.int64)
            i64 = T.cast(ids, "int64")
            lo, _ = self._min_max(T.switch(real, i64, big.max), big.max, big.max)
            _, hi = self._min_max(T.switch(real, i64, big.min), big.min, big.min)
            msg = str(id_out_of_range("embedding_mean", "{bad}", "{rows}", "{pad}", "{last}"))
            ids = self._check(IndexError, msg, ids, ok, bad=T.switch(T.lt(lo, 0), lo, hi), rows=V, last=V - 1,
                              pad=pad)
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
        raise not_hashable("function", a) from None
    return a


def _pytensor_cast_as_astype():
    """A PyTensor graph rewrite: each elementwise cast becomes a numpy
    ``astype`` (for the first eager tier, whose Python linker would run the
    scalar cast once per element)."""
    import pytensor.tensor as T
    from pytensor.graph.basic import Apply
    from pytensor.graph.op import Op
    from pytensor.graph.rewriting.basic import node_rewriter
    from pytensor.scalar.basic import Cast
    from pytensor.tensor.elemwise import Elemwise

    class Astype(Op):
        __props__ = ("dtype",)

        def __init__(self, dtype):
            self.dtype = dtype

        def make_node(self, x):  # type: ignore[override]  # one named input, not *inputs
            return Apply(self, [x], [T.tensor(dtype=self.dtype, shape=x.type.shape)])

        def perform(self, node, inputs, out):
            out[0][0] = np.asarray(inputs[0].astype(self.dtype))

        def infer_shape(self, fgraph, node, shapes):
            return shapes

    @node_rewriter([Elemwise])
    def cast_as_astype(fgraph, node):
        if isinstance(node.op.scalar_op, Cast):
            return [Astype(node.outputs[0].dtype)(node.inputs[0])]
        return False

    return cast_as_astype


def _theano_check_op(impl="theano"):
    """A check that raises the contract's exception, its message's
    placeholders filled with the values of named inputs (Theano 1.0.x's Assert
    raises AssertionError, and PyTensor's CheckAndRaise has a fixed message)."""
    if impl == "pytensor":
        import pytensor.tensor as T
        from pytensor.gradient import DisconnectedType
        from pytensor.graph.basic import Apply
        from pytensor.graph.op import Op
    else:
        import theano.tensor as T  # type: ignore[no-redef]
        from theano.gof import Apply, Op  # type: ignore[no-redef]
        from theano.gradient import DisconnectedType  # type: ignore[no-redef]

    class CheckAndRaise(Op):
        """Passes ``value`` through; raises ``exc_type(msg)`` unless every
        condition holds, ``msg`` filled with the inputs after the conditions
        (by ``names``).  Python only, so no C compile per message."""

        __props__ = ("exc_type", "msg", "names", "cached")
        view_map = {0: [0]}

        def __init__(self, exc_type, msg, names=(), cached=False):
            self.exc_type, self.msg, self.names, self.cached = exc_type, msg, tuple(names), bool(cached)

        def make_node(self, value, *conds):  # type: ignore[override]  # the value, then the conditions
            checks = [T.as_tensor_variable(c) for c in conds]
            return Apply(self, [value, *checks], [value.type()])

        def perform(self, node, inputs, out):
            k = len(inputs) - 1 - len(self.names)
            if not all(bool(c) for c in inputs[1:1 + k]):
                _check_failed(self.exc_type, self.msg, self.names, *inputs[1 + k:])
            out[0][0] = inputs[0]

        def grad(self, inputs, grads):
            return [grads[0]] + [DisconnectedType()() for _ in inputs[1:]]

        def connection_pattern(self, node):
            return [[True]] + [[False]] * (len(node.inputs) - 1)

        def infer_shape(self, *args):
            return [args[-1][0]]  # (node, shapes), and PyTensor's (fgraph, node, shapes)

        def do_constant_folding(self, *args):
            return False  # a failing check must fail when the function runs

    if impl == "pytensor":
        _register_numba_check(CheckAndRaise)
    return CheckAndRaise


def _check_failed(exc_type, msg, names, *values):
    """Raise ``exc_type(msg)``, ``msg``'s placeholders filled with ``values``
    by ``names``; a shape (a 1-d array) reads as numpy writes shapes: (3,).
    The check's ``perform`` (the Numba code raises without values, and the
    plugin re-runs the graph through ``perform``: ``_with_values``)."""
    filled = {n: tuple(v.tolist()) if np.ndim(v) == 1 else np.asarray(v).tolist() for n, v in zip(names, values)}
    raise exc_type(msg.format(**filled) if filled else msg)


#: salt of the numba cache key of the check below (bump when its code changes)
_NUMBA_CHECK_VERSION = 1


def _register_numba_check(op_class):
    """PyTensor's Numba linker (its default mode): a check built with
    ``cached`` (in a graph the plugin compiles itself) becomes nopython code
    with a cache key, raising its words without values (``*NoValues``; the
    plugin fills them in, ``_with_values``).  Any other (a user's own graph)
    runs ``perform`` in object mode, values filled in, as before.  Why: an
    object-mode op leaves the whole graph's function without a cache key,
    compiled again in every process (measured, PyTensor's cache warm: the
    keep_topk check's graphs 26 s, argsort's, which hold no such op,
    0.7 s); and Numba's cache cannot give back an exception whose message
    (or any argument) was made at run time ("Error creating Python tuple
    from runtime exception arguments"), nor object mode inside a cached
    function ("missing Environment")."""
    try:
        from pytensor.link.numba.cache import compile_numba_function_src
        from pytensor.link.numba.dispatch.basic import (
            generate_fallback_impl,
            numba_njit,
            register_funcify_and_cache_key,
        )
    except ImportError:  # a PyTensor without these: perform in object mode, as before
        return
    import hashlib

    @register_funcify_and_cache_key(op_class)
    def funcify(op, node, **kwargs):
        if not op.cached:
            return generate_fallback_impl(op, node, **kwargs), None
        n_conds = len(node.inputs) - 1 - len(op.names)
        params = [f"c{i}" for i in range(n_conds)] + [f"v{i}" for i in range(len(op.names))]
        lines = [f"def check(x, {', '.join(params)}):"]
        lines += [f"    if not c{i}:\n        raise error(msg)" for i in range(n_conds)]
        src = "\n".join(lines + ["    return x", ""])
        error = _NO_VALUES[op.exc_type]
        key = hashlib.sha256(repr(("unibackend.theano.CheckAndRaise", _NUMBA_CHECK_VERSION,
                                   f"{error.__module__}.{error.__qualname__}", op.msg, src)).encode()).hexdigest()
        env = {"error": error, "msg": op.msg}
        return numba_njit(compile_numba_function_src(src, "check", env, cache_key=key)), key
