"""The benchmark cases: sizes, inputs, and how each op's candidates are built.

A case is one op at one size on one backend.  Its candidates are the unified
op (``ub.*``), the best native call on that backend, the naive formulation
people write by hand, and the same op through a peer library where it has it.
All of them are timed side by side (:mod:`.timing`).
"""
from __future__ import annotations

import dataclasses
import importlib
import time
from dataclasses import dataclass

import numpy as np

import unibackend as ub

from .timing import Candidate, interleave, paired_diff, paired_ratio

OPS = ("dispatch", "keep_topk", "embedding_mean", "sparse_dot", "compiled", "scaling", "sharded")

#: The sizes of the issue.  ``smoke`` is minuscule, for the test suite only.
SIZES = {
    "full": {
        "dispatch": {"n": 8},
        "keep_topk": {"rows": 512, "cols": 4096, "ks": (4, 64)},
        "embedding_mean": {"n": 4096, "L": 50, "V": 100_000, "d": 128},
        "sparse_dot": {"n": 256, "N": 10_000, "density": 0.005, "M": 512},
        # dask only: embedding_mean on a LocalCluster of 1 and of 2 workers
        "scaling": {"n": 65536, "L": 50, "V": 100_000, "d": 128, "chunks": 16},
        # dask only: tables larger than a worker (issue 23), on LocalClusters
        # of 1, 2 and 4 workers x 512 MiB; tables of 128 MiB (fits a worker)
        # and 1 GiB, then larger ones on 4 workers; a persisted table that
        # spills, with the barriers and without (dask's own order), on 16
        # ids chunks (on 4 the running sums alone nearly do: issue 23)
        "sharded": {"workers": 4, "workers_list": (1, 2, 4), "memory_limit": "512MiB", "ids_rows": 400_000,
                    "ids_chunk": 25_000, "L": 20, "d": 64, "fits_mib": 128, "table_mib": 1024,
                    "largest_mib": (1536, 2048), "spill_mib": 1434, "spill_ids_rows": 400_000},
    },
    "smoke": {
        "dispatch": {"n": 8},
        "keep_topk": {"rows": 8, "cols": 64, "ks": (2, 8)},
        "embedding_mean": {"n": 16, "L": 5, "V": 100, "d": 8},
        "sparse_dot": {"n": 8, "N": 100, "density": 0.05, "M": 4},
        "scaling": {"n": 64, "L": 5, "V": 100, "d": 8, "chunks": 4},
        "sharded": {"workers": 2, "workers_list": (2,), "memory_limit": "256MiB", "ids_rows": 600,
                    "ids_chunk": 200, "L": 5, "d": 8, "fits_mib": 0.01, "table_mib": 0.05, "block": "16KiB",
                    "largest_mib": (), "spill_mib": 0, "spill_ids_rows": 0},
    },
}

#: The size of the reference bandwidth figure (H100: embedding_bag ~1.1 TB/s
#: of a ~3.0 TB/s copy); run on CUDA only.
CUDA_LARGE_EMBEDDING = {"n": 65536, "L": 50, "V": 1_000_000, "d": 128}


@dataclass
class Settings:
    repeats: int
    min_batch_s: float
    budget_s: float | None = None  # seconds of timed rounds per case (fewer rounds for slow ops)
    naive: bool = True          # the naive candidates (slow) are timed too
    ks: int | None = None       # keep_topk: only the first ``ks`` values of k (None: all)


# --------------------------------------------------------------------------
# inputs (numpy, float32; the same seed for every backend)

def dispatch_inputs(p, seed=0):
    rng = np.random.default_rng(seed)
    n = p["n"]
    return rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)


def topk_inputs(p, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((p["rows"], p["cols"]), np.float32)


def embedding_inputs(p, seed=2):
    """A float32 table and padded int64 ids: every row holds 1..L real ids
    (uniform in [1, V)), then padding (pad_id 0)."""
    rng = np.random.default_rng(seed)
    n, L, V, d = p["n"], p["L"], p["V"], p["d"]
    table = rng.standard_normal((V, d), np.float32)
    ids = rng.integers(1, V, size=(n, L), dtype=np.int64)
    lengths = rng.integers(1, L + 1, size=n)
    ids[np.arange(L)[None, :] >= lengths[:, None]] = 0
    return table, ids


def sparse_inputs(p, seed=3):
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    x = sp.random(p["n"], p["N"], density=p["density"], format="csr", dtype=np.float32,
                  random_state=np.random.RandomState(seed))
    w = rng.standard_normal((p["N"], p["M"]), np.float32)
    return x, w


def embedding_bytes(ids, d, itemsize=4):
    """Bytes an embedding mean must move at least: the ids, one table row
    per real id, and the output."""
    nnz = int(np.count_nonzero(ids))
    return ids.size * ids.itemsize + nnz * d * itemsize + ids.shape[0] * d * itemsize


# --------------------------------------------------------------------------
# plugins of the comparison: native calls and peers

def natives(backend, device):
    """The ``Natives`` of ``backend`` (imports its framework)."""
    mod = importlib.import_module(f"{__package__}.native_{backend}")
    return mod.Natives(device)


class NoPeers:
    def dispatch(self, a, b):
        return []

    def keep_topk(self, x, k):
        return []

    def embedding_mean(self, table, ids):
        return []

    def sparse_dot(self, x, w):
        return []


class AutorayPeers(NoPeers):
    """autoray.do: a generic dispatcher, the closest peer to ``ub.dot``."""

    def __init__(self):
        import autoray

        self.do = autoray.do

    def dispatch(self, a, b):
        return [Candidate("autoray", "peer", "autoray.do('matmul', a, b)", self.do, ("matmul", a, b))]


def peers(kind):
    if kind == "autoray":
        try:
            return AutorayPeers()
        except ImportError:
            return NoPeers()
    return NoPeers()


# --------------------------------------------------------------------------
# measuring one case

def first_call(c, sync, block=None):
    t0 = time.perf_counter()
    out = c.fn(*c.args)
    if block is not None:
        block(out)
    if sync is not None:
        sync()
    return time.perf_counter() - t0


def _blocking(block, c):
    """``c`` with every call waiting for its result (``block(result)``):
    jax's asynchronous dispatch, dask's lazy graphs."""
    fn = c.fn

    def call(*args):
        return block(fn(*args))

    return dataclasses.replace(c, fn=call)


def measure(op, label, params, nat, unified, others, settings, first_s=None):
    """Time ``unified`` and ``others`` side by side; a JSON-ready record."""
    cands = [unified] + [c for c in others if settings.naive or c.kind != "naive"]
    block = getattr(nat, "block", None)
    if block is not None:
        cands = [_blocking(block, c) for c in cands]
    timings = interleave(cands, settings.repeats, settings.min_batch_s, nat.sync, settings.budget_s)
    u = timings["unified"]
    rows = []
    for c in cands:
        t = timings[c.name]
        row = {
            "name": c.name, "kind": c.kind, "call": c.call, "median_s": t.median,
            "number": t.number, "rounds": len(t.rounds),
            "unified_ratio": paired_ratio(u, t),          # unified time / this time
            "unified_overhead_s": paired_diff(u, t),      # unified time - this time
        }
        if getattr(c, "setup_s", None) is not None:
            row["setup_s"] = c.setup_s
        rows.append(row)
    return {
        "op": op, "label": label, "params": params, "backend": nat.backend,
        "device": nat.device, "candidates": rows, "first_call_s": first_s,
    }


def _unified(call, fn, *args):
    return Candidate("unified", "unified", call, fn, args)


def _noop(a, b):
    return None


def case_dispatch(nat, peer, size, settings):
    p = size["dispatch"]
    a0, b0 = dispatch_inputs(p)
    a, b = nat.put(a0), nat.put(b0)
    u = _unified("ub.dot(a, b)", ub.dot, a, b)
    first = first_call(u, nat.sync, getattr(nat, "block", None))
    # An empty Python function: the unit that makes a dispatch overhead
    # comparable across machines and loads (the overhead is Python calls).
    ref = Candidate("python call", "reference", "f(a, b), an empty Python function", _noop, (a, b))
    others = nat.dispatch(a, b) + peer.dispatch(a, b) + [ref]
    return [measure("dispatch", f"{p['n']}x{p['n']} matmul", p, nat, u, others, settings, first)]


def case_keep_topk(nat, peer, size, settings):
    p = size["keep_topk"]
    x0 = topk_inputs(p)
    x = nat.put(x0)
    out = []
    for k in p["ks"][:settings.ks]:
        u = _unified(f"ub.keep_topk(x, {k})", ub.keep_topk, x, k)
        first = first_call(u, nat.sync, getattr(nat, "block", None))
        others = nat.keep_topk(x, k) + peer.keep_topk(x, k)
        params = {"rows": p["rows"], "cols": p["cols"], "k": k}
        rec = measure("keep_topk", f"{p['rows']}x{p['cols']} k={k}", params, nat, u, others,
                      settings, first)
        rec["short"] = f"k={k}"
        out.append(rec)
    return out


def case_embedding_mean(nat, peer, size, settings, large=False):
    p = CUDA_LARGE_EMBEDDING if large else size["embedding_mean"]
    table0, ids0 = embedding_inputs(p)
    table, ids = nat.put(table0), nat.put(ids0)
    u = _unified("ub.embedding_mean(table, ids)", ub.embedding_mean, table, ids)
    first = first_call(u, nat.sync, getattr(nat, "block", None))
    others = nat.embedding_mean(table, ids) + peer.embedding_mean(table, ids)
    label = f"n={p['n']} L={p['L']} V={p['V']:,} d={p['d']}"
    rec = measure("embedding_mean", label, p, nat, u, others, settings, first)
    # Peak memory of the unified op against the naive gather (and the native
    # call), one call each, where the backend can count its allocations.
    mem = []
    for c in [u] + others:
        if c.kind == "peer":
            continue
        peak = nat.peak_memory(c.fn, c.args)
        if peak is not None:
            mem.append({"name": c.name, "peak_bytes": int(peak)})
    rec["memory"] = mem
    rec["memory_tool"] = nat.memory_tool
    rec["gather_bytes"] = p["n"] * p["L"] * p["d"] * 4
    if getattr(nat, "copy_bandwidth", None) is not None:
        moved = embedding_bytes(ids0, p["d"])
        bw = nat.copy_bandwidth()
        rec["bandwidth"] = {
            "bytes_moved": moved, "copy_bytes_per_s": bw,
            "rows": {r["name"]: {"bytes_per_s": moved / r["median_s"],
                                 "fraction_of_copy": moved / r["median_s"] / bw}
                     for r in rec["candidates"]},
        }
    return [rec]


def case_sparse_dot(nat, peer, size, settings):
    p = size["sparse_dot"]
    x0, w0 = sparse_inputs(p)
    x, w = nat.put_sparse(x0), nat.put(w0)
    if x is None:
        return []
    u = _unified("ub.sparse_dot(x, w)", ub.sparse_dot, x, w)
    first = first_call(u, nat.sync, getattr(nat, "block", None))
    others = nat.sparse_dot(x, w) + peer.sparse_dot(x, w)
    label = f"n={p['n']} N={p['N']:,} {p['density'] * 100:g}% M={p['M']}"
    out = [measure("sparse_dot", label, p, nat, u, others, settings, first)]
    chunks = getattr(nat, "sparse_chunks", None)
    if chunks:
        # dask: the same product over row chunks against scipy on the whole
        # input (issue 21: reported, no target; the one-chunk row holds the target)
        xc = nat.put_sparse(x0, chunks=chunks)
        uc = _unified("ub.sparse_dot(x, w)", ub.sparse_dot, xc, w)
        first = first_call(uc, nat.sync, getattr(nat, "block", None))
        rec = measure("sparse_dot", f"{label}, {chunks} row chunks", p, nat, uc, nat.sparse_dot(x, w),
                      settings, first)
        rec["report_only"] = f"{chunks} row chunks against scipy on the whole input: reported, no target"
        out.append(rec)
    return out


def case_compiled(nat, peer, size, settings):
    from .compiled import case_compiled as run

    return run(nat, peer, size, settings)


def case_scaling(nat, peer, size, settings):
    if not hasattr(nat, "scaling"):
        return []   # dask only
    return nat.scaling(size, settings)


def case_sharded(nat, peer, size, settings):
    if not hasattr(nat, "sharded"):
        return []   # dask only
    return nat.sharded(size, settings)


CASES = {
    "dispatch": case_dispatch,
    "keep_topk": case_keep_topk,
    "embedding_mean": case_embedding_mean,
    "sparse_dot": case_sparse_dot,
    "compiled": case_compiled,
    "scaling": case_scaling,
    "sharded": case_sharded,
}
