"""What dask's own compute costs, next to the one-chunk sparse_dot row of
``unibackend bench`` (docs/performance.md, issue 21):

    python -m unibackend.benchmarks.dask_floor [--rounds 301] [--n 256] [--N 10000] [--M 512]

Three calls, interleaved round by round (order alternated), median of each:

- ``scipy``: ``x @ w``, the native call of the bench row;
- ``ub one chunk``: ``ub.sparse_dot`` on the dask array of ``x`` in one block
  and ``w`` in one chunk, computed on the synchronous scheduler (the row);
- ``dask floor``: a dask array whose graph is one task returning the
  answer, computed already, on the same scheduler: what any dask code
  pays per ``compute`` at least, whatever it computes.

The floor ratio ``(scipy + floor) / scipy`` is the best a one-chunk dask
sparse_dot can read against scipy at this size.  Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any


def _one_task_array(value):
    """A dask array of one task that returns ``value`` as it is."""
    from dask.task_spec import DataNode, Task

    from unibackend._registry import backend

    B: Any = backend("dask")  # the dask plugin: its private array builder
    name = "ub-floor"
    key = (name,) + (0,) * value.ndim
    return B._array(name, {key: Task(key, _same, DataNode(None, value))}, [],
                    tuple((s,) for s in value.shape), value.dtype)


def _same(a):
    return a


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=301)
    p.add_argument("--n", type=int, default=256, help="rows of x (the bench's quick size)")
    p.add_argument("--N", type=int, default=10_000, help="columns of x, rows of w")
    p.add_argument("--M", type=int, default=512, help="columns of w")
    p.add_argument("--density", type=float, default=0.005)
    args = p.parse_args(argv)

    import numpy as np
    import scipy.sparse as sp

    import unibackend as ub

    from .native_dask import Natives

    x = sp.random(args.n, args.N, density=args.density, format="csr", dtype=np.float32, random_state=0)
    w = np.random.default_rng(0).standard_normal((args.N, args.M)).astype(np.float32)
    row = Natives()  # x and w as the bench's one-chunk row holds them
    dx, dw = row.put_sparse(x), row.put(w)
    floor = _one_task_array(np.asarray(x @ w))
    calls = {
        "scipy": lambda: x @ w,
        "ub one chunk": lambda: ub.sparse_dot(dx, dw).compute(scheduler="synchronous"),
        "dask floor": lambda: floor.compute(scheduler="synchronous"),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    with ub.use_backend("dask"):
        np.testing.assert_allclose(calls["ub one chunk"](), calls["scipy"](), rtol=1e-5, atol=1e-5)
        for r in range(args.rounds):
            for k, f in (calls.items() if r % 2 else reversed(list(calls.items()))):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "size": {"n": args.n, "N": args.N, "M": args.M, "density": args.density}, "rounds": args.rounds,
        "median_ms": {k: round(v * 1e3, 4) for k, v in med.items()},
        "ub_over_scipy": round(statistics.median(a / b for a, b in zip(times["ub one chunk"], times["scipy"])), 3),
        "floor_over_scipy": round((med["scipy"] + med["dask floor"]) / med["scipy"], 3),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
