"""Score the mixture-of-experts model of moe_tags.py on more rows than fit in a
worker: the input lives on disk in chunks, a dask cluster scores every row
with the same unibackend model code that runs on numpy, and writes the
predictions to disk.

    python examples/score_at_scale.py                          # 2 workers x 256 MiB, ~1.1 GB on disk
    python examples/score_at_scale.py --rows 500000 --workers 1 --memory-limit 512MiB --out /tmp/scores
    python examples/score_at_scale.py --model moe.npz          # a model saved by moe_tags.py --save
    python examples/score_at_scale.py --scheduler tcp://host:8786 --data /shared/in --out /shared/out
    python examples/score_at_scale.py --table-mib 1024 --workers 4 --memory-limit 512MiB   # a 1 GiB tag table

Steps: (1) the workers generate the data (moe_tags' kind: a sparse bag of
words, CSR float32, and padded tag ids) and write it chunk by chunk under
--data (reused when it is already there); (2) the model: --model PATH, or a
few seconds of training on a small sample with the first installed autodiff
backend (torch, jax, tensorflow), or its seeded initial parameters when
there is none; (3) ``model.forward`` on dask arrays built from the chunk
files gives a lazy (rows, classes) array that ``da.to_npy_stack`` computes
on the cluster, each worker reading its chunks and writing their
predictions to --out; (4) a sample of chunks is scored again on numpy in this
process and compared; (5) the last line gives rows per second and the peak
memory of a worker (sampled every 20 ms in each worker).

With --table-mib N the model's tag table is grown to N MiB: its rows move
to random places of a larger table whose other rows are random, and the ids
are mapped the same way, so the predictions are unchanged; a table larger
than a table block (an eighth of a worker's memory) is cut into row blocks
and each (ids chunk, table block) pair is one task (see docs/backends/dask.md).

With --scheduler the cluster at that address is used as it is (--workers
and --memory-limit are ignored); --data and --out must then be paths every
worker can read and write (a shared filesystem).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

import unibackend as ub

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_tags  # noqa: E402  (the model and the data's world live there)

MiB = 2**20


# -- data, generated on the workers -------------------------------------------

def world():
    """The topics' words and the styles' tags, exactly as moe_tags.make_data draws them."""
    rng = np.random.default_rng(1234)
    topic_words = rng.choice(moe_tags.FEATURES, size=(moe_tags.TOPICS, moe_tags.TOPIC_WORDS), replace=False)
    style_tags = rng.permutation(moe_tags.TAG_VOCAB)[: moe_tags.STYLES * 40].reshape(moe_tags.STYLES, 40)
    consts = {k: getattr(moe_tags, k) for k in ("FEATURES", "WORDS_PER_DOC", "TOPICS", "STYLES", "TAG_VOCAB",
                                                   "TOPIC_WORDS", "SIGNAL", "TAG_SIGNAL")}
    return {"topic_words": topic_words, "style_tags": style_tags, **consts}


def write_chunk(i, n, seed, w, data_dir):
    """Chunk ``i`` (``n`` rows) of moe_tags' kind of data, vectorised, written
    as ``bow_i.npz`` (CSR float32) and ``ids_i.npy`` (int64, 0 is padding)."""
    import scipy.sparse as sp

    rng = np.random.default_rng([seed, i])
    topic, style = rng.integers(w["TOPICS"], size=n), rng.integers(w["STYLES"], size=n)
    k = w["WORDS_PER_DOC"]
    from_topic = rng.random((n, k)) < w["SIGNAL"]
    words = np.where(from_topic, w["topic_words"][topic[:, None], rng.integers(w["TOPIC_WORDS"], size=(n, k))],
                     rng.integers(w["FEATURES"], size=(n, k)))
    rows = np.repeat(np.arange(n), k)
    bow = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, words.ravel())), shape=(n, w["FEATURES"]))
    bow.sum_duplicates()
    bow.data = np.log1p(bow.data).astype(np.float32)
    lengths = rng.integers(1, 7, size=n)
    own = rng.random((n, 6)) < w["TAG_SIGNAL"]
    tags = np.where(own, w["style_tags"][style[:, None], rng.integers(40, size=(n, 6))],
                    rng.integers(w["TAG_VOCAB"], size=(n, 6)))
    ids = np.where(np.arange(6) < lengths[:, None], tags + 1, 0).astype(np.int64)  # pad_ids' layout
    sp.save_npz(os.path.join(data_dir, f"bow_{i}.npz"), bow, compressed=False)
    np.save(os.path.join(data_dir, f"ids_{i}.npy"), ids)
    return n


def load_bow(path):
    import scipy.sparse as sp

    return sp.csr_matrix(sp.load_npz(path))


def chunk_sizes(rows, chunk_rows):
    return [min(chunk_rows, rows - s) for s in range(0, rows, chunk_rows)]


def generate(client, data_dir, rows, chunk_rows, seed):
    meta = {"rows": rows, "chunk_rows": chunk_rows, "seed": seed}
    info = data_dir / "meta.json"
    if info.exists() and json.loads(info.read_text()) == meta:
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    w = client.scatter(world(), broadcast=True)
    futs = [client.submit(write_chunk, i, n, seed, w, str(data_dir), pure=False)
            for i, n in enumerate(chunk_sizes(rows, chunk_rows))]
    client.gather(futs)
    info.write_text(json.dumps(meta))
    return True


def disk_bytes(data_dir):
    return sum(p.stat().st_size for p in data_dir.glob("*_*.np*"))


def lazy_inputs(data_dir, rows, chunk_rows):
    """The chunk files as dask arrays: a CSR bag of words and the ids, by rows."""
    import dask
    import dask.array as da
    import scipy.sparse as sp

    sizes = chunk_sizes(rows, chunk_rows)
    meta = sp.csr_matrix((0, moe_tags.FEATURES), dtype=np.float32)
    bow = da.concatenate([
        da.from_delayed(dask.delayed(load_bow)(str(data_dir / f"bow_{i}.npz")), (n, moe_tags.FEATURES),
                        dtype=np.float32, meta=meta)
        for i, n in enumerate(sizes)])
    ids = da.concatenate([
        da.from_delayed(dask.delayed(np.load)(str(data_dir / f"ids_{i}.npy")), (n, 6), dtype=np.int64)
        for i, n in enumerate(sizes)])
    return bow, ids


def grow_table(table, mib, seed):
    """``table`` inside a random table of ``mib`` MiB: row t moves to row
    remap[t] (the padding row 0 stays), the other rows are random."""
    d = table.shape[1]
    rows = max(table.shape[0], int(mib * MiB) // (d * table.itemsize))
    rng = np.random.default_rng([seed, 7])
    big = rng.standard_normal((rows, d), dtype=np.float32).astype(table.dtype, copy=False)
    remap = np.concatenate([[0], 1 + rng.choice(rows - 1, size=table.shape[0] - 1, replace=False)])
    big[remap] = table
    return big, remap


def _remap(ids, remap):
    return remap[ids]


# -- the model ------------------------------------------------------------------

def get_model(path, seed, quiet):
    from unibackend import nn

    if path:
        return nn.load(path), f"loaded {path}"
    model = moe_tags.build(seed)
    for name in ("torch", "jax", "tensorflow"):
        try:
            with ub.use_backend(name):
                pass
        except (ImportError, ValueError):
            continue
        bow, ids, labels = moe_tags.make_data(3000, seed)
        t0 = time.perf_counter()
        with ub.use_backend(name):
            moe_tags.train(model, bow, ids, labels, epochs=2, batch_size=128, lr=0.01, seed=seed, quiet=True)
        return model, f"trained 2 epochs on 3000 rows with {name} in {time.perf_counter() - t0:.1f}s"
    return model, "no autodiff backend installed: the model's seeded initial parameters"


# -- memory of the workers --------------------------------------------------------

def start_sampler(dask_worker, period=0.02):
    """A thread in the worker that keeps the peak resident memory of its process."""
    import psutil

    proc = psutil.Process()
    dask_worker._ub_peak = proc.memory_info().rss
    dask_worker._ub_stop = stop = threading.Event()

    def loop():
        while not stop.wait(period):
            dask_worker._ub_peak = max(dask_worker._ub_peak, proc.memory_info().rss)

    threading.Thread(target=loop, daemon=True, name="ub-peak-rss").start()
    return dask_worker._ub_peak


def read_sampler(dask_worker):
    dask_worker._ub_stop.set()
    spilled = getattr(getattr(dask_worker, "data", None), "spilled_total", None)
    return {"peak": dask_worker._ub_peak, "limit": dask_worker.memory_manager.memory_limit,
            "spilled": int(getattr(spilled, "disk", 0) or 0)}


# -- main -------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2_500_000, help="rows to generate and score")
    p.add_argument("--chunk-rows", type=int, default=25_000, help="rows per chunk file (and per task)")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster")
    p.add_argument("--memory-limit", default="256MiB", help="memory limit of each worker")
    p.add_argument("--out", default="score_at_scale_out", help="directory for the predictions")
    p.add_argument("--data", help="directory for the input chunks (default OUT/input)")
    p.add_argument("--model", help="a model saved by moe_tags.py --save (default: train one briefly)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing dask.distributed scheduler")
    p.add_argument("--sample-chunks", type=int, default=2, help="chunks checked against numpy")
    p.add_argument("--table-mib", type=float, default=None,
                   help="grow the tag table to this many MiB (row-sharded over the workers when large)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    import dask.array as da
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    out = Path(a.out).resolve()
    data_dir = Path(a.data).resolve() if a.data else out / "input"
    pred_dir = out / "predictions"
    if a.scheduler:
        cluster, client = None, Client(a.scheduler)
    else:
        cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                               memory_limit=parse_bytes(a.memory_limit), dashboard_address=None)
        client = Client(cluster)
    try:
        workers = sorted(client.scheduler_info()["workers"])
        limit = min(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
        t0 = time.perf_counter()
        made = generate(client, data_dir, a.rows, a.chunk_rows, a.seed)
        size = disk_bytes(data_dir)
        print(f"input: {a.rows:,} rows in {len(chunk_sizes(a.rows, a.chunk_rows))} chunks, {size / MiB:,.0f} MiB on disk "
              f"({size / limit:.1f}x a worker's {limit / MiB:,.0f} MiB limit); "
              + (f"generated by the workers in {time.perf_counter() - t0:.1f}s" if made else "reused"), flush=True)

        model, how = get_model(a.model, a.seed, quiet=True)
        print(f"model: {how}", flush=True)

        bow, ids = lazy_inputs(data_dir, a.rows, a.chunk_rows)
        params = dict(model.params)
        if a.table_mib:
            from unibackend.plugins.dask_backend import table_block_bytes

            key = next(k for k in params if k.endswith("/table"))
            params[key], remap = grow_table(np.asarray(params[key]), a.table_mib, a.seed)
            ids = ids.map_blocks(_remap, remap, dtype=ids.dtype)
            block = table_block_bytes()
            blocks = -(-params[key].nbytes // block) if params[key].nbytes > block else 1
            print(f"table: {params[key].shape[0]:,} x {params[key].shape[1]} ({params[key].nbytes / MiB:,.0f} MiB) "
                  f"in {blocks} row block(s) of at most {block / MiB:,.0f} MiB", flush=True)
        probs = model.forward(params, {"bow": bow, "tags": ids})  # lazy: nothing runs yet
        assert isinstance(probs, da.Array)
        out.mkdir(parents=True, exist_ok=True)
        client.run(start_sampler)
        t0 = time.perf_counter()
        da.to_npy_stack(str(pred_dir), probs, axis=0)
        took = time.perf_counter() - t0
        mem = client.run(read_sampler)
        alive = sorted(client.scheduler_info()["workers"])

        # a sample of chunks again, on numpy in this process
        rng = np.random.default_rng(a.seed)
        sizes = chunk_sizes(a.rows, a.chunk_rows)
        worst = 0.0
        for i in sorted(rng.choice(len(sizes), size=min(a.sample_chunks, len(sizes)), replace=False)):
            with ub.use_backend("numpy"):
                want = model.predict({"bow": load_bow(str(data_dir / f"bow_{i}.npz")),
                                      "tags": np.load(data_dir / f"ids_{i}.npy")})
            got = np.load(pred_dir / f"{i}.npy")
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
            worst = max(worst, float(np.abs(got - want).max()))
        peak = max(m["peak"] for m in mem.values())
        spilled = sum(m["spilled"] for m in mem.values())
        print(f"scored {a.rows:,} rows in {took:.1f}s on {len(workers)} workers; predictions in {pred_dir}; "
              f"{a.sample_chunks} chunks equal numpy's (max |diff| {worst:.1e}); "
              f"workers alive throughout: {alive == workers}; spilled to disk: {spilled / MiB:.0f} MiB")
        if alive != workers:
            print("a worker was lost (killed or restarted) during the run", file=sys.stderr)
            return 1
        print(f"rows/s: {a.rows / took:,.0f}; peak worker memory: {peak / MiB:,.0f} MiB "
              f"(limit {limit / MiB:,.0f} MiB)")
        return 0
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    sys.exit(main())
