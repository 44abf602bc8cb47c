"""The mixture-of-experts tag model of examples/moe_tags.py as a Keras 3
model, on any Keras backend, with the layers of unibackend.keras.

    python examples/moe_tags_keras.py --keras-backend jax
    python examples/moe_tags_keras.py --keras-backend torch --epochs 3 --save moe.keras

Same synthetic data (moe_tags.make_data): a sparse bag of words and padded
tags.  The tags are averaged by EmbeddingMean, the bag of words goes through
SparseProjection where Keras has sparse tensors (tensorflow, jax; on torch
each batch is densified and goes through a Dense layer), a TopKGate picks 2
of 8 experts per document, and a class softmax follows.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keras-backend", default=os.environ.get("KERAS_BACKEND", "jax"),
                   choices=("jax", "torch", "tensorflow"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=6000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", metavar="PATH", help="write the trained model here (.keras)")
    a = p.parse_args(argv)
    os.environ["KERAS_BACKEND"] = a.keras_backend  # read once, when keras is imported
    import keras
    import moe_tags as M  # examples/ is on the path when this script runs

    from unibackend.keras import EmbeddingMean, SparseProjection, TopKGate

    if keras.backend.backend() != a.keras_backend:
        print(f"keras was already imported on {keras.backend.backend()!r}", file=sys.stderr)
        return 2
    keras.utils.set_random_seed(a.seed)
    sparse = a.keras_backend in ("tensorflow", "jax")

    @keras.saving.register_keras_serializable(package="moe_tags")
    class MixtureOfExperts(keras.layers.Layer):
        """sum_e gate[:, e] * relu(x @ W_e + b_e), the experts side by side."""

        def __init__(self, units, experts, **kwargs):
            super().__init__(**kwargs)
            self.units, self.experts = units, experts
            self.dense = keras.layers.Dense(units * experts, activation="relu")

        def build(self, shapes):
            self.dense.build(shapes[0])

        def call(self, inputs):
            x, gate = inputs
            h = keras.ops.reshape(self.dense(x), (-1, self.experts, self.units))
            return keras.ops.sum(h * gate[:, :, None], axis=1)

        def compute_output_shape(self, shapes):
            return (shapes[0][0], self.units)

        def get_config(self):
            return {**super().get_config(), "units": self.units, "experts": self.experts}

    bow_in = keras.Input((M.FEATURES,), sparse=sparse, name="bow")
    tags_in = keras.Input((6,), dtype="int32", name="tags")
    words = (SparseProjection(32, name="words") if sparse else keras.layers.Dense(32, name="words"))(bow_in)
    tags = keras.layers.Dense(32, use_bias=False, name="tag_proj")(EmbeddingMean(M.TAG_VOCAB + 1, 16, name="tag_mean")(tags_in))
    hidden = keras.layers.Activation("tanh", name="hidden")(keras.layers.Add()([words, tags]))
    gate = TopKGate(8, 2, name="gate")(hidden)
    moe = MixtureOfExperts(16, 8, name="moe")([hidden, gate])
    out = keras.layers.Dense(M.TOPICS * M.STYLES, activation="softmax", name="classes")(moe)
    model = keras.Model([bow_in, tags_in], out)
    model.compile(keras.optimizers.Adam(a.lr), "sparse_categorical_crossentropy")
    model.summary()

    bow, ids, labels = M.make_data(a.train_size, a.seed)
    tbow, tids, tlabels = M.make_data(a.test_size, a.seed + 1)

    def batches(bow, ids, labels=None):
        """Keras takes scipy.sparse inputs where it has sparse tensors; elsewhere
        the bag of words is made dense one batch at a time."""
        if sparse:
            x = {"bow": bow, "tags": ids.astype(np.int32)}
            return x if labels is None else (x, labels)

        class Batches(keras.utils.PyDataset):
            def __len__(self):
                return -(-ids.shape[0] // a.batch_size)

            def __getitem__(self, i):
                s = slice(i * a.batch_size, (i + 1) * a.batch_size)
                x = {"bow": bow[s] if sparse else bow[s].toarray(), "tags": ids[s].astype(np.int32)}
                return x if labels is None else (x, labels[s])

        return Batches()

    t0 = time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        data = batches(bow, ids, labels)
        fit_args = dict(batch_size=a.batch_size, shuffle=True) if sparse else {}
        hist = model.fit(*data, epochs=1, verbose=0, **fit_args) if sparse else model.fit(data, epochs=1, verbose=0)
        acc = float((model.predict(batches(tbow, tids), batch_size=a.batch_size if sparse else None,
                                   verbose=0).argmax(1) == tlabels).mean())
        print(f"epoch {epoch}: loss {hist.history['loss'][-1]:.4f}, test accuracy {acc:.3f}", flush=True)
    took = time.perf_counter() - t0
    chance = 1.0 / (M.TOPICS * M.STYLES)
    print(f"keras[{a.keras_backend}]: trained {a.epochs} epochs in {took:.1f}s; "
          f"test accuracy {acc:.3f} (chance {chance:.3f})")
    if a.save:
        model.save(a.save)
        print(f"saved to {a.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
