"""Smoke test of ``unibackend bench``: the harness runs end to end on
minuscule sizes and writes its table, JSON and plots.  No timing is asserted
(the machine is shared; speed is what the benchmark reports, not a test)."""
import json

import pytest

from unibackend.benchmarks import runner, targets

CASE_KEYS = {"op", "label", "params", "backend", "device", "candidates", "first_call_s"}
CANDIDATE_KEYS = {"name", "kind", "call", "median_s", "number", "rounds", "unified_ratio",
                  "unified_overhead_s"}


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = runner.main(["--smoke", "--quiet", "--backends", "numpy", "--no-peers", "--out", str(out)])
    with open(out / "bench.json") as f:
        return rc, out, json.load(f)


def test_bench_numpy_smoke_run_exits_zero_and_writes_every_output(numpy_run):
    rc, out, _ = numpy_run
    assert rc == 0
    assert (out / "bench.json").is_file() and (out / "bench.md").is_file()
    pytest.importorskip("matplotlib")
    for png in ("targets.png", "times.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_json_has_a_case_per_op_with_unified_native_and_naive_candidates(numpy_run):
    _, _, result = numpy_run
    ops = {}
    for case in result["cases"]:
        assert CASE_KEYS <= set(case), case.keys()
        assert case["backend"] == "numpy"
        kinds = {r["kind"] for r in case["candidates"]}
        assert {"unified", "native"} <= kinds, (case["op"], kinds)
        for r in case["candidates"]:
            assert CANDIDATE_KEYS <= set(r), r.keys()
            assert r["median_s"] > 0 and r["rounds"] >= 1 and r["number"] >= 1
        ops.setdefault(case["op"], []).append(case)
    assert set(ops) == {"dispatch", "keep_topk", "embedding_mean", "sparse_dot"}  # no compiled/scaling on numpy
    assert len(ops["keep_topk"]) == 2  # one per k
    for op in ("keep_topk", "embedding_mean", "sparse_dot"):
        assert all(any(r["kind"] == "naive" for r in c["candidates"]) for c in ops[op]), op


def test_bench_unified_row_is_its_own_reference(numpy_run):
    """The unified candidate's ratio to itself is 1 and its overhead 0,
    whatever the timings were."""
    _, _, result = numpy_run
    for case in result["cases"]:
        (u,) = [r for r in case["candidates"] if r["kind"] == "unified"]
        assert u["unified_ratio"] == 1.0 and u["unified_overhead_s"] == 0.0


def test_bench_embedding_mean_reports_peak_memory_against_the_naive_gather(numpy_run):
    _, _, result = numpy_run
    (case,) = [c for c in result["cases"] if c["op"] == "embedding_mean"]
    names = {m["name"] for m in case["memory"]}
    assert {"unified", "naive"} <= names
    assert case["memory_tool"] == "tracemalloc"
    assert all(m["peak_bytes"] >= 0 for m in case["memory"])


def test_bench_every_target_has_a_status_and_missing_backends_are_not_run(numpy_run):
    _, _, result = numpy_run
    rows = result["targets"]
    assert {t.id for t in targets.TARGETS} == {r["id"] for r in rows}
    for r in rows:
        assert r["status"] in ("met", "missed", "not run"), r
        assert (r["value"] is None) == (r["status"] == "not run"), r
        if r["status"] == "missed":
            assert r["note"], r  # a missed target is explained
    torch_rows = [r for r in rows if r["backend"] == "torch"]
    assert torch_rows and all(r["status"] == "not run" for r in torch_rows)
    (imp,) = [r for r in rows if r["id"] == "import"]
    assert imp["status"] in ("met", "missed")


def test_bench_markdown_holds_the_targets_and_timings_tables(numpy_run):
    _, out, result = numpy_run
    md = (out / "bench.md").read_text()
    assert "## Targets" in md and "## Timings" in md
    assert "| target | backend | case | measured | target | status | note |" in md
    for case in result["cases"]:
        assert case["label"] in md


def test_bench_skips_a_backend_that_is_not_known_with_its_reason(tmp_path):
    rc = runner.main(["--smoke", "--quiet", "--backends", "numpy,nosuchbackend", "--ops", "dispatch",
                      "--no-peers", "--no-plots", "--out", str(tmp_path)])
    assert rc == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["skipped"] == [{"backend": "nosuchbackend", "reason": "no such plugin"}]
    assert [c["backend"] for c in result["cases"]] == ["numpy"]


def test_bench_rejects_an_unknown_op(tmp_path, capsys):
    assert runner.main(["--smoke", "--quiet", "--ops", "nosuchop", "--out", str(tmp_path)]) == 2
    assert "nosuchop" in capsys.readouterr().err


def test_bench_cuda_without_a_device_skips_torch_with_no_cuda_device(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    rc = runner.main(["--smoke", "--quiet", "--device", "cuda", "--backends", "torch", "--ops", "dispatch",
                      "--no-peers", "--no-plots", "--out", str(tmp_path)])
    assert rc == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["cases"] == []
    (skip,) = result["skipped"]
    assert skip["backend"] == "torch" and "no CUDA device" in skip["reason"]


def test_bench_report_rewrites_the_tables_of_an_earlier_run_without_measuring(numpy_run, tmp_path):
    _, out, result = numpy_run
    assert runner.main(["--report", str(out / "bench.json"), "--quiet", "--no-plots", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "bench.json").read_text())
    assert again["cases"] == result["cases"]
    assert [t["status"] for t in again["targets"]] == [t["status"] for t in result["targets"]]
    assert (tmp_path / "bench.md").read_text() == (out / "bench.md").read_text()


def _with_target(result, tid, backend, value):
    """A copy of ``result`` whose target (tid, backend) measured ``value`` in every case."""
    out = json.loads(json.dumps(result))
    rows = [t for t in out["targets"] if t["id"] == tid and t["backend"] == backend]
    assert rows
    for t in rows:
        t["value"], t["status"] = value, "met" if value <= t["limit"] else "missed"
    return out


def test_bench_combined_runs_report_each_target_median_every_value_and_flag_the_noisy(numpy_run, tmp_path):
    """Three runs: a target's value is the median of the three, its status
    the median's; it is noisy when the runs disagree on met/missed or spread
    by more than 10% of the median."""
    _, out, result = numpy_run
    paths = []
    for i, (topk, sparse) in enumerate(((1.25, 1.00), (1.35, 1.01), (1.20, 1.02))):
        r = _with_target(_with_target(result, "keep_topk/native", "numpy", topk), "sparse_dot", "numpy", sparse)
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(r))
    assert runner.main(["--report", ",".join(map(str, paths)), "--quiet", "--no-plots",
                        "--out", str(tmp_path / "all")]) == 0
    combined = json.loads((tmp_path / "all" / "bench.json").read_text())
    by = {(t["id"], t["backend"], t["case"]): t for t in combined["targets"]}
    topk = [t for k, t in by.items() if k[:2] == ("keep_topk/native", "numpy")]
    assert topk and {t["value"] for t in topk} == {1.25}      # the median run's, not the first's
    for t in topk:
        assert t["runs"] == [1.25, 1.35, 1.20] and t["status"] == "met"
        assert t["noisy"] and t["spread"] == pytest.approx(0.15 / 1.25)
    (sparse,) = [t for k, t in by.items() if k[:2] == ("sparse_dot", "numpy")]
    assert sparse["value"] == 1.01 and not sparse["noisy"]
    assert len(combined["meta"]["runs"]) == 3
    md = (tmp_path / "all" / "bench.md").read_text()
    assert "across runs" in md and "1.25x 1.35x 1.2x: spread 12%, noisy" in md


def test_bench_runs_twice_in_fresh_interpreters_and_combines_them(tmp_path):
    rc = runner.main(["--smoke", "--quiet", "--no-plots", "--backends", "numpy", "--no-peers",
                      "--ops", "dispatch", "--runs", "2", "--out", str(tmp_path)])
    assert rc == 0
    runs = [json.loads((tmp_path / f"run{i}" / "bench.json").read_text()) for i in (1, 2)]
    combined = json.loads((tmp_path / "bench.json").read_text())
    (t,) = [t for t in combined["targets"] if t["id"] == "dispatch" and t["backend"] == "numpy"]
    each = [[x["value"] for x in r["targets"] if x["id"] == "dispatch" and x["backend"] == "numpy"][0] for r in runs]
    assert t["runs"] == each and t["value"] == pytest.approx(sum(each) / 2)
    assert combined["meta"]["command"].startswith("unibackend bench --smoke")


def test_bench_rejects_runs_below_one(tmp_path, capsys):
    assert runner.main(["--smoke", "--runs", "0", "--out", str(tmp_path)]) == 2
    assert "--runs must be at least 1" in capsys.readouterr().err


# --------------------------------------------------------------------------
# the jax, dask and compiled rows (issues 11-13), tiny sizes, no timings asserted

#: the ops each backend's rows below assert on, run one backend at a time (so
#: that pytest-xdist can spread them): jax's eager rows and jax.jit, dask's
#: one-chunk rows and the LocalCluster scaling, the compiled rows of
#: torch.compile (Dynamo's eager backend in smoke runs) and tf.function(jit_compile=True)
NEW_ROWS = {"jax": ("jax", "dispatch,keep_topk,compiled"),
            "dask": ("distributed", "keep_topk,sparse_dot,scaling"),
            "torch": ("torch", "compiled"),
            "tensorflow": ("tensorflow", "compiled")}


@pytest.fixture(scope="module")
def new_rows(request, tmp_path_factory):
    """(backend, exit status, output directory, bench.json) of one smoke run
    of the backend's new rows (``request.param``); skips when it is not installed."""
    import importlib.util

    backend = request.param
    module, ops = NEW_ROWS[backend]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    out = tmp_path_factory.mktemp(f"bench-{backend}")
    rc = runner.main(["--smoke", "--quiet", "--backends", backend, "--no-peers", "--no-plots",
                      "--ops", ops, "--out", str(out)])
    with open(out / "bench.json") as f:
        return backend, rc, out, json.load(f)


def _cases(result, op, backend):
    return [c for c in result["cases"] if c["op"] == op and c["backend"] == backend]


@pytest.mark.parametrize("new_rows", sorted(NEW_ROWS), indirect=True)
def test_bench_new_rows_run_exits_zero_and_skip_nothing_installed(new_rows):
    backend, rc, _, result = new_rows
    assert rc == 0
    assert result["skipped"] == []
    assert {c["backend"] for c in result["cases"]} == {backend}
    assert {c["op"] for c in result["cases"]} == set(NEW_ROWS[backend][1].split(","))


@pytest.mark.parametrize("new_rows", ["jax"], indirect=True)
def test_bench_jax_rows_eager_and_jit_with_dispatch_target(new_rows):
    _, _, _, result = new_rows
    (disp,) = _cases(result, "dispatch", "jax")
    assert {"unified", "native"} <= {r["name"] for r in disp["candidates"]}
    comp = _cases(result, "compiled", "jax")
    assert {c["compiled_op"] for c in comp} == {"keep_topk", "embedding_mean"}
    for c in comp:
        assert c["compiler"] == "jax.jit"
        assert not c.get("error"), c["error"]
        assert {r["name"] for r in c["candidates"]} == {"unified", "native", "eager"}
        assert c["compile"]["unified"]["compile_s"] > 0 and c["compile"]["native"]["compile_s"] > 0
    rows = [t for t in result["targets"] if t["backend"] == "jax" and t["id"] in ("dispatch", "jax/keep_topk",
                                                                                     "compiled")]
    assert {t["id"] for t in rows} == {"dispatch", "jax/keep_topk", "compiled"}
    assert all(t["status"] in ("met", "missed") for t in rows), rows  # measured (ops run: no sparse_dot)


@pytest.mark.parametrize("new_rows", ["dask"], indirect=True)
def test_bench_dask_rows_one_chunk_against_numpy_and_scaling_1_to_2_workers(new_rows):
    _, _, out, result = new_rows
    keep = _cases(result, "keep_topk", "dask")
    assert keep and all(r["call"] == "argpartition + put_along_axis"
                        for c in keep for r in c["candidates"] if r["kind"] == "native")
    (sc,) = _cases(result, "scaling", "dask")
    assert not sc.get("error"), sc.get("error")
    assert {r["name"] for r in sc["candidates"]} == {"unified", "1 worker"}
    assert sc["scaling"]["speedup_2_over_1"] > 0
    assert sc["scaling"]["max_abs_diff"] == 0.0  # the cluster computed numpy's answer
    rows = [t for t in result["targets"] if t["id"] == "dask/one chunk"]
    assert rows and all(t["status"] in ("met", "missed") for t in rows)
    # sparse_dot also over 16 row chunks, against scipy on the whole input: reported, no target
    one, sixteen = _cases(result, "sparse_dot", "dask")
    assert sixteen["label"] == one["label"] + ", 16 row chunks" and sixteen["report_only"]
    assert {r["name"] for r in sixteen["candidates"]} == {"unified", "native"}
    assert not [t for t in rows if "16 row chunks" in t["case"]]
    assert "## Dask: embedding_mean on a LocalCluster" in (out / "bench.md").read_text()


@pytest.mark.parametrize("new_rows", ["torch", "tensorflow"], indirect=True)
def test_bench_compiled_rows_report_compile_times_graph_breaks_or_the_failure(new_rows):
    """Every compiled case either timed both sides (compile times reported,
    graph breaks counted on torch) or carries the error, and then its target
    row is 'failed' with that error: never a crash, never silence."""
    b, _, out, result = new_rows
    comp = _cases(result, "compiled", b)
    assert {c["compiled_op"] for c in comp} == {"keep_topk", "embedding_mean"}, b
    for c in comp:
        if c.get("error"):
            assert c["candidates"] == []
            (row,) = [t for t in result["targets"] if t["id"] == "compiled" and t["backend"] == b
                      and t["case"] == c["label"]]
            assert row["status"] == "failed" and row["note"] == c["error"]
        else:
            assert c["compile"]["unified"]["compile_s"] > 0
        if b == "torch":
            assert c["compiler"] == "torch.compile[eager]"
            assert isinstance(c["compile"]["unified"]["graph_breaks"], int)
    assert "## Compiled: compile times" in (out / "bench.md").read_text()


def test_bench_a_failed_case_gets_a_failed_target_row_with_its_error():
    case = {"op": "compiled", "label": "keep_topk 8x64 k=2", "backend": "torch", "device": "cpu",
            "candidates": [], "error": "failed to compile: unified: Unsupported: x"}
    rows = [r for r in targets.evaluate([case], None, ("torch",)) if r["id"] == "compiled"]
    torch_rows = [r for r in rows if r["backend"] == "torch"]
    assert [(r["status"], r["note"]) for r in torch_rows] == [("failed", case["error"])]


def test_dask_floor_times_scipy_the_one_chunk_row_and_dask_s_own_compute():
    """benchmarks/dask_floor: the one-chunk sparse_dot (checked against scipy
    first), scipy, and a one-task array of the answer computed by dask; the
    floor ratio adds dask's compute to scipy's time, so it exceeds 1."""
    pytest.importorskip("dask")
    from unibackend.benchmarks import dask_floor

    out = dask_floor.main(["--rounds", "3", "--n", "16", "--N", "200", "--M", "8", "--density", "0.05"])
    assert set(out["median_ms"]) == {"scipy", "ub one chunk", "dask floor"}
    assert all(v > 0 for v in out["median_ms"].values())
    assert out["floor_over_scipy"] > 1 and out["ub_over_scipy"] > 0
