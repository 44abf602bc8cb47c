"""unibackend.nn: layers compute what they say on numpy, a saved model
round-trips and refuses damaged or foreign files without running anything,
numpy serving imports no framework, training works on each autodiff backend,
and a model trained on one backend predicts the same on every backend."""
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import installed_backends

import unibackend as ub
from unibackend import nn
from unibackend.conformance.tolerances import assert_within

ALL = installed_backends()
AUTODIFF = [b for b in ALL if ub._registry.plugin_class(b).capabilities.autodiff]

FEATURES, VOCAB, CLASSES = 40, 12, 3
#: terms summed along one forward pass of tiny_model, layer by layer (bow and tag
#: mean into hidden, hidden into the gate and the experts, experts into out, its
#: softmax): the n_terms of the suite's sum tolerance for a model's outputs
MODEL_TERMS = (FEATURES + 4) + 6 + 6 + 5 + CLASSES


def tiny_model(seed=0, dtype="float32"):
    bow = nn.Input("bow", FEATURES, sparse=True)
    tags = nn.Input("tags", ids=True)
    emb = nn.EmbeddingMean(VOCAB, 4, name="tag_mean")(tags)
    hidden = nn.Dense(6, "tanh", name="hidden")(bow, emb)
    gate = nn.TopKGate(4, 2, name="gate")(hidden)
    moe = nn.MixtureOfExperts(5, 4, "relu", name="moe")(hidden, gate)
    out = nn.Dense(CLASSES, "softmax", name="out")(moe)
    return nn.Model([bow, tags], out, seed=seed, dtype=dtype)


def tiny_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    bow = sp.random(n, FEATURES, density=0.1, format="csr", random_state=seed, dtype=np.float32)
    rows = [rng.integers(0, VOCAB - 1, size=rng.integers(0, 4)) for _ in range(n)]
    ids = ub.pad_ids(rows, length=4)
    labels = rng.integers(CLASSES, size=n)
    return {"bow": bow, "tags": ids}, labels


@pytest.fixture
def on_numpy():
    with ub.use_backend("numpy"):
        yield


# -- forward pass on numpy ---------------------------------------------------

def test_output_is_a_distribution_and_the_gate_keeps_exactly_k_experts(on_numpy):
    model = tiny_model()
    data, _ = tiny_data()
    probs = model.predict(data)
    gate = model.predict(data, output="gate")
    assert probs.shape == (16, CLASSES) and probs.dtype == np.float32
    assert_within(probs.sum(axis=1), 1.0, n_terms=CLASSES)
    assert ((gate > 0).sum(axis=1) == 2).all()
    assert_within(gate.sum(axis=1), 1.0, n_terms=gate.shape[1])


def test_any_layer_output_can_be_asked_for_by_name(on_numpy):
    model = tiny_model()
    data, _ = tiny_data()
    outs = model.predict(data, output=["tag_mean", "hidden", "moe", "out"])
    assert {k: v.shape for k, v in outs.items()} == {
        "tag_mean": (16, 4), "hidden": (16, 6), "moe": (16, 5), "out": (16, CLASSES)}
    np.testing.assert_array_equal(outs["out"], model.predict(data))
    with pytest.raises(KeyError, match="no layer named 'nope'"):
        model.predict(data, output="nope")


def test_layers_compute_their_formulas_in_numpy(on_numpy):
    """Each layer's output equals the formula in its docstring, written out
    in plain numpy from the same parameters."""
    model = tiny_model()
    data, _ = tiny_data()
    p = model.params
    X = data["bow"].toarray()
    ids = data["tags"]
    table = p["tag_mean/table"]
    emb = np.stack([table[r[r != 0]].mean(axis=0) if (r != 0).any() else np.zeros(4, np.float32) for r in ids])
    hidden = np.tanh(X @ p["hidden/W0"] + emb @ p["hidden/W1"] + p["hidden/b"])
    logits = hidden @ p["gate/W"] + p["gate/b"]
    top2 = np.argsort(-logits, axis=1, kind="stable")[:, :2]
    gate = np.zeros_like(logits)
    sel = np.take_along_axis(logits, top2, axis=1)
    e = np.exp(sel - sel.max(axis=1, keepdims=True))
    np.put_along_axis(gate, top2, e / e.sum(axis=1, keepdims=True), axis=1)
    y = np.maximum(hidden @ p["moe/W"] + p["moe/b"], 0).reshape(16, 4, 5)
    moe = (gate[:, :, None] * y).sum(axis=1)
    z = moe @ p["out/W"] + p["out/b"]
    out = np.exp(z - z.max(axis=1, keepdims=True))
    out /= out.sum(axis=1, keepdims=True)
    got = model.predict(data, output=["tag_mean", "hidden", "gate", "moe", "out"])
    for name, want in [("tag_mean", emb), ("hidden", hidden), ("gate", gate), ("moe", moe), ("out", out)]:
        assert_within(got[name], want, n_terms=MODEL_TERMS, err_msg=name)


def test_sparse_input_gives_the_same_projection_as_its_dense_form(on_numpy):
    x = nn.Input("x", FEATURES, sparse=True)
    xd = nn.Input("x", FEATURES)
    sparse = nn.Model(x, nn.Projection(3, name="p")(x))
    dense = nn.Model(xd, nn.Projection(3, name="p")(xd), params=sparse.params)
    X = sp.random(7, FEATURES, density=0.2, format="csr", random_state=1, dtype=np.float32)
    assert_within(sparse.predict(X), dense.predict(X.toarray()), n_terms=FEATURES)


def test_bad_wiring_is_refused_when_the_layers_are_connected():
    tags = nn.Input("tags", ids=True)
    with pytest.raises(ValueError, match="ids input"):
        nn.Dense(3)(tags)
    x = nn.Input("x", 5)
    gate = nn.TopKGate(3, 1)(x)
    with pytest.raises(ValueError, match="4 experts but its gate has 3"):
        nn.MixtureOfExperts(2, 4)(x, gate)
    with pytest.raises(ValueError, match="activation must be one of"):
        nn.Dense(3, "sigmoid")
    with pytest.raises(ValueError, match="k=4 must be at most experts=3"):
        nn.TopKGate(3, 4)
    with pytest.raises(ValueError, match="must be an ids Input"):
        nn.EmbeddingMean(5, 2)(x)


# -- saving and loading --------------------------------------------------------

def test_save_then_load_gives_the_same_model_and_predictions(tmp_path, on_numpy):
    model = tiny_model(seed=3)
    data, _ = tiny_data()
    path = model.save(tmp_path / "m.npz")
    back = nn.load(path)
    assert back.architecture() == model.architecture()
    assert back.params.keys() == model.params.keys()
    for k in model.params:
        np.testing.assert_array_equal(back.params[k], model.params[k])
    np.testing.assert_array_equal(back.predict(data), model.predict(data))


def test_saved_file_holds_only_numeric_arrays_readable_without_pickle(tmp_path):
    path = tiny_model().save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            assert z[k].dtype.kind in "uf", k


def _resave(src, dst, edit):
    """Copy the .npz at src to dst, passing each member's bytes through edit(name, bytes)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, edit(info.filename, zin.read(info.filename)))
    return dst


def _edit_arch(path, dst, change):
    import json

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arch = json.loads(arrays["__unibackend_nn__"].tobytes())
    change(arch)
    arrays["__unibackend_nn__"] = np.frombuffer(json.dumps(arch).encode(), np.uint8)
    np.savez(dst, **arrays)
    return dst


def _set_class(arch, name):
    arch["layers"][-1]["class"] = name


def _scale_param(path, dst):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param/out/b"] = arrays["param/out/b"] + 1
    np.savez(dst, **arrays)
    return dst


def _flip_byte(name, data):
    if name == "param/hidden/W0.npy":
        data = bytearray(data)
        data[-3] ^= 0xFF
        data = bytes(data)
    return data


def _npy(src, dst):
    with open(dst, "wb") as f:
        np.save(f, np.ones(3))


DAMAGED = {  # name -> writes a damaged or foreign file at dst, given a good one at src
    "truncated": lambda src, dst: dst.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2]),
    "empty": lambda src, dst: dst.write_bytes(b""),
    "text": lambda src, dst: dst.write_text("hello, not a model\n"),
    "npy": _npy,
    "foreign-npz": lambda src, dst: np.savez(dst, weights=np.ones(3)),
    "unknown-layer-class": lambda src, dst: _edit_arch(src, dst, lambda a: _set_class(a, "os.system")),
    "bad-config-type": lambda src, dst: _edit_arch(
        src, dst, lambda a: a["layers"][-1]["config"].update(units="3")),
    "wrong-format-version": lambda src, dst: _edit_arch(src, dst, lambda a: a.update(version=99)),
    "param-edited": _scale_param,
    "member-byte-flipped": lambda src, dst: _resave(src, dst, _flip_byte),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_damaged_or_foreign_file_raises_a_value_error_naming_the_file(tmp_path, damage):
    src = tiny_model().save(tmp_path / "good.npz")
    from pathlib import Path

    dst = tmp_path / f"{damage}.npz"
    DAMAGED[damage](Path(src), dst)
    with pytest.raises(nn.ModelFileError) as err:
        nn.load(dst)
    assert isinstance(err.value, ValueError)
    assert str(dst) in str(err.value)


class _Trap:
    """Unpickling this writes a marker file: proof that load ran pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_disguised_as_a_model_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.npz"
    with open(bad, "wb") as f:
        pickle.dump(_Trap(str(marker)), f)
    with pytest.raises(nn.ModelFileError, match="evil.npz"):
        nn.load(bad)
    # an object array (a pickle) next to a valid architecture record
    good = tiny_model().save(tmp_path / "good.npz")
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param/out/b"] = np.array([_Trap(str(marker))], dtype=object)
    np.savez(tmp_path / "evil2.npz", **arrays)
    with pytest.raises(nn.ModelFileError, match="evil2.npz"):
        nn.load(tmp_path / "evil2.npz")
    assert not marker.exists()


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        nn.load(tmp_path / "absent.npz")


def test_numpy_serving_in_a_fresh_process_imports_no_framework(tmp_path):
    path = tiny_model().save(tmp_path / "m.npz")
    script = textwrap.dedent("""
        import sys
        import numpy as np, scipy.sparse as sp
        from unibackend import nn
        model = nn.load(sys.argv[1])
        x = sp.random(3, 40, density=0.1, format="csr", random_state=0, dtype=np.float32)
        p = model.predict({"bow": x, "tags": np.array([[1, 2, 0], [0, 0, 0], [3, 0, 0]])})
        assert p.shape == (3, 3)
        frameworks = {"torch", "tensorflow", "pytensor", "theano", "jax", "keras", "dask"}
        print(",".join(sorted({m.split(".")[0] for m in sys.modules} & frameworks)))
    """)
    env = dict(os.environ, UNIBACKEND_BACKEND="numpy")
    res = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"frameworks imported while serving on numpy: {res.stdout.strip()}"


FRAMEWORKS = ("theano", "torch", "tensorflow", "keras", "pytensor", "jax", "dask")


def test_nn_names_no_framework_in_its_source():
    """nn reaches every backend through the plugin primitives and declared
    capabilities: no framework name appears in any of its modules, so a new
    plugin serves models without an edit to nn."""
    root = os.path.dirname(nn.__file__)
    files = sorted(f for f in os.listdir(root) if f.endswith(".py"))
    assert {"functional.py", "layers.py", "model.py", "saving.py", "training.py"} <= set(files)
    for f in files:
        with open(os.path.join(root, f), encoding="utf-8") as fh:
            text = fh.read().lower()
        found = [name for name in FRAMEWORKS if name in text]
        assert not found, f"unibackend/nn/{f} names {found}"


# -- training --------------------------------------------------------------------

def test_training_on_numpy_raises_capability_error_naming_autodiff_backends(on_numpy):
    with pytest.raises(ub.CapabilityError, match="no autodiff"):
        nn.Trainer(tiny_model())


@pytest.mark.parametrize("opt", [nn.SGD(0.1, 0.9), nn.Adam(0.1)], ids=["sgd", "adam"])
def test_optimizers_minimise_a_quadratic_without_touching_their_inputs(opt):
    target = np.array([1.0, -2.0, 3.0])
    params = {"w": np.zeros(3)}
    for _ in range(300):
        before = params["w"].copy()
        grads = {"w": 2 * (params["w"] - target)}
        new = opt.update(params, grads)
        np.testing.assert_array_equal(params["w"], before)
        params = new
    np.testing.assert_allclose(params["w"], target, atol=1e-2)


@pytest.mark.parametrize("name", AUTODIFF)
def test_training_lowers_the_loss_on_each_autodiff_backend(name):
    data, labels = tiny_data(n=32)
    model = tiny_model()
    with ub.use_backend(name):
        trainer = nn.Trainer(model, nn.Adam(0.05))
        losses = [trainer.step(data, labels) for _ in range(15)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.skipif(len(AUTODIFF) < 2, reason="needs two autodiff backends")
def test_loss_and_gradients_agree_across_autodiff_backends():
    """One step from the same parameters with plain SGD (no momentum) moves
    the parameters by lr * gradient, so equal new parameters mean equal
    gradients."""
    data, labels = tiny_data()
    results = {}
    for name in AUTODIFF:
        model = tiny_model(dtype="float64")
        before = dict(model.params)
        with ub.use_backend(name):
            loss = nn.Trainer(model, nn.SGD(1.0, 0.0)).step(data, labels)
        results[name] = loss, {k: before[k] - model.params[k] for k in before}
    ref_name = AUTODIFF[0]
    ref_loss, ref_grads = results[ref_name]
    for name, (loss, grads) in results.items():
        # a gradient sums over the batch of len(labels) samples, each one a pass
        assert_within(loss, ref_loss, n_terms=len(labels) * MODEL_TERMS, err_msg=name)
        for k in ref_grads:
            assert_within(grads[k], ref_grads[k], n_terms=len(labels) * MODEL_TERMS,
                          err_msg=f"{name} vs {ref_name}: {k}")


@pytest.mark.parametrize("trained_on", AUTODIFF)
def test_model_trained_on_one_backend_predicts_the_same_on_every_backend(tmp_path, trained_on):
    data, labels = tiny_data()
    model = tiny_model()
    with ub.use_backend(trained_on):
        trainer = nn.Trainer(model, nn.Adam(0.05))
        for _ in range(3):
            trainer.step(data, labels)
    path = model.save(tmp_path / "m.npz")
    with ub.use_backend("numpy"):
        ref = nn.load(path).predict(data, output=["gate", "out"])
    for name in ALL:
        with ub.use_backend(name):
            got = nn.load(path).predict(data, output=["gate", "out"])
        assert_within(got["out"], ref["out"], n_terms=MODEL_TERMS, err_msg=name)
        np.testing.assert_array_equal(got["gate"] > 0, ref["gate"] > 0, err_msg=f"{name}: routing")


NN_X = np.array([[0.5, -1.0, 2.0], [3.0, 0.25, -0.5]])


@pytest.mark.parametrize("name", AUTODIFF)
def test_nn_math_primitives_are_differentiated_on_every_autodiff_backend(name):
    """d/dx sum(tanh x) = 1 - tanh(x)^2, d/dx sum(log exp relu x) = [x > 0],
    d/dx max_rows(x) = one-hot of each row's max: the plugin's own functions
    (gradient tape, autograd, a graph, jax) carry the gradient."""
    with ub.use_backend(name) as B:
        g_tanh = ub.grad(lambda x: B.reduce_sum(B.tanh(x), None, False))(NN_X)
        g_relu = ub.grad(lambda x: B.reduce_sum(B.log(B.exp(B.relu(x))), None, False))(NN_X)
        g_max = ub.grad(lambda x: B.reduce_sum(B.reduce_max(x, 1, True), None, False))(NN_X)
    assert_within(ub.to_numpy(g_tanh), 1 - np.tanh(NN_X) ** 2)
    assert_within(ub.to_numpy(g_relu), (NN_X > 0).astype(float))  # exp(x) / exp(x): within rounding
    np.testing.assert_array_equal(ub.to_numpy(g_max), [[0, 0, 1], [1, 0, 0]])
