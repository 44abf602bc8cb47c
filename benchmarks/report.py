"""The run's outputs: a rich table on the terminal, Markdown, JSON, PNG plots."""
from __future__ import annotations

import json
import os

STYLES = {"met": "green", "missed": "red", "failed": "bold red", "not run": "dim"}
KIND_ORDER = {"unified": 0, "native": 1, "naive": 2, "peer": 3, "reference": 4}


def fmt_time(s):
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def fmt_bytes(b):
    if b is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b} B"


def fmt_value(t):
    if t["value"] is None:
        return "-"
    if t["unit"] == "µs":
        return f"{t['value']:+.2f} µs"
    return f"{t['value']:.3g}x"


def fmt_limit(t):
    return f"<= {t['limit']:g} µs" if t["unit"] == "µs" else f"<= {t['limit']:g}x"


# --------------------------------------------------------------------------
# tables as rows of strings (shared by rich and Markdown)

def timing_rows(result):
    rows = []
    for c in result["cases"]:
        where = c["backend"] + (f" ({c['process']})" if c.get("process") else "")
        if c["device"] != "cpu":
            where += f" [{c['device']}]"
        for r in sorted(c["candidates"], key=lambda r: KIND_ORDER.get(r["kind"], 9)):
            ratio = "1" if r["name"] == "unified" else f"{r['unified_ratio']:.3g}"
            rows.append([c["op"], c["label"], where, r["name"], r["call"], fmt_time(r["median_s"]), ratio])
    return ["op", "case", "backend", "candidate", "call", "median", "unified ÷ this"], rows


def target_rows(result):
    runs = len(result["meta"].get("runs", ())) > 1
    rows = []
    for t in result["targets"]:
        row = [t["title"], t["backend"], t["case"], fmt_value(t), fmt_limit(t), t["status"]]
        if runs:
            row.append(fmt_runs(t))
        rows.append(row + [t["note"]])
    head = ["target", "backend", "case", "measured", "target", "status"]
    return head + (["across runs"] if runs else []) + ["note"], rows


def fmt_runs(t):
    """'1.05x 1.12x 1.08x: spread 6%, noisy' (the runs of a combined report)."""
    vals = t.get("runs")
    if not vals:
        return "-"
    one = [fmt_value({**t, "value": v}) for v in vals]
    spread = t.get("spread")
    tail = "" if spread is None else (f"spread {spread:.2f} µs" if t["unit"] == "µs" else f"spread {spread:.0%}")
    if t.get("noisy"):
        tail += ", noisy"
    return " ".join(one) + (f": {tail}" if tail else "")


#: A combined target is noisy when its runs disagree about met/missed, or
#: spread over more than this share of their median (ratios) or this many
#: µs (overheads).
NOISY_RATIO, NOISY_US = 0.10, 0.5


def combine(results):
    """One report from several runs of the same command (``--runs N``, or
    ``--report a.json,b.json``): every target's value is the median over the
    runs that measured it, its status is the median's, and the row lists
    each run's value and flags the noisy ones.  Timings, compile times and
    memory are the first run's."""
    import statistics

    from .targets import compile_note

    base = json.loads(json.dumps(results[0]))
    by_key: dict[tuple, list] = {}
    for r in results:
        for t in r["targets"]:
            if t["value"] is not None:
                by_key.setdefault((t["id"], t["backend"], t["case"]), []).append(t)
    for t in base["targets"]:
        got = by_key.get((t["id"], t["backend"], t["case"]), [])
        if not got:
            continue
        vals = [x["value"] for x in got]
        mid = statistics.median(vals)
        t["value"], t["runs"] = mid, vals
        t["status"] = "met" if mid <= t["limit"] else "missed"
        spread = max(vals) - min(vals)
        t["spread"] = spread if t["unit"] == "µs" else spread / mid if mid else None
        limit = NOISY_US if t["unit"] == "µs" else NOISY_RATIO
        t["noisy"] = len({x["status"] for x in got}) > 1 or (t["spread"] or 0) > limit
        if t["status"] == "met":  # (a missed one gets its note from the runner's _explain)
            t["note"] = compile_note(base["cases"][t["case_index"]]) if "case_index" in t else ""
    base["meta"]["runs"] = [{k: r["meta"].get(k) for k in
                             ("date", "load_average_start", "load_average_end", "seconds", "cpu_seconds")}
                            for r in results]
    return base


def memory_rows(result):
    rows = []
    for c in result["cases"]:
        mem = c.get("memory")
        if not mem:
            continue
        by = {m["name"]: m["peak_bytes"] for m in mem}
        for m in mem:
            share = f"{m['peak_bytes'] / by['naive']:.3g}" if by.get("naive") else "-"
            rows.append([c["label"], c["backend"] + (f" [{c['device']}]" if c["device"] != "cpu" else ""),
                         m["name"], fmt_bytes(m["peak_bytes"]), share, c.get("memory_tool", "")])
    return ["case", "backend", "candidate", "peak memory", "÷ naive", "counted by"], rows


def first_call_rows(result):
    rows = []
    for c in result["cases"]:
        if c["backend"] != "theano" or c.get("process"):
            continue
        by = {r["name"]: r for r in c["candidates"]}
        comp = by.get("native")
        rows.append([c["op"], c["label"], fmt_time(c.get("first_call_s")), fmt_time(by["unified"]["median_s"]),
                     fmt_time(comp["median_s"]) if comp else "-",
                     fmt_time(comp.get("setup_s")) if comp else "-",
                     f"{comp['unified_ratio']:.3g}" if comp else "-"])
    return ["op", "case", "eager first call", "eager cached call", "compiled call",
            "hand compile", "cached ÷ compiled"], rows


def compiled_rows(result):
    rows = []
    for c in result["cases"]:
        if c["op"] != "compiled":
            continue
        info = c.get("compile", {})
        u, n = info.get("unified", {}), info.get("native", {})
        by = {r["name"]: r for r in c["candidates"]}
        ratio = f"{by['native']['unified_ratio']:.3g}" if "native" in by else "-"
        breaks = "-" if u.get("graph_breaks") is None else str(u["graph_breaks"])
        status = c.get("error") or ""
        rows.append([c["backend"], c.get("compiler", ""), c["label"], fmt_time(u.get("compile_s")),
                     fmt_time(n.get("compile_s")), breaks, ratio, status])
    return ["backend", "compiler", "case", "compile (unified)", "compile (native)",
            "graph breaks (unified)", "unified ÷ native", "error"], rows


def scaling_rows(result):
    rows = []
    for c in result["cases"]:
        sc = c.get("scaling")
        if not sc:
            continue
        by = {r["name"]: r for r in c["candidates"]}
        rows.append([c["label"], fmt_time(by["1 worker"]["median_s"]), fmt_time(by["unified"]["median_s"]),
                     f"{sc['speedup_2_over_1']:.2f}x",
                     ", ".join(f"{w}: {s:.1f} s" for w, s in sorted(sc["cluster_start_s"].items()))])
    return ["case", "1 worker", "2 workers", "speedup (1 ÷ 2)", "cluster start"], rows


def _spill_label(r):
    if "barriers" in r:
        return "spill, barriers" if r["barriers"] else "spill, no barriers"
    return "spill, block order" if r["block_order"] else "spill, dask's order"  # a bench.json from before the barriers


def sharded_rows(result):
    rows = []
    for c in result["cases"]:
        for r in (c.get("sharded") or {}).get("runs", []):
            what = ("scale proof" if r.get("proof") else "largest table" if r.get("largest_try")
                    else _spill_label(r) if r.get("spill_demo") else "")
            check = (f"{r['max_diff_over_tol']:.2g} of tol" if "max_diff_over_tol" in r else "-")
            rows.append([r["op"], what, str(r["workers"]), fmt_bytes(r["table_bytes"]),
                         f"{r['table_blocks']} x {fmt_bytes(r['block_bytes'])}", f"{r['ids_rows']:,}", str(r["tasks"]),
                         fmt_time(r["seconds"]), f"{fmt_bytes(r['peak_worker_bytes'])} / {fmt_bytes(r['limit_bytes'])}",
                         fmt_bytes(r["disk_write_bytes"]), fmt_bytes(r["disk_read_bytes"]), str(r["workers_lost"]), check])
    return ["op", "run", "workers", "table", "blocks", "rows", "tasks", "time", "peak worker / limit",
            "spilled", "read back", "lost", "vs numpy"], rows


def bandwidth_rows(result):
    rows = []
    for c in result["cases"]:
        bw = c.get("bandwidth")
        if not bw:
            continue
        for name, b in bw["rows"].items():
            rows.append([c["label"], c["backend"] + f" [{c['device']}]", name,
                         f"{b['bytes_per_s'] / 1e9:.1f} GB/s", f"{bw['copy_bytes_per_s'] / 1e9:.1f} GB/s",
                         f"{b['fraction_of_copy']:.2f}"])
    return ["case", "backend", "candidate", "throughput", "copy bandwidth", "fraction"], rows


SECTIONS = (
    ("Targets", target_rows),
    ("Timings (median per call; ratios paired per round, same process)", timing_rows),
    ("Peak memory of embedding_mean (one call)", memory_rows),
    ("Theano: first call (compile) and cached calls", first_call_rows),
    ("embedding_mean throughput vs device copy bandwidth", bandwidth_rows),
    ("Compiled: compile times (first call) and graph breaks", compiled_rows),
    ("Dask: embedding_mean on a LocalCluster, 1 vs 2 workers (one thread each)", scaling_rows),
    ("Dask: tables larger than a worker (row blocks; LocalCluster, one thread per worker)", sharded_rows),
)


# --------------------------------------------------------------------------

def print_rich(result, file=None):
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        print(to_markdown(result), file=file)
        return
    console = Console(file=file, width=max(160, Console().width))
    console.print(escape(_header(result["meta"])))
    for title, fn in SECTIONS:
        head, rows = fn(result)
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        for h in head:
            table.add_column(h, justify="right" if h in ("median", "measured", "peak memory") else "left")
        for r in rows:
            style = STYLES.get(r[5]) if fn is target_rows else None
            table.add_row(*[escape(str(c)) for c in r], style=style)
        console.print(table)
    for line in result.get("skipped", []):
        console.print(f"[dim]skipped {escape(line['backend'])}: {escape(line['reason'])}[/dim]")


def _md_table(head, rows):
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(out)


def _header(meta):
    runs = meta.get("runs") or []
    if len(runs) > 1:
        each = "; ".join(f"run {i}: {r['date']}, load {r['load_average_start']}-{r['load_average_end']}, "
                         f"{r['seconds']} s" for i, r in enumerate(runs, 1))
        return (f"`{meta['command']}`: {len(runs)} runs on {meta['machine']}; targets: the median of the "
                f"runs; timings and compile times: run 1 ({each})\n\n"
                + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    return (f"`{meta['command']}` on {meta['machine']}, {meta['date']}; threads: {meta['threads']}; "
            f"load average {meta.get('load_average_start')} at the start, {meta.get('load_average_end')} "
            f"at the end; {meta.get('seconds')} s wall, {meta.get('cpu_seconds')} s CPU\n\n"
            + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))


def to_markdown(result):
    parts = ["# unibackend bench", "", _header(result["meta"]), ""]
    for title, fn in SECTIONS:
        head, rows = fn(result)
        if not rows:
            continue
        parts += [f"## {title}", "", _md_table(head, rows), ""]
    for line in result.get("skipped", []):
        parts.append(f"- skipped {line['backend']}: {line['reason']}")
    return "\n".join(parts).rstrip() + "\n"


def write(result, out_dir, plots=True):
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    p = os.path.join(out_dir, "bench.json")
    with open(p, "w") as f:
        json.dump(result, f, indent=1, default=str)
    paths.append(p)
    p = os.path.join(out_dir, "bench.md")
    with open(p, "w") as f:
        f.write(to_markdown(result))
    paths.append(p)
    if plots:
        paths += draw(result, out_dir)
    return paths


# --------------------------------------------------------------------------
# plots (matplotlib, Agg; small PNGs)

COLORS = {"unified": "#1f77b4", "native": "#2ca02c", "naive": "#d62728", "peer": "#9467bd"}


def draw(result, out_dir):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    p = _plot_targets(plt, result, os.path.join(out_dir, "targets.png"))
    if p:
        paths.append(p)
    p = _plot_times(plt, result, os.path.join(out_dir, "times.png"))
    if p:
        paths.append(p)
    return paths


def _plot_targets(plt, result, path):
    rows = [t for t in result["targets"] if t["value"] is not None]
    if not rows:
        return None
    labels, vals, cols = [], [], []
    for t in rows:
        if t["unit"] == "µs":
            v = max(t["value"], 1e-3) / t["limit"]     # overhead as a share of the 1 µs budget
        else:
            v = t["value"] / t["limit"]
        backend = "" if t["backend"] == "-" else t["backend"]
        labels.append(" · ".join(x for x in (t["id"], f"{backend} {t.get('short', '')}".strip()) if x))
        vals.append(v)
        cols.append("#2ca02c" if t["status"] == "met" else "#d62728")
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(rows) + 1.0))
    y = range(len(rows))
    ax.barh(list(y), vals, color=cols)
    # A combined report (several runs): a whisker from the lowest to the highest run.
    span = [(i, min(t["runs"]), max(t["runs"])) for i, t in enumerate(rows) if len(t.get("runs") or ()) > 1]
    for i, lo_v, hi_v in span:
        t = rows[i]
        scale = t["limit"]
        lo_v, hi_v = (max(lo_v, 1e-3) / scale, max(hi_v, 1e-3) / scale)
        ax.plot([lo_v, hi_v], [i, i], color="black", lw=1)
        vals += [lo_v, hi_v]
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xscale("log")
    import matplotlib.ticker

    lo, hi = min(vals + [1.0]) / 1.5, max(vals + [1.0]) * 1.5
    ax.set_xlim(lo, hi)
    ticks = [v for v in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if lo <= v <= hi]
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("measured ÷ target  (left of the line: met)")
    ax.set_title("unibackend bench: targets", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _plot_times(plt, result, path):
    import matplotlib.ticker

    cases = [c for c in result["cases"] if not c.get("process") and c["candidates"]]
    ops = []
    for c in cases:
        if c["op"] not in ops:
            ops.append(c["op"])
    if not ops:
        return None
    ncols = 2 if len(ops) > 1 else 1
    nrows = (len(ops) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(9, 3.0 * nrows), squeeze=False)
    for ax, op in zip(axes.flat, ops):
        mine = [c for c in cases if c["op"] == op]
        groups = [f"{c['backend']}\n{c.get('short', '')}".strip() for c in mine]
        top = max(r["median_s"] for c in mine for r in c["candidates"] if r["kind"] in COLORS)
        unit, scale = ("ms", 1e3) if top >= 1e-3 else ("µs", 1e6)
        kinds = ["unified", "native", "naive", "peer"]
        width = 0.8 / len(kinds)
        for j, kind in enumerate(kinds):
            xs, hs = [], []
            for i, c in enumerate(mine):
                r = next((r for r in c["candidates"] if r["kind"] == kind), None)
                if r is not None:
                    xs.append(i + (j - 1.5) * width)
                    hs.append(r["median_s"] * scale)
            if xs:
                ax.bar(xs, hs, width, label=kind, color=COLORS[kind])
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels(groups, fontsize=6)
        ax.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.set_ylabel(f"{unit} per call", fontsize=7)
        size = mine[0]["label"].replace(f" {mine[0].get('short', '')}", "") if mine[0].get("short") else mine[0]["label"]
        ax.set_title(f"{op}  ({size})", fontsize=8)
        ax.tick_params(axis="y", which="both", labelsize=6)
    for ax in list(axes.flat)[len(ops):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
