"""unibackend.keras and the keras adapter on every Keras backend (issue 18).

Keras reads KERAS_BACKEND once, at import, so each Keras backend runs in its
own interpreter (tests/keras_worker.py); the three run at once, save their
models in one folder and load each other's.  The workers measure, the tests
here assert.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BACKENDS = ("jax", "torch", "tensorflow")
ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-5  # float32

pytestmark = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras is not installed")


def _installed(b):
    return importlib.util.find_spec(b) is not None


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env.pop("UNIBACKEND_BACKEND", None)
    procs = {}
    for b in BACKENDS:
        if _installed(b):
            procs[b] = subprocess.Popen([sys.executable, str(ROOT / "tests" / "keras_worker.py"), str(out)],
                                        env=dict(env, KERAS_BACKEND=b), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        else:  # its workers' peers must not wait for it
            (out / f"{b}.saved").touch()
    logs = {b: p.communicate(timeout=900)[0] for b, p in procs.items()}
    got = {}
    for b in procs:
        path = out / f"{b}.json"
        got[b] = json.loads(path.read_text()) if path.exists() else {"error": logs[b][-3000:]}
    return got


@pytest.fixture(params=BACKENDS)
def rep(request, reports):
    b = request.param
    if b not in reports:
        pytest.skip(f"{b} is not installed")
    r = reports[b]
    assert "error" not in r, f"the {b} worker failed:\n{r['error']}"
    assert r["backend"] == b
    return r


def test_fit_trains_every_weight_and_never_the_pad_row(rep):
    """In Sequential, functional and subclassed models, model.fit (each
    backend's default compilation; and XLA asked for on tensorflow) changes
    every weight, through the unibackend ops; the table's pad row gets no
    gradient and stays as it was."""
    kinds = {"sequential", "functional", "subclassed"} | ({"sequential_xla"} if rep["backend"] == "tensorflow" else set())
    assert set(rep["models"]) == kinds
    if rep["backend"] == "tensorflow":
        assert rep["models"]["sequential_xla"]["jit_compile"] is True  # tf.function(jit_compile=True): XLA
    if rep["backend"] == "jax":
        assert all(m["jit_compile"] for m in rep["models"].values())  # Keras' jax.jit train step
    for kind, m in rep["models"].items():
        assert m["untrained"] == [], f"{kind}: weights fit left unchanged: {m['untrained']}"
        assert m["pad_row_moved"] == 0.0, f"{kind}: the pad row moved by {m['pad_row_moved']}"


def test_predictions_equal_unibackend_on_numpy(rep):
    """After training, the Keras model's predictions equal the same forward
    pass in unibackend on numpy with the trained weights (float32)."""
    for kind, m in rep["models"].items():
        assert m["pred_dtype"] == "float32"
        assert m["vs_numpy"] <= TOL, f"{kind}: differs from unibackend on numpy by {m['vs_numpy']}"


def test_keras_file_round_trips(rep):
    """A model saved as .keras loads back (registered layer names, configs)
    and predicts the same."""
    for kind, m in rep["models"].items():
        assert m["reload"] <= TOL, f"{kind}: the reloaded model predicts {m['reload']} away"


def test_a_model_saved_on_one_keras_backend_loads_on_another(rep):
    """A model saved by another Keras backend's worker loads here and
    predicts what it predicted there."""
    others = [b for b in BACKENDS if b != rep["backend"] and _installed(b)]
    assert others, "no other Keras backend installed"
    for b in others:
        assert f"{b}-sequential" in rep["cross"], f"nothing loaded from {b}"
    for name, diff in rep["cross"].items():
        assert diff <= TOL, f"{name} predicts {diff} away from where it was saved"


def test_mixed_bfloat16_keeps_the_dtypes_keras_expects(rep):
    """Under mixed_bfloat16 the variables stay float32, the layers compute
    and return bfloat16, and fit still trains every weight."""
    mixed = rep["mixed"]
    assert mixed["variable_dtypes"] == ["float32"]
    assert mixed["output_dtype"] == "bfloat16"
    assert mixed["untrained"] == []


def test_a_keras_tensor_in_an_op_says_to_use_a_layer(rep):
    """A symbolic KerasTensor has no value: the op raises the documented
    TypeError, naming the op and the way out."""
    msg = rep["symbolic"]
    assert msg.startswith("topk_gate: got a symbolic KerasTensor")
    assert "keras.layers.Layer" in msg and "unibackend.keras" in msg


def test_sparse_projection_where_keras_has_no_sparse_tensors(rep):
    """On torch (no sparse tensors in Keras) SparseProjection refuses to be
    made, saying so; on tensorflow and jax it trained in the functional model."""
    if rep["backend"] == "torch":
        assert "no sparse tensors on its 'torch' backend" in rep["sparse_refused"]
    else:
        assert "sparse_refused" not in rep
