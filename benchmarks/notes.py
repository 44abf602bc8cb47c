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
    "compiled@jax@keep_topk": "one lax.top_k of k + 1, a NaN test over x (a read-only pass: a NaN with its "
                              "sign bit set is ranked last by top_k), then native's scatter under lax.cond; "
                              "1.23-1.30x paired at load ~10 (was 1.44x in the same script): the NaN pass is "
                              "what is left",
    "compiled@tensorflow@keep_topk": "was XLA's CPU top_k on int32 sort keys, and a sliced top_k output: both a "
                                     "full sort (~100x); now float32 top_k + min, a count pass, tf.cond to the exact "
                                     "rule and one fused select: the count pass and the select are what is left",
    "compiled@torch@keep_topk": "topk(k+1) and torch.cond on 'a tie at the k-th place' (CPU graphs): "
                                "1.05-1.16x on a quiet machine; the exact branch and the cond cost the rest",
    "dask/one chunk@dask": "dask's fixed per-graph cost (~1.3 ms) and the bench's from_array(csr) copying the "
                           "CSR matrix on every compute (sparse_dot); blocks are no longer concatenated",
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
