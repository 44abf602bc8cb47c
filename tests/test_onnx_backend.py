"""The onnx backend: what belongs to onnx alone -- its graph cache, traced
functions and their value checks, exported models served in ONNX Runtime
alone (agreeing with numpy serving), and the conformance suite catching the
two classic ONNX mistakes (an unpinned TopK NaN order, a ScatterND without a
reduction on repeated indices).  The contract itself (the suite's pinned
cases: signed zeros through selection, ids of width 0, integer argsort, empty
writes) is tested once over every backend, onnx included, in
tests/test_contract.py."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("spox")
pytest.importorskip("hypothesis")

import scipy.sparse as sp  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import unibackend as ub  # noqa: E402
from unibackend import _registry as R  # noqa: E402
from unibackend import nn  # noqa: E402
from unibackend.conformance import runner  # noqa: E402
from unibackend.plugins.onnx_backend import OPSET, OnnxBackend  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def onnx_registered():
    """The entry point is in pyproject; until the package is reinstalled the
    plugin is registered here."""
    added = "onnx" not in R.known()
    if added:
        ub.register("onnx", OnnxBackend)
    yield
    if added:
        R.unregister("onnx")


# ---------------------------------------------------------------------------
# eager and traced calls

def test_eager_graph_is_cached_per_dtype_and_ndim():
    """A second call with another shape of the same dtype and ndim reuses the
    session (every dim is dynamic); a new dtype builds one more."""
    with ub.use_backend("onnx") as B:
        B._cache.clear()  # earlier tests (test_errors) may have built these signatures
        before = B.compilations
        ub.argsort(np.array([[3.0, np.nan, 1.0]]), descending=True)
        ub.argsort(np.array([[3.0, 1.0], [0.0, 2.0], [5.0, 5.0]]), descending=True)
        assert B.compilations == before + 1
        ub.argsort(np.array([[3.0, 1.0]], np.float32), descending=True)
        assert B.compilations == before + 2


def test_bad_id_raises_the_contracts_error_eager_and_traced():
    """An id outside the table: IndexError with numpy's words, eagerly (core
    check) and inside ub.function (the graph's check output)."""
    table = np.arange(12.0).reshape(4, 3)
    ids = np.array([[1, 2, 0], [3, 9, 1]])
    with ub.use_backend("numpy"), pytest.raises(IndexError) as want:
        ub.embedding_mean(table, ids)
    with ub.use_backend("onnx"):
        with pytest.raises(IndexError) as eager:
            ub.embedding_mean(table, ids)
        f = ub.function(lambda t, i: ub.embedding_mean(t, i))
        with pytest.raises(IndexError) as traced:
            f(table, ids)
        np.testing.assert_allclose(f(table, ids[:1]), ub.embedding_mean(table, ids[:1]))
    assert str(eager.value) == str(want.value) == str(traced.value)


def test_traced_index_out_of_range_raises_index_error():
    """An index array that is a graph input is range-checked in the graph."""
    f = ub.function(lambda x, i, v: ub.set_subtensor(x, i, v))
    with ub.use_backend("onnx"):
        np.testing.assert_array_equal(f(np.zeros(5), np.array([1, 1, -4]), np.array([1.0, 2.0, 3.0])),
                                      [0.0, 3.0, 0.0, 0.0, 0.0])
        with pytest.raises(IndexError, match="set_subtensor: index 7 is out of bounds for axis 0 with size 5"):
            f(np.zeros(5), np.array([1, 7]), np.array([1.0, 2.0]))


def test_empty_selection_with_a_broadcast_value_traced():
    """Pinned from the suite: inc_subtensor of a (0,) x at [:] with a (1,)
    value (onnxruntime's Expand keeps the 1, and ScatterElements refused it);
    eagerly in tests/test_contract.py."""
    x, value = np.zeros(0, np.float32), np.array([1.0])
    with ub.use_backend("onnx"):
        for f in (ub.inc_subtensor, ub.set_subtensor):
            traced = R.backend("onnx").compile(lambda x, v, f=f: f(x, slice(None), v))(ub.asarray(x), ub.asarray(value))
            out = ub.to_numpy(traced)
            assert out.shape == (0,) and out.dtype == np.float32


def test_conformance_tricky_ops_eager_and_compiled():
    """The suite's checks of the ops ONNX leaves loose pass on onnx in both modes."""
    out = io.StringIO()
    with redirect_stdout(out):
        code = runner.main(["--backends", "numpy,onnx", "--compiled", "--quiet", "--max-examples", "6",
                            "--ops", "argsort,keep_topk,inc_subtensor,softmax"])
    assert code == 0, out.getvalue()


# ---------------------------------------------------------------------------
# mutants: the suite must catch them

class NanSmallestTopk(OnnxBackend):
    """argsort/keep_topk that leave NaN to the runtime's TopK order where the
    runtime ranks NaN smallest (OpenVINO's order; onnx/onnx#4716 leaves it
    open; ONNX Runtime's CPU TopK happens to rank NaN largest)."""

    name = "broken_onnx_nan_order"

    def _g_argsort(self, x, axis, descending, nan_largest=True):
        return super()._g_argsort(x, axis, descending, nan_largest=False)


class ScatterNDNoReduction(OnnxBackend):
    """inc_subtensor as a gather, an add and a ScatterND without reduction:
    of repeated positions only one addition lands."""

    name = "broken_onnx_scatter"

    def _g_scatter(self, x, pos, vals, accumulate):
        op = self.op
        flat = self._flat(x)
        if accumulate:
            vals = op.add(op.gather(flat, pos, axis=0), vals)
        out = op.scatter_nd(flat, op.unsqueeze(pos, self._c([1])), vals)
        return op.reshape(out, op.shape(x), allowzero=1)


MUTANTS = {
    "broken_onnx_nan_order": (NanSmallestTopk, "keep_topk,argsort", ("keep_topk", "argsort")),
    "broken_onnx_scatter": (ScatterNDNoReduction, "inc_subtensor", ("inc_subtensor",)),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_suite_catches_onnx_mutant(tmp_path, name):
    """The conformance run exits 1 and reports each mutated op as failing on
    the mutant, eagerly and compiled."""
    cls, ops, failing = MUTANTS[name]
    ub.register(name, cls)
    try:
        out = io.StringIO()
        with redirect_stdout(out):
            code = runner.main(["--backends", f"numpy,{name}", "--compiled", "--ops", ops, "--quiet",
                                "--max-examples", "6", "--report", str(tmp_path / "r.json")])
        data = json.loads((tmp_path / "r.json").read_text())
    finally:
        R.unregister(name)
    assert code == 1
    for op in failing:
        for mode in ("eager", "compiled"):
            r = next(r for r in data["results"] if r["check"] == op and r["backend"] == name and r["mode"] == mode)
            assert r["status"] == "fail", (op, mode, r)


# ---------------------------------------------------------------------------
# export

VOCAB, FEATURES, EXPERTS = 9, 12, 4


def _model(gate_bias, seed=0):
    """A small model of every layer kind; ``gate_bias`` with a zero gate
    weight makes every row's gate logits tie the same way."""
    bow = nn.Input("bow", FEATURES, sparse=True)
    tags = nn.Input("tags", ids=True)
    emb = nn.EmbeddingMean(VOCAB, 5, name="emb")(tags)
    hidden = nn.Dense(6, "tanh", name="hidden")(bow, emb)
    gate = nn.TopKGate(EXPERTS, 2, name="gate")(hidden)
    moe = nn.MixtureOfExperts(5, EXPERTS, "relu", name="moe")(hidden, gate)
    out = nn.Dense(3, "softmax", name="out")(moe)
    m = nn.Model([bow, tags], out, seed=seed)
    if gate_bias is not None:
        m.params["gate/W"] = np.zeros_like(m.params["gate/W"])
        m.params["gate/b"] = np.asarray(gate_bias, m.dtype)
    return m


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two models (gate logits tied in every row, and random), exported once."""
    import onnxruntime as ort

    d = tmp_path_factory.mktemp("export")
    out = []
    for i, bias in enumerate(([1.0, 1.0, 1.0, 0.0], None)):
        m = _model(bias, seed=i)
        path = nn.export_onnx(m, d / f"m{i}.onnx")
        out.append((m, ort.InferenceSession(path, providers=["CPUExecutionProvider"]), path))
    return out


def _feed(bow, ids):
    return {"bow_data": bow.data, "bow_indices": bow.indices.astype(np.int64),
            "bow_indptr": bow.indptr.astype(np.int64), "tags": ids}


@st.composite
def batches(draw):
    n = draw(st.integers(0, 7))
    L = draw(st.integers(0, 4))
    ids = np.array(draw(st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=L, max_size=L),
                                 min_size=n, max_size=n)), np.int64).reshape(n, L)
    if n:
        ids[draw(st.integers(0, n - 1))] = 0  # a row of only padding
    dense = np.array(draw(st.lists(st.sampled_from([0.0, 0.0, 0.0, 1.0, 0.5, -2.0]),
                                   min_size=n * FEATURES, max_size=n * FEATURES)), np.float32)
    bow = sp.csr_matrix(dense.reshape(n, FEATURES))
    return bow, ids


@settings(max_examples=25, deadline=None)
@given(batches())
def test_exported_model_agrees_with_numpy_serving(exported, batch):
    """On batches with empty tag rows, empty bags and tied gate logits, the
    .onnx file served by ONNX Runtime gives numpy serving's probabilities."""
    bow, ids = batch
    for m, session, _ in exported:
        with ub.use_backend("numpy"):
            want = m.predict({"bow": bow, "tags": ids})
        got = session.run(None, _feed(bow, ids))[0]
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_exported_file_is_checked_with_an_open_batch_axis(exported):
    """onnx.checker passes; the opset is declared; batch axes are named, not fixed."""
    import onnx

    _, session, path = exported[0]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes["tags"][0] == "batch" and isinstance(shapes["bow_indptr"][0], str)
    assert session.get_outputs()[0].shape[0] == "batch"


def test_served_model_fails_on_an_id_outside_the_table(exported):
    """A served model has no check outputs: an id >= V or < 0 fails the run
    in ONNX Runtime (never a wrong row, e.g. a wrapped negative id)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    _, session, _ = exported[1]
    bow = sp.csr_matrix(np.ones((2, FEATURES), np.float32))
    for bad in (VOCAB, -1):
        with pytest.raises(InvalidArgument, match="out of data bounds"):
            session.run(None, _feed(bow, np.array([[1, 2], [bad, 0]], np.int64)))


def test_served_without_unibackend_and_cli(tmp_path, exported):
    """The CLI turns a saved .npz into an .onnx; a process that cannot import
    unibackend serves it (onnxruntime and numpy only) with numpy's answers."""
    from unibackend.cli import main

    m = exported[1][0]
    m.save(tmp_path / "m.npz")
    assert main(["export-onnx", str(tmp_path / "m.npz"), str(tmp_path / "m.onnx")]) == 0
    bow = sp.csr_matrix(np.eye(3, FEATURES, dtype=np.float32))
    ids = np.array([[1, 2], [0, 0], [3, 3]], np.int64)
    np.savez(tmp_path / "in.npz", **_feed(bow, ids))
    script = (
        "import sys; sys.modules['unibackend'] = None\n"
        "import numpy as np, onnxruntime as ort\n"
        f"feed = dict(np.load({str(tmp_path / 'in.npz')!r}))\n"
        f"s = ort.InferenceSession({str(tmp_path / 'm.onnx')!r}, providers=['CPUExecutionProvider'])\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, s.run(None, feed)[0])\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with ub.use_backend("numpy"):
        want = m.predict({"bow": bow, "tags": ids})
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, rtol=1e-5, atol=1e-6)


def test_serving_benchmark_runs():
    """The serving benchmark runs end to end (tiny rounds) and prints its table."""
    from unibackend.benchmarks import onnx_serving

    out = io.StringIO()
    with redirect_stdout(out):
        assert onnx_serving.main(["--seconds", "0.01", "--rounds", "1", "--batches", "1,4"]) == 0
    rows = [ln.split() for ln in out.getvalue().splitlines()[2:]]
    assert [r[:2] for r in rows][:2] == [["1", "1"], ["1", str(os.cpu_count() or 1)]]
    assert len(rows) == 4 and all(float(r[2].replace(",", "")) > 0 for r in rows)
