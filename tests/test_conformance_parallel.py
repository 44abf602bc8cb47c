"""``unibackend conformance --jobs N``: the backends over worker processes,
and the frameworks' own output kept off the screen."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("hypothesis")

from unibackend.conformance import parallel, runner
from unibackend.conformance.checks import CHECKS


def test_jobs_give_the_one_process_results_in_the_same_order():
    """run_parallel returns what run returns (check, backend, mode, status),
    in run's order, and reports every start to the progress callback."""
    checks = [CHECKS["softmax"], CHECKS["dot"]]
    backends = ["numpy", "dask"]
    started = []
    par = parallel.run_parallel(backends, checks, 2, max_examples=3,
                                progress=lambda check, name: started.append((check.name, name)))
    one = runner.run(backends, checks, max_examples=3)
    key = lambda r: (r.check, r.backend, r.mode, r.status)  # noqa: E731
    assert [key(r) for r in par] == [key(r) for r in one]
    assert sorted(started) == sorted((c.name, b) for c in checks for b in backends)


def test_one_job_or_one_backend_runs_in_this_process(monkeypatch):
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", None)  # would fail if used
    out = parallel.run_parallel(["numpy"], [CHECKS["softmax"]], 4, max_examples=2)
    assert [(r.backend, r.status) for r in out] == [("numpy", "pass")]


def test_tasks_are_columns_and_a_compiling_backend_s_compiled_columns_are_cut_in_shares():
    """The tasks: one per (backend, column); a backend declaring
    eager_compiles has each compiled column cut into `jobs` shares of
    the checks, which come first, then the eager columns, then the rest,
    compiled columns before the other modes; every (backend, check, column)
    is in exactly one task."""
    import unibackend as ub
    from unibackend import _registry as R
    from unibackend.conformance import engine
    from unibackend.plugin import Capabilities
    from unibackend.plugins.numpy_backend import NumpyBackend

    class Slow(NumpyBackend):
        name = "slow_compiler"
        capabilities = Capabilities(sparse=True, eager_compiles=True)
        compile_modes = ("plain", "other")

        def compile(self, f, mode=None):
            return f

    names = list(CHECKS)
    ub.register("slow_compiler", Slow)
    try:
        tasks = parallel._tasks(["numpy", "slow_compiler"], names, ("eager", "compiled"), jobs=2)
        columns = {b: engine.backend_modes(b, ("eager", "compiled")) for b in ("numpy", "slow_compiler")}
        later = [(b, cols) for b, _, cols in parallel._tasks(["torch", "numpy"], names, engine.MODES, jobs=2)]
    finally:
        R.unregister("slow_compiler")
    assert [(b, cols) for b, _, cols in tasks] == (
        [("slow_compiler", ("compiled:plain",))] * 2 + [("slow_compiler", ("compiled:other",))] * 2
        + [("numpy", ("eager",)), ("slow_compiler", ("eager",)), ("numpy", ("compiled",))])
    # after the eager columns, every compiled column before any other mode's
    families = [engine.family(cols[0]) for _, cols in later]
    assert families[:2] == ["eager", "eager"] and "compiled" in families
    rest = families[2:]
    assert rest == sorted(rest, key=lambda f: f != "compiled"), later
    covered = sorted((b, n, cols[0]) for b, ns, cols in tasks for n in ns)
    assert covered == sorted((b, n, m) for b, ms in columns.items() for m in ms for n in names)
    assert all(len(ns) < len(names) for b, ns, cols in tasks[:4])


def test_framework_output_goes_to_the_log_and_the_suite_lines_to_the_screen(tmp_path, capfd):
    """What anything writes to file descriptor 2 while the suite runs (a
    child process too) lands in the log; the suite's own lines reach the
    real stderr; afterwards stderr is the screen again."""
    log = tmp_path / "frameworks.log"
    with parallel.framework_output_to(str(log)) as screen:
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('framework noise\\n')"], check=True)
        os.write(2, b"c++ log line\n")
        screen.write("[1/1] softmax on numpy\n")
    print("after", file=sys.stderr, flush=True)
    err = capfd.readouterr().err
    assert "framework noise" in log.read_text() and "c++ log line" in log.read_text()
    assert "framework noise" not in err and "[1/1] softmax on numpy" in err and "after" in err


def test_the_command_with_jobs_prints_the_matrix_and_per_backend_times(tmp_path):
    env = {**os.environ, "UNIBACKEND_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "unibackend", "conformance", "--backends", "numpy,dask",
                          "--ops", "softmax", "--max-examples", "2", "--jobs", "2"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "time per backend: numpy" in out.stdout and "dask" in out.stdout
    assert "2 passed, 0 failed" in out.stdout


def test_jobs_must_be_positive(capsys):
    assert runner.main(["--jobs", "0", "--quiet"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().out
