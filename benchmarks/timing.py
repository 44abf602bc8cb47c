"""Side-by-side timing and peak memory.

Every candidate of a case is timed in the same process, in rounds: each round
times one batch of every candidate, in an order that rotates from round to
round, so that a noisy neighbour slows all of them alike.  A candidate's time
is the median over rounds of its per-call time; a ratio between two
candidates is the median over rounds of the ratio of their batch times
(paired), which is what survives a shared, noisy machine.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Candidate:
    """One way of computing an op: ``fn(*args)`` is timed."""

    name: str                # "unified", "native", "naive", "autoray", "keras", ...
    kind: str                # "unified" | "native" | "naive" | "peer"
    call: str                # the call as a user writes it, for the table
    fn: object
    args: tuple = ()
    setup_s: float | None = None    # time to build it (a hand-compiled function's compile)


@dataclass
class Timing:
    """Per-call seconds of one candidate, one entry per round."""

    name: str
    kind: str
    call: str
    number: int                        # calls per batch
    rounds: list = field(default_factory=list)

    @property
    def median(self):
        return statistics.median(self.rounds)


def _batch(fn, args, number, sync):
    t0 = time.perf_counter()
    for _ in range(number):
        fn(*args)
    if sync is not None:
        sync()
    return time.perf_counter() - t0


def calibrate(c, min_batch_s, sync=None, max_number=1_000_000):
    """(calls per batch so that one batch lasts at least ``min_batch_s``,
    the seconds that batch took)."""
    c.fn(*c.args)  # warm-up: caches, lazy imports, compiled functions
    if sync is not None:
        sync()
    number = 1
    while True:
        t = _batch(c.fn, c.args, number, sync)
        if t >= min_batch_s or number >= max_number:
            return number, t
        # Aim a little above the goal so one more try is usually enough.
        number = min(max_number, max(number * 2, int(number * 1.2 * min_batch_s / max(t, 1e-9))))


def interleave(cands, repeats, min_batch_s, sync=None, budget_s=None, min_repeats=3):
    """Time every candidate ``repeats`` rounds, interleaved (fewer, but at
    least ``min_repeats``, when the rounds would outlast ``budget_s``).
    Returns {name: Timing}."""
    numbers, spans = [], []
    for c in cands:
        n, t = calibrate(c, min_batch_s, sync)
        numbers.append(n)
        spans.append(t)
    # The naive formulations are slow and far from any limit: they are timed
    # in the first ``min_repeats`` rounds only, and the budget goes to the rest.
    few = [c.kind == "naive" for c in cands]
    if budget_s is not None:
        fast = sum(t for t, f in zip(spans, few) if not f)
        repeats = max(min(repeats, min_repeats), min(repeats, int(budget_s / max(fast, 1e-9))))
    out = {c.name: Timing(c.name, c.kind, c.call, n) for c, n in zip(cands, numbers)}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            order = list(range(len(cands)))
            shift = r % len(cands)
            order = order[shift:] + order[:shift]
            if r % 2:
                order.reverse()
            for i in order:
                if few[i] and r >= min_repeats:
                    continue
                c = cands[i]
                t = _batch(c.fn, c.args, numbers[i], sync)
                out[c.name].rounds.append(t / numbers[i])
            gc.collect()
    finally:
        if enabled:
            gc.enable()
    return out


def paired_ratio(a, b):
    """Median over rounds of a's time / b's time (both Timing; rounds are
    aligned from the first, so a candidate timed in fewer rounds pairs with
    the same rounds of the other)."""
    return statistics.median(x / y for x, y in zip(a.rounds, b.rounds))


def paired_diff(a, b):
    """Median over rounds of a's time - b's time, seconds per call."""
    return statistics.median(x - y for x, y in zip(a.rounds, b.rounds))


def peak_tracemalloc(fn, args=()):
    """Peak bytes traced by tracemalloc while ``fn(*args)`` runs (numpy and
    scipy report their buffers to tracemalloc), above what was held before."""
    import tracemalloc

    gc.collect()
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        out = fn(*args)
        _, peak = tracemalloc.get_traced_memory()
        del out
    finally:
        if not started:
            tracemalloc.stop()
    return peak - base


def peak_cuda(fn, args, device):
    """Peak bytes the torch CUDA allocator held while ``fn(*args)`` ran,
    above what was allocated before."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn(*args)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    return peak - base
