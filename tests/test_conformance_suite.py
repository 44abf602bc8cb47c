"""The conformance suite's own machinery: reproducible inputs, the tolerance
bound, profiles and cache, the command, and third-party plugins."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import given, settings
from hypothesis import strategies as st

import unibackend as ub
from unibackend.conformance import engine, runner
from unibackend.conformance import strategies as S
from unibackend.conformance import tolerances as T
from unibackend.conformance.checks import CHECKS
from unibackend.plugin import Capabilities
from unibackend.plugins.numpy_backend import NumpyBackend

ENV = {"np": np, "nan": np.nan, "inf": np.inf}


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_array_code_rebuilds_values_and_layout(data):
    """The source printed for a generated array rebuilds it bit for bit, with
    the same strides (transposed, strided and reversed views included)."""
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    shape = data.draw(st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple))
    arg = data.draw(S.float_arrays(shape, dtype, nan=True, inf=True))
    rebuilt = eval(arg.code, ENV)
    assert rebuilt.dtype == arg.value.dtype and rebuilt.strides == arg.value.strides
    assert rebuilt.tobytes(order="A") == arg.value.tobytes(order="A")


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_sparse_code_rebuilds_storage_order_and_duplicates(data):
    """The source printed for a generated sparse matrix rebuilds its stored
    arrays as they are (unsorted indices and duplicates kept)."""
    import scipy.sparse as sp

    arg, dense = data.draw(S.sparse_matrices(data.draw(st.sampled_from([np.float32, np.float64]))))
    rebuilt = eval(arg.code, {**ENV, "sp": sp})
    x = arg.value
    assert type(rebuilt) is type(x) and rebuilt.shape == x.shape
    names = ("data", "row", "col") if x.format == "coo" else ("data", "indices", "indptr")
    for n in names:
        assert np.array_equal(getattr(rebuilt, n), getattr(x, n))
    absdense = np.zeros(x.shape)
    coo = x.tocoo(copy=True)
    np.add.at(absdense, (coo.row, coo.col), np.abs(coo.data.astype(np.float64)))
    # duplicates summed in another order: the sum tolerance of the dtype
    assert np.all(np.abs(x.toarray() - dense) <= T.sum_tol(absdense, coo.nnz, x.dtype))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=64))
def test_sum_tolerance_covers_float32_summation_error(terms):
    """A float32 sum in any order lies within sum_tol of the float64 sum
    (the forward error bound the tolerances module is built on)."""
    t = np.array(terms, np.float32)
    exact = t.astype(np.float64).sum()
    tol = T.sum_tol(np.abs(t.astype(np.float64)).sum(), t.size, np.float32)
    forward = np.float32(0)
    for v in t:
        forward = np.float32(forward + v)
    backward = np.float32(0)
    for v in t[::-1]:
        backward = np.float32(backward + v)
    for s in (forward, backward, t.sum(dtype=np.float32)):
        assert abs(float(s) - exact) <= tol


def test_assert_within_is_the_sum_tolerance_for_unit_tests():
    """assert_within accepts a result exactly at the sum bound of its dtype and
    n_terms, refuses one just past it, and matches NaN and infinities exactly."""
    want = np.array([1.0, -2.0, 0.5])
    tol = T.sum_tol(2.0, 10, np.float32)  # abs_sum defaults to the largest |expected|
    assert tol == pytest.approx(T.rtol_for(np.float32, 10) * 2.0 + T.floor(np.float32, 10))
    T.assert_within((want + [0.95 * tol, 0, -0.95 * tol]).astype(np.float32), want, n_terms=10)  # float32 rounding: 0.5% of tol
    with pytest.raises(AssertionError, match="index \\(0,\\)"):
        T.assert_within(want + [2 * tol, 0, 0], want, n_terms=10, dtype=np.float32)
    with pytest.raises(AssertionError, match="float64"):  # a float64 result gets float64's bound
        T.assert_within(want + [tol, 0, 0], want, n_terms=10)
    T.assert_within(np.array([np.nan, np.inf, 1.0]), [np.nan, np.inf, 1.0])
    for got in ([1.0, np.inf, 1.0], [np.nan, -np.inf, 1.0]):
        with pytest.raises(AssertionError):
            T.assert_within(np.array(got), [np.nan, np.inf, 1.0])
    T.assert_within(np.full(4, 1.0 + T.eps(np.float32), np.float32), 1.0, n_terms=1)  # broadcast
    assert T.terms_bound(np.zeros((3, 4)), np.zeros(5), 2.0) == 12 and T.terms_bound(1.0) == 1


def test_integer_results_have_no_tolerance():
    from unibackend.conformance.cases import Disagreement, assert_exact

    with pytest.raises(Disagreement, match=r"index \(1,\)"):
        assert_exact(np.array([0, 2, 1], np.int64), np.array([0, 1, 2], np.int64), "indices")
    with pytest.raises(Disagreement, match="dtype int32, want int64"):
        assert_exact(np.array([0], np.int32), np.array([0], np.int64))


def test_every_check_holds_on_the_numpy_reference():
    """The reference meets every check's oracle and properties (a handful of
    examples each; `unibackend conformance` runs the full profile)."""
    for check in CHECKS.values():
        r = engine.run_check(check, "numpy", max_examples=8)
        missing = [c for c in ("autodiff", "lazy") if c in check.needs]  # numpy has neither
        if missing:
            assert r.status == "skip" and missing[0] in r.reason
        else:
            assert r.status == "pass", r.reason + "\n" + r.reproducer


def test_ci_profile_is_derandomized_and_thorough_uses_the_cache_database(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIBACKEND_CACHE", str(tmp_path / "cache"))
    ci = engine.hypothesis_settings("ci")
    assert ci.derandomize and ci.deadline is None and ci.database is None
    thorough = engine.hypothesis_settings("thorough")
    assert not thorough.derandomize and thorough.max_examples > ci.max_examples
    assert str(thorough.database.path).startswith(str(tmp_path / "cache"))
    seeded = engine.hypothesis_settings("ci", seed=3)
    assert not seeded.derandomize


def test_examples_per_backend_follow_the_eager_compiles_capability():
    """A backend gets the profile's fewer ``compiling_examples`` because it
    declares ``eager_compiles`` (or aliases one that does), whatever its name."""
    from unibackend import _registry as R
    from unibackend.plugin import Capabilities

    class Compiling(NumpyBackend):
        name = "some_compiler"
        capabilities = Capabilities(eager_compiles=True)

    class AliasOfCompiling(NumpyBackend):
        name = "alias_of_some_compiler"
        alias_of = "some_compiler"

    ub.register("some_compiler", Compiling)
    ub.register("alias_of_some_compiler", AliasOfCompiling)
    try:
        ci = engine.PROFILES["ci"]
        assert ci["compiling_examples"] < ci["max_examples"]
        assert engine.examples_for("some_compiler") == ci["compiling_examples"]
        assert engine.examples_for("alias_of_some_compiler") == ci["compiling_examples"]
        assert engine.examples_for("numpy") == ci["max_examples"]
        assert engine.examples_for("no_such_backend") == ci["max_examples"]
    finally:
        R.unregister("alias_of_some_compiler")
        R.unregister("some_compiler")


def test_conformance_selects_no_behaviour_by_a_backend_name():
    """Nothing in the suite's code compares with a backend's name but the
    reference's ("numpy"): behaviour follows declared capabilities."""
    import ast
    import pathlib

    import unibackend.conformance as C

    names = {"theano", "pytensor", "torch", "tensorflow", "jax", "dask"}
    root = pathlib.Path(C.__file__).resolve().parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in names:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_cache_dir_defaults_to_the_user_cache_not_the_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("UNIBACKEND_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert engine.cache_dir() == tmp_path / "unibackend"


def test_command_rejects_unknown_backend_and_op(capsys):
    assert runner.main(["--backends", "no_such_backend", "--quiet"]) == 2
    assert "unknown backend" in capsys.readouterr().out
    assert runner.main(["--ops", "no_such_op", "--quiet"]) == 2
    assert "unknown op" in capsys.readouterr().out


def test_command_lists_checks(capsys):
    assert runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in CHECKS:
        assert name in out


def test_uninstalled_backend_is_a_skip_with_the_reason():
    class Missing(NumpyBackend):
        name = "missing_framework"
        modules = ("no_such_framework_module",)

    ub.register("missing_framework", Missing)
    try:
        r = engine.run_check(CHECKS["softmax"], "missing_framework", max_examples=2)
    finally:
        from unibackend import _registry as R

        R.unregister("missing_framework")
    assert r.status == "skip" and "not installed" in r.reason and "no_such_framework_module" in r.reason


def test_gradient_checks_catch_a_wrong_gradient():
    """A torch plugin whose gradients are 0.1% off fails the gradient checks."""
    if not any(b.name == "torch" and b.installed for b in ub.backends()):
        pytest.skip("torch not installed")
    from unibackend import _registry as R
    from unibackend.plugins.torch_backend import TorchBackend

    class OffGradient(TorchBackend):
        name = "torch_off_gradient"

        def value_and_grad(self, f, argnums, args, kwargs):
            value, grad = super().value_and_grad(f, argnums, args, kwargs)
            return value, grad * 1.001

    ub.register("torch_off_gradient", OffGradient)
    try:
        r = engine.run_check(CHECKS["grad masked_mean"], "torch_off_gradient", max_examples=20)
    finally:
        R.unregister("torch_off_gradient")
    assert r.status == "fail" and "gradient" in r.reason


THIRD_PARTY = '''
import numpy as np
from unibackend.plugins.numpy_backend import NumpyBackend


class ThirdPartyBackend(NumpyBackend):
    """A plugin from another distribution: the numpy reference under a new name."""
    name = "thirdparty"
'''


def _third_party_env(tmp_path):
    """A distribution on sys.path that registers ``thirdparty`` through the
    entry-point group unibackend.backends, like a pip-installed plugin."""
    (tmp_path / "thirdparty_backend.py").write_text(THIRD_PARTY)
    info = tmp_path / "thirdparty_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[unibackend.backends]\nthirdparty = thirdparty_backend:ThirdPartyBackend\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env.get("PYTHONPATH", "")
    env["UNIBACKEND_CACHE"] = str(tmp_path / "cache")
    return env


def test_third_party_plugin_through_entry_point_with_the_command(tmp_path):
    env = _third_party_env(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "unibackend", "conformance", "--backends", "thirdparty",
         "--ops", "argsort,keep_topk", "--max-examples", "5", "--report", "out.json"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((work / "out.json").read_text())
    assert {r["backend"] for r in data["results"]} == {"thirdparty"}
    assert all(r["status"] == "pass" for r in data["results"])
    assert sorted(p.name for p in work.iterdir()) == ["out.json"]  # nothing else written to the cwd


def test_third_party_plugin_through_the_pytest_option(tmp_path):
    env = _third_party_env(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "unibackend.conformance",
         "--unibackend-backends=thirdparty", "--unibackend-ops=softmax,masked_mean",
         "--unibackend-max-examples=5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_compiled_mode_runs_through_backend_compile_and_reports_both_columns(tmp_path):
    """--compiled runs each compilable check twice per backend (eager and inside
    Backend.compile, which is called), skips the checks that cannot compile with
    the reason, and the report's matrix has an eager and a compiled column."""
    from unibackend import _registry as R

    calls = []

    class Counting(NumpyBackend):
        name = "counting_compiler"

        def compile(self, f):
            calls.append(f.__name__)
            return f

    ub.register("counting_compiler", Counting)
    try:
        code = runner.main(["--backends", "counting_compiler", "--ops", "softmax,sparse_dot", "--compiled",
                            "--max-examples", "3", "--quiet", "--report", str(tmp_path / "r.json")])
        runner.main(["--backends", "counting_compiler", "--ops", "softmax", "--compiled",
                     "--max-examples", "2", "--quiet", "--report", str(tmp_path / "r.md")])
    finally:
        R.unregister("counting_compiler")
    assert code == 0 and calls and set(calls) == {"compiled_case"}
    data = json.loads((tmp_path / "r.json").read_text())
    modes = {(r["check"], r["mode"]): r["status"] for r in data["results"]}
    assert modes[("softmax", "eager")] == modes[("softmax", "compiled")] == "pass"
    assert modes[("sparse_dot", "compiled")] == "skip"
    assert "| check | counting_compiler | counting_compiler compiled |" in (tmp_path / "r.md").read_text()


class _LoopVmap(NumpyBackend):
    """The numpy reference with two named compile paths and a vmap that loops
    over the examples: every mode must agree with eager."""

    name = "loop_modes"
    capabilities = Capabilities(sparse=True, vmap=True)
    compile_modes = ("plain", "other")
    compiled_paths: list = []

    def compile(self, f, mode=None):
        self.compiled_paths.append(self._compile_mode(mode))
        return f

    def vmap(self, f):
        def mapped(*batch):
            return np.stack([np.asarray(f(*[a[i] for a in batch])) for i in range(len(batch[0]))])
        return mapped


def test_modes_give_one_column_per_compile_path_and_transform(tmp_path):
    """--modes all runs every compile path the plugin declares (through
    Backend.compile(f, path)) and its vmap, each its own column of the
    matrix and the report; the modes it lacks get no column."""
    from unibackend import _registry as R

    _LoopVmap.compiled_paths = []
    ub.register("loop_modes", _LoopVmap)
    try:
        code = runner.main(["--backends", "loop_modes", "--ops", "keep_topk,sparse_dot", "--modes", "all",
                            "--max-examples", "2", "--quiet", "--report", str(tmp_path / "r.json")])
        runner.main(["--backends", "loop_modes", "--ops", "softmax", "--modes", "eager,vmap",
                     "--max-examples", "2", "--quiet", "--report", str(tmp_path / "r.md")])
    finally:
        R.unregister("loop_modes")
    assert code == 0
    assert set(_LoopVmap.compiled_paths) == {"plain", "other"}
    data = json.loads((tmp_path / "r.json").read_text())
    cells = {(r["check"], r["mode"]): r["status"] for r in data["results"]}
    assert {m for _, m in cells} == {"eager", "compiled:plain", "compiled:other", "vmap"}
    assert cells[("keep_topk", "vmap")] == cells[("keep_topk", "compiled:other")] == "pass"
    assert cells[("sparse_dot", "vmap")] == "skip"
    assert set(data["meta"]["seconds_per_backend"]) == {"loop_modes", "loop_modes compiled:plain",
                                                       "loop_modes compiled:other", "loop_modes vmap"}
    assert "| check | loop_modes | loop_modes vmap |" in (tmp_path / "r.md").read_text()


class _FunctionIsCompile(NumpyBackend):
    """An autodiff plugin whose one compile path is the base ``compile``
    (``self.function(f)``, as theano's) and whose function drops NaN from
    its result: its compiled column goes through ub.function and fails."""

    name = "function_is_compile"
    capabilities = Capabilities(autodiff=True, sparse=True)
    functions: list = []

    def function(self, f):
        def graph(*args):
            self.functions.append(f.__name__)
            out = np.asarray(f(*args))
            return np.where(np.isnan(out), -np.inf, out).astype(out.dtype) if out.dtype.kind == "f" else out
        return graph


def test_a_compile_path_that_is_ub_function_runs_once_in_the_compiled_column(tmp_path):
    """With compiled and function both asked for, a plugin whose compile
    path is its ub.function gets no separate function column (it would
    compile the same graphs twice); the compiled column calls ub.function,
    so a broken function is still caught there.  Asked for alone, the
    function mode runs."""
    from unibackend import _registry as R

    _FunctionIsCompile.functions = []
    ub.register("function_is_compile", _FunctionIsCompile)
    try:
        assert engine.compiles_with_function("function_is_compile")
        assert engine.backend_modes("function_is_compile") == ["eager", "compiled"]
        assert engine.backend_modes("function_is_compile", ("eager", "function")) == ["eager", "function"]
        compiled = engine.run_check(CHECKS["keep_topk"], "function_is_compile", mode="compiled")
        assert compiled.status == "fail" and "ub.function(compiled_case)" in compiled.reproducer
        assert _FunctionIsCompile.functions and set(_FunctionIsCompile.functions) == {"compiled_case"}
        # the function mode's cases, gradient checks included, which a compile path skips
        grad = CHECKS["grad masked_mean"]
        assert engine.mode_skip_reason(grad, "function_is_compile", "compiled") == ""
        assert engine.mode_skip_reason(grad, "numpy", "compiled") != ""
        before = len(_FunctionIsCompile.functions)
        ran = engine.run_check(grad, "function_is_compile", mode="compiled", max_examples=2)
        assert ran.status != "skip" and len(_FunctionIsCompile.functions) > before, ran.reason
    finally:
        R.unregister("function_is_compile")
    for name in ("numpy", "torch", "tensorflow", "jax"):  # their own compile paths: both columns
        if name in R.known() and R.plugin_class(name).capabilities.autodiff:
            assert not engine.compiles_with_function(name)
            assert "function" in engine.backend_modes(name)


def test_command_rejects_an_unknown_mode(capsys):
    assert runner.main(["--backends", "numpy", "--modes", "eager,warp"]) == 2
    assert "warp" in capsys.readouterr().out


def test_the_documented_type_error_is_unsupported_and_a_framework_error_fails():
    """Under a transform, the contract's TypeError ("<op>: not supported under
    <mode>: <why>") for every case makes the cell a skip that quotes it; any
    other exception is a failure naming it."""
    from unibackend import _registry as R

    class Refuses(_LoopVmap):
        def vmap(self, f):
            raise TypeError("softmax: not supported under vmap: the example's reason")

    class Crashes(_LoopVmap):
        def vmap(self, f):
            raise RuntimeError("vmap: data-dependent control flow")

    results = {}
    for name, cls in (("vmap_refuses", Refuses), ("vmap_crashes", Crashes)):
        ub.register(name, cls)
        try:
            results[name] = engine.run_check(CHECKS["softmax"], name, mode="vmap", max_examples=2)
        finally:
            R.unregister(name)
    r = results["vmap_refuses"]
    assert r.status == "skip" and "documented TypeError" in r.reason and "softmax: not supported" in r.reason
    assert r.unsupported == r.examples > 0
    r = results["vmap_crashes"]
    assert r.status == "fail" and "RuntimeError" in r.reason and r.mode == "vmap"


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_one_condition_arrays_hold_exactly_one_special_condition(data):
    """An array from one_condition_arrays has exactly one of: NaN, a tie among
    finite values, +inf, -inf, a -0.0 beside 0.0 (all else distinct and finite)."""
    from unibackend.conformance import strategies as S

    shape = data.draw(st.sampled_from([(5,), (2, 3), (1, 4), (3, 1, 2)]))
    a = data.draw(S.one_condition_arrays(shape, np.float64)).value
    finite = a[np.isfinite(a)]
    held = {"nan": bool(np.isnan(a).any()), "ties": len(np.unique(finite)) < finite.size,
            "pos_inf": bool(np.isposinf(a).any()), "neg_inf": bool(np.isneginf(a).any())}
    zeros = finite[finite == 0]
    if zeros.size == 2 and np.signbit(zeros).any() and not np.signbit(zeros).all():
        held["ties"] = False
        held["signed_zero"] = True
    assert sum(held.values()) == 1, (a, held)


def test_run_check_rejects_an_unknown_mode_before_any_work():
    for mode in ("warp", "vmap:fast", "eager:x"):
        with pytest.raises(ValueError, match="mode must be one of"):
            engine.run_check(CHECKS["softmax"], "numpy", mode=mode)
