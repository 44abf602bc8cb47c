"""keras.ops as a peer, run in a fresh interpreter per keras backend (keras
picks its backend at import, from KERAS_BACKEND).

    KERAS_BACKEND=torch python -m unibackend.benchmarks.keras_peer --backend torch
    KERAS_BACKEND=jax python -m unibackend.benchmarks.keras_peer --backend jax

The unified op and the native call are timed again here, side by side with
keras.ops in this one process; the cases go to stdout as one JSON line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from . import cases as K
from . import threads
from .timing import Candidate


class KerasPeers(K.NoPeers):
    def __init__(self, backend):
        import keras

        if keras.backend.backend() != backend:
            raise RuntimeError(f"keras runs on {keras.backend.backend()!r}, not {backend!r} (set KERAS_BACKEND)")
        self.ops = keras.ops
        self.backend = backend

    def dispatch(self, a, b):
        return [Candidate("keras", "peer", "keras.ops.matmul(a, b)", self.ops.matmul, (a, b))]

    def keep_topk(self, x, k):
        return [Candidate("keras", "peer", "keras.ops.top_k + scatter_update", _keras_keep_topk,
                          (self.ops, x, k))]

    def sparse_dot(self, x, w):
        kind = {"tensorflow": "tf.SparseTensor", "jax": "BCOO"}.get(self.backend)
        if kind is None:
            return []  # keras.ops.matmul takes sparse inputs on tensorflow and jax only
        return [Candidate("keras", "peer", f"keras.ops.matmul(x, w) ({kind})", self.ops.matmul, (x, w))]


def _keras_keep_topk(ops, x, k):
    vals, idx = ops.top_k(x, k)
    n = x.shape[0]
    rows = ops.broadcast_to(ops.arange(n, dtype="int32")[:, None], (n, k))
    coords = ops.reshape(ops.stack([rows, ops.cast(idx, "int32")], axis=-1), (-1, 2))
    return ops.scatter_update(ops.full(x.shape, float("-inf"), dtype=x.dtype), coords, ops.reshape(vals, (-1,)))


def main(argv=None):
    p = argparse.ArgumentParser(prog="keras_peer")
    p.add_argument("--backend", required=True)
    p.add_argument("--mode", default="quick", choices=("quick", "full", "smoke"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ops", default="dispatch,keep_topk,sparse_dot")
    args = p.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", args.backend)
    threads.limit(args.threads)

    import unibackend as ub

    from .runner import MODES, _device_for

    settings = dataclasses.replace(MODES[args.mode], naive=False)
    if args.repeats:
        settings = dataclasses.replace(settings, repeats=args.repeats, budget_s=None)
    if args.mode == "quick":
        settings = dataclasses.replace(settings, ks=1)  # keras' top_k at one k is enough to place it
    size = K.SIZES["smoke" if args.mode == "smoke" else "full"]
    nat = K.natives(args.backend, args.device)
    threads.apply(args.backend, args.threads)
    peer = KerasPeers(args.backend)
    out = []
    with ub.use_backend(args.backend, _device_for(args.backend, args.device)):
        for op in [o for o in ("dispatch", "keep_topk", "sparse_dot") if o in args.ops.split(",")]:
            for rec in K.CASES[op](nat, peer, size, settings):
                if any(r["kind"] == "peer" for r in rec["candidates"]):
                    rec["process"] = "keras"
                    out.append(rec)
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
