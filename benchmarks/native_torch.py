"""torch: the best native call and the naive formulation of each op.

On ``--device cuda`` every timed batch ends with ``torch.cuda.synchronize``,
peak memory comes from the CUDA allocator's statistics, and embedding_mean's
throughput is set against a measured device-to-device copy bandwidth.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .timing import Candidate, peak_cuda


class Natives:
    backend = "torch"
    #: torch.compile's backend for the compiled rows: Inductor (what users
    #: get by default); the smoke test asks for "eager", which only traces.
    compile_backend = "inductor"

    def __init__(self, device=None):
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        device = device or "cpu"
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise RuntimeError("no CUDA device (torch.cuda.is_available() is False)")
            self.dev = torch.device(device)
            if self.dev.index is None:
                self.dev = torch.device("cuda", torch.cuda.current_device())
            self.device = str(self.dev)
            self.memory_tool = "torch.cuda.max_memory_allocated"
            self.sync: Callable[[], Any] | None = lambda: torch.cuda.synchronize(self.dev)
            self.copy_bandwidth: Callable[[], Any] | None = self._copy_bandwidth
        else:
            self.dev = torch.device("cpu")
            self.device = "cpu"
            self.memory_tool = ""
            self.sync = None             # CPU kernels return when they are done
            self.copy_bandwidth = None
        self._bw = None

    def put(self, x):
        return self.torch.from_numpy(x).to(self.dev)

    def put_sparse(self, csr):
        t = self.torch
        x = t.sparse_csr_tensor(t.from_numpy(csr.indptr), t.from_numpy(csr.indices),
                                t.from_numpy(csr.data), size=csr.shape)
        return x.to(self.dev)

    def peak_memory(self, fn, args):
        if self.dev.type != "cuda":
            return None  # torch keeps no allocator statistics on the CPU
        return peak_cuda(fn, args, self.dev)

    def _copy_bandwidth(self):
        """Device-to-device copy bandwidth (read + write bytes per second) of
        a 1 GiB buffer, the best of a few timed copies."""
        if self._bw is None:
            t = self.torch
            src = t.empty(1 << 28, dtype=t.float32, device=self.dev)
            dst = t.empty_like(src)
            best = float("inf")
            for _ in range(3):
                dst.copy_(src)
            for _ in range(10):
                start, end = t.cuda.Event(enable_timing=True), t.cuda.Event(enable_timing=True)
                start.record()
                dst.copy_(src)
                end.record()
                end.synchronize()
                best = min(best, start.elapsed_time(end) / 1e3)
            self._bw = 2 * src.numel() * src.element_size() / best
            del src, dst
            t.cuda.empty_cache()
        return self._bw

    # -- ops ---------------------------------------------------------------
    def dispatch(self, a, b):
        return [Candidate("native", "native", "torch.mm(a, b)", self.torch.mm, (a, b))]

    def keep_topk(self, x, k):
        return [
            Candidate("native", "native", "torch.topk + scatter", _topk_scatter, (self.torch, x, k)),
            Candidate("naive", "naive", "argsort + assignment", _argsort_way, (self.torch, x, k)),
        ]

    def embedding_mean(self, table, ids):
        return [
            Candidate("native", "native", "F.embedding_bag(mean, padding_idx=0)", _embedding_bag,
                      (self.F, table, ids)),
            Candidate("naive", "naive", "table[ids] * mask, sum", _gather_mean, (table, ids)),
        ]

    def sparse_dot(self, x, w):
        return [
            Candidate("native", "native", "x @ w (torch CSR)", _matmul, (x, w)),
            Candidate("naive", "naive", "x.to_dense() @ w", _dense_matmul, (x, w)),
        ]

    # -- compiled (torch.compile) --------------------------------------------
    @property
    def compiler(self):
        return f"torch.compile[{self.compile_backend}]"

    def compiled_natives(self, k):
        torch, F = self.torch, self.F
        return {
            "keep_topk": ("torch.topk + scatter", lambda x: _topk_scatter(torch, x, k)),
            "embedding_mean": ("F.embedding_bag(mean, padding_idx=0)",
                               lambda table, ids: _embedding_bag(F, table, ids)),
        }

    def graph_breaks(self, fn, args):
        """(graph breaks, first reasons) from ``torch._dynamo.explain`` (a
        trace without a backend), or (None, [why]) when explain fails.
        Resets Dynamo after, so explain's cache entries never serve a
        compiled call: call it for every function before compiling any."""
        dynamo = self.torch._dynamo
        try:
            ex = dynamo.explain(fn)(*args)
            out: tuple[int | None, list[str]] = int(ex.graph_break_count), [str(getattr(r, "reason", r)).splitlines()[0][:200]
                                              for r in ex.break_reasons[:3]]
        except Exception as e:
            out = None, [f"explain failed: {type(e).__name__}: {_first_line(e)}"]
        dynamo.reset()
        return out

    def compile(self, fn, args):
        """(compiled fn, info): the first compiled call's seconds.  Compiled
        without fullgraph, so an op that breaks the graph is timed as a user
        would run it (compiled pieces around eager ones; graph_breaks reports
        them); an op that fails to compile is reported, not fatal."""
        f = self.torch.compile(fn, backend=self.compile_backend)
        t0 = time.perf_counter()
        try:
            f(*args)
            if self.sync is not None:
                self.sync()
        except Exception as e:
            return None, {"compile_s": None, "error": f"{type(e).__name__}: {_first_line(e)}"}
        return f, {"compile_s": time.perf_counter() - t0, "error": None}


def _first_line(e, n=300):
    s = str(e).strip()
    return s.splitlines()[0][:n] if s else ""


def _topk_scatter(torch, x, k):
    vals, idx = torch.topk(x, k, dim=-1)
    return torch.full_like(x, -float("inf")).scatter_(-1, idx, vals)


def _argsort_way(torch, x, k):
    idx = torch.argsort(x, dim=-1, descending=True)[:, :k]
    rows = torch.arange(x.shape[0], device=x.device)[:, None]
    out = torch.full_like(x, -float("inf"))
    out[rows, idx] = x[rows, idx]
    return out


def _embedding_bag(F, table, ids):
    return F.embedding_bag(ids, table, mode="mean", padding_idx=0)


def _gather_mean(table, ids):
    mask = (ids != 0).to(table.dtype)
    total = (table[ids] * mask[:, :, None]).sum(dim=1)
    return total / mask.sum(dim=1).clamp(min=1)[:, None]


def _matmul(x, w):
    return x @ w


def _dense_matmul(x, w):
    return x.to_dense() @ w
