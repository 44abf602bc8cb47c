"""Running one check against one backend under hypothesis, and the profiles.

Each (check, backend) pair is one hypothesis test.  The database key is the
check's name, so every backend sees the same generated cases, and a case
that broke one backend is replayed first on all of them.  The example
database lives in the project's cache directory, never in the cwd.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .cases import Disagreement

#: hypothesis settings per profile.  ``ci`` is derandomized (the same
#: examples on every run) and sized so that the built-in backends finish
#: inside ten minutes on two cores; ``thorough`` is for a plugin author's
#: afternoon.  A backend that declares the ``eager_compiles`` capability
#: compiles a graph for every new input signature of an eager call (seconds
#: each), so it gets the first ``compiling_examples`` of the same
#: derandomized sequence.
#: ``compiled_examples`` is the number of generated cases each check runs
#: inside each compile path of the backend (after the explicit cases): every
#: case is a new graph, compiled once, so this is the cost; ``function``,
#: ``vmap`` and ``grad`` are the same for the other call modes (each vmapped
#: case is a new trace too; a grad case runs both transforms).
PROFILES = {
    "ci": {"max_examples": 40, "compiling_examples": 6, "compiled_examples": 4, "function_examples": 4,
           "vmap_examples": 4, "grad_examples": 3, "derandomize": True},
    "thorough": {"max_examples": 1000, "compiling_examples": 200, "compiled_examples": 100,
                 "function_examples": 100, "vmap_examples": 100, "grad_examples": 100, "derandomize": False},
}

#: the ways a check runs (``--modes``): eagerly; inside each compile path the
#: backend declares (``Backend.compile_modes``: one mode ``compiled:<path>``
#: each, or ``compiled`` for a backend that declares none); inside
#: ``ub.function`` (autodiff backends); under the framework's vmap (the
#: ``vmap`` capability) and its gradient transforms (``transform_grad``).
MODES = ("eager", "compiled", "function", "vmap", "grad")
DEFAULT_PROFILE = "ci"


def cache_dir():
    """``$UNIBACKEND_CACHE``, else ``$XDG_CACHE_HOME/unibackend``, else ``~/.cache/unibackend``."""
    env = os.environ.get("UNIBACKEND_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "unibackend"


def keep_compiled_code(backend, device=None):
    """Ask ``backend``'s plugin to keep its compiled code in the suite's
    cache directory (``Backend.keep_compiled_code``), so a second run loads
    what the first compiled; a backend that does not load is left to
    ``run_check`` to report."""
    from unibackend import _registry as R

    try:
        B = R.backend(backend, device)
    except Exception:
        return False
    return B.keep_compiled_code(str(cache_dir() / "compiled" / backend))


def family(mode):
    """The ``--modes`` name of a mode: ``compiled:graph`` is ``compiled``."""
    return mode.split(":", 1)[0]


def backend_modes(backend, modes=MODES):
    """The modes of ``modes`` (names of :data:`MODES`) that ``backend``
    has, one per compile path: ``eager`` always; ``compiled:<path>`` per
    declared compile path (``compiled`` when it declares none); ``function``
    with autodiff; ``vmap`` and ``grad`` with those capabilities.  A backend
    that does not load gets every mode asked for (its cells say why)."""
    from unibackend import _registry as R

    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown mode(s) {', '.join(sorted(unknown))}; known: {', '.join(MODES)}")
    try:
        cls = R.plugin_class(backend)
    except Exception:
        return [m for m in MODES if m in modes]
    caps = cls.capabilities
    out = []
    for m in MODES:
        if m not in modes:
            continue
        if m == "compiled":
            out += [f"compiled:{p}" for p in cls.compile_modes] or ["compiled"]
        elif m == "function" and "compiled" in modes and compiles_with_function(backend):
            continue  # its compiled column runs ub.function already (mode_cases)
        elif m == "eager" or (m == "function" and caps.autodiff) or (m == "vmap" and caps.vmap) \
                or (m == "grad" and caps.transform_grad):
            out.append(m)
    return out


def compiles_with_function(backend):
    """Whether ``backend``'s one compile path *is* its ``ub.function``: an
    autodiff plugin with a single compile path that keeps the base
    ``Backend.compile`` (which returns ``self.function(f)``; theano).  Its
    ``compiled`` column runs each case through ``ub.function`` (the core's
    wrapper, then the very ``Backend.function`` that ``compile`` returns)
    on the function mode's cases (:func:`case_family`), so a separate
    ``function`` column would compile the same graphs twice: with both
    modes asked for, the compiled column is the only one."""
    from unibackend import _registry as R
    from unibackend.plugin import Backend

    try:
        cls = R.plugin_class(backend)
    except Exception:
        return False
    return cls.capabilities.autodiff and len(cls.compile_modes) <= 1 and cls.compile is Backend.compile


def examples_for(backend, profile=DEFAULT_PROFILE, mode="eager"):
    """Examples per check for ``backend`` under ``profile``: fewer for a
    backend that declares ``eager_compiles`` (or is an alias of one), and
    the profile's ``<mode>_examples`` (or fewer) in the other modes."""
    prof = PROFILES[profile]
    n = prof["compiling_examples"] if compiles_eagerly(backend) else prof["max_examples"]
    return n if mode == "eager" else min(n, prof[f"{case_family(mode, backend)}_examples"])


def compiles_eagerly(backend):
    """Whether ``backend``'s plugin, or the one it is an alias of, declares
    ``eager_compiles``; False for a name no plugin registers."""
    from unibackend import _registry as R

    try:
        cls = R.plugin_class(backend)
        roots = [cls] + ([R.plugin_class(cls.alias_of)] if cls.alias_of else [])
    except Exception:  # an unknown or broken plugin: run_check reports why
        return False
    return any(c.capabilities.eager_compiles for c in roots)


def hypothesis_settings(profile=DEFAULT_PROFILE, max_examples=None, seed=None):
    """The settings of a profile: no deadline (compiled backends compile on a
    signature's first call), health checks off (the strategies are large on
    purpose), the database in the cache directory."""
    from hypothesis import HealthCheck, Phase, Verbosity, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    prof = PROFILES[profile]
    derandomize = bool(prof["derandomize"]) and seed is None
    db = None  # derandomized runs replay nothing: the same examples every time
    if not derandomize:
        try:
            path = cache_dir() / "hypothesis"
            path.mkdir(parents=True, exist_ok=True)
            db = DirectoryBasedExampleDatabase(str(path))
        except OSError:
            db = None  # a read-only home: run without replaying earlier failures
    return settings(
        max_examples=max_examples or prof["max_examples"],
        derandomize=derandomize,
        deadline=None,
        database=db,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        print_blob=False,
        # no explain phase: it reruns a failure many times to say which lines ran
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
    )


@contextlib.contextmanager
def hypothesis_home():
    """Hypothesis' own files (its constants cache) in the cache directory, not
    the cwd, while the suite runs; the caller's setting comes back after."""
    from hypothesis import configuration as cfg

    before = getattr(cfg, "__hypothesis_home_directory", None)
    cfg.set_hypothesis_home_dir(cache_dir() / "hypothesis")
    try:
        yield
    finally:
        cfg.set_hypothesis_home_dir(before)


@dataclass
class Result:
    check: str
    op: str
    backend: str
    status: str                   # "pass", "fail" or "skip"
    reason: str = ""              # why skipped, or the failure's message
    reproducer: str = ""
    index: tuple | None = None  # where the first difference is
    seconds: float = 0.0
    examples: int = 0
    details: dict = field(default_factory=dict)
    mode: str = "eager"           # "eager", "compiled[:<path>]", "function", "vmap" or "grad"
    unsupported: int = 0          # cases that raised the contract's TypeError for the mode

    def as_dict(self):
        return {
            "check": self.check, "op": self.op, "backend": self.backend, "mode": self.mode,
            "status": self.status,
            "reason": self.reason, "index": list(self.index) if self.index is not None else None,
            "reproducer": self.reproducer, "seconds": round(self.seconds, 3), "examples": self.examples,
            "unsupported": self.unsupported,
        }


def backend_skip_reason(name, device=None):
    """Why ``name`` cannot be checked here, or "" when it can (loads it)."""
    import unibackend as ub
    from unibackend import _registry as R

    try:
        cls = R.plugin_class(name)
    except ValueError as e:
        return str(e)
    except Exception as e:  # a broken third-party entry point
        return f"plugin failed to load: {type(e).__name__}: {e}"
    if device is not None and not cls.capabilities.devices:
        return f"backend {name!r} has no device support (asked for device {device!r})"
    try:
        R.backend(name, device)
    except ub.BackendNotAvailable as e:
        return f"not installed: {e}"
    except Exception as e:
        return f"failed to load: {type(e).__name__}: {e}"
    return ""


def check_skip_reason(check, name):
    from unibackend import _registry as R

    caps = R.plugin_class(name).capabilities
    missing = [c for c in check.needs if not getattr(caps, c)]
    if missing:
        return f"backend {name!r} declares no {' or '.join(missing)} capability"
    return ""


#: the words of the contract's TypeError for an op a framework cannot take in
#: a mode ("<op>: not supported under <mode>: <why>", built in one place in
#: the core, ``unibackend._errors.unsupported_in_mode``): a case that raises it is not a
#: disagreement; a check whose every case raises it is a skip saying so.
UNSUPPORTED = "not supported under"


def _check_mode(mode):
    if family(mode) not in MODES or (family(mode) != "compiled" and ":" in mode):
        raise ValueError(f"run_check: mode must be one of {MODES} (or compiled:<path>), got {mode!r}")


def mode_skip_reason(check, backend, mode):
    """Why ``check`` does not run on ``backend`` in ``mode``, or ""."""
    from unibackend import _registry as R

    _check_mode(mode)
    fam = family(mode)
    cls = R.plugin_class(backend)
    if fam == "compiled":
        path = mode.partition(":")[2]
        if path and path not in cls.compile_modes:
            return f"backend {backend!r} declares no compile path {path!r}"
        fam = case_family(mode, backend)
    if fam == "compiled":
        if not check.compiles:
            return "not run compiled (sparse inputs, host-side lists, gradients: see docs/conformance.md)"
    elif fam == "function":
        if not cls.capabilities.autodiff:
            return f"backend {backend!r} declares no autodiff capability (ub.function is the eager op)"
        if "lazy" in check.needs:
            return "not run in ub.function (lazy chunking)"
    elif fam == "vmap":
        if not cls.capabilities.vmap:
            return f"backend {backend!r} declares no vmap capability"
        if not check.compiles:
            return "not vmapped (sparse inputs, host-side lists, gradients: see docs/conformance.md)"
    elif fam == "grad":
        if not cls.capabilities.transform_grad:
            return f"backend {backend!r} declares no transform_grad capability"
        if "autodiff" not in check.needs:
            return "the grad mode runs the gradient checks"
    return ""


def case_family(mode, backend=None):
    """The family whose cases ``mode`` runs on ``backend``: ``family(mode)``,
    except that the compiled column of a plugin whose compile path is its
    ``ub.function`` (:func:`compiles_with_function`) runs the function
    mode's cases (gradient checks too), having no function column of its own."""
    fam = family(mode)
    if fam == "compiled" and backend is not None and compiles_with_function(backend):
        return "function"
    return fam


def mode_accepts(mode, case, backend=None):
    """Whether ``case`` can run in ``mode`` (dense inputs for the graphs and vmap, ...)."""
    from .cases import batchable, compilable, functionable

    fam = case_family(mode, backend)
    if fam == "compiled":
        return compilable(case)
    if fam == "function":
        return functionable(case)
    if fam == "vmap":
        return batchable(case)
    return True


def mode_cases(mode, case, backend=None):
    """The cases to verify for one generated ``case`` in ``mode`` (on
    ``backend``: see :func:`compiles_with_function`)."""
    from unibackend.plugin import GRAD_TRANSFORMS

    from .cases import CompiledCase, TransformGradCase, VmapCase

    fam, path = case_family(mode, backend), mode.partition(":")[2] or None
    kw = {"want": case.want_stmt, "note": case.note}
    if fam == "compiled":
        return [CompiledCase(case.stmt, case.args, path=path, **kw)]
    if fam == "function":
        return [CompiledCase(case.stmt, case.args, via="function", **kw)]
    if fam == "vmap":
        return VmapCase(case.stmt, case.args, **kw).slices()
    if fam == "grad":
        return [TransformGradCase(case.stmt, case.args, how=how, **kw) for how in GRAD_TRANSFORMS]
    return [case]


def run_check(check, backend, *, device=None, profile=DEFAULT_PROFILE, max_examples=None, seed=None,
              explicit=True, mode="eager"):
    """Run ``check`` against ``backend`` under hypothesis; a :class:`Result`.
    ``explicit=False`` leaves out the check's explicit cases (generated ones only).
    ``mode`` (see :func:`backend_modes`) runs each case's op another way on
    the same inputs (inside a compile path, ``ub.function``, vmapped over a
    batch of examples, differentiated by the framework's transforms), held to
    the same oracle, properties and tolerance as eager; cases that cannot run
    so (sparse inputs for a graph) are left out, and a check that never can
    is a skip.  A case that raises the contract's TypeError for the mode
    (:data:`UNSUPPORTED`) is counted, not failed."""
    from hypothesis import assume, example, given
    from hypothesis import seed as hseed

    _check_mode(mode)
    why = backend_skip_reason(backend, device) or check_skip_reason(check, backend)
    if not why and mode != "eager":
        why = mode_skip_reason(check, backend, mode)
    if why:
        return Result(check.name, check.op, backend, "skip", why, mode=mode)
    calls, unsupported = [0], []

    def conformance_case(case):
        if mode != "eager":
            assume(mode_accepts(mode, case, backend))
        calls[0] += 1
        for c in mode_cases(mode, case, backend):
            try:
                check.verify(c, backend, device)
            except Disagreement as e:
                e.case = e.case or c
                raise
            except TypeError as e:
                if mode == "eager" or UNSUPPORTED not in str(e):
                    raise Disagreement(f"raised TypeError: {e}", case=c, kind="error") from e
                unsupported.append(str(e))
                return
            except Exception as e:
                raise Disagreement(f"raised {type(e).__name__}: {e}", case=c, kind="error") from e

    # One database key per check: every backend gets the same cases.
    conformance_case._hypothesis_internal_add_digest = (  # type: ignore[attr-defined]  # hypothesis reads it
        f"unibackend-conformance:{check.name}".encode())
    test = given(check.strategy)(conformance_case)
    explicit_cases = [c for c in (check.examples if explicit else ()) if mode == "eager" or mode_accepts(mode, c, backend)]
    for case in reversed(explicit_cases):  # (hypothesis runs the last decorator's first)
        test = example(case.fresh())(test)
    test = hypothesis_settings(profile, max_examples or examples_for(backend, profile, mode), seed)(test)
    if seed is not None:
        test = hseed(seed)(test)
    where = "" if mode == "eager" else f" {mode}"
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), hypothesis_home():
            warnings.simplefilter("ignore", RuntimeWarning)  # inf - inf in references and oracles
            test()
    except Disagreement as e:
        e.check, e.backend = check.name, backend
        if e.kind == "error":
            # a framework's exception: its first lines say what it is
            e.message = _first_lines(e.message)
            msg = f"{check.name} on {backend!r}{where} {e.message}"
        else:
            msg = f"{check.name} on {backend!r}{where}: {e.message}"
        return Result(check.name, check.op, backend, "fail", msg, mode=mode,
                      reproducer=e.case.reproducer(backend, device, e) if e.case else "",
                      index=e.index, seconds=time.perf_counter() - t0, examples=calls[0],
                      unsupported=len(unsupported))
    except Exception as e:  # hypothesis itself gave up (e.g. Unsatisfiable)
        if calls[0] == 0 and type(e).__name__ == "Unsatisfiable" and mode != "eager":
            return Result(check.name, check.op, backend, "skip", f"no case of this check runs in the {family(mode)} "
                          "mode (host-side lists, sparse inputs: see docs/conformance.md)", mode=mode,
                          seconds=time.perf_counter() - t0)
        return Result(check.name, check.op, backend, "fail",
                      f"{check.name} on {backend!r}{where}: the suite could not run: {type(e).__name__}: {e}",
                      seconds=time.perf_counter() - t0, examples=calls[0], mode=mode)
    seconds = time.perf_counter() - t0
    if unsupported and len(unsupported) == calls[0]:
        return Result(check.name, check.op, backend, "skip", f"raises the documented TypeError: {unsupported[0]}",
                      seconds=seconds, examples=calls[0], mode=mode, unsupported=len(unsupported))
    return Result(check.name, check.op, backend, "pass", seconds=seconds, examples=calls[0], mode=mode,
                  unsupported=len(unsupported))


def _first_lines(text, n=4, width=300):
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    out = "\n".join(ln[:width] for ln in lines[:n])
    return out + ("\n..." if len(lines) > n else "")


def default_backends():
    """Every installed, non-alias backend, the reference first."""
    import unibackend as ub

    names = [b.name for b in ub.backends() if b.installed and not b.alias_of]
    return sorted(names, key=lambda n: (n != "numpy", n))


def select_checks(ops=None):
    from .checks import CHECKS

    if not ops:
        return list(CHECKS.values())
    wanted = set(ops)
    unknown = wanted - {c.op for c in CHECKS.values()} - set(CHECKS)
    if unknown:
        known = sorted({c.op for c in CHECKS.values()})
        raise ValueError(f"unknown op(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    return [c for c in CHECKS.values() if c.op in wanted or c.name in wanted]
