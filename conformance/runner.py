"""``unibackend conformance``: run the suite, print the op x backend matrix and
every failure as a reproducer, write a report, exit non-zero on any
disagreement.

The checks run directly under hypothesis (no pytest, nothing written to the
cwd); ``pytest --pyargs unibackend.conformance`` runs the same checks.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from typing import Any

from . import engine

STATUS_STYLE = {"pass": "green", "fail": "bold red", "skip": "yellow"}


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="unibackend conformance",
        description="Check every installed backend against the numpy reference on "
        "hypothesis-generated inputs (ties, NaN, +-inf, -0.0, empty batches, COO "
        "duplicates, non-contiguous inputs, ...).  Exit status 1 on any disagreement.",
    )
    p.add_argument("--backends", help="comma-separated backends (default: every installed one; "
                   "a third-party plugin registered in the entry-point group unibackend.backends works too)")
    p.add_argument("--ops", help="comma-separated ops or check names (default: all); "
                   "e.g. keep_topk,sparse_dot ('sparse_dot' includes 'grad sparse_dot')")
    p.add_argument("--profile", choices=sorted(engine.PROFILES), default=engine.DEFAULT_PROFILE,
                   help="hypothesis profile: ci (derandomized, sized for CI; default) or thorough")
    p.add_argument("--max-examples", type=int, help="examples per check and backend (overrides the profile)")
    p.add_argument("--seed", type=int, help="random seed (turns derandomization off)")
    p.add_argument("--modes", default="eager",
                   help="comma-separated call modes: eager (default), compiled (every compile path the backend "
                   "declares: torch.compile fullgraph and dynamic, tf.function graph and XLA, jax.jit, theano's "
                   "function), function (ub.function), vmap (the framework's vmap over a batch of examples), "
                   "grad (the framework's gradient transforms, on the gradient checks), or all; each mode a "
                   "backend has is a column of the matrix, and must agree with the reference")
    p.add_argument("--compiled", action="store_true", help="the same as --modes eager,compiled")
    p.add_argument("--device", help="device for the backends that have devices, e.g. cuda")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run lazy backends (dask) on the dask.distributed cluster at ADDRESS, e.g. tcp://host:8786")
    p.add_argument("--report", help="write a report: FILE.json or FILE.md (another suffix is an error)")
    p.add_argument("--plugin", action="append", default=[], metavar="[NAME=]MODULE:CLASS",
                   help="register a plugin class from its import path, no entry point needed (repeatable); "
                   "its name is NAME, else the class's `name`; then name it in --backends")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="run the backends in N worker processes, one backend per task (default 1: this "
                   "process); the matrix and report are the same")
    p.add_argument("--framework-output", action="store_true",
                   help="let the frameworks' own messages (logs, warnings) reach the screen; by default they go "
                   "to conformance-frameworks.log in the cache directory while the suite runs")
    return p.parse_args(argv)


_MARKUP = re.compile(r"\[/?(?:bold )?(?:red|green|yellow|bold)?\]")


class _PlainConsole:
    """What the runner needs of rich's Console, for an install without rich."""

    is_terminal = False

    def print(self, text="", markup=True, soft_wrap=False):
        if not isinstance(text, str):
            text = "\n".join(text.plain_rows())
        print(_MARKUP.sub("", text) if markup else text)

    def rule(self, title):
        print(f"---- {_MARKUP.sub('', title)} ----")


class _PlainTable:
    def __init__(self, title, columns):
        self.title, self.columns, self.rows = title, columns, []

    def add_row(self, *cells):
        self.rows.append([_MARKUP.sub("", c) for c in cells])

    def plain_rows(self):
        widths = [max(len(r[i]) for r in [self.columns] + self.rows) for i in range(len(self.columns))]
        fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
        return [self.title, fmt(self.columns), fmt(["-" * w for w in widths])] + [fmt(r) for r in self.rows]


def _console():
    try:
        from rich.console import Console
    except ImportError:
        return _PlainConsole()
    con = Console(highlight=False)
    # a log or a pipe gets rich's 80 columns: too narrow for eager and compiled columns
    return con if con.is_terminal else Console(highlight=False, width=240)


def parse_modes(text):
    """``--modes``' names: a tuple of :data:`engine.MODES` (``all``: every one)."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if "all" in names:
        return engine.MODES
    unknown = [m for m in names if m not in engine.MODES]
    if unknown or not names:
        raise ValueError(f"unknown mode(s) {', '.join(unknown) or repr(text)}; known: "
                         f"{', '.join(engine.MODES)}, all")
    return tuple(m for m in engine.MODES if m in names)


def run(backends, checks, *, device=None, profile=engine.DEFAULT_PROFILE, max_examples=None,
        seed=None, progress=None, modes=("eager",), columns=None, keep_compiled=False):
    """Run every check on every backend in every mode it has (``modes``:
    names of :data:`engine.MODES`, one run per compile path); a list of
    :class:`engine.Result`.  ``columns``: only these of a backend's modes
    (``compiled:function``...; a share of the work, ``parallel.py``).
    ``keep_compiled``: each backend keeps its compiled code in the suite's
    cache directory (``Backend.keep_compiled_code``; the command does, a
    process-wide framework setting, so not by default)."""
    results = []
    per_backend = {name: [m for m in engine.backend_modes(name, modes) if columns is None or m in columns]
                   for name in backends}
    for name in backends if keep_compiled else ():
        engine.keep_compiled_code(name, device)
    for check in checks:
        for name in backends:
            for mode in per_backend[name]:
                if progress is not None:
                    progress(check, name if mode == "eager" else f"{name} ({mode})")
                results.append(engine.run_check(check, name, device=device, profile=profile,
                                                max_examples=max_examples, seed=seed, mode=mode))
    return results


def columns(results, backends):
    """The matrix's columns: (backend, mode) pairs, a backend's modes side by side."""
    cols = list(dict.fromkeys((r.backend, r.mode) for r in results))
    return [c for b in backends for c in cols if c[0] == b] or [(b, "eager") for b in backends]


def column_name(backend, mode):
    return backend if mode == "eager" else f"{backend} {mode}"


def matrix_table(results, backends, checks):
    by = {(r.check, r.backend, r.mode): r for r in results}
    cols = columns(results, backends)
    reasons = []
    title = "conformance: each backend against the numpy reference"
    if len({m for _, m in cols}) > 1:
        title += " (one column per backend and call mode)"
    table: Any
    try:
        from rich.table import Table
    except ImportError:
        table = _PlainTable(title, ["check"] + [column_name(*c) for c in cols])
    else:
        table = Table(title=title, title_justify="left")
        table.add_column("check")
        for c in cols:
            table.add_column(column_name(*c), justify="center")
    for c in checks:
        row = [c.name]
        for b, m in cols:
            r = by[(c.name, b, m)]
            label = _pass_label(r) if r.status == "pass" else "FAIL" if r.status == "fail" else r.status
            if r.status == "skip":
                if r.reason not in reasons:
                    reasons.append(r.reason)
                label = f"skip [{reasons.index(r.reason) + 1}]"
            row.append(f"[{STATUS_STYLE[r.status]}]{label}[/]")
        table.add_row(*row)
    return table, reasons


def _pass_label(r):
    """"pass", or how many of its cases raised the documented TypeError for the mode."""
    return f"pass ({r.unsupported} TypeError)" if r.unsupported else "pass"


def summary(results):
    n = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    return f"{n['pass']} passed, {n['fail']} failed, {n['skip']} skipped"


def write_report(path, results, backends, checks, meta):
    if path.endswith(".json"):
        data = {"meta": meta, "backends": backends, "checks": [c.name for c in checks],
                "summary": summary(results), "results": [r.as_dict() for r in results]}
        with open(path, "w") as f:
            json.dump(data, f, indent=2)
        return
    by = {(r.check, r.backend, r.mode): r for r in results}
    cols = columns(results, backends)
    lines = ["# unibackend conformance report", "",
             f"{summary(results)} ({meta['seconds']:.0f} s; profile {meta['profile']}, "
             f"examples per check: {meta['max_examples']}; {meta['platform']})", "",
             "| check | " + " | ".join(column_name(*c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    reasons = []
    for c in checks:
        cells = []
        for b, m in cols:
            r = by[(c.name, b, m)]
            if r.status == "skip":
                if r.reason not in reasons:
                    reasons.append(r.reason)
                cells.append(f"skip [{reasons.index(r.reason) + 1}]")
            else:
                cells.append("**FAIL**" if r.status == "fail" else _pass_label(r))
        lines.append(f"| {c.name} | " + " | ".join(cells) + " |")
    if reasons:
        lines.append("")
        lines += [f"[{i + 1}] {why}  " for i, why in enumerate(reasons)]
    fails = [r for r in results if r.status == "fail"]
    if fails:
        lines += ["", "## Failures"]
        for r in fails:
            lines += ["", f"### {r.check} on {column_name(r.backend, r.mode)}", "", r.reason, "",
                      "```python", r.reproducer.rstrip(), "```"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def register_plugins(specs):
    """Register each ``[NAME=]package.module:Class`` of ``--plugin``; the names
    registered.  ValueError saying what is wrong with a spec."""
    import importlib
    import os

    from unibackend import _registry as R

    if specs and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # a module in the current folder, as with python -m
    names = []
    for spec in specs:
        name, _, target = spec.rpartition("=")
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ValueError(f"--plugin {spec!r}: expected package.module:Class")
        try:
            cls: Any = importlib.import_module(module)
            for part in attr.split("."):
                cls = getattr(cls, part)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"--plugin {spec!r}: cannot import it ({type(e).__name__}: {e})") from None
        name = name or getattr(cls, "name", "")
        if not name:
            raise ValueError(f"--plugin {spec!r}: the class sets no `name`; write NAME={target}")
        try:
            R.register(name, cls)
        except TypeError as e:
            raise ValueError(f"--plugin {spec!r}: {e}") from None
        names.append(name)
    return names


def main(argv=None):
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    con = _console()
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        con.print("unibackend conformance needs hypothesis, which the conformance extra brings: "
                  "pip install 'unibackend[conformance]'", markup=False)
        return 2
    if args.report and not args.report.endswith((".json", ".md")):
        con.print(f"unibackend conformance: --report {args.report!r}: the suffix must be .json or .md", markup=False)
        return 2
    try:
        register_plugins(args.plugin)
    except ValueError as e:
        con.print(f"unibackend conformance: {e}", markup=False)
        return 2
    from .checks import CHECKS

    if args.list:
        for c in CHECKS.values():
            con.print(f"[bold]{c.name}[/] ({c.op}{'; needs ' + ', '.join(c.needs) if c.needs else ''})")
            con.print(f"    {c.doc}", markup=False)  # a doc's [brackets] are text, not rich markup
        return 0
    try:
        checks = engine.select_checks([o.strip() for o in args.ops.split(",") if o.strip()] if args.ops else None)
    except ValueError as e:
        con.print(f"[red]unibackend conformance: {e}[/]")
        return 2
    import unibackend as ub
    from unibackend import _registry as R

    if args.backends:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = [b for b in backends if b not in R.known()]
        if unknown:
            con.print(f"unibackend conformance: unknown backend(s) {', '.join(unknown)}; "
                      f"known: {', '.join(R.known())}. A plugin that is not installed with an entry point "
                      "is registered with --plugin package.module:Class (docs/plugins.md).", markup=False)
            return 2
    else:
        backends = engine.default_backends()
    if args.max_examples is not None and args.max_examples < 1:
        con.print("[red]unibackend conformance: --max-examples must be at least 1[/]")
        return 2

    if args.scheduler:
        try:  # the default client from here on: dask computes every lazy result there
            from distributed import Client
        except ImportError:
            con.print("[red]unibackend conformance: --scheduler needs distributed: pip install 'unibackend[dask]'[/]")
            return 2
        Client(args.scheduler)
    if args.jobs < 1:
        con.print("[red]unibackend conformance: --jobs must be at least 1[/]")
        return 2
    if args.scheduler and args.jobs > 1:
        con.print("[red]unibackend conformance: --scheduler runs in this process; leave out --jobs[/]")
        return 2
    try:
        modes = parse_modes(args.modes)
    except ValueError as e:
        con.print(f"[red]unibackend conformance: --modes: {e}[/]")
        return 2
    if args.compiled:
        modes = tuple(m for m in engine.MODES if m in set(modes) | {"eager", "compiled"})
    per_backend = {b: engine.backend_modes(b, modes) for b in backends}
    from . import parallel

    quiet_log = None if args.framework_output else str(engine.cache_dir() / "conformance-frameworks.log")

    def run(backends, checks, **kw):  # --jobs workers (parallel.py), the frameworks' messages to a log,
        # each backend's compiled code kept in the suite's cache (the command's own choice, see run())
        return parallel.run_quietly(quiet_log, backends, checks, args.jobs, keep_compiled=True, **kw)

    t0 = time.perf_counter()
    total = len(checks) * sum(len(m) for m in per_backend.values())
    if args.quiet or not con.is_terminal:
        done = [0]

        def progress(check, name):
            done[0] += 1
            if not args.quiet:
                print(f"[{done[0]}/{total}] {check.name} on {name}", file=parallel.screen(), flush=True)

        results = run(backends, checks, device=args.device, profile=args.profile,
                      max_examples=args.max_examples, seed=args.seed, progress=progress, modes=modes)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=con, transient=True) as bar:
            task = bar.add_task("conformance", total=total)
            started = [False]

            def progress(check, name):
                if started[0]:
                    bar.advance(task)
                started[0] = True
                bar.update(task, description=f"{check.name} on {name}")

            results = run(backends, checks, device=args.device, profile=args.profile,
                          max_examples=args.max_examples, seed=args.seed, progress=progress, modes=modes)
            bar.advance(task)
    seconds = time.perf_counter() - t0
    if quiet_log and os.path.exists(quiet_log) and os.path.getsize(quiet_log):
        con.print(f"the frameworks' own messages: {quiet_log}")

    table, reasons = matrix_table(results, backends, checks)
    con.print(table)
    for i, why in enumerate(reasons):
        con.print(f"[yellow][{i + 1}][/] {why}")
    fails = [r for r in results if r.status == "fail"]
    for r in fails:
        con.rule(f"[bold red]{r.check} on {column_name(r.backend, r.mode)}")
        con.print(r.reason, markup=False, soft_wrap=True)
        if r.reproducer:
            # printed as is: a wrapped line would not paste back as Python
            con.print("reproducer:")
            print(r.reproducer, flush=True)
    meta = {
        "unibackend": ub.__version__, "platform": f"{platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}", "profile": args.profile,
        "max_examples": args.max_examples or {column_name(b, m): engine.examples_for(b, args.profile, m)
                                              for b in backends for m in per_backend[b]},
        "modes": list(modes),
        "compiled": "compiled" in modes,
        "seed": args.seed,
        "device": args.device, "seconds": seconds,
        "seconds_per_backend": {column_name(b, m): round(sum(r.seconds for r in results
                                                              if r.backend == b and r.mode == m), 1)
                                for b in backends for m in per_backend[b]},
        "versions": {b.name: b.version for b in ub.backends() if b.name in backends},
    }
    if args.report:
        write_report(args.report, results, backends, checks, meta)
    con.print("time per backend: " + ", ".join(f"{b} {t:.0f} s" for b, t in meta["seconds_per_backend"].items()))
    color = "red" if fails else "green"
    con.print(f"[bold {color}]{summary(results)}[/] in {seconds:.0f} s"
              + (f"; report: {args.report}" if args.report else ""))
    return 1 if fails else 0
