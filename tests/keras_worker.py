"""One Keras backend's share of tests/test_keras.py, run in a fresh
interpreter (Keras reads KERAS_BACKEND at import):

    KERAS_BACKEND=jax python tests/keras_worker.py OUTDIR

It trains small models built on unibackend.keras in Sequential, functional
and subclassed form, checks them against unibackend on numpy, saves them as
.keras in OUTDIR, then waits for the other backends' workers to save theirs
and loads those too.  It measures and writes OUTDIR/<backend>.json; the
assertions are the test's.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np
import scipy.sparse as sp

BACKENDS = ("jax", "torch", "tensorflow")
V, L, D, E, K, F = 30, 5, 8, 4, 2, 40   # vocab, ids per row, embedding dim, experts, k, bag features
PAD = 0
N = 48


def data(seed=0):
    """The same inputs in every worker: padded ids (some rows all padding),
    a sparse bag of words, targets."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, V, size=(N, L)).astype(np.int32)
    lengths = rng.integers(0, L + 1, size=N)
    ids[np.arange(L)[None, :] >= lengths[:, None]] = PAD
    bow = sp.random(N, F, density=0.1, format="csr", dtype=np.float32, random_state=np.random.RandomState(seed))
    dense = rng.standard_normal((N, 6)).astype(np.float32)
    y = rng.dirichlet(np.ones(E), size=N).astype(np.float32)
    return ids, bow, dense, y


def main(out):
    import keras

    import unibackend as ub
    from unibackend import _registry as R

    if "keras" not in R._adapter_names():  # the entry point comes with a reinstall
        from unibackend.plugins.keras_adapter import KerasAdapter

        ub.register_adapter("keras", KerasAdapter)
    from unibackend.keras import EmbeddingMean, SparseProjection, TopKGate

    @keras.saving.register_keras_serializable(package="ubtest")
    class Gated(keras.Model):
        """Subclassed: ids and dense features -> tag mean + projection -> gate."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.tags = EmbeddingMean(V, D, pad_id=PAD)
            self.proj = keras.layers.Dense(D)
            self.gate = TopKGate(E, K)

        def build(self, input_shape):  # so that a loaded model has its weights before they are read
            self.tags.build(input_shape[0])
            self.proj.build(input_shape[1])
            self.gate.build((None, D))

        def call(self, inputs):
            ids, x = inputs
            return self.gate(keras.ops.add(self.tags(ids), self.proj(x)))

    backend = keras.backend.backend()
    ids, bow, dense, y = data()
    sparse = backend in ("tensorflow", "jax")
    report = {"backend": backend, "models": {}}

    def sequential():
        return keras.Sequential([keras.Input((L,), dtype="int32"), EmbeddingMean(V, D, pad_id=PAD),
                                 TopKGate(E, K)])

    def functional():
        """ids, dense features and (where Keras has sparse tensors) a sparse bag of words."""
        i = keras.Input((L,), dtype="int32", name="ids")
        x = keras.Input((6,), name="x")
        parts = [EmbeddingMean(V, D, pad_id=PAD)(i), keras.layers.Dense(D)(x)]
        inputs = [i, x]
        if sparse:
            b = keras.Input((F,), sparse=True, name="bow")
            parts.append(SparseProjection(D)(b))
            inputs.append(b)
        return keras.Model(inputs, TopKGate(E, K)(keras.layers.Add()(parts)))

    def weights(m):
        return {w.path: np.array(keras.ops.convert_to_numpy(w)) for w in m.weights}

    def reference(kind, m, inputs):
        """The model's forward pass in unibackend on numpy, from its trained weights."""
        lay = {type(la).__name__: la for la in m.layers}

        def np_(v):
            return np.array(keras.ops.convert_to_numpy(v))

        with ub.use_backend("numpy"):
            seq = kind.startswith("sequential")
            h = ub.embedding_mean(np_(lay["EmbeddingMean"].embeddings), inputs if seq else inputs[0], PAD)
            if kind in ("functional", "subclassed"):
                h = h + ub.dot(inputs[1], np_(lay["Dense"].kernel)) + np_(lay["Dense"].bias)
            if kind == "functional" and sparse:
                sp_ = lay["SparseProjection"]
                h = h + ub.sparse_dot(inputs[2], np_(sp_.kernel)) + np_(sp_.bias)
            g = lay["TopKGate"]
            return ub.topk_gate(ub.dot(h, np_(g.kernel)) + np_(g.bias), K)

    kinds = {"sequential": (sequential, ids), "functional": (functional, [ids, dense] + ([bow] if sparse else [])),
             "subclassed": (lambda: Gated(), [ids, dense])}
    if backend == "tensorflow":  # XLA, which "auto" leaves to Keras' judgement, asked for explicitly
        kinds["sequential_xla"] = (sequential, ids)
    if not sparse:
        try:
            SparseProjection(D)
            report["sparse_refused"] = ""
        except ub.CapabilityError as e:
            report["sparse_refused"] = str(e)

    for kind, (make, x) in kinds.items():
        t0 = time.perf_counter()
        keras.utils.set_random_seed(1)
        m = make()
        # each backend's default compilation ("auto"), and XLA where asked for
        m.compile(keras.optimizers.Adam(0.05), "mse", jit_compile=True if kind == "sequential_xla" else "auto")
        if kind == "subclassed":
            m(x)  # builds its weights
        before = weights(m)
        m.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
        after = weights(m)
        pred = m.predict(x, verbose=0)
        ref = ub.to_numpy(reference(kind, m, x))
        emb = next(p for p in after if "embeddings" in p)
        path = os.path.join(out, f"{backend}-{kind}.keras")
        m.save(path)
        np.save(os.path.join(out, f"{backend}-{kind}.npy"), pred)
        back = keras.saving.load_model(path)
        report["models"][kind] = {
            "untrained": sorted(p for p in after if np.array_equal(before[p], after[p])),
            "pad_row_moved": float(np.abs(after[emb][PAD] - before[emb][PAD]).max()),
            "vs_numpy": float(np.abs(pred - ref).max()),
            "pred_dtype": str(pred.dtype),
            "reload": float(np.abs(back.predict(x, verbose=0) - pred).max()),
            "seconds": round(time.perf_counter() - t0, 1),
            "jit_compile": bool(m.jit_compile),
        }

    open(os.path.join(out, f"{backend}.saved"), "a").close()

    # mixed precision: float32 variables, bfloat16 compute and outputs
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(1)
        m = sequential()
        m.compile(keras.optimizers.Adam(0.05), "mse")
        before = weights(m)
        m.fit(ids, y, epochs=1, batch_size=16, verbose=0)
        after = weights(m)
        report["mixed"] = {
            "variable_dtypes": sorted({keras.backend.standardize_dtype(w.dtype) for w in m.weights}),
            "output_dtype": keras.backend.standardize_dtype(m(ids[:4]).dtype),
            "untrained": sorted(p for p in after if np.array_equal(before[p], after[p])),
        }
    finally:
        keras.config.set_dtype_policy("float32")

    # a symbolic KerasTensor straight into an op: the documented TypeError
    try:
        ub.topk_gate(keras.Input((E,)), K)
        report["symbolic"] = ""
    except TypeError as e:
        report["symbolic"] = str(e)

    # the other backends' saved models, once their workers have written them
    report["cross"] = {}
    deadline = time.monotonic() + float(os.environ.get("UB_KERAS_WAIT", "150"))
    for other in BACKENDS:
        if other == backend:
            continue
        for kind in ("sequential", "functional"):
            # the functional model has a sparse input on tensorflow and jax only
            x = kinds[kind][1] if kind == "sequential" or (other in ("tensorflow", "jax")) == sparse else None
            if x is None:
                continue
            path = os.path.join(out, f"{other}-{kind}.keras")
            done = os.path.join(out, f"{other}.saved")
            while not os.path.exists(done) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not os.path.exists(path):
                continue
            m = keras.saving.load_model(path)
            theirs = np.load(os.path.join(out, f"{other}-{kind}.npy"))
            report["cross"][f"{other}-{kind}"] = float(np.abs(m.predict(x, verbose=0) - theirs).max())
    return report


if __name__ == "__main__":
    out = sys.argv[1]
    backend = os.environ.get("KERAS_BACKEND", "")
    try:
        rep = main(out)
    except BaseException:
        rep = {"backend": backend, "error": traceback.format_exc()}
        open(os.path.join(out, f"{backend}.saved"), "a").close()
    with open(os.path.join(out, f"{backend}.json"), "w") as f:
        json.dump(rep, f)
