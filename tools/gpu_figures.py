#!/usr/bin/env python3
"""Issue 11's CUDA figures, in one process (tools/gpu_check.sh runs it).

    syncs     host syncs per op on CUDA tensors inside ``ub.sync_free()``
              (counted with torch.cuda.set_sync_debug_mode("warn"), then
              pass/fail under "error"; target 0), and in the default mode
    eager     keep_topk 512x4096 (k=4, k=64) and embedding_mean n=4096 in the
              sync-free mode (and the default mode) against native
              (torch.topk + scatter, F.embedding_bag); target <= 1.2x
    compiled  embedding_mean n=65,536 L=50 V=1,000,000 d=128 under
              torch.compile against F.embedding_bag under torch.compile, as a
              fraction of the measured copy bandwidth (target >= 0.5), and
              keep_topk 512x4096 k=4 compiled against topk + scatter compiled;
              compile times (first call) of every compiled function
    probe     a bad id / out-of-bounds index in the sync-free mode fails the
              call or a later one (each in a child process: a device-side
              assert leaves the CUDA context unusable)

Timing: CUDA events around a batch of calls, paired rounds (the order
alternates), medians; on the CPU (``--device cpu``, to test this script)
``time.perf_counter``.  Writes ``gpu_figures.json``, ``gpu_figures.txt`` and
``syncs.txt`` to ``--out``.  ``--small`` shrinks every size (a CPU smoke run).
Run it from outside the checkout so the installed package is the one timed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

import unibackend as ub
from unibackend.benchmarks import cases as K

SIZES = {
    "full": {"keep_topk": {"rows": 512, "cols": 4096, "ks": (4, 64)},
             "embedding_mean": {"n": 4096, "L": 50, "V": 100_000, "d": 128},
             "large_embedding": dict(K.CUDA_LARGE_EMBEDDING),
             "copy_floats": 1 << 28, "rounds": 30, "batch_s": 0.01},
    "small": {"keep_topk": {"rows": 16, "cols": 256, "ks": (4, 8)},
              "embedding_mean": {"n": 64, "L": 8, "V": 500, "d": 16},
              "large_embedding": {"n": 256, "L": 8, "V": 2000, "d": 16},
              "copy_floats": 1 << 22, "rounds": 5, "batch_s": 0.002},
}
TARGET_EAGER = 1.2
TARGET_FRACTION = 0.5


class Figures:
    def __init__(self, args):
        import torch
        import torch.nn.functional as F

        self.torch, self.F, self.args = torch, F, args
        self.dev = torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        self.size = SIZES["small" if args.small else "full"]
        self.t0 = time.perf_counter()
        self.res = {"device": str(self.dev), "torch": torch.__version__, "numpy": np.__version__,
                    "size": "small" if args.small else "full", "compiler": args.compiler,
                    "gpu": torch.cuda.get_device_name(self.dev) if self.cuda else None,
                    "parts_skipped": {}}
        self.lines = []   # the text summary

    # -- helpers -------------------------------------------------------------
    def left(self):
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def say(self, s=""):
        print(s, flush=True)
        self.lines.append(s)

    def put(self, a):
        return self.torch.from_numpy(a).to(self.dev)

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)

    def batch_time(self, fn, args, inner):
        """Seconds per call of ``fn(*args)`` over ``inner`` calls in a row."""
        t = self.torch
        if self.cuda:
            s, e = t.cuda.Event(enable_timing=True), t.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(inner):
                fn(*args)
            e.record()
            e.synchronize()
            return s.elapsed_time(e) / 1e3 / inner
        t0 = time.perf_counter()
        for _ in range(inner):
            fn(*args)
        return (time.perf_counter() - t0) / inner

    def paired(self, a, b, args, rounds=None):
        """Median seconds of ``a`` and of ``b`` and the median of the per-round
        ratios a/b; each round times a batch of each, the order alternating."""
        rounds = rounds or self.size["rounds"]
        for f in (a, b):             # warm-up: caches, allocator, autotuning
            f(*args)
            f(*args)
        self.sync()
        one = max(self.batch_time(a, args, 1), self.batch_time(b, args, 1), 1e-6)
        inner = max(1, min(500, int(self.size["batch_s"] / one)))
        ta, tb = [], []
        for r in range(rounds):
            for f, acc in ((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta)):
                acc.append(self.batch_time(f, args, inner))
        ratio = statistics.median(x / y for x, y in zip(ta, tb))
        return {"unified_s": statistics.median(ta), "native_s": statistics.median(tb),
                "ratio": ratio, "rounds": rounds, "inner": inner,
                "ratio_spread": [min(x / y for x, y in zip(ta, tb)), max(x / y for x, y in zip(ta, tb))]}

    def rel_err(self, out, ref):
        out, ref = out.double(), ref.double()
        fin = self.torch.isfinite(ref)
        same_inf = bool(((out == ref) | fin).all())
        diff = (out[fin] - ref[fin]).norm() / ref[fin].norm().clamp(min=1e-30)
        return float(diff) if same_inf else float("inf")

    def write(self):
        out = self.args.out
        with open(os.path.join(out, "gpu_figures.json"), "w") as f:
            json.dump(self.res, f, indent=1, default=str)
        with open(os.path.join(out, "gpu_figures.txt"), "w") as f:
            f.write("\n".join(self.lines) + "\n")

    # -- syncs ---------------------------------------------------------------
    def sync_calls(self):
        t = self.torch
        g = t.Generator(device=self.dev).manual_seed(11)
        x = t.randn(512, 4096, device=self.dev, generator=g)
        w = t.randn(4096, 128, device=self.dev, generator=g)
        table = t.randn(1000, 64, device=self.dev, generator=g)
        ids = t.randint(1, 1000, (256, 20), device=self.dev, generator=g)
        ids[:, 12:] = 0                               # padding
        rows = t.randint(0, 512, (64,), device=self.dev, generator=g)
        mask = x > 0
        return {
            "keep_topk k=4": lambda: ub.keep_topk(x, 4),
            "keep_topk k=64": lambda: ub.keep_topk(x, 64),
            "topk_gate k=4": lambda: ub.topk_gate(x, 4),
            "softmax": lambda: ub.softmax(x),
            "embedding_mean": lambda: ub.embedding_mean(table, ids),
            "masked_mean axis=1": lambda: ub.masked_mean(x, mask, axis=1),
            "set_subtensor index tensor": lambda: ub.set_subtensor(x, rows, 0.0),
            "inc_subtensor index tensor": lambda: ub.inc_subtensor(x, rows, 1.0),
            "dot": lambda: ub.dot(x, w),
            "argsort": lambda: ub.argsort(x),
        }

    def count_syncs(self, fn):
        """(syncs counted in "warn" mode, where they came from)."""
        t = self.torch
        self.sync()
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            t.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                t.cuda.set_sync_debug_mode(0)
        self.sync()
        hits = [w for w in got if "synchroniz" in str(w.message)]
        return len(hits), sorted({f"{os.path.basename(w.filename)}:{w.lineno}" for w in hits})[:4]

    def error_mode(self, fn):
        """None when ``fn`` runs under set_sync_debug_mode("error"), else why not."""
        t = self.torch
        self.sync()
        t.cuda.set_sync_debug_mode("error")
        try:
            fn()
            why = None
        except RuntimeError as e:
            why = str(e).strip().splitlines()[0][:200]
        finally:
            t.cuda.set_sync_debug_mode(0)
        self.sync()
        return why

    def part_syncs(self):
        calls = self.sync_calls()
        rows = []
        for name, fn in calls.items():
            row = {"op": name}
            try:
                with ub.sync_free():
                    fn()                     # warm-up: first-call loading stays out of the count
                    if self.cuda:
                        row["syncs_sync_free"], row["where"] = self.count_syncs(fn)
                        why = self.error_mode(fn)
                        row["error_mode"] = "pass" if why is None else f"FAIL: {why}"
                    else:
                        fn()
                        row["syncs_sync_free"], row["where"], row["error_mode"] = None, [], "n/a (CPU)"
                fn()                          # the default mode, for comparison
                row["syncs_default"] = self.count_syncs(fn)[0] if self.cuda else None
            except Exception as e:            # one op failing must not hide the others
                row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
            rows.append(row)
        self.res["syncs"] = rows
        head = f"{'op':28} {'syncs (sync-free)':>18} {'error mode':>12} {'syncs (default)':>16}  where"
        text = ["host syncs per call on " + str(self.dev) + ", after a warm-up call; target 0 in the sync-free mode",
                "counted: torch.cuda.set_sync_debug_mode('warn') warnings; 'error mode': one call under 'error'",
                head]
        for r in rows:
            if "error" in r:
                text.append(f"{r['op']:28} ERROR {r['error']}")
                continue
            text.append(f"{r['op']:28} {_s(r['syncs_sync_free']):>18} {r['error_mode'][:12]:>12} "
                        f"{_s(r['syncs_default']):>16}  {' '.join(r['where'])}")
            if r["error_mode"].startswith("FAIL"):
                text.append(f"    {r['error_mode']}")
        bad = [r["op"] for r in rows if "error" in r or r.get("syncs_sync_free") or
               r.get("error_mode", "").startswith("FAIL")]
        text.append(f"sync-free ops with a sync or an error: {bad or 'none'}")
        with open(os.path.join(self.args.out, "syncs.txt"), "w") as f:
            f.write("\n".join(text) + "\n")
        for s in text:
            self.say(s)

    # -- eager ratios ----------------------------------------------------------
    def part_eager(self):
        t, F = self.torch, self.F
        rows = []
        p = self.size["keep_topk"]
        x = self.put(K.topk_inputs(p))
        for k in p["ks"]:
            native = lambda x, k=k: _topk_scatter(t, x, k)       # noqa: E731
            unified = lambda x, k=k: ub.keep_topk(x, k)           # noqa: E731
            rows += self._eager_pair(f"keep_topk {p['rows']}x{p['cols']} k={k}", unified, native, (x,),
                                     "torch.topk + scatter")
        p = self.size["embedding_mean"]
        table, ids = (self.put(a) for a in K.embedding_inputs(p))
        rows += self._eager_pair(f"embedding_mean n={p['n']} L={p['L']} V={p['V']:,} d={p['d']}",
                                 lambda tb, i: ub.embedding_mean(tb, i),
                                 lambda tb, i: F.embedding_bag(i, tb, mode="mean", padding_idx=0),
                                 (table, ids), "F.embedding_bag(mean, padding_idx=0)")
        self.res["eager"] = rows
        self.say()
        clock = "CUDA events" if self.cuda else "perf_counter"
        self.say(f"eager, unified vs native on {self.dev} ({clock}, median of paired rounds); "
                 f"target <= {TARGET_EAGER}x in the sync-free mode")
        for r in rows:
            verdict = ("met" if r["ratio"] <= TARGET_EAGER else "MISSED") if r["mode"] == "sync-free" else "(reference)"
            self.say(f"  {r['case']:44} {r['mode']:9} ub {_us(r['unified_s'])} native {_us(r['native_s'])} "
                     f"{r['ratio']:.2f}x [{r['ratio_spread'][0]:.2f}-{r['ratio_spread'][1]:.2f}] {verdict}  "
                     f"err {r['rel_err']:.1e}")

    def _eager_pair(self, case, unified, native, args, native_name):
        out = []
        ref = native(*args)
        for mode in ("sync-free", "default"):
            with ub.sync_free(mode == "sync-free"):
                r = self.paired(unified, native, args)
                r["rel_err"] = self.rel_err(unified(*args), ref)
            out.append({"case": case, "mode": mode, "native": native_name, **r})
        return out

    # -- compiled ------------------------------------------------------------
    def compile_first(self, fn, args):
        """(compiled fn, first-call seconds = compile time, error)."""
        f = self.torch.compile(fn, fullgraph=True, backend=self.args.compiler)
        t0 = time.perf_counter()
        try:
            f(*args)
            self.sync()
        except Exception as e:
            return None, None, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
        return f, time.perf_counter() - t0, None

    def copy_bandwidth(self):
        """Read + write bytes per second of a device-to-device ``copy_`` of a
        large buffer (1 GiB of float32 at full size): best and median of 10."""
        t = self.torch
        src = t.empty(self.size["copy_floats"], dtype=t.float32, device=self.dev).uniform_()
        dst = t.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        self.sync()
        ts = [self.batch_time(dst.copy_, (src,), 1) for _ in range(10)]
        nbytes = 2 * src.numel() * src.element_size()
        del src, dst
        if self.cuda:
            t.cuda.empty_cache()
        return {"bytes_per_copy": nbytes, "best_bytes_per_s": nbytes / min(ts),
                "median_bytes_per_s": nbytes / statistics.median(ts)}

    def part_compiled(self):
        t, F = self.torch, self.F
        bw = self.copy_bandwidth()
        self.res["copy_bandwidth"] = bw
        p = self.size["large_embedding"]
        table0, ids0 = K.embedding_inputs(p)
        table, ids = self.put(table0), self.put(ids0)
        n, L, d = p["n"], p["L"], p["d"]
        real = int(np.count_nonzero(ids0))
        models = {
            # the bench's model (benchmarks/cases.embedding_bytes), the one of the ~38% reference:
            "real_ids": {"bytes": K.embedding_bytes(ids0, d),
                         "formula": "ids n*L*8 + one table row per real (non-pad) id nnz*d*4 + output n*d*4"},
            # every slot read as if padding cost a row (an upper bound: pad rows are skipped or cached)
            "all_slots": {"bytes": n * L * d * 4 + n * d * 4 + ids0.nbytes,
                          "formula": "n*L*d*4 (a row per slot, pads too) + output n*d*4 + ids n*L*8"},
        }
        self.res["byte_models"] = {**models, "real_ids_count": real, "slots": n * L}

        def ub_emb(tb, i):
            return ub.embedding_mean(tb, i)

        def native_emb(tb, i):
            return F.embedding_bag(i, tb, mode="mean", padding_idx=0)

        rows = []
        label = f"embedding_mean n={n:,} L={L} V={p['V']:,} d={d}"
        ref = native_emb(table, ids)
        # eager first (the sync-free mode and the default), as the reference points
        for mode in ("sync-free", "default"):
            with ub.sync_free(mode == "sync-free"):
                r = self.paired(ub_emb, native_emb, (table, ids))
            rows.append({"case": label, "mode": f"eager {mode}", **r})
        cu, cu_s, cu_err = self.compile_first(ub_emb, (table, ids))
        cn, cn_s, cn_err = self.compile_first(native_emb, (table, ids))
        comp = {"case": label, "mode": f"torch.compile[{self.args.compiler}]", "compile_s_unified": cu_s,
                "compile_s_native": cn_s, "error_unified": cu_err, "error_native": cn_err}
        if cu and cn:
            comp.update(self.paired(cu, cn, (table, ids)))
            comp["rel_err"] = self.rel_err(cu(table, ids), ref)
        rows.append(comp)
        for r in rows:
            if "unified_s" in r:
                r["fraction"] = {m: {side: v["bytes"] / r[f"{side}_s"] / bw["best_bytes_per_s"]
                                     for side in ("unified", "native")} for m, v in models.items()}
        self.res["compiled_embedding"] = rows
        del table, ids, ref
        if self.cuda:
            t.cuda.empty_cache()

        # keep_topk compiled on the device graph, with its compile time
        pk = self.size["keep_topk"]
        x = self.put(K.topk_inputs(pk))
        k = pk["ks"][0]
        ku, ku_s, ku_err = self.compile_first(lambda x: ub.keep_topk(x, k), (x,))
        kn, kn_s, kn_err = self.compile_first(lambda x: _topk_scatter(t, x, k), (x,))
        krow = {"case": f"keep_topk {pk['rows']}x{pk['cols']} k={k}", "mode": f"torch.compile[{self.args.compiler}]",
                "compile_s_unified": ku_s, "compile_s_native": kn_s, "error_unified": ku_err, "error_native": kn_err}
        if ku and kn:
            krow.update(self.paired(ku, kn, (x,)))
            krow["rel_err"] = self.rel_err(ku(x), _topk_scatter(t, x, k))
        self.res["compiled_keep_topk"] = krow

        self.say()
        self.say(f"copy bandwidth (read + write of a {bw['bytes_per_copy'] / 2**30:.2f} GiB copy_, best of 10): "
                 f"{bw['best_bytes_per_s'] / 1e9:.0f} GB/s (median {bw['median_bytes_per_s'] / 1e9:.0f} GB/s)")
        self.say(f"{label}: {real:,} real ids of {n * L:,} slots; byte models:")
        for m, v in models.items():
            self.say(f"  {m:9} {v['bytes'] / 1e6:.2f} MB = {v['formula']}")
        self.say(f"target: the compiled unified op >= {TARGET_FRACTION:.0%} of the copy bandwidth under 'real_ids' "
                 "(the bench's model; embedding_bag ~38% on an H100)")
        for r in rows:
            if "unified_s" not in r:
                self.say(f"  {r['mode']:28} FAILED: unified {r['error_unified']} | native {r['error_native']}")
                continue
            fr = r["fraction"]
            line = (f"  {r['mode']:28} ub {_us(r['unified_s'])} ({fr['real_ids']['unified']:.0%}; all_slots "
                    f"{fr['all_slots']['unified']:.0%})  embedding_bag {_us(r['native_s'])} "
                    f"({fr['real_ids']['native']:.0%}; {fr['all_slots']['native']:.0%})  ub/native {r['ratio']:.2f}x")
            if r["mode"].startswith("torch.compile"):
                met = "met" if fr["real_ids"]["unified"] >= TARGET_FRACTION else "MISSED"
                line += f"  target {met}; err {r['rel_err']:.1e}"
            self.say(line)
        self.say("compile times (first call, seconds):")
        for r in (rows[-1], krow):
            self.say(f"  {r['case']:44} unified {_s(r['compile_s_unified'], '.1f')}  native {_s(r['compile_s_native'], '.1f')}")
        if "ratio" in krow:
            self.say(f"  {krow['case']} compiled: ub {_us(krow['unified_s'])} topk+scatter {_us(krow['native_s'])} "
                     f"{krow['ratio']:.2f}x (bench target 1.1x)  err {krow['rel_err']:.1e}")
        else:
            self.say(f"  {krow['case']} compiled FAILED: unified {ku_err} | native {kn_err}")

    # -- bad input in the sync-free mode -----------------------------------------
    def part_probe(self):
        """Each bad call in a child process: on CUDA a device-side assert
        poisons the context, so it must not share this one's."""
        code = {
            "embedding_mean bad id": "ub.embedding_mean(t.ones(5, 2, device=D), t.tensor([[1, 9]], device=D))",
            "set_subtensor oob index": "ub.set_subtensor(t.zeros(5, device=D), t.tensor([7], device=D), 1.0)",
        }
        rows = []
        for name, call in code.items():
            src = (f"import torch as t, unibackend as ub\nD = {str(self.dev)!r}\nwith ub.sync_free():\n"
                   f"    try:\n        y = {call}\n        t.cuda.synchronize() if D.startswith('cuda') else None\n"
                   "        print('SILENT', y.tolist())\n"
                   "    except Exception as e:\n"
                   "        print('RAISED', type(e).__name__, str(e).strip().splitlines()[0][:200])\n")
            try:
                r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=90)
                got = (r.stdout.strip().splitlines() or [f"no output, rc {r.returncode}: {r.stderr.strip()[-200:]}"])[-1]
            except subprocess.TimeoutExpired:
                got = "TIMEOUT"
            rows.append({"case": name, "outcome": got, "ok": got.startswith("RAISED")})
        self.res["probe"] = rows
        self.say()
        self.say("bad input in the sync-free mode (must raise, never a silent answer):")
        for r in rows:
            self.say(f"  {r['case']:26} {'ok' if r['ok'] else 'FAILED'}: {r['outcome']}")

    def run(self):
        if self.args.gpu_paths:
            from unibackend import _registry as R
            R.backend("torch").gpu_paths = True     # a CPU run takes the device code paths
        parts = {"syncs": (self.part_syncs, 20), "eager": (self.part_eager, 30),
                 "compiled": (self.part_compiled, 90), "probe": (self.part_probe, 25)}
        self.say(f"gpu_figures: {self.res['gpu'] or self.dev}, torch {self.res['torch']}, size {self.res['size']}, "
                 f"budget {self.args.budget_s:.0f} s")
        for name in self.args.parts.split(","):
            fn, need = parts[name]
            if self.left() < need:
                why = f"skipped: {self.left():.0f} s of the budget left, needs ~{need} s"
                self.res["parts_skipped"][name] = why
                self.say(f"{name}: {why}")
                continue
            t0 = time.perf_counter()
            try:
                fn()
            except Exception as e:
                import traceback
                traceback.print_exc()
                self.res.setdefault("part_errors", {})[name] = f"{type(e).__name__}: {e}"
                self.say(f"{name}: ERROR {type(e).__name__}: {str(e).strip()[:300]}")
            self.res.setdefault("part_seconds", {})[name] = round(time.perf_counter() - t0, 1)
            self.write()                    # what is done survives a later kill
        self.say(f"gpu_figures: done in {time.perf_counter() - self.t0:.0f} s "
                 f"(parts: {self.res.get('part_seconds')})")
        self.write()


def _topk_scatter(torch, x, k):
    vals, idx = torch.topk(x, k, dim=-1)
    return torch.full_like(x, -float("inf")).scatter_(-1, idx, vals)


def _us(s):
    return f"{s * 1e6:8.1f} us"


def _s(v, fmt="d"):
    return "-" if v is None else format(v, fmt)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--small", action="store_true", help="small sizes (a CPU smoke run)")
    p.add_argument("--parts", default="syncs,eager,compiled,probe")
    p.add_argument("--compiler", default="inductor", help="torch.compile backend of the compiled part")
    p.add_argument("--budget-s", type=float, default=200.0, help="skip parts that would start past this")
    p.add_argument("--gpu-paths", action="store_true", help="CPU tensors take the device code paths")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    Figures(args).run()


if __name__ == "__main__":
    main()
