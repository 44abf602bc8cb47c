"""Serving throughput: one model served by ONNX Runtime (the exported .onnx)
and by numpy (``Model.predict`` on the numpy backend), rows per second at
batch 1 and batch 1,024, with one thread and with every thread.

    PYTHONPATH=$PWD python -m unibackend.benchmarks.onnx_serving [--model moe.npz] [--seconds 1]

The model is examples/moe_tags.py's (a trained ``--model`` .npz, else its
seed-0 initialisation: the same work per row either way) and the rows are
its synthetic test documents.  Each cell is the median of ``--rounds``
timed rounds of about ``--seconds`` each, the two servers alternating round
by round, so a loaded machine slows both alike; the ratio column is per
round, paired.  numpy's threads are its BLAS threads (threadpoolctl).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rate(fn, rows, seconds):
    """Rows per second of ``fn()`` (which serves ``rows`` rows), over about ``seconds``."""
    fn()  # warm
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return n * rows / el


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a saved moe_tags model (.npz); default: the seed-0 initialisation")
    p.add_argument("--seconds", type=float, default=1.0, help="length of one timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", default="1,1024")
    a = p.parse_args(argv)

    import onnxruntime as ort
    from threadpoolctl import threadpool_limits

    import unibackend as ub
    from unibackend import _registry as R
    from unibackend import nn

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import moe_tags

    if "onnx" not in R.known():  # before the package is reinstalled with the entry point
        from unibackend.plugins.onnx_backend import OnnxBackend

        ub.register("onnx", OnnxBackend)
    model = nn.load(a.model) if a.model else moe_tags.build(0)
    bow, ids, _ = moe_tags.make_data(1024, 1)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as d:
        path = nn.export_onnx(model, Path(d) / "moe.onnx")
        sessions = {}
        for threads in (1, cores):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sessions[threads] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        print(f"rows/s, median of {a.rounds} rounds of {a.seconds:g} s; {cores} cores; "
              f"onnxruntime {ort.__version__}, numpy {np.__version__}")
        print(f"{'batch':>6} {'threads':>7} {'onnxruntime':>12} {'numpy':>10} {'ratio':>6}")
        for batch in [int(b) for b in a.batches.split(",")]:
            b_bow, b_ids = bow[:batch], ids[:batch]
            feed = {
                "bow_data": b_bow.data, "bow_indices": b_bow.indices.astype(np.int64),
                "bow_indptr": b_bow.indptr.astype(np.int64), "tags": b_ids}
            for threads in (1, cores):
                s = sessions[threads]
                got = s.run(None, feed)[0]
                with ub.use_backend("numpy"):
                    want = model.predict({"bow": b_bow, "tags": b_ids})
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)  # the same model
                ort_r, np_r, ratio = [], [], []
                for _ in range(a.rounds):
                    o = _rate(lambda s=s, feed=feed: s.run(None, feed), batch, a.seconds)
                    with threadpool_limits(threads), ub.use_backend("numpy"):
                        data = {"bow": b_bow, "tags": b_ids}
                        n = _rate(lambda data=data: model.predict(data), batch, a.seconds)
                    ort_r.append(o)
                    np_r.append(n)
                    ratio.append(o / n)
                print(f"{batch:>6} {threads:>7} {statistics.median(ort_r):>12,.0f} "
                      f"{statistics.median(np_r):>10,.0f} {statistics.median(ratio):>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
