"""One Keras training step: unibackend.keras layers against the same model
written with keras.ops, in a fresh interpreter per Keras backend (Keras
picks its backend at import, from KERAS_BACKEND).

    python -m unibackend.benchmarks.keras_train --backend jax

The model: padded ids -> EmbeddingMean -> TopKGate -> mean squared error.
Its keras.ops twin: ``take`` + mask + ``sum`` for the mean, ``top_k`` +
``scatter_update`` + ``softmax`` for the gate; same shapes, same initial
weights, each model compiled as Keras compiles it by default on that backend
(``model.train_on_batch``).  The two are timed interleaved (benchmarks.timing);
the case goes to stdout as one JSON line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

from . import threads
from .timing import Candidate

#: The sizes of the issue's model step; ``smoke`` for the test suite.
SIZES = {
    "full": {"n": 256, "L": 20, "V": 10_000, "d": 64, "experts": 16, "k": 2},
    "smoke": {"n": 16, "L": 4, "V": 50, "d": 8, "experts": 4, "k": 2},
}


def build(p, pad=0):
    """(unibackend model, keras.ops model), same initial weights, compiled."""
    import keras
    from keras import ops

    from unibackend.keras import EmbeddingMean, TopKGate

    class OpsEmbeddingMean(keras.layers.Layer):
        def __init__(self, vocab, dim, **kw):
            super().__init__(**kw)
            self.table = self.add_weight(shape=(vocab, dim), initializer="uniform", name="embeddings")

        def call(self, ids):
            rows = ops.take(self.table, ids, axis=0)                       # (n, L, d)
            mask = ops.expand_dims(ops.cast(ops.not_equal(ids, pad), rows.dtype), -1)
            return ops.sum(rows * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)

    class OpsTopKGate(keras.layers.Layer):
        def __init__(self, d, experts, k, **kw):
            super().__init__(**kw)
            self.k = k
            self.kernel = self.add_weight(shape=(d, experts), name="kernel")
            self.bias = self.add_weight(shape=(experts,), initializer="zeros", name="bias")

        def call(self, x):
            logits = ops.matmul(x, self.kernel) + self.bias
            vals, idx = ops.top_k(logits, self.k)
            n = ops.shape(logits)[0]
            rows = ops.broadcast_to(ops.arange(n, dtype="int32")[:, None], (n, self.k))
            coords = ops.reshape(ops.stack([rows, ops.cast(idx, "int32")], axis=-1), (-1, 2))
            kept = ops.scatter_update(ops.full(ops.shape(logits), float("-inf"), dtype=logits.dtype), coords,
                                      ops.reshape(vals, (-1,)))
            return ops.softmax(kept, axis=-1)

    V, d, E, k, L = p["V"], p["d"], p["experts"], p["k"], p["L"]
    keras.utils.set_random_seed(0)
    ub_model = keras.Sequential([keras.Input((L,), dtype="int32"), EmbeddingMean(V, d, pad_id=pad), TopKGate(E, k)])
    ops_model = keras.Sequential([keras.Input((L,), dtype="int32"), OpsEmbeddingMean(V, d), OpsTopKGate(d, E, k)])
    ops_model.set_weights(ub_model.get_weights())
    for m in (ub_model, ops_model):
        m.compile(keras.optimizers.Adam(1e-3), "mse")
    return ub_model, ops_model


def inputs(p, seed=0, pad=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, p["V"], size=(p["n"], p["L"])).astype(np.int32)
    lengths = rng.integers(1, p["L"] + 1, size=p["n"])
    ids[np.arange(p["L"])[None, :] >= lengths[:, None]] = pad
    y = rng.dirichlet(np.ones(p["experts"]), size=p["n"]).astype(np.float32)
    return ids, y


def main(argv=None):
    ap = argparse.ArgumentParser(prog="keras_train")
    ap.add_argument("--backend", required=True)
    ap.add_argument("--mode", default="quick", choices=("quick", "full", "smoke"))
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", args.backend)
    threads.limit(args.threads)
    import keras

    from .runner import MODES
    from .timing import interleave, paired_diff, paired_ratio

    if keras.backend.backend() != args.backend:
        raise RuntimeError(f"keras runs on {keras.backend.backend()!r}, not {args.backend!r} (set KERAS_BACKEND)")
    threads.apply(args.backend, args.threads)
    settings = MODES[args.mode]
    if args.repeats:
        settings = dataclasses.replace(settings, repeats=args.repeats, budget_s=None)
    p = SIZES["smoke" if args.mode == "smoke" else "full"]
    ub_model, ops_model = build(p)
    ids, y = inputs(p)
    # the first steps compile (jax.jit, tf.function): out of the timing
    first = ub_model.train_on_batch(ids, y), ops_model.train_on_batch(ids, y)
    cands = [Candidate("unified", "unified", "EmbeddingMean + TopKGate (unibackend.keras)",
                       ub_model.train_on_batch, (ids, y)),
             Candidate("keras_ops", "peer", "take + mask + sum; top_k + scatter_update (keras.ops)",
                       ops_model.train_on_batch, (ids, y))]
    t = interleave(cands, settings.repeats, settings.min_batch_s, None, settings.budget_s)
    u = t["unified"]
    rows = [{"name": c.name, "kind": c.kind, "call": c.call, "median_s": t[c.name].median,
             "number": t[c.name].number, "rounds": len(t[c.name].rounds),
             "unified_ratio": paired_ratio(u, t[c.name]), "unified_overhead_s": paired_diff(u, t[c.name])}
            for c in cands]
    label = f"keras[{args.backend}] train step n={p['n']} L={p['L']} V={p['V']} d={p['d']} E={p['experts']} k={p['k']}"
    rec = {"op": "keras_train", "label": label, "short": f"keras[{args.backend}]", "params": p,
           "backend": args.backend, "device": "cpu", "candidates": rows, "first_call_s": None,
           "first_losses": [float(v) for v in first]}
    print(json.dumps([rec], default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
