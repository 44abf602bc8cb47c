"""Proof that the conformance suite can fail: deliberately broken plugins
(the numpy reference with one realistic bug each) are registered with
ub.register, and the suite must report each one, naming the op."""
import json

import numpy as np
import pytest

pytest.importorskip("hypothesis")

import unibackend as ub
from unibackend.conformance import engine, runner
from unibackend.conformance.checks import CHECKS
from unibackend.plugins.numpy_backend import NumpyBackend


class TorchTieOrderTopk(NumpyBackend):
    """keep_topk with torch's CPU tie order: among ties the HIGHER index wins."""

    name = "broken_tie_order"

    def keep_topk(self, x, k, axis, fill):
        return np.flip(super().keep_topk(np.flip(x, axis), k, axis, fill), axis)


class MultiplyMaskedMean(NumpyBackend):
    """masked_mean that multiplies by the mask instead of selecting: NaN * 0 is NaN."""

    name = "broken_masked_nan"

    def masked_mean(self, x, mask, axes):
        keep = np.broadcast_to(mask != 0, x.shape)
        with np.errstate(invalid="ignore"):
            total = (x * keep).sum(axis=axes)
        count = keep.sum(axis=axes).astype(x.dtype)
        return (total / np.maximum(count, 1)).astype(x.dtype, copy=False)


class DivideByLengthEmbedding(NumpyBackend):
    """embedding_mean that divides by the padded length L instead of the count."""

    name = "broken_embedding_len"

    def embedding_mean(self, table, ids, pad_id):
        real = ids != pad_id
        total = np.zeros((ids.shape[0], table.shape[1]), table.dtype)
        for i in range(ids.shape[0]):
            total[i] = table[ids[i][real[i]]].sum(axis=0)
        return (total / max(ids.shape[1], 1)).astype(table.dtype)


BROKEN = {
    "broken_tie_order": (TorchTieOrderTopk, "keep_topk", "among equal values the lower index"),
    "broken_masked_nan": (MultiplyMaskedMean, "masked_mean", "NaN"),
    "broken_embedding_len": (DivideByLengthEmbedding, "embedding_mean", None),
}


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """One run of the command over numpy and the three broken plugins (the
    shrinking of three failures is the slow part: it is shared by the tests)."""
    import io
    from contextlib import redirect_stdout

    from unibackend import _registry as R

    for name, (cls, _, _) in BROKEN.items():
        ub.register(name, cls)
    tmp = tmp_path_factory.mktemp("broken")
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            code = runner.main(["--backends", "numpy," + ",".join(sorted(BROKEN)),
                                "--ops", "keep_topk,masked_mean,embedding_mean", "--max-examples", "40",
                                "--quiet", "--report", str(tmp / "report.json")])
        runner.write_report(str(tmp / "report.md"), *_reload(tmp / "report.json"))
        data = json.loads((tmp / "report.json").read_text())
        yield {"code": code, "out": out.getvalue(), "data": data, "md": (tmp / "report.md").read_text()}
    finally:
        for name in BROKEN:
            R.unregister(name)


def _reload(path):
    from unibackend.conformance.checks import CHECKS
    from unibackend.conformance.engine import Result

    data = json.loads(path.read_text())
    results = [Result(**{k: v for k, v in r.items() if k in Result.__dataclass_fields__}) for r in data["results"]]
    return results, data["backends"], [CHECKS[c] for c in data["checks"]], data["meta"]


def _result(run, op, backend):
    return next(r for r in run["data"]["results"] if r["check"] == op and r["backend"] == backend)


def test_command_exits_nonzero_on_any_disagreement(broken_run):
    assert broken_run["code"] == 1


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_suite_reports_each_broken_plugin_and_names_the_op(broken_run, name):
    _, op, _ = BROKEN[name]
    r = _result(broken_run, op, name)
    assert r["status"] == "fail"
    assert r["reason"].startswith(f"{op} on {name!r}")
    assert f"{op} on {name}" in broken_run["out"]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_reproducer_is_a_runnable_script_showing_the_difference(broken_run, name):
    _, op, _ = BROKEN[name]
    ub.register(name, BROKEN[name][0])
    try:
        env = {}
        exec(compile(_result(broken_run, op, name)["reproducer"], "<reproducer>", "exec"), env)
    finally:
        from unibackend import _registry as R

        R.unregister(name)
    got, want = env["got"], env["want"]
    assert got.shape != want.shape or not np.array_equal(got, want, equal_nan=True)


def test_reference_passes_and_bugs_stay_in_their_own_cell(broken_run):
    for op in ("keep_topk", "masked_mean", "embedding_mean"):
        assert _result(broken_run, op, "numpy")["status"] == "pass"
    assert _result(broken_run, "masked_mean", "broken_tie_order")["status"] == "pass"
    assert _result(broken_run, "keep_topk", "broken_embedding_len")["status"] == "pass"


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_generated_cases_alone_find_each_broken_plugin(name):
    """Without the explicit cases, hypothesis finds and shrinks each bug."""
    from unibackend import _registry as R

    cls, op, _ = BROKEN[name]
    ub.register(name, cls)
    try:
        result = engine.run_check(CHECKS[op], name, max_examples=60, explicit=False)
    finally:
        R.unregister(name)
    assert result.status == "fail" and result.reason.startswith(f"{op} on {name!r}")


def test_tie_order_bug_names_the_index_that_differs(broken_run):
    r = _result(broken_run, "keep_topk", "broken_tie_order")
    assert r["index"] is not None
    assert f"index {tuple(r['index'])}" in r["reason"]
    assert "lower index" in r["reason"]


def test_masked_nan_bug_reported_as_a_leak(broken_run):
    assert "leaked" in _result(broken_run, "masked_mean", "broken_masked_nan")["reason"]


def test_markdown_report_holds_matrix_and_reproducers(broken_run):
    md = broken_run["md"]
    assert "| embedding_mean | pass | **FAIL** |" in md
    assert "```python" in md and "ub.embedding_mean(table, ids, pad_id=pad_id)" in md


# -- more realistic bugs, one op each: the suite must catch every one ---------

class UnstableArgsort(NumpyBackend):
    """argsort with an unstable sort (ties lose their index order past 16 entries)."""

    def argsort(self, x, axis, descending):
        return np.argsort(-x if descending else x, axis=axis, kind="quicksort").astype(np.int64)


class NaiveSoftmax(NumpyBackend):
    """softmax without the all -inf slice rule (NaN there)."""

    def softmax(self, x, axis):
        with np.errstate(invalid="ignore"):
            e = np.exp(x - np.max(x, axis=axis, keepdims=True)) if x.size else x
            return e / e.sum(axis=axis, keepdims=True)


class FirstWriteWins(NumpyBackend):
    """set_subtensor where the first of repeated positions wins."""

    def set_subtensor(self, x, sub, value, accumulate):
        if sub.basic or accumulate:
            return super().set_subtensor(x, sub, value, accumulate)
        out = x.copy().reshape(-1)
        out[sub.positions().reshape(-1)[::-1]] = np.broadcast_to(value, sub.shape).reshape(-1)[::-1]
        return out.reshape(x.shape)


class PlusEqualsInc(NumpyBackend):
    """inc_subtensor with ``out[idx] += v``: a repeated position gets one addition."""

    def set_subtensor(self, x, sub, value, accumulate):
        if sub.basic or not accumulate:
            return super().set_subtensor(x, sub, value, accumulate)
        out = x.copy().reshape(-1)
        out[sub.positions().reshape(-1)] += np.broadcast_to(value, sub.shape).reshape(-1)
        return out.reshape(x.shape)


class InPlaceMaskedMean(NumpyBackend):
    """masked_mean that zeroes the masked-out entries of the caller's array."""

    def masked_mean(self, x, mask, axes):
        if x.flags.writeable:
            x[~np.broadcast_to(mask != 0, x.shape)] = 0
        return super().masked_mean(x, mask, axes)


class SignlessTopk(NumpyBackend):
    """keep_topk through arithmetic (``+ 0.0``): a kept -0.0 comes back +0.0."""

    def keep_topk(self, x, k, axis, fill):
        return super().keep_topk(x, k, axis, fill) + 0.0


class Float64Softmax(NumpyBackend):
    """softmax that computes and returns float64 for float32 input."""

    def softmax(self, x, axis):
        return super().softmax(x.astype(np.float64), axis)


MUTANTS = [(UnstableArgsort, "argsort"), (NaiveSoftmax, "softmax"), (FirstWriteWins, "set_subtensor"),
           (PlusEqualsInc, "inc_subtensor"), (InPlaceMaskedMean, "masked_mean"), (SignlessTopk, "keep_topk"),
           (Float64Softmax, "softmax")]


@pytest.mark.parametrize("cls,op", MUTANTS, ids=[c.__name__ for c, _ in MUTANTS])
def test_suite_catches_a_realistic_bug_in_one_op(cls, op):
    from unibackend import _registry as R

    name = "mutant_" + cls.__name__.lower()
    ub.register(name, cls)
    try:
        result = engine.run_check(CHECKS[op], name)
        other = engine.run_check(CHECKS["pad_ids"], name, max_examples=5)
    finally:
        R.unregister(name)
    assert result.status == "fail" and result.reason.startswith(f"{op} on {name!r}")
    assert other.status == "pass"
