"""How long a fresh process takes to serve a saved model on numpy, compared
with a process that only imports numpy and scipy.sparse.

    python examples/serve_timing.py moe.npz [--runs 9]

Each measurement is the wall time of a whole fresh ``python`` process (start,
imports, ``nn.load``, one prediction on a small batch); the script reports
the median of ``--runs`` of each, alternating the two so that machine load
hits both alike, and the ratio.  The serving process also checks that no
framework (torch, tensorflow, pytensor, theano, jax) was imported.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

BASELINE = "import numpy, scipy.sparse"

SERVE = r"""
import sys
import numpy as np, scipy.sparse as sp
from unibackend import nn
model = nn.load(sys.argv[1])
feed = {}
for x in model.inputs:
    if x.ids:
        feed[x.name] = np.ones((4, 3), np.int64)
    elif x.sparse:
        feed[x.name] = sp.random(4, x.dim, density=0.005, format="csr", random_state=0, dtype=np.float32)
    else:
        feed[x.name] = np.ones((4, x.dim), np.float32)
model.predict(feed)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "pytensor", "theano", "jax"))
if loaded:
    sys.exit("frameworks imported: " + ", ".join(loaded[:5]))
"""


def wall(args, env):
    t0 = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description="Fresh-process serving time on numpy vs importing numpy + scipy.sparse.")
    p.add_argument("model", help="a model saved with model.save (e.g. by examples/moe_tags.py --save)")
    p.add_argument("--runs", type=int, default=9)
    a = p.parse_args(argv)
    env = dict(os.environ, UNIBACKEND_BACKEND="numpy")
    base, serve = [], []
    wall([sys.executable, "-c", BASELINE], env)  # warm the file cache once
    wall([sys.executable, "-c", SERVE, a.model], env)
    for _ in range(a.runs):
        base.append(wall([sys.executable, "-c", BASELINE], env))
        serve.append(wall([sys.executable, "-c", SERVE, a.model], env))
    b, s = statistics.median(base), statistics.median(serve)
    print(f"python -c {BASELINE!r}: median {b * 1000:.0f} ms over {a.runs} fresh processes")
    print(f"nn.load + predict on numpy:         median {s * 1000:.0f} ms over {a.runs} fresh processes")
    print(f"ratio {s / b:.2f} (target <= 1.5); no framework imported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
