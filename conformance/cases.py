"""Generated inputs that can print themselves as Python, and the comparisons
that turn a difference into a bug report.

A :class:`Case` holds the arguments of one example together with the code
that rebuilds each of them exactly (dtype, memory layout, sparse storage
order, duplicates), and the statement that calls the op.  The suite runs
that very statement, so the reproducer it prints is what was run.
"""
from __future__ import annotations

import itertools
import linecache
from typing import Any

import numpy as np

import unibackend as ub
from unibackend._checks import is_scipy_sparse


class Disagreement(AssertionError):
    """A backend disagreed with the reference (or broke a property) on a case."""

    def __init__(self, message, *, case=None, backend=None, check=None, index=None,
                 got=None, want=None, kind="value"):
        super().__init__(message)
        self.message = message
        self.case = case
        self.backend = backend
        self.check = check
        self.index = index
        self.got = got
        self.want = want
        self.kind = kind


# ---------------------------------------------------------------------------
# Python source for arrays, sparse matrices and indices

def array_code(a):
    """Source that rebuilds the C-contiguous array ``a`` exactly."""
    a = np.asarray(a)
    dt = "np.bool_" if a.dtype.kind == "b" else f"np.{a.dtype.name}"
    if a.ndim == 0:
        return f"{dt}({_scalar(a.item())})"
    if a.size == 0:
        return f"np.zeros({tuple(a.shape)!r}, dtype={dt})"
    body = _nested(a.tolist())
    return f"np.array({body}, dtype={dt})"


def _scalar(v):
    if isinstance(v, float):
        if np.isnan(v):
            return "nan"
        if np.isinf(v):
            return "inf" if v > 0 else "-inf"
    return repr(v)


def _nested(v):
    if isinstance(v, list):
        return "[" + ", ".join(_nested(e) for e in v) + "]"
    return _scalar(v)


def value_code(v):
    """Source for a parameter value (int, float, slice, tuple, array, ...)."""
    if isinstance(v, Arg):
        return v.code
    if isinstance(v, np.ndarray):
        return array_code(v)
    if isinstance(v, float):
        return _scalar(v)
    if v is Ellipsis:
        return "..."
    if isinstance(v, slice):
        return f"slice({v.start!r}, {v.stop!r}, {v.step!r})"
    if isinstance(v, tuple):
        inner = ", ".join(value_code(e) for e in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, list):
        return "[" + ", ".join(value_code(e) for e in v) + "]"
    return repr(v)


class Arg:
    """A generated value and the source that rebuilds it."""

    __slots__ = ("value", "code")

    def __init__(self, value, code):
        self.value = value
        self.code = code

    def __repr__(self):
        return self.code


def snapshot(v):
    """A deep copy of every buffer of ``v`` (to prove an op did not mutate it)."""
    if isinstance(v, np.ndarray):
        return ("a", v.copy(), v.tobytes(order="A"))
    if is_scipy_sparse(v):
        names = ("data", "row", "col") if v.format == "coo" else ("data", "indices", "indptr")
        return ("s", tuple(np.asarray(getattr(v, n)).tobytes() for n in names) + (v.shape,))
    if isinstance(v, (tuple, list)):
        return ("t", tuple(snapshot(e) for e in v))
    return ("o", None)


def unchanged(v, snap):
    kind = snap[0]
    if kind == "a":
        return v.tobytes(order="A") == snap[2]
    if kind == "s":
        return snapshot(v)[1] == snap[1]
    if kind == "t":
        return all(unchanged(e, s) for e, s in zip(v, snap[1]))
    return True


class Case:
    """One example: named arguments, and the statement that computes ``result``
    from them (run under ``ub.use_backend``)."""

    def __init__(self, stmt, args, *, want=None, note=""):
        self.stmt = stmt          # e.g. "result = ub.keep_topk(x, k, axis=axis, fill=fill)"
        self.args = args          # name -> Arg or plain value
        self.want_stmt = want     # numpy statement for the reference; None: the numpy backend
        self.note = note

    def fresh(self):
        """The same case with every array rebuilt from its source (a plugin
        that mutates its input cannot spoil a case kept for the next run)."""
        import scipy.sparse as sp

        env = {"np": np, "sp": sp, "nan": np.nan, "inf": np.inf}
        args = {k: (Arg(eval(v.code, env), v.code) if isinstance(v, Arg) else v) for k, v in self.args.items()}
        return Case(self.stmt, args, want=self.want_stmt, note=self.note)

    def replace(self, **args):
        """The same statement on other arguments."""
        return Case(self.stmt, {**self.args, **args}, want=self.want_stmt, note=self.note)

    def values(self):
        return {k: (v.value if isinstance(v, Arg) else v) for k, v in self.args.items()}

    def _exec(self, stmt, backend, device):
        env = {"np": np, "ub": ub, "nan": np.nan, "inf": np.inf}
        env.update(self.values())
        if stmt.startswith("def "):
            # One function object per source text, every array passed as an
            # argument: a compiling backend then compiles once per signature.
            head, call = stmt.split("\nresult =", 1)
            env["f"] = function_of(head)
            stmt = "result =" + call
        if backend is None:
            exec(stmt, env)
        else:
            with ub.use_backend(backend, device):
                exec(stmt, env)
        return env["result"]

    def run(self, backend, device=None):
        """``result`` of the case on ``backend`` as numpy, checking that no input was mutated."""
        vals = self.values()
        snaps = {k: snapshot(v) for k, v in vals.items()}
        out = self._exec(self.stmt, backend, device)
        for k, v in vals.items():
            if not unchanged(v, snaps[k]):
                raise Disagreement(f"the op mutated its input {k!r}", kind="mutation")
        return to_numpy(out)

    def reference(self):
        """The reference result: the numpy backend, or the numpy statement ``want``."""
        if self.want_stmt is None:
            return self.run("numpy")
        return to_numpy(self._exec(self.want_stmt, None, None))

    def __repr__(self):
        return "Case(" + ", ".join(f"{k}={value_code(v)}" for k, v in self.args.items()) + ")"

    def program(self, backend, dev):
        """The lines that compute ``result`` in a reproducer, when they are not
        the statement itself (a compiled, vmapped or transformed case)."""
        return None

    def reproducer(self, backend, device, failure):
        """A self-contained snippet that shows the disagreement on the installed package."""
        lines = [
            f"# unibackend conformance: {failure.check} on backend {backend!r}"
            + (f" (device {device!r})" if device else ""),
        ]
        for line in str(failure.message).splitlines():
            lines.append(f"# {line}")
        args = [f"{k} = {value_code(v)}" for k, v in self.args.items()]
        lines += ["import numpy as np"]
        if any("sp." in a for a in args):
            lines.append("import scipy.sparse as sp")
        lines += ["from numpy import nan, inf", "import unibackend as ub"] + _plugin_import(backend) + [""] + args
        dev = f", device={device!r}" if device else ""
        lines.append(f"with ub.use_backend({backend!r}{dev}):")
        program = self.program(backend, dev)
        if program is not None:
            lines += ["    " + s for s in program]
        else:
            lines += ["    " + s for s in self.stmt.splitlines()]
        lines.append("got = ub.to_numpy(result)")
        if self.want_stmt is None:
            lines.append("with ub.use_backend('numpy'):  # the reference")
            lines += ["    " + s for s in self.stmt.splitlines()]
        else:
            lines.append("# the reference, in float64 numpy")
            lines += self.want_stmt.splitlines()
        lines.append("want = np.asarray(result)")
        lines.append('print("got: ", got, got.dtype, got.shape)')
        lines.append('print("want:", want, want.dtype, want.shape)')
        if failure.index is not None:
            lines.append(f"print('at index {failure.index}:', got[{failure.index!r}], want[{failure.index!r}])")
        return "\n".join(lines) + "\n"


def _plugin_import(backend):
    """Lines that register ``backend``'s plugin when no entry point names it
    (``ub.register``, ``--plugin``), so that a reproducer runs on its own."""
    from unibackend import _registry as R

    cls = R._classes.get(backend)
    if cls is None:
        return []
    ep = R._discover().get(backend)
    if ep is not None and ep.value == f"{cls.__module__}:{cls.__qualname__}":
        return []
    top = cls.__qualname__.split(".")[0]
    return [f"from {cls.__module__} import {top}", f"ub.register({backend!r}, {cls.__qualname__})"]


class CompiledCase(Case):
    """The same case with its statement run inside the backend's compiler
    (``Backend.compile`` along compile path ``path``; with ``via="function"``,
    inside ``ub.function``): a function whose parameters are the case's dense
    arrays, made native first; every other argument (ints, axes, ``k``,
    slices, scalars, boolean-mask indices, which fix the graph's shapes) is a
    constant of the function.  ``reference()`` stays eager numpy, so the
    check's verify holds the compiled result to the same oracle and
    tolerance as the eager one."""

    def __init__(self, stmt, args, *, want=None, note="", path=None, via="compile"):
        super().__init__(stmt, args, want=want, note=note)
        self.path, self.via = path, via

    def fresh(self):
        c = super().fresh()
        return type(self)(c.stmt, c.args, want=c.want_stmt, note=c.note, path=self.path, via=self.via)

    def replace(self, **args):
        return type(self)(self.stmt, {**self.args, **args}, want=self.want_stmt, note=self.note,
                          path=self.path, via=self.via)

    def reference(self):
        return Case(self.stmt, self.args, want=self.want_stmt, note=self.note).reference()

    def compiled_source(self):
        """(source of the compiled function, its parameter names)."""
        params = [k for k, v in self.values().items() if _graph_input(k, v)]
        body = "\n".join("    " + line for line in self.stmt.splitlines())
        return f"def compiled_case({', '.join(params)}):\n{body}\n    return result\n", params

    def _compiler(self, backend, device):
        from unibackend import _registry as R

        if self.via == "function":
            return ub.function
        B = R.backend(backend, device)
        return B.compile if self.path is None else (lambda f: B.compile(f, self.path))

    def program(self, backend, dev):
        src, params = self.compiled_source()
        lines = src.splitlines()
        if self.via == "function":
            lines.append("compiled = ub.function(compiled_case)")
        else:
            path = "" if self.path is None else f", {self.path!r}"
            lines += ["from unibackend import _registry",
                      f"compiled = _registry.backend({backend!r}{dev}).compile(compiled_case{path})  # the compiler"]
        lines.append(f"result = compiled({', '.join(f'ub.asarray({p})' for p in params)})")
        return lines

    def _exec(self, stmt, backend, device):
        if backend is None or stmt != self.stmt:
            return super()._exec(stmt, backend, device)
        src, params = self.compiled_source()
        vals = self.values()
        env = {"np": np, "ub": ub, "nan": np.nan, "inf": np.inf}
        env.update({k: v for k, v in vals.items() if k not in params})
        # A new code object per case (one compile each, no recompile limit
        # reached), with a source file that inspect can find: torch < 2.13
        # wraps a function without one in a frame shared by every compile, so
        # the 9th case hit the recompile limit (pytorch#124269).
        _exec_with_source(src, env)
        with ub.use_backend(backend, device):
            fn = self._compiler(backend, device)(env["compiled_case"])
            return fn(*[ub.asarray(vals[k]) for k in params])


#: the examples a vmapped case stacks: the case's own arrays, and each of them
#: reversed along every axis (same shapes and values, another answer: a vmap
#: rule that mixes examples up shows)
VMAP_BATCH = 2


def vmap_variant(a, b):
    """Example ``b`` of the batch built from array ``a``."""
    return a if b == 0 else np.ascontiguousarray(np.flip(a))


class VmapCase(CompiledCase):
    """The case's statement as a function of its dense arrays (as
    :class:`CompiledCase`), mapped with ``Backend.vmap`` over a batch of
    :data:`VMAP_BATCH` examples stacked on a new axis 0.  :meth:`slices` are
    the per-example cases: each one's ``run`` is its row of the one vmapped
    result, and the check's verify holds it to that example's oracle and
    reference (the stacked per-example answers)."""

    def batch(self):
        """(parameter names, the stacked arrays)."""
        _, params = self.compiled_source()
        vals = self.values()
        return params, [np.stack([vmap_variant(vals[k], b) for b in range(VMAP_BATCH)]) for k in params]

    def example(self, b):
        """Example ``b`` as a plain case (its arrays as the batch holds them)."""
        _, params = self.compiled_source()
        args = dict(self.args)
        for k in params:
            a = vmap_variant(self.values()[k], b)
            args[k] = Arg(a, array_code(a))
        return Case(self.stmt, args, want=self.want_stmt, note=self.note)

    def batched(self, backend, device):
        """The vmapped result (B, ...) on ``backend``, as numpy, computed once."""
        key = (backend, device)
        memo = self.__dict__.setdefault("_memo", {})
        if key not in memo:
            from unibackend import _registry as R

            src, params = self.compiled_source()
            _, stacked = self.batch()
            env: dict[str, Any] = {"np": np, "ub": ub, "nan": np.nan, "inf": np.inf}
            env.update({k: v for k, v in self.values().items() if k not in params})
            _exec_with_source(src, env)
            snaps = [a.copy() for a in stacked]
            with ub.use_backend(backend, device):
                out = R.backend(backend, device).vmap(env["compiled_case"])(*[ub.asarray(a) for a in stacked])
            if any(not np.array_equal(a, s, equal_nan=a.dtype.kind == "f") for a, s in zip(stacked, snaps)):
                raise Disagreement("the vmapped op mutated its input", kind="mutation")
            memo[key] = to_numpy(out)
        return memo[key]

    def slices(self):
        return [VmapSlice(self, b) for b in range(VMAP_BATCH)]


class VmapSlice(Case):
    """Example ``b`` of a :class:`VmapCase`: its values and reference are the
    example's own, its result row ``b`` of the vmapped call."""

    def __init__(self, parent, b):
        ex = parent.example(b)
        super().__init__(ex.stmt, ex.args, want=ex.want_stmt, note=ex.note)
        self.parent, self.b = parent, b

    def run(self, backend, device=None):
        got = self.parent.batched(backend, device)
        if got.ndim == 0 or got.shape[0] != VMAP_BATCH:
            raise Disagreement(f"the vmapped result has shape {got.shape}, want a leading batch axis of "
                               f"{VMAP_BATCH}", kind="shape")
        return got[self.b]

    def reference(self):
        return Case(self.stmt, self.args, want=self.want_stmt, note=self.note).reference()

    def reproducer(self, backend, device, failure):
        # the whole batch, and which row disagrees
        text = super().reproducer(backend, device, failure)
        return text.replace("got = ub.to_numpy(result)", f"got = ub.to_numpy(result)[{self.b}]  # example {self.b}")

    def program(self, backend, dev):
        src, params = self.parent.compiled_source()
        lines = src.splitlines() + ["from unibackend import _registry",
                                    f"mapped = _registry.backend({backend!r}{dev}).vmap(compiled_case)  # the transform"]
        for k in params:
            a0 = self.parent.values()[k]
            lines.append(f"{k}_batch = np.stack([{array_code(a0)}, np.flip({array_code(a0)})])")
        lines.append(f"result = mapped({', '.join(f'ub.asarray({k}_batch)' for k in params)})")
        return lines


class TransformGradCase(Case):
    """A gradient case (``result = ub.grad(f)(x, ...)``) differentiated by the
    framework's own function transform instead: ``Backend.transform_grad(g,
    how)`` of ``g = lambda x: f(x, ...)`` (the other arguments constants,
    dense ones made native), ``how`` one of ``plugin.GRAD_TRANSFORMS``."""

    def __init__(self, stmt, args, *, want=None, note="", how="grad"):
        super().__init__(stmt, args, want=want, note=note)
        self.how = how

    def fresh(self):
        c = super().fresh()
        return TransformGradCase(c.stmt, c.args, want=c.want_stmt, note=c.note, how=self.how)

    def replace(self, **args):
        return TransformGradCase(self.stmt, {**self.args, **args}, want=self.want_stmt, note=self.note, how=self.how)

    def reference(self):
        return Case(self.stmt, self.args, want=self.want_stmt, note=self.note).reference()

    def call(self):
        """(the source defining f, the names f is called with)."""
        head, call = self.stmt.split("\nresult =", 1)
        names = call.strip()[len("ub.grad(f)("):-1].split(", ")
        return head, names

    def program(self, backend, dev):
        head, names = self.call()
        rest = ", ".join(_native_code(n, self.values()[n]) for n in names[1:])
        return head.splitlines() + [
            "from unibackend import _registry",
            f"gradient = _registry.backend({backend!r}{dev}).transform_grad("
            f"lambda x_: f(x_, {rest}), {self.how!r})  # the transform",
            f"result = gradient(ub.asarray({names[0]}))"]

    def _exec(self, stmt, backend, device):
        if backend is None or stmt != self.stmt:
            return super()._exec(stmt, backend, device)
        from unibackend import _registry as R

        head, names = self.call()
        f = function_of(head)
        vals = self.values()
        with ub.use_backend(backend, device):
            rest = [ub.asarray(vals[n]) if _dense(vals[n]) else vals[n] for n in names[1:]]
            g = R.backend(backend, device).transform_grad(lambda x_: f(x_, *rest), self.how)
            return g(ub.asarray(vals[names[0]]))


def _dense(v):
    return isinstance(v, np.ndarray) and v.ndim > 0


def _native_code(name, v):
    return f"ub.asarray({name})" if _dense(v) else name
_case_files = itertools.count()


def _exec_with_source(src, env):
    """``exec(src, env)``, the source kept in linecache under a file name of its
    own (tracebacks show the case's lines, and inspect finds its source)."""
    name = f"<unibackend case {next(_case_files)}>"
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    exec(compile(src, name, "exec"), env)


def _graph_input(name, v):
    """Whether argument ``v`` is passed to the compiled function as a tensor:
    dense numeric arrays, except a boolean index (its selection's shape
    depends on its values, which a compiled graph cannot have)."""
    if not isinstance(v, np.ndarray) or v.ndim == 0:
        return False
    return not (name == "index" and v.dtype == np.bool_)


def functionable(case):
    """Whether ``case`` can run inside ``ub.function``: every case but the
    host-side ragged lists of ``pad_ids`` (gradient statements too: a training
    step's shape; a scipy.sparse argument is a constant of the function)."""
    return "ub.pad_ids" not in case.stmt


def batchable(case):
    """Whether ``case`` can be vmapped: compilable, with a dense array to map over."""
    return compilable(case) and any(_graph_input(k, v) for k, v in case.values().items())


def compilable(case):
    """Whether ``case`` can run inside a compiler: every array a dense one
    (scipy.sparse inputs are no graph input of torch.compile), no ragged
    Python lists (pad_ids' rows are host-side data), no ``def`` statement
    (the gradient checks)."""
    if case.stmt.startswith("def ") or "ub.pad_ids" in case.stmt:
        return False
    return not any(is_scipy_sparse(v) for v in case.values().values())


_FUNCTIONS: dict = {}  # source text -> the function it defines


def function_of(source):
    """The function ``f`` that ``source`` defines, made once per source text."""
    f = _FUNCTIONS.get(source)
    if f is None:
        env = {"np": np, "ub": ub}
        exec(source, env)
        f = _FUNCTIONS[source] = env["f"]
    return f


def to_numpy(x):
    x = ub.to_numpy(x)
    if is_scipy_sparse(x):
        return x
    return np.asarray(x)


# ---------------------------------------------------------------------------
# comparisons

def show(v):
    """A result element as plain Python (``-inf``, ``nan``, ``0.5``, ``[1.0, 2.0]``)."""
    v = np.asarray(v)
    return _nested(v.tolist()) if v.ndim else _scalar(v.item())


def _first(mask):
    idx = np.argwhere(mask)
    return tuple(int(i) for i in idx[0]) if idx.size else None


def check_meta(got, want, *, dtype=True):
    """Shapes exactly; dtypes exactly (integer results are int64 per the contract)."""
    if got.shape != want.shape:
        raise Disagreement(f"shape {got.shape}, want {want.shape}", got=got, want=want, kind="shape")
    if dtype and got.dtype != want.dtype:
        raise Disagreement(f"dtype {got.dtype}, want {want.dtype}", got=got, want=want, kind="dtype")


def assert_exact(got, want, what="values"):
    """Integer results, and float results that involve no arithmetic (selection,
    assignment): equal element by element, NaN where NaN, the sign of zero too."""
    check_meta(got, want)
    if got.dtype.kind == "f":
        gn, wn = np.isnan(got), np.isnan(want)
        bad = (gn != wn) | (~gn & ((got != want) | (np.signbit(got) != np.signbit(want))))
    else:
        bad = got != want
    i = _first(bad)
    if i is not None:
        raise Disagreement(f"{what} differ at index {i}: got {show(got[i])}, want {show(want[i])}",
                           index=i, got=got, want=want)


def assert_close(got, want, tol, what="values"):
    """Float results within ``tol`` (an array broadcast to the shape, from
    :mod:`tolerances`); NaN exactly where the reference has NaN, infinities
    exactly where it has them."""
    check_meta(got, want)
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), w.shape)
    gn, wn = np.isnan(g), np.isnan(w)
    wi = np.isinf(w)
    with np.errstate(invalid="ignore"):
        err = np.abs(g - w)
        bad = (gn != wn) | (wi & (g != w)) | (~wn & ~wi & ~(err <= tol))
    i = _first(bad)
    if i is not None:
        if gn[i] != wn[i] or wi[i]:
            detail = ""
        else:
            detail = f" (|difference| {err[i]:.3g} > tolerance {tol[i]:.3g})"
        raise Disagreement(f"{what} differ at index {i}: got {show(got[i])}, want {show(want[i])}{detail}",
                           index=i, got=got, want=want)


def fail(message, index=None, **kw):
    raise Disagreement(message, index=index, kind="property", **kw)


