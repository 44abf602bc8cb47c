"""Compiled rows: the unified op inside the backend's compiler against the
native formulation inside the same compiler, same inputs.

    torch: torch.compile (Inductor on the CPU)
    tensorflow: tf.function(jit_compile=True) (XLA)
    jax: jax.jit

Each side is compiled once, its first call timed as the compile time
(reported apart, never mixed into the per-call times), then both are timed
side by side with the eager unified op as a reference.  On torch, Dynamo's
graph breaks of each side are counted first (``torch._dynamo.explain``).  A
side that fails to compile gives a case with ``error`` and no timings: the
run goes on and the targets table shows it as failed.
"""
from __future__ import annotations

import unibackend as ub

from . import cases as K
from .timing import Candidate

#: The ops compiled: the two whose checks and tie rules cost the most.
COMPILED_OPS = ("keep_topk", "embedding_mean")
#: Each at the case's size and at 4x its rows (keep_topk 2048x4096,
#: embedding_mean n=16,384): the 1.1x target holds at both (issue 21).
COMPILED_SCALES = (1, 4)


def _scaled(size, scale):
    """``size`` with keep_topk's rows and embedding_mean's n times ``scale``."""
    if scale == 1:
        return size
    return {**size, "keep_topk": {**size["keep_topk"], "rows": size["keep_topk"]["rows"] * scale},
            "embedding_mean": {**size["embedding_mean"], "n": size["embedding_mean"]["n"] * scale}}


def _inputs(nat, size, op):
    if op == "keep_topk":
        p = size["keep_topk"]
        k = p["ks"][0]
        x = nat.put(K.topk_inputs(p))
        return (x,), {"rows": p["rows"], "cols": p["cols"], "k": k}, f"{p['rows']}x{p['cols']} k={k}", \
            (lambda x: ub.keep_topk(x, k)), f"ub.keep_topk(x, {k})"
    p = size["embedding_mean"]
    table0, ids0 = K.embedding_inputs(p)
    args = (nat.put(table0), nat.put(ids0))
    label = f"n={p['n']} L={p['L']} V={p['V']:,} d={p['d']}"
    return args, dict(p), label, (lambda table, ids: ub.embedding_mean(table, ids)), \
        "ub.embedding_mean(table, ids)"


def case_compiled(nat, peer, size, settings):
    if not hasattr(nat, "compile"):
        return []
    out = []
    k = size["keep_topk"]["ks"][0]
    natives = nat.compiled_natives(k)
    for op, scale in [(op, scale) for scale in COMPILED_SCALES for op in COMPILED_OPS]:
        args, params, label, ub_fn, ub_call = _inputs(nat, _scaled(size, scale), op)
        native_call, native_fn = natives[op]
        rec = {"op": "compiled", "label": f"{op} {label}", "short": op, "params": params,
               "backend": nat.backend, "device": nat.device, "candidates": [], "first_call_s": None,
               "compiler": nat.compiler, "compiled_op": op}
        info: dict[str, dict] = {"unified": {}, "native": {}}
        if hasattr(nat, "graph_breaks"):   # before any compile: explain resets Dynamo
            for side, fn in (("unified", ub_fn), ("native", native_fn)):
                n, reasons = nat.graph_breaks(fn, args)
                info[side].update(graph_breaks=n, break_reasons=reasons)
        compiled = {}
        for side, fn in (("unified", ub_fn), ("native", native_fn)):
            f, i = nat.compile(fn, args)
            info[side].update(i)
            compiled[side] = f
        rec["compile"] = info
        errors = [f"{side}: {info[side]['error']}" for side in ("unified", "native") if info[side].get("error")]
        if errors:
            rec["error"] = "failed to compile: " + "; ".join(errors)
            out.append(rec)
            continue
        u = Candidate("unified", "unified", f"{nat.compiler}({ub_call})", compiled["unified"], args,
                      setup_s=info["unified"]["compile_s"])
        others = [
            Candidate("native", "native", f"{nat.compiler}({native_call})", compiled["native"], args,
                      setup_s=info["native"]["compile_s"]),
            Candidate("eager", "reference", f"{ub_call}, eager", ub_fn, args),
        ]
        timed = K.measure("compiled", rec["label"], params, nat, u, others, settings)
        rec["candidates"] = timed["candidates"]
        out.append(rec)
    return out
