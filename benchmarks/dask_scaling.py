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


# ---------------------------------------------------------------------------
# Tables larger than a worker (issue 23): embedding_mean and sparse_dot with
# the table / weight matrix in row blocks on a LocalCluster of W workers of a
# fixed memory limit.  The table and the ids are generated block by block on
# the workers (seeded: the client regenerates any block for the reference),
# as a table read from disk would be: a block exists while its tasks run.

MiB = 2**20


def _table_block(seed, b, rows, d):
    return np.random.default_rng([seed, 1, b]).standard_normal((rows, d), np.float32)


def _ids_chunk(seed, i, n, L, V):
    rng = np.random.default_rng([seed, 2, i])
    ids = rng.integers(1, V, size=(n, L), dtype=np.int64)
    ids[np.arange(L)[None, :] >= rng.integers(1, L + 1, size=n)[:, None]] = 0  # padding 0 at the end
    return ids


def _x_chunk(seed, i, n, per_row, V):
    """Rows of a CSR float32 x (n, V) with ``per_row`` entries per row."""
    import scipy.sparse as sp

    rng = np.random.default_rng([seed, 3, i])
    cols = rng.integers(0, V, size=n * per_row)
    rows = np.repeat(np.arange(n), per_row)
    return sp.csr_matrix((rng.standard_normal(cols.size).astype(np.float32), (rows, cols)), shape=(n, V))


def _row_chunks(total, size):
    return tuple(min(size, total - s) for s in range(0, total, size))


def _lazy(fn, seed, chunks, cols, dtype, *args, meta=None):
    """A dask array whose row block k is ``fn(seed, k, rows, *args)``."""
    import dask
    import dask.array as da

    parts = [da.from_delayed(dask.delayed(fn, pure=True)(seed, k, n, *args), (n, cols), dtype=dtype,
                             **({"meta": meta} if meta is not None else {}))
             for k, n in enumerate(chunks)]
    return da.concatenate(parts) if len(parts) > 1 else parts[0]


def _start_sampler(dask_worker, period=0.02):
    """The peak resident memory of the worker's process, sampled every 20 ms."""
    import threading

    import psutil

    proc = psutil.Process()
    dask_worker._ub_peak = proc.memory_info().rss
    dask_worker._ub_stop = stop = threading.Event()

    def loop():
        while not stop.wait(period):
            dask_worker._ub_peak = max(dask_worker._ub_peak, proc.memory_info().rss)

    threading.Thread(target=loop, daemon=True, name="ub-peak-rss").start()
    dask_worker._ub_disk = _disk(dask_worker)


def _disk(dask_worker):
    """Bytes this worker has written to and read from disk (spilling), ever."""
    m = getattr(dask_worker.data, "cumulative_metrics", {})
    return int(m.get(("disk-write", "bytes"), 0)), int(m.get(("disk-read", "bytes"), 0))


def _read_sampler(dask_worker):
    dask_worker._ub_stop.set()
    (w0, r0), (w1, r1) = dask_worker._ub_disk, _disk(dask_worker)
    return {"peak": int(dask_worker._ub_peak), "limit": int(dask_worker.memory_manager.memory_limit or 0),
            "disk_write": w1 - w0, "disk_read": r1 - r0}


def sharded_pass(client, op, table_bytes, p, **kw):
    with client.as_current():   # wait() and table_block_bytes() look for the client in force
        return _pass(client, op, table_bytes, p, **kw)


def _without_barriers(out):
    """``out`` (a sharded embedding_mean / sparse_dot) with its barriers taken
    out: the same running sums, block after block, with nothing that makes
    every output pass block b before any reads block b + 1, so the order is
    dask.order's own (the thrash the barriers avoid)."""
    from dask._task_spec import Task
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    from unibackend.plugins.dask_backend import _done, _step

    graph = out.__dask_graph__()
    layer = {}
    for k, v in graph.layers[out.name].items():
        if isinstance(v, Task) and v.func is _done:
            continue
        if isinstance(v, Task) and v.func is _step:
            v = Task(k, _step, v.args[0], None, *v.args[2:])
        layer[k] = v
    layers = dict(graph.layers, **{out.name: MaterializedLayer(layer)})
    return type(out)(HighLevelGraph(layers, graph.dependencies), out.name, out.chunks, meta=out._meta)


def _pass(client, op, table_bytes, p, *, seed=0, check=False, barriers=True, persist_table=False):
    """One ``op`` ("embedding_mean" or "sparse_dot") with a table of about
    ``table_bytes`` in row blocks of ``table_block_bytes()``, the result
    persisted on the workers.  Returns seconds, peak worker memory, bytes the
    workers wrote to and read from disk (spilling), whether every worker
    survived, and (``check``) the largest error against a numpy computation
    done block by block, in units of the sum tolerance."""
    import dask
    from distributed import wait

    from unibackend.conformance import tolerances as T
    from unibackend.plugins.dask_backend import table_block_bytes

    d, L, n = p["d"], p["L"], p["ids_rows"]
    with dask.config.set({"unibackend.table-block": p.get("block")}):
        block = table_block_bytes()
    V = max(2, int(table_bytes // (d * 4)))
    rows = max(1, int(block // (d * 4)))
    tchunks, ichunks = _row_chunks(V, rows), _row_chunks(n, p["ids_chunk"])
    table = _lazy(_table_block, seed, tchunks, d, np.float32, d)
    if op == "embedding_mean":
        ids = _lazy(_ids_chunk, seed, ichunks, L, np.int64, L, V)
    else:
        import scipy.sparse as sp

        ids = _lazy(_x_chunk, seed, ichunks, V, np.float32, L, V, meta=sp.csr_matrix((0, V), dtype=np.float32))
    before = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if persist_table:
        table = client.persist(table)
        wait(table)
    client.run(_start_sampler)
    t0 = time.perf_counter()
    with ub.use_backend("dask"):
        out = ub.embedding_mean(table, ids) if op == "embedding_mean" else ub.sparse_dot(ids, table)
    if not barriers:  # dask's own order only (the thrash the barriers avoid)
        out = _without_barriers(out)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        res = client.persist(out)
        wait(res)
    secs = time.perf_counter() - t0
    mem = client.run(_read_sampler)
    after = sorted(client.scheduler_info(n_workers=-1)["workers"])
    rec = {"op": op, "workers": len(before), "table_bytes": V * d * 4, "table_blocks": len(tchunks),
           "block_bytes": rows * d * 4, "ids_rows": n, "ids_chunks": len(ichunks), "tasks": len(out.__dask_graph__()),
           "seconds": secs, "peak_worker_bytes": max(m["peak"] for m in mem.values()),
           "limit_bytes": min(m["limit"] for m in mem.values()),
           "disk_write_bytes": sum(m["disk_write"] for m in mem.values()),
           "disk_read_bytes": sum(m["disk_read"] for m in mem.values()),
           "workers_lost": len(set(before) - set(after)), "barriers": barriers, "persisted_table": persist_table}
    if check:
        rec.update(_check_block_by_block(client, op, res, seed, tchunks, ichunks, p, V, T))
    del res
    return rec


def _check_block_by_block(client, op, res, seed, tchunks, ichunks, p, V, T):
    """The result against numpy in this process, one table block at a time
    (float64 partial sums), within the suite's sum tolerance."""
    import scipy.sparse as sp

    d, L = p["d"], p["L"]
    got = client.compute(res).result()
    want, absum = np.zeros(got.shape), np.zeros(got.shape)
    starts = np.concatenate([[0], np.cumsum(tchunks)])
    start = 0
    sels = []
    for i, n in enumerate(ichunks):
        if op == "embedding_mean":
            ids = _ids_chunk(seed, i, n, L, V)
            real = ids != 0
            cnt = real.sum(axis=1)
            r = np.repeat(np.arange(n), cnt) + start
            c, v = ids[real], np.repeat(1.0 / np.maximum(cnt, 1), cnt)
        else:
            x = _x_chunk(seed, i, n, L, V).tocoo()
            r, c, v = x.row + start, x.col, x.data.astype(np.float64)
        sels.append((r, c, v))
        start += n
    r = np.concatenate([s[0] for s in sels])
    c = np.concatenate([s[1] for s in sels])
    v = np.concatenate([s[2] for s in sels])
    for b, rows in enumerate(tchunks):
        blk = _table_block(seed, b, rows, d).astype(np.float64)
        m = (c >= starts[b]) & (c < starts[b + 1])
        sel = sp.csr_matrix((v[m], (r[m], c[m] - starts[b])), shape=(got.shape[0], rows))
        want += sel @ blk
        absum += abs(sel) @ np.abs(blk)
    terms = L if op == "embedding_mean" else L
    tol = T.sum_tol(absum, terms, np.float32)
    err = np.abs(got.astype(np.float64) - want)
    return {"checked_rows": int(got.shape[0]), "max_abs_diff": float(err.max()),
            "max_diff_over_tol": float((err / tol).max()), "total": float(got.astype(np.float64).sum()),
            "total_numpy": float(want.sum())}


def case_sharded(nat, size, settings):
    import logging

    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        return _sharded(nat, size, settings)
    finally:
        logging.disable(before)


def _cluster(workers, memory_limit):
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           memory_limit=parse_bytes(memory_limit), silence_logs=50)
    return cluster, Client(cluster, set_as_default=False)


def _sharded(nat, size, settings):
    p = size["sharded"]
    MB = MiB
    runs = []
    label = (f"{p['workers']} x {p['memory_limit']} workers, ids {p['ids_rows']:,} x {p['L']}, d={p['d']}, "
             f"tables {p['fits_mib']} / {p['table_mib']} MiB")
    for w in p["workers_list"]:
        cluster, client = _cluster(w, p["memory_limit"])
        try:
            for op in ("embedding_mean", "sparse_dot"):
                for mib in (p["fits_mib"], p["table_mib"]):
                    proof = w == p["workers"] and mib == p["table_mib"]
                    rec = sharded_pass(client, op, mib * MB, p, check=proof)
                    rec["proof"] = proof
                    runs.append(rec)
            if w == p["workers"]:
                for mib in p["largest_mib"]:   # the largest table that works
                    rec = sharded_pass(client, "embedding_mean", mib * MB, p)
                    rec["largest_try"] = True
                    runs.append(rec)
                    if rec["workers_lost"]:
                        break
                if p.get("spill_mib"):        # a persisted table that spills: with and without barriers
                    for barriers in (True, False):
                        client.restart()
                        q = dict(p, ids_rows=p["spill_ids_rows"])
                        rec = sharded_pass(client, "embedding_mean", p["spill_mib"] * MB, q,
                                           barriers=barriers, persist_table=True)
                        rec["spill_demo"] = True
                        runs.append(rec)
        finally:
            client.close()
            cluster.close()
    rec = {"op": "sharded", "label": label, "params": dict(p), "backend": "dask", "device": "cpu",
           "candidates": [], "sharded": {"runs": runs}}
    return [rec]


def main(argv=None):
    """One sharded pass on a fresh LocalCluster, as JSON (sizes in MiB):
    ``python -m benchmarks.dask_scaling embedding_mean 1024 4 512MiB``.
    The paired before/after figures of docs/backends/dask.md (*Order*) are
    this command run in turn in two checkouts."""
    import argparse
    import json
    import logging
    import os

    ap = argparse.ArgumentParser(prog="python -m benchmarks.dask_scaling", description=main.__doc__)
    ap.add_argument("op", choices=("embedding_mean", "sparse_dot"))
    ap.add_argument("table_mib", type=float)
    ap.add_argument("workers", type=int)
    ap.add_argument("memory_limit")
    ap.add_argument("--ids-rows", type=int, default=400_000)
    ap.add_argument("--ids-chunk", type=int, default=25_000)
    ap.add_argument("--no-barriers", action="store_true", help="dask's own order (the thrash the barriers avoid)")
    ap.add_argument("--persist-table", action="store_true", help="persist the table on the workers first")
    ap.add_argument("--check", action="store_true", help="compare with numpy done block by block")
    a = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    p = {"ids_rows": a.ids_rows, "ids_chunk": a.ids_chunk, "L": 20, "d": 64, "block": None}
    load = os.getloadavg()[0]
    cluster, client = _cluster(a.workers, a.memory_limit)
    try:
        kw = {"barriers": False} if a.no_barriers else {}  # an older _pass has no barriers argument
        rec = sharded_pass(client, a.op, a.table_mib * MiB, p, check=a.check, persist_table=a.persist_table, **kw)
    finally:
        client.close()
        cluster.close()
    rec["load_average"] = [load, os.getloadavg()[0]]
    print(json.dumps({k: round(v / MiB, 1) if k.endswith("_bytes") else v for k, v in rec.items()}))


if __name__ == "__main__":
    main()
