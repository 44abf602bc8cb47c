"""Cold compile and per-call cost of theano's keep_topk eager graph under one
PyTensor compile mode (docs/backends/theano.md, *Eager tiers*):

    PYTENSOR_FLAGS=base_compiledir=/tmp/pt-cold-$RANDOM python -m unibackend.benchmarks.theano_modes MODE

MODE: default, cvm, cvm_fast_compile, FAST_COMPILE, first_tier (FAST_COMPILE
with casts as astype: what the plugin's first eager tier uses), py_fast_run.
Run each mode with its own empty compiledir: a mode's compile cost is what a
first run on a machine pays.
"""
import sys
import time
from typing import Any

import numpy as np


def main(mode_name):
    import pytensor
    import pytensor.tensor as T
    from pytensor.compile.mode import Mode

    from unibackend import _registry as R

    B: Any = R.backend("theano")  # the theano plugin: its private graph builders
    modes = {
        "default": None,
        "cvm": Mode(linker="cvm", optimizer="fast_run"),
        "cvm_fast_compile": Mode(linker="cvm", optimizer="fast_compile"),
        "FAST_COMPILE": "FAST_COMPILE",
        "first_tier": B._cheap_mode(),
        "py_fast_run": Mode(linker="py", optimizer="fast_run"),
    }
    x, k = T.matrix("x"), T.scalar("k", dtype="int64")
    fill = T.scalar("fill", dtype="float64")
    small, kk, ff = np.random.default_rng(0).random((8, 16)), np.array(3, np.int64), np.array(0.0)
    start = time.perf_counter()
    fn = pytensor.function([x, k, fill], B._g_keep_topk(x, k, fill, 1, False), mode=modes[mode_name])
    fn.trust_input = True
    fn(small, kk, ff)
    cold = time.perf_counter() - start
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        fn(small, kk, ff)
    per_small = (time.perf_counter() - start) / n
    big = np.random.default_rng(1).random((512, 4096))
    start = time.perf_counter()
    fn(big, kk, ff)
    fn(big, kk, ff)
    per_big = (time.perf_counter() - start) / 2
    print(f"{mode_name}: compile + first call {cold:.2f} s; per call 8x16 {per_small * 1e6:.1f} us, "
          f"512x4096 {per_big * 1e3:.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "first_tier")
