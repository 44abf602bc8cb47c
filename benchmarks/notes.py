"""Why a target is missed: the cause found by profiling, and what the run
itself shows about it (computed from the same run, so it never quotes a
number from another machine).  docs/performance.md has the details."""
from __future__ import annotations

#: "target id@backend" (or "id@backend@op" for one op's rows) -> the cause found by profiling (cProfile, 200k calls
#: or 10 calls of the big ops; docs/performance.md has the profiles).
CAUSES = {
    "dispatch@numpy": "Python-level dispatch: resolve() (type lookups, the contextvar, the instance), "
                      "two plain_float_dtype() calls and the shape checks in ops.dot",
    "dispatch@torch": "Python-level dispatch: ops.dot's type lookup of the plugin's fast_dot and the "
                      "plugin's dtype/layout checks before torch.mm",
    "keep_topk/native@numpy": "numpy plugin: the exact tie path (a cumsum over the tie mask) runs when a "
                              "tie straddles the k-th value or a NaN is kept",
    "jax/keep_topk@jax": "fixed (b6debf8): lax.top_k on the floats with the k-th value as the min of the k "
                         "values, the exact NaN/tie rule only under lax.cond; before, XLA's CPU top_k on int32 "
                         "sort keys was ~80x its float32 top_k (388 ms vs 4.9 ms at 512x4096, k=4, jitted alone)",
    "compiled@jax@keep_topk": "one lax.top_k of k + 1, a NaN test over x (a second, read-only pass: XLA's CPU top_k "
                              "ranks a NaN with its sign bit set last, so its output cannot prove x NaN-free), then "
                              "native's scatter under lax.cond; without the NaN test 0.92-0.98x, which the pinned "
                              "negative-NaN test refutes",
    "compiled@tensorflow@keep_topk": "one top_k of k + 1 on float32, a NaN test over x (a second, read-only pass: "
                                     "XLA's CPU top_k ranks a NaN with its sign bit set last), tf.cond to the exact "
                                     "rule, native's scatter; the pieces without the NaN test measured 1.00-1.07x",
    "compiled@torch@keep_topk": "topk(k+1) and torch.cond on 'a tie at the k-th place' (CPU graphs): "
                                "1.05-1.16x on a quiet machine; the exact branch and the cond cost the rest",
    "dask/one chunk@dask": "dask's own cost per compute: a one-task array holding the answer already takes "
                           "~1 ms on the synchronous scheduler, so no one-chunk dask graph reads under "
                           "~1.3x scipy's ~2-4 ms product (python -m unibackend.benchmarks.dask_floor); ub's "
                           "graph is that one task holding x and w",
    "dispatch@jax": "jnp.dot itself costs 60-90 µs eagerly here; the rest is ub's checks and the "
                    "block_until_ready both sides pay; measured under load (an empty call took 0.8 µs)",
    "keras/train_step@jax": "inside Keras' jitted train step EmbeddingMean's id-range check is a host callback "
                            "(jax.debug.callback) on every step; with the check stubbed out the step took ~1.17x "
                            "the keras.ops one (not interleaved, loaded machine); the rest is keep_topk's exact "
                            "tie/NaN rule under lax.cond against a bare top_k",
    "sparse_dot@torch": "the plugin's own call is ~1.02x of x @ w when profiled alone; the rest is "
                        "Python checks in ops.sparse_dot (~0.2 ms) and run-to-run noise of a 5 ms op",
}


def _rows(case):
    return {r["name"]: r for r in case["candidates"]}


def explain(target, result):
    """A line for a missed target: the known cause, and for targets out of
    reach here, the number from this run that shows it."""
    parts = []
    case = result["cases"][target["case_index"]] if "case_index" in target else None
    key = f"{target['id']}@{target['backend']}"
    cause = CAUSES.get(f"{key}@{target.get('short', '')}") or CAUSES.get(key)  # per op first
    if case is not None:
        rows = _rows(case)
        if target["id"] == "keep_topk/argsort" and "native" in rows and "naive" in rows:
            native_vs_naive = rows["naive"]["unified_ratio"] / rows["native"]["unified_ratio"]
            if native_vs_naive > target["limit"]:
                parts.append(f"out of reach here: the native top-k + scatter itself takes "
                             f"{native_vs_naive:.2f}x the argsort way")
        if target["id"] == "dispatch" and "python call" in rows:
            u = rows["native"]["unified_overhead_s"]
            unit = rows["python call"]["median_s"]
            if unit > 0:
                parts.append(f"the overhead is {u / unit:.0f} empty Python calls "
                             f"({unit * 1e9:.0f} ns each in this run)")
            if "autoray" in rows:
                # autoray's overhead, timed beside it, is a yardstick that scales
                # with the machine's speed and load the same way.
                peer = rows["native"]["unified_overhead_s"] - rows["autoray"]["unified_overhead_s"]
                if peer > 0:
                    parts.append(f"{u / peer:.2f}x autoray's overhead ({peer * 1e6:.2f} µs) in the same run")
    if case is not None and case.get("op") == "compiled":
        from .targets import compile_note

        note = compile_note(case)
        if note:
            parts.append(note)
    if cause or not parts:
        parts.append(cause or "cause not profiled: see docs/performance.md")
    return "; ".join(parts)
