"""``unibackend bench``: time the unified ops against native calls, naive
formulations and peer libraries, and hold them to the project's targets.

    unibackend bench [--backends numpy,torch,...] [--quick] [--out DIR] [--device cuda]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from . import cases as K
from . import report, targets, threads

BUILTIN = ("numpy", "torch", "tensorflow", "theano", "jax", "dask")
ALL_OPS = K.OPS + ("import", "keras_train")
#: keras 3 backends that are also unibackend backends (and run without jax).
KERAS_BACKENDS = ("torch", "tensorflow", "jax")  # keras's numpy backend is left out
#: The ops keras.ops has (it has no embedding bag).
KERAS_OPS = ("dispatch", "keep_topk", "sparse_dot")

MODES = {
    # repeats (rounds), seconds per timed batch
    "quick": K.Settings(repeats=7, min_batch_s=0.02, budget_s=2.0),
    "full": K.Settings(repeats=21, min_batch_s=0.1, budget_s=30.0),
    "smoke": K.Settings(repeats=3, min_batch_s=0.0005, budget_s=0.5),
}


class Skip(Exception):
    """A backend that cannot run here; the message says why."""


def parse(argv):
    p = argparse.ArgumentParser(
        prog="unibackend bench",
        description="Benchmark the unified ops against the best native call, the naive "
                    "formulation and peer libraries, side by side, and check the targets.")
    p.add_argument("--backends", default=",".join(BUILTIN),
                   help="comma-separated backends (default: %(default)s); missing ones are skipped")
    p.add_argument("--ops", default=",".join(ALL_OPS),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--quick", action="store_true", help="fewer, shorter rounds (same sizes); < 2 min")
    p.add_argument("--out", default="bench-out", help="directory for bench.md, bench.json and the plots")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="device of the torch rows (every other backend runs on the CPU)")
    p.add_argument("--repeats", type=int, default=None, help="rounds per case (overrides the mode)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads per framework (default 1: stable on a shared machine; "
                        "0: each framework's default)")
    p.add_argument("--no-peers", action="store_true", help="skip autoray and keras.ops")
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    p.add_argument("--runs", type=int, default=1,
                   help="run the whole benchmark N times, each in a fresh interpreter (DIR/run1, ...), and "
                        "report the median of each target with every run's value and the noisy ones")
    p.add_argument("--report", metavar="JSON[,JSON...]", default=None,
                   help="measure nothing: re-write the tables and plots of an earlier run's bench.json "
                        "(several, comma-separated: combined as --runs combines them)")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # minuscule sizes, for tests
    p.add_argument("--quiet", action="store_true", help="do not print the tables")
    return p.parse_args(argv)


def _split(s):
    return [x.strip() for x in s.split(",") if x.strip()]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.report:
        return rewrite(_split(args.report), args.out, not args.no_plots, args.quiet)
    if args.runs < 1:
        print("unibackend bench: --runs must be at least 1", file=sys.stderr)
        return 2
    if args.runs > 1:
        return several_runs(args, argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = MODES[mode]
    if args.repeats:
        settings = dataclasses.replace(settings, repeats=args.repeats, budget_s=None)
    size = K.SIZES["smoke" if args.smoke else "full"]
    ops = _split(args.ops)
    bad = [o for o in ops if o not in ALL_OPS]
    if bad:
        print(f"unibackend bench: unknown op(s) {', '.join(bad)}; choose from {', '.join(ALL_OPS)}",
              file=sys.stderr)
        return 2
    wanted = _split(args.backends)
    t_start = time.perf_counter()
    threads.limit(args.threads)

    def log(msg):
        if not args.quiet:
            print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    result = {"meta": meta(argv, mode, args.device, args.threads), "cases": [], "skipped": []}
    ran = []
    for name in wanted:
        try:
            nat = load(name, args.device)
        except Skip as e:
            log(f"skip {name}: {e}")
            result["skipped"].append({"backend": name, "reason": str(e)})
            continue
        threads.apply(name, args.threads)
        if args.smoke and hasattr(nat, "compile_backend"):
            nat.compile_backend = "eager"   # the compiled rows' harness, without Inductor's minutes
        ran.append(name)
        # theano's keep_topk runs ~10x slower than the others' and its target
        # (cached vs compiled) does not depend on k: --quick times one k.
        mine = dataclasses.replace(settings, ks=1) if (mode == "quick" and name == "theano") else settings
        result["cases"] += run_backend(name, nat, ops, size, mine, args, log)

    keras_ops = [o for o in ops if o in KERAS_OPS]
    if not args.no_peers and keras_ops:
        for name in [b for b in ran if b in KERAS_BACKENDS]:
            log(f"keras.ops on {name} (subprocess)")
            recs, why = run_keras(name, args, mode, keras_ops)
            if why:
                result["skipped"].append({"backend": f"keras[{name}]", "reason": why})
            result["cases"] += recs
    if not args.no_peers and "keras_train" in ops:
        for name in [b for b in ran if b in KERAS_BACKENDS]:
            log(f"keras training step on {name} (subprocess)")
            recs, why = run_keras(name, args, mode, ["keras_train"], module="keras_train")
            if why:
                result["skipped"].append({"backend": f"keras_train[{name}]", "reason": why})
            result["cases"] += recs

    imp = None
    if "import" in ops:
        log("import unibackend vs import numpy (fresh interpreters)")
        try:
            imp = import_times(3 if args.smoke else 7 if args.quick else 15)
        except subprocess.CalledProcessError as e:
            result["skipped"].append({"backend": "import", "reason": f"a fresh interpreter failed: {e}"})
        result["import"] = imp

    result["targets"] = targets.evaluate(result["cases"], imp, ran, args.device)
    _explain(result)
    result["meta"]["seconds"] = round(time.perf_counter() - t_start, 1)
    result["meta"]["cpu_seconds"] = round(sum(os.times()[:4]), 1)  # this process and its children
    result["meta"]["load_average_end"] = _loadavg()
    paths = report.write(result, args.out, plots=not args.no_plots)
    if not args.quiet:
        report.print_rich(result)
        print(f"wrote {', '.join(paths)}  ({result['meta']['seconds']} s)")
    return 0


def _explain(result):
    from .notes import explain

    for t in result["targets"]:
        if t["status"] == "missed":
            t["note"] = explain(t, result)


def several_runs(args, argv):
    """``--runs N``: the same command N times, one after another, each in a
    fresh interpreter (compile caches, allocators and the load of the moment
    are a run's own), then one combined report."""
    paths = []
    for i in range(1, args.runs + 1):
        out = os.path.join(args.out, f"run{i}")
        if not args.quiet:
            print(f"unibackend bench: run {i} of {args.runs} -> {out}", file=sys.stderr, flush=True)
        # (argparse keeps an option's last value: these override the command's own)
        cmd = [sys.executable, "-m", "unibackend.benchmarks.runner", *argv,
               "--runs", "1", "--out", out, "--no-plots", "--quiet"]
        code = subprocess.run(cmd).returncode
        if code != 0:
            print(f"unibackend bench: run {i} exited with {code}", file=sys.stderr)
            return code
        paths.append(os.path.join(out, "bench.json"))
    return rewrite(paths, args.out, not args.no_plots, args.quiet,
                   command="unibackend bench " + " ".join(argv))


def rewrite(paths, out_dir, plots, quiet, command=None):
    """Tables, notes and plots again from an earlier run's JSON (several:
    combined, ``report.combine``)."""
    results = []
    for path in paths:
        with open(path) as f:
            results.append(json.load(f))
    result = report.combine(results) if len(results) > 1 else results[0]
    if command:
        result["meta"]["command"] = command
    _explain(result)
    paths = report.write(result, out_dir, plots=plots)
    if not quiet:
        report.print_rich(result)
        print(f"wrote {', '.join(paths)}")
    return 0


def load(name, device):
    """The native-call helpers of ``name``, after loading its plugin; Skip
    with the reason when the plugin or its framework is missing."""
    import unibackend as ub
    from unibackend import _registry

    if name not in _registry.known():
        raise Skip("no such plugin")
    if name == "torch" and device != "cpu":
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            import torch

            if not torch.cuda.is_available():
                raise Skip("no CUDA device (torch.cuda.is_available() is False)")
    try:
        _registry.backend(name, _device_for(name, device))
    except ub.BackendNotAvailable as e:
        raise Skip(str(e).split(";")[0]) from None
    except (ImportError, AttributeError) as e:
        raise Skip(f"plugin missing or broken: {e}") from None
    except (ValueError, RuntimeError) as e:  # e.g. a device the plugin cannot use
        raise Skip(f"plugin refused device {device!r}: {e}") from None
    try:
        return K.natives(name, device)
    except ModuleNotFoundError as e:
        raise Skip(f"not installed: {e.name}") from None
    except RuntimeError as e:  # e.g. no CUDA device
        raise Skip(str(e)) from None


def _device_for(name, device):
    return device if (name == "torch" and device != "cpu") else None


def run_backend(name, nat, ops, size, settings, args, log):
    import unibackend as ub

    # autoray has no theano dispatch (it would run numpy on the arrays).
    peer = K.NoPeers() if args.no_peers or name == "theano" else K.peers("autoray")
    out = []
    with ub.use_backend(name, _device_for(name, args.device)):
        for op in ops:
            if op in ("import", "keras_train"):  # fresh interpreters, below
                continue
            log(f"{op} on {name}")
            try:
                t0 = time.perf_counter()
                recs = K.CASES[op](nat, peer, size, settings)
                for rec in recs:
                    rec["wall_s"] = round((time.perf_counter() - t0) / len(recs), 2)
                out += recs
            except Exception as e:  # a plugin defect must not end the run: report it
                log(f"  {op} on {name} failed: {type(e).__name__}: {e}")
                out.append({"op": op, "label": "failed", "params": {}, "backend": name,
                            "device": nat.device, "candidates": [], "error": f"{type(e).__name__}: {e}"})
        if "embedding_mean" in ops and nat.device.startswith("cuda") and not args.smoke:
            log(f"embedding_mean (large, bandwidth) on {name} [{nat.device}]")
            for rec in K.case_embedding_mean(nat, peer, size, settings, large=True):
                rec["large"] = True
                out.append(rec)
    return out


def run_keras(name, args, mode, ops, module="keras_peer"):
    """keras.ops on keras backend ``name`` (``module``: keras_peer, the ops;
    keras_train, a model's training step), in a fresh interpreter (keras
    picks its backend at import).  (cases, reason-if-skipped)."""
    import importlib.util

    if importlib.util.find_spec("keras") is None:
        return [], "keras is not installed (pip install 'unibackend[bench]')"
    env = dict(os.environ, KERAS_BACKEND=name, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-m", f"unibackend.benchmarks.{module}", "--backend", name,
           "--mode", mode, "--threads", str(args.threads)]
    if module == "keras_peer":
        cmd += ["--device", args.device, "--ops", ",".join(ops)]
    if args.repeats:
        cmd += ["--repeats", str(args.repeats)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return [], "keras subprocess timed out"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return [], f"keras subprocess failed: {tail[0]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


def import_times(repeats):
    """Wall time of ``python -c 'import X'`` in fresh interpreters, numpy and
    unibackend interleaved, plus a bare interpreter for the start-up cost."""
    import tempfile

    # Bytecode caches written and used, as an installed package has them: with
    # PYTHONDONTWRITEBYTECODE set (some shells and CI images), every import
    # compiles the package's modules again (~90 ms here: 1.8x numpy's import
    # instead of ~1.1x), which measures the environment, not the package.
    env = {k: v for k, v in os.environ.items() if k not in ("UNIBACKEND_BACKEND", "PYTHONDONTWRITEBYTECODE")}
    stmts = {"python": "pass", "numpy": "import numpy", "unibackend": "import unibackend"}
    rounds: dict[str, list[float]] = {k: [] for k in stmts}
    # An empty working directory: ``python -c`` puts it first on sys.path, and
    # a source tree there would shadow the installed package.
    with tempfile.TemporaryDirectory() as cwd:
        for k in stmts:  # untimed: writes the bytecode caches
            subprocess.run([sys.executable, "-c", stmts[k]], env=env, cwd=cwd, check=True)
        for r in range(repeats):
            order = list(stmts) if r % 2 == 0 else list(reversed(stmts))
            for k in order:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", stmts[k]], env=env, cwd=cwd, check=True)
                rounds[k].append(time.perf_counter() - t0)
        frameworks = subprocess.run(
            [sys.executable, "-c", "import sys, unibackend; print(','.join(sorted(m for m in "
             "('torch','tensorflow','pytensor','theano','keras','jax') if m in sys.modules)))"],
            env=env, cwd=cwd, capture_output=True, text=True).stdout.strip()
    wall = statistics.median(u / n for u, n in zip(rounds["unibackend"], rounds["numpy"]))
    only = statistics.median((u - p) / max(n - p, 1e-9) for u, n, p in
                             zip(rounds["unibackend"], rounds["numpy"], rounds["python"]))
    return {
        "median_s": {k: statistics.median(v) for k, v in rounds.items()},
        "ratio": wall, "ratio_without_startup": only, "repeats": repeats,
        "frameworks_imported": frameworks,
    }


def meta(argv, mode, device, nthreads):
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for dist in ("numpy", "scipy", "torch", "tensorflow-cpu", "tensorflow", "pytensor", "theano",
                 "jax", "jaxlib", "dask", "distributed", "keras", "autoray"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cmd = "unibackend bench " + " ".join(sys.argv[1:] if argv is None else argv)
    return {
        "load_average_start": _loadavg(),
        "command": cmd.strip(), "mode": mode, "device": device, "threads": threads.describe(nthreads),
        "machine": f"{cpu}, {cores} cores, {platform.system()} {platform.release()}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": versions,
    }


def _loadavg():
    """1-minute load average (how many others wanted the cores), or None."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


if __name__ == "__main__":
    sys.exit(main())
