"""A quick check of ub.dot's dispatch overhead on an 8x8 matmul, numpy and torch.

    python -m unibackend.benchmarks.dispatch_check

Each round times the unified call and the native call back to back (20,000
calls each) and keeps their difference; the median over 15 rounds is printed,
with an empty Python call as a yardstick.  `unibackend bench` measures the same
thing among many others; this one is short enough to repeat on a quiet machine.
"""
import timeit

import numpy as np

import unibackend as ub


def main(rounds=15, number=20_000):
    a = b = np.ones((8, 8))
    pairs = {"numpy": (lambda: ub.dot(a, b), lambda: np.dot(a, b))}
    try:
        import torch

        torch.set_num_threads(1)
        ta = tb = torch.ones(8, 8)
        pairs["torch"] = (lambda: ub.dot(ta, tb), lambda: torch.mm(ta, tb))
    except ImportError:
        pass

    def empty():
        return None

    out: dict[str, list[float]] = {"empty call": []}
    out.update({f"{name} overhead": [] for name in pairs})
    for unified, native in pairs.values():
        unified(), native()
    for _ in range(rounds):
        out["empty call"].append(timeit.timeit(empty, number=number) / number)
        for name, (unified, native) in pairs.items():
            u = timeit.timeit(unified, number=number) / number
            n = timeit.timeit(native, number=number) / number
            out[f"{name} overhead"].append(u - n)
    for key, values in out.items():
        print(f"{key:>16}: {np.median(values) * 1e6:+.3f} us (median of {rounds})")


if __name__ == "__main__":
    main()
