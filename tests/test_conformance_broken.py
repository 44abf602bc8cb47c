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
from unibackend.plugin import Capabilities
from unibackend.plugins.jax_backend import JaxBackend
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
        # 200, not the profile's 40: hypothesis also draws constants from the
        # modules already imported, so which cases a derandomized run makes
        # depends on the tests that ran before (60 found the tie bug alone,
        # not after the bench tests)
        result = engine.run_check(CHECKS[op], name, max_examples=200, explicit=False)
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


# -- one mutant per rule of docs/semantics.md ----------------------------------
# Each breaks exactly one rule.  docs/conformance.md's table "Rules, strategies
# and mutants" names the rule, the check (and strategy) that exercises it, and
# the mutant; test_every_mutant_in_the_docs_table_is_caught runs each row.

def _mask_of(kept_with_nan_fill):
    return ~np.isnan(kept_with_nan_fill)


class ReversedDescendingArgsort(NumpyBackend):
    """descending argsort as the reverse of the stable ascending one (ties come out last index first)."""

    def argsort(self, x, axis, descending):
        asc = np.argsort(x, axis=axis, kind="stable").astype(np.int64)
        return np.flip(asc, axis) if descending else asc


class NanSmallestArgsort(NumpyBackend):
    """argsort that ranks NaN below -inf (first ascending, last descending)."""

    def argsort(self, x, axis, descending):
        if x.dtype.kind == "f":
            x = np.where(np.isnan(x), -np.inf, x)
        return super().argsort(x, axis, descending)


class SignedZeroArgsort(NumpyBackend):
    """argsort that orders -0.0 below +0.0 (a sort on the float's bits)."""

    def argsort(self, x, axis, descending):
        if x.dtype.kind == "f":
            x = np.where((x == 0) & np.signbit(x), -np.finfo(x.dtype).tiny, x)
        return super().argsort(x, axis, descending)


class Int32Argsort(NumpyBackend):
    """argsort that returns int32 indices."""

    def argsort(self, x, axis, descending):
        return super().argsort(x, axis, descending).astype(np.int32)


class NanSmallestTopk(NumpyBackend):
    """keep_topk that ranks NaN as -inf (a NaN is kept only when nothing else is left)."""

    def keep_topk(self, x, k, axis, fill):
        keep = _mask_of(super().keep_topk(np.where(np.isnan(x), -np.inf, x), k, axis, np.nan))
        return np.where(keep, x, np.asarray(fill, x.dtype))


class NoTiesShortcutTopk(NumpyBackend):
    """keep_topk with a whole-tensor fast path: when no two finite values of
    the whole tensor are equal, rank by value with NaN counted as -inf (the
    flag forgets NaN, as a graph rewrite of a NaN-unsafe comparison did in TF).
    Only an input with NaN but no ties reaches the wrong path."""

    def keep_topk(self, x, k, axis, fill):
        finite = x[~np.isnan(x)]
        if np.isnan(x).any() and np.unique(finite).size == finite.size:
            keep = _mask_of(super().keep_topk(np.where(np.isnan(x), -np.inf, x), k, axis, np.nan))
            return np.where(keep, x, np.asarray(fill, x.dtype))
        return super().keep_topk(x, k, axis, fill)


class KZeroKeepsOne(NumpyBackend):
    """keep_topk with k=0 keeping the largest entry (a 'k >= 1' assumption)."""

    def keep_topk(self, x, k, axis, fill):
        return super().keep_topk(x, max(k, 1) if x.shape[axis] else k, axis, fill)


class KFullLosesNaN(NumpyBackend):
    """keep_topk with k=size through a comparison with the k-th value: NaN fails it and becomes fill."""

    def keep_topk(self, x, k, axis, fill):
        out = super().keep_topk(x, k, axis, fill)
        if k == x.shape[axis] and k:
            out = np.where(np.isnan(x), np.asarray(fill, x.dtype), out)
        return out


class FillIgnoredTopk(NumpyBackend):
    """keep_topk that always fills with -inf, whatever fill was asked."""

    def keep_topk(self, x, k, axis, fill):
        return super().keep_topk(x, k, axis, -np.inf)


class SmoothedSoftmax(NumpyBackend):
    """softmax with a tiny smoothing term in the exponentials: -inf no longer gives exactly 0."""

    def softmax(self, x, axis):
        out = super().softmax(x, axis)
        return np.where(np.isneginf(x) & np.isfinite(out), np.asarray(1e-30, x.dtype), out).astype(x.dtype)


class TensorflowNanSoftmax(NumpyBackend):
    """softmax with TensorFlow's float32 NaN answer: [0.1, nan, 0.3, 2.0] gives [0, nan, 0, 0]."""

    def softmax(self, x, axis):
        out = super().softmax(x, axis)
        nan_slice = np.any(np.isnan(x), axis=axis, keepdims=True)
        return np.where(nan_slice, np.where(np.isnan(x), np.nan, 0), out).astype(x.dtype)


class TheanoInfSoftmax(NumpyBackend):
    """softmax with theano's +inf answer: [0.1, inf, 0.3, 2.0] gives [0, nan, 0, 0] (NaN at the +inf only)."""

    def softmax(self, x, axis):
        out = super().softmax(x, axis)
        inf_slice = np.any(np.isposinf(x), axis=axis, keepdims=True) & ~np.any(np.isnan(x), axis=axis, keepdims=True)
        return np.where(inf_slice, np.where(np.isposinf(x), np.nan, 0), out).astype(x.dtype)


class GateHigherIndexTies(NumpyBackend):
    """topk_gate whose top-k keeps the higher index among ties (torch's CPU order)."""

    def keep_topk(self, x, k, axis, fill):
        return np.flip(super().keep_topk(np.flip(x, axis), k, axis, fill), axis)


class GateUnnormalised(NumpyBackend):
    """topk_gate as the softmax over all logits with the non-kept ones zeroed (weights do not sum to 1)."""

    def softmax(self, x, axis):
        return super().softmax(np.where(np.isneginf(x), np.asarray(0.0, x.dtype), x), axis) * (~np.isneginf(x))


class GateNanOnlyAtNan(NumpyBackend):
    """topk_gate where a kept NaN or +inf gives NaN there and 0 elsewhere (TF's float32 softmax inside the gate)."""

    def softmax(self, x, axis):
        out = super().softmax(x, axis)
        bad = np.isnan(x) | np.isposinf(x)
        return np.where(np.any(bad, axis=axis, keepdims=True), np.where(bad, np.nan, 0), out).astype(x.dtype)


class NanForEmptyMaskedMean(NumpyBackend):
    """masked_mean that divides by the count as is: a slice with nothing kept gives NaN."""

    def masked_mean(self, x, mask, axes):
        keep = np.broadcast_to(mask != 0, x.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (np.where(keep, x, 0).sum(axis=axes) / keep.sum(axis=axes)).astype(x.dtype)


class PositiveMaskMean(NumpyBackend):
    """masked_mean that keeps entries where mask > 0 (a negative number counts as False)."""

    def masked_mean(self, x, mask, axes):
        return super().masked_mean(x, mask > 0, axes)


class UniqueIdsEmbedding(NumpyBackend):
    """embedding_mean that counts a repeated id once per row."""

    def embedding_mean(self, table, ids, pad_id):
        out = np.zeros((ids.shape[0], table.shape[1]), table.dtype)
        for i, row in enumerate(ids):
            real = np.unique(row[row != pad_id])
            if real.size:
                out[i] = table[real].astype(np.float64).mean(axis=0)
        return out


class NanPadRowEmbedding(NumpyBackend):
    """embedding_mean whose row of only padding is the mean of nothing: NaN."""

    def embedding_mean(self, table, ids, pad_id):
        out = super().embedding_mean(table, ids, pad_id)
        out[np.all(ids == pad_id, axis=1)] = np.nan
        return out


class ClippedPadEmbedding(NumpyBackend):
    """embedding_mean that clips ids into the table first: a pad_id outside [0, V) becomes a real row."""

    def embedding_mean(self, table, ids, pad_id):
        clipped = np.clip(ids, 0, table.shape[0] - 1)
        return super().embedding_mean(table, clipped, pad_id if 0 <= pad_id < table.shape[0] else -(10**9))


class Float32Dot(NumpyBackend):
    """dot computed and returned in float32 whatever the inputs' dtype."""

    def dot(self, a, b):
        return np.dot(a.astype(np.float32), b.astype(np.float32))

    fast_dot = None


class ReversedBatchDot(NumpyBackend):
    """dot of a 3-D a that walks its batch axis backwards (a reshape bug)."""

    def dot(self, a, b):
        out = np.dot(a, b)
        return out[::-1].copy() if a.ndim >= 3 else out

    fast_dot = None


class EmptyContractionNaN(NumpyBackend):
    """dot over an empty contraction (K = 0) that gives NaN instead of 0."""

    def dot(self, a, b):
        out = np.dot(a, b)
        return np.full_like(out, np.nan) if a.shape[-1] == 0 else out

    fast_dot = None


class LastDuplicateCoreCSR(NumpyBackend):
    """The core's canonical CSR keeping the last of duplicate COO entries instead of summing them
    (a mutant of the core: ``patch`` replaces ``unibackend._checks.canonical_csr`` during the run)."""

    @staticmethod
    def patch():
        import scipy.sparse as sp

        from unibackend import _checks

        real = _checks.canonical_csr

        def last_wins(op, x, dtype=None):
            coo = sp.coo_matrix(x)
            keep = {}
            for r, c, v in zip(coo.row, coo.col, coo.data):
                keep[(r, c)] = v
            rows = np.array([rc[0] for rc in keep], np.int64)
            cols = np.array([rc[1] for rc in keep], np.int64)
            data = np.array(list(keep.values()), coo.dtype)
            return real(op, sp.coo_matrix((data, (rows, cols)), shape=x.shape), dtype)

        return last_wins


class Float64Subtensor(NumpyBackend):
    """set_subtensor/inc_subtensor returning float64 for a float32 x."""

    def set_subtensor(self, x, index, value, accumulate):
        return super().set_subtensor(x, index, value, accumulate).astype(np.float64)


class CompiledSignlessTopk(NumpyBackend):
    """Eager keep_topk is right; its compiled version adds 0.0 to the result (a fused
    kernel's arithmetic): a kept -0.0 comes back +0.0 only under --compiled."""

    def compile(self, f):
        def compiled(*args):
            return np.asarray(f(*args)) + 0.0
        return compiled


class GraphDropsNanTopk(NumpyBackend):
    """Two compile paths; the plain-graph one drops NaN from keep_topk's result
    (a graph rewrite that turns a NaN-unsafe comparison around, as Grappler
    did to TF's plain tf.function): only the compiled:graph column is wrong."""

    compile_modes = ("graph", "xla")

    def compile(self, f, mode=None):
        if self._compile_mode(mode) != "graph":
            return f

        def graph(*args):
            out = np.asarray(f(*args))
            return np.where(np.isnan(out), -np.inf, out).astype(out.dtype)
        return graph


class DynamicShapeTopk(NumpyBackend):
    """Two compile paths; the dynamic-shape one gets a size-1 dim wrong (it
    specialises 0/1-sized dims and reverses the last axis of such a result)."""

    compile_modes = ("fullgraph", "dynamic")

    def compile(self, f, mode=None):
        if self._compile_mode(mode) != "dynamic":
            return f

        def dynamic(*args):
            out = np.asarray(f(*args))
            if any(1 in np.shape(a) for a in args) and out.ndim:
                return np.ascontiguousarray(np.flip(out, -1))
            return out
        return dynamic


class FunctionDropsNanTopk(NumpyBackend):
    """An autodiff-declaring plugin whose ub.function (its graph) drops NaN
    from the result: eager is right, the function column is not."""

    capabilities = Capabilities(autodiff=True, sparse=True)

    def compile(self, f, mode=None):  # a compile path of its own (eager, right): not its ub.function
        return f

    def function(self, f):
        def graph(*args):
            out = np.asarray(f(*args))
            return np.where(np.isnan(out), -np.inf, out).astype(out.dtype) if out.dtype.kind == "f" else out
        return graph


class MixedUpVmap(NumpyBackend):
    """A vmap that runs every example but stacks the answers in the wrong
    order (a batching rule that mixes up examples)."""

    capabilities = Capabilities(sparse=True, vmap=True)

    def vmap(self, f):
        def mapped(*batch):
            outs = [np.asarray(f(*[a[i] for a in batch])) for i in range(len(batch[0]))]
            return np.stack(outs[::-1])
        return mapped


class TransformOnlyGrad(JaxBackend):
    """jax, with ub.grad right but the framework-transform gradient 0.1% off
    (a custom rule registered only for the transform)."""

    def transform_grad(self, f, how="grad"):
        g = super().transform_grad(f, how)
        return lambda x: g(x) * 1.001


#: every mutant of the rules table, by class name
RULE_MUTANTS = {c.__name__: c for c in (
    UnstableArgsort, ReversedDescendingArgsort, NanSmallestArgsort, SignedZeroArgsort, Int32Argsort,
    TorchTieOrderTopk, NanSmallestTopk, NoTiesShortcutTopk, KZeroKeepsOne, KFullLosesNaN, FillIgnoredTopk, SignlessTopk,
    SmoothedSoftmax, NaiveSoftmax, TensorflowNanSoftmax, TheanoInfSoftmax, Float64Softmax,
    GateHigherIndexTies, GateUnnormalised, GateNanOnlyAtNan,
    MultiplyMaskedMean, NanForEmptyMaskedMean, PositiveMaskMean, InPlaceMaskedMean,
    DivideByLengthEmbedding, UniqueIdsEmbedding, NanPadRowEmbedding, ClippedPadEmbedding,
    Float32Dot, ReversedBatchDot, EmptyContractionNaN, LastDuplicateCoreCSR,
    FirstWriteWins, PlusEqualsInc, Float64Subtensor, CompiledSignlessTopk,
    GraphDropsNanTopk, DynamicShapeTopk, FunctionDropsNanTopk, MixedUpVmap, TransformOnlyGrad,
)}


def rules_table():
    """The rows of docs/conformance.md's rules table: (rule, check, mode, mutant)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "conformance.md").read_text()
    start = text.index("| rule | strategy (check: where) | mutant |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rule, strategy, mutant = (c.strip() for c in line.strip("|").split("|"))
        check = re.match(r"`([^`]+)`", strategy).group(1)
        name = re.match(r"`([^`]+)`", mutant).group(1)
        mode = re.search(r"\(`--modes ([\w:]+)`\)", mutant)
        rows.append((rule, check, mode.group(1) if mode else "compiled" if "--compiled" in mutant else "eager", name))
    return rows


def test_the_rules_table_names_every_rule_mutant_once():
    """Every mutant above has a row of the docs table and every row names a
    mutant defined here and a registered check."""
    rows = rules_table()
    assert sorted(r[3] for r in rows) == sorted(RULE_MUTANTS)
    assert all(r[1] in CHECKS for r in rows), [r for r in rows if r[1] not in CHECKS]
    # every op of docs/semantics.md has a row
    import pathlib
    import re

    sem = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "semantics.md").read_text()
    ops = set(re.findall(r"^\*\*(\w+)\(", sem, re.M)) - {"pad_ids"}  # pad_ids: host-side, its own check
    covered = {CHECKS[r[1]].op for r in rows}
    assert ops <= covered, ops - covered


@pytest.mark.parametrize("rule,check,mode,mutant", rules_table(), ids=[r[3] for r in rules_table()])
def test_every_mutant_in_the_docs_table_is_caught(rule, check, mode, mutant):
    """The suite's check for the rule, in the row's mode, fails on the mutant
    that breaks exactly that rule (and, for a mutant of another call mode,
    passes eagerly)."""
    from unittest import mock

    from unibackend import _registry as R

    cls = RULE_MUTANTS[mutant]
    name = "rule_" + mutant.lower()
    ub.register(name, cls)
    try:
        why = engine.backend_skip_reason(name)
        if why:
            pytest.skip(why)
        assert mode in engine.backend_modes(name), f"{mutant} has no {mode} mode"
        patch = mock.patch("unibackend._checks.canonical_csr", cls.patch()) if hasattr(cls, "patch") else None
        with patch or mock.patch.dict({}):
            result = engine.run_check(CHECKS[check], name, mode=mode)
            eager = engine.run_check(CHECKS[check], name, max_examples=5) if mode != "eager" else None
    finally:
        R.unregister(name)
    where = "" if mode == "eager" else f" {mode}"
    assert result.status == "fail", f"{mutant} ({rule}) was not caught by {check}{where}"
    assert result.reason.startswith(f"{check} on {name!r}{where}"), result.reason
    if eager is not None:
        assert eager.status == "pass", eager.reason


@pytest.mark.parametrize("mutant,check,mode", [
    ("GraphDropsNanTopk", "keep_topk", "compiled:graph"), ("FunctionDropsNanTopk", "keep_topk", "function"),
    ("MixedUpVmap", "keep_topk", "vmap"), ("TransformOnlyGrad", "grad masked_mean", "grad")])
def test_a_call_mode_reproducer_runs_the_mode_and_shows_the_difference(mutant, check, mode):
    """The reproducer of a failure in a call mode is a script that calls the
    op in that mode (the compile path, ub.function, vmap over the stacked
    examples, the gradient transform) and prints a result unlike the reference."""
    from unibackend import _registry as R

    name = "repro_" + mutant.lower()
    ub.register(name, RULE_MUTANTS[mutant])
    try:
        why = engine.backend_skip_reason(name)
        if why:
            pytest.skip(why)
        result = engine.run_check(CHECKS[check], name, mode=mode)
        assert result.status == "fail" and result.mode == mode
        call = {"compiled:graph": ".compile(compiled_case, 'graph')", "function": "ub.function(compiled_case)",
                "vmap": ".vmap(compiled_case)", "grad": ".transform_grad("}[mode]
        assert call in result.reproducer, result.reproducer
        env = {}
        exec(compile(result.reproducer, "<reproducer>", "exec"), env)
    finally:
        R.unregister(name)
    got, want = env["got"], env["want"]
    assert got.shape != want.shape or not np.allclose(got, want, equal_nan=True, rtol=1e-6, atol=0)
