"""The performance targets of the project and how a run is held to them.

A target compares two candidates of one case measured side by side: either
a ratio (the unified op's time over the other's) or an overhead (the unified
op's time minus the other's, per call).  Status: ``met``, ``missed`` or
``not run`` (the backend or the candidate was not measured), or ``failed``
(the case raised, e.g. an op that does not compile: the note says how).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    id: str
    title: str
    op: str | None            # None: several ops (see ``ops``)
    backends: tuple          # () = every backend that ran the op
    other: str               # candidate compared with "unified"
    measure: str             # "ratio" | "overhead_us"
    limit: float
    ops: tuple = ()          # with op None: only these ops (() = every op)


TARGETS = (
    Target("dispatch", "dispatch overhead over the native call", "dispatch",
           ("numpy", "torch", "jax"), "native", "overhead_us", 1.0),
    Target("keep_topk/native", "keep_topk vs native top-k + scatter", "keep_topk",
           ("numpy", "torch", "tensorflow"), "native", "ratio", 1.3),
    Target("keep_topk/argsort", "keep_topk vs the argsort way", "keep_topk",
           ("numpy", "torch", "tensorflow"), "naive", "ratio", 0.2),
    Target("embedding_mean/native", "embedding_mean vs torch embedding_bag", "embedding_mean",
           ("torch",), "native", "ratio", 1.2),
    Target("embedding_mean/gather", "embedding_mean vs the naive gather", "embedding_mean",
           ("numpy",), "naive", "ratio", 0.5),
    Target("sparse_dot", "sparse_dot vs the native sparse product", "sparse_dot",
           ("numpy", "torch", "tensorflow"), "native", "ratio", 1.2),
    Target("jax/keep_topk", "keep_topk vs lax.top_k + scatter, eager", "keep_topk",
           ("jax",), "native", "ratio", 1.2),
    Target("jax/embedding_mean", "embedding_mean vs the masked gather, eager", "embedding_mean",
           ("jax",), "native", "ratio", 1.2),
    Target("jax/sparse_dot", "sparse_dot vs BCOO @ w, eager", "sparse_dot",
           ("jax",), "native", "ratio", 1.2),
    Target("compiled", "unified op vs native op inside the same compiler", "compiled",
           ("torch", "tensorflow", "jax"), "native", "ratio", 1.1),
    Target("dask/one chunk", "dask, one chunk, computed (synchronous) vs numpy's native call", None,
           ("dask",), "native", "ratio", 1.3, ops=("keep_topk", "embedding_mean", "sparse_dot")),
    Target("theano/cached", "theano cached eager call vs a compiled function", None,
           ("theano",), "native", "ratio", 2.0),
    Target("import", "import unibackend vs import numpy", "import", (), "numpy", "ratio", 1.3),
    Target("keras/train_step", "Keras training step: unibackend.keras layers vs the keras.ops model",
           "keras_train", ("torch", "tensorflow", "jax"), "keras_ops", "ratio", 1.1),
)


def _value(case, target):
    rows = {r["name"]: r for r in case["candidates"]}
    other = rows.get(target.other)
    if other is None or "unified" not in rows:
        return None
    if target.measure == "overhead_us":
        return other["unified_overhead_s"] * 1e6
    return other["unified_ratio"]


def evaluate(cases, import_result=None, backends_run=(), device="cpu"):
    """One row per (target, case) measured, plus ``not run`` rows for the
    target's backends that did not run."""
    out = []
    for t in TARGETS:
        if t.id == "import":
            if import_result is None:
                out.append(_row(t, "-", "", None, "not run"))
            else:
                v = import_result["ratio"]
                out.append(_row(t, "-", "fresh interpreter, wall", v, _status(t, v)))
            continue
        seen = set()
        for i, case in enumerate(cases):
            if case.get("process"):          # peer subprocess cases: no targets
                continue
            if t.op is not None and case["op"] != t.op:
                continue
            if t.ops and case["op"] not in t.ops:
                continue
            if t.backends and case["backend"] not in t.backends:
                continue
            if case.get("large") or case.get("report_only"):
                continue
            where = case["label"] if t.op else f"{case['op']} {case['label']}"
            if case.get("error"):
                # The op ran and failed (a plugin defect, an op that does not
                # compile): a row of its own, never a silent "not run".
                seen.add(case["backend"])
                row = _row(t, case["backend"], where, None, "failed", note=case["error"], device=case["device"])
                row["case_index"] = i
                out.append(row)
                continue
            v = _value(case, t)
            if v is None:
                continue
            seen.add(case["backend"])
            row = _row(t, case["backend"], where, v, _status(t, v), device=case["device"])
            row["case_index"] = i
            if row["status"] == "met":
                row["note"] = compile_note(case)
            row["short"] = " ".join(x for x in ("" if t.op else case["op"], case.get("short", "")) if x)
            out.append(row)
        for b in t.backends:
            if b not in seen:
                why = "backend not run" if b not in backends_run else "not measured"
                out.append(_row(t, b, "", None, "not run", note=why))
    return out


def compile_note(case):
    """Graph breaks of the unified side of a compiled case, '' if none."""
    info = (case.get("compile") or {}).get("unified") or {}
    n = info.get("graph_breaks")
    if not n:
        return ""
    why = info.get("break_reasons") or []
    return f"{n} graph break{'s' if n > 1 else ''}" + (f": {why[0]}" if why else "")


def _status(t, v):
    return "met" if v <= t.limit else "missed"


def _row(t, backend, case, value, status, note="", device=""):
    unit = "µs" if t.measure == "overhead_us" else "x"
    return {
        "id": t.id, "title": t.title, "backend": backend, "case": case, "device": device,
        "measure": t.measure, "value": value, "limit": t.limit, "unit": unit,
        "status": status, "note": note,
    }
