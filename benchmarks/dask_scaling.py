"""Dask scaling: embedding_mean on a LocalCluster of 1 worker against one of
2 workers (one thread each, worker processes), both clusters alive at once so
that their calls are timed side by side, in alternating rounds.

The inputs are persisted on each cluster first (the table as one block, the
ids in row chunks); a timed call builds ``ub.embedding_mean``'s graph,
persists the result on the workers and waits for it, without gathering the
(n, d) result to the client: the figure is the workers' compute, which is
what a second worker can share.
"""
from __future__ import annotations

import time

import numpy as np

import unibackend as ub

from . import cases as K
from .timing import Candidate


def _start(workers):
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=50)
    client = Client(cluster, set_as_default=False)
    return cluster, client, time.perf_counter() - t0


def case_scaling(nat, size, settings):
    import logging

    # The scheduler lives in this process: its INFO lines (its loggers have
    # their own levels) would bury the tables.
    before = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        return _scaling(nat, size, settings)
    finally:
        logging.disable(before)


def _scaling(nat, size, settings):
    from distributed import wait

    p = size["scaling"]
    table0, ids0 = K.embedding_inputs(p)
    chunk = -(-p["n"] // p["chunks"])
    started, out = [], []
    try:
        cands, startup = [], {}
        for workers in (2, 1):
            cluster, client, secs = _start(workers)
            started.append((cluster, client))
            startup[workers] = secs
            table = client.persist(nat.da.from_array(table0, chunks=table0.shape))
            ids = client.persist(nat.da.from_array(ids0, chunks=(chunk, ids0.shape[1])))
            with client.as_current():   # wait() looks for the client in force
                wait([table, ids])

            def run(client=client, table=table, ids=ids):
                res = client.persist(ub.embedding_mean(table, ids))
                with client.as_current():
                    wait(res)
                return res

            name = "unified" if workers == 2 else "1 worker"
            kind = "unified" if workers == 2 else "reference"
            cands.append(Candidate(name, kind, f"ub.embedding_mean on {workers} worker"
                                   f"{'s' if workers > 1 else ''}, persisted", run, ()))
        label = f"n={p['n']} L={p['L']} V={p['V']:,} d={p['d']}, {p['chunks']} chunks"
        rec = K.measure("scaling", label, dict(p), _Plain(nat), cands[0], cands[1:], settings)
        (one,) = [r for r in rec["candidates"] if r["name"] == "1 worker"]
        # unified_ratio of the 1-worker row is t(2 workers) / t(1 worker).
        rec["scaling"] = {"speedup_2_over_1": 1.0 / one["unified_ratio"],
                          "cluster_start_s": startup, "threads_per_worker": 1, "processes": True}
        out.append(rec)
        # The same answer as numpy on one row block (a scaling run that
        # computes something else would measure nothing).
        first = started[-1][1].compute(ub.embedding_mean(table, ids)[:chunk]).result()  # table, ids: 1 worker's
        with ub.use_backend("numpy"):
            ref = ub.embedding_mean(table0, ids0[:chunk])
        rec["scaling"]["checked_rows"] = int(chunk)
        rec["scaling"]["max_abs_diff"] = float(np.max(np.abs(first - ref))) if ref.size else 0.0
    finally:
        for cluster, client in started:
            client.close()
            cluster.close()
    return out


class _Plain:
    """The dask natives without their compute wrapper: a scaling call
    persists on its own cluster and returns futures."""

    def __init__(self, nat):
        self.backend, self.device, self.sync = nat.backend, nat.device, None
