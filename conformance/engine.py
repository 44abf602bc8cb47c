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
#: inside the backend's compiler under ``--compiled`` (after the explicit
#: cases): every case is a new graph, compiled once, so this is the cost.
PROFILES = {
    "ci": {"max_examples": 40, "compiling_examples": 6, "compiled_examples": 4, "derandomize": True},
    "thorough": {"max_examples": 1000, "compiling_examples": 200, "compiled_examples": 100,
                 "derandomize": False},
}

#: the two ways a check runs: eagerly, and inside the backend's compiler.
MODES = ("eager", "compiled")
DEFAULT_PROFILE = "ci"


def cache_dir():
    """``$UNIBACKEND_CACHE``, else ``$XDG_CACHE_HOME/unibackend``, else ``~/.cache/unibackend``."""
    env = os.environ.get("UNIBACKEND_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "unibackend"


def examples_for(backend, profile=DEFAULT_PROFILE, mode="eager"):
    """Examples per check for ``backend`` under ``profile``: fewer for a
    backend that declares ``eager_compiles`` (or is an alias of one), and
    ``compiled_examples`` (or fewer) in the compiled mode."""
    prof = PROFILES[profile]
    n = prof["compiling_examples"] if compiles_eagerly(backend) else prof["max_examples"]
    return min(n, prof["compiled_examples"]) if mode == "compiled" else n


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
    derandomize = prof["derandomize"] and seed is None
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
    mode: str = "eager"           # "eager", or "compiled" (inside the backend's compiler)

    def as_dict(self):
        return {
            "check": self.check, "op": self.op, "backend": self.backend, "mode": self.mode,
            "status": self.status,
            "reason": self.reason, "index": list(self.index) if self.index is not None else None,
            "reproducer": self.reproducer, "seconds": round(self.seconds, 3), "examples": self.examples,
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


def run_check(check, backend, *, device=None, profile=DEFAULT_PROFILE, max_examples=None, seed=None,
              explicit=True, mode="eager"):
    """Run ``check`` against ``backend`` under hypothesis; a :class:`Result`.
    ``explicit=False`` leaves out the check's explicit cases (generated ones only).
    ``mode="compiled"`` runs each case's op inside the backend's compiler
    (``Backend.compile``) on the same inputs, held to the same oracle,
    properties and tolerance as eager; cases that cannot compile (sparse
    inputs) are left out, and a check that never compiles is a skip."""
    from hypothesis import assume, example, given
    from hypothesis import seed as hseed

    from .cases import CompiledCase, compilable

    if mode not in MODES:
        raise ValueError(f"run_check: mode must be one of {MODES}, got {mode!r}")
    why = backend_skip_reason(backend, device) or check_skip_reason(check, backend)
    if not why and mode == "compiled" and not check.compiles:
        why = "not run compiled (sparse inputs, host-side lists, gradients: see docs/conformance.md)"
    if why:
        return Result(check.name, check.op, backend, "skip", why, mode=mode)
    calls = [0]

    def conformance_case(case):
        if mode == "compiled":
            assume(compilable(case))
            case = CompiledCase(case.stmt, case.args, want=case.want_stmt, note=case.note)
        calls[0] += 1
        try:
            check.verify(case, backend, device)
        except Disagreement as e:
            e.case = e.case or case
            raise
        except Exception as e:
            raise Disagreement(f"raised {type(e).__name__}: {e}", case=case, kind="error") from e

    # One database key per check: every backend gets the same cases.
    conformance_case._hypothesis_internal_add_digest = f"unibackend-conformance:{check.name}".encode()
    test = given(check.strategy)(conformance_case)
    explicit_cases = [c for c in (check.examples if explicit else ()) if mode == "eager" or compilable(c)]
    for case in reversed(explicit_cases):  # (hypothesis runs the last decorator's first)
        test = example(case.fresh())(test)
    test = hypothesis_settings(profile, max_examples or examples_for(backend, profile, mode), seed)(test)
    if seed is not None:
        test = hseed(seed)(test)
    where = " compiled" if mode == "compiled" else ""
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
                      index=e.index, seconds=time.perf_counter() - t0, examples=calls[0])
    except Exception as e:  # hypothesis itself gave up (e.g. Unsatisfiable)
        return Result(check.name, check.op, backend, "fail",
                      f"{check.name} on {backend!r}{where}: the suite could not run: {type(e).__name__}: {e}",
                      seconds=time.perf_counter() - t0, examples=calls[0], mode=mode)
    return Result(check.name, check.op, backend, "pass", seconds=time.perf_counter() - t0, examples=calls[0],
                  mode=mode)


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
