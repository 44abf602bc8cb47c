"""Intra-op thread counts of the frameworks under test.

On a shared machine, a framework that spreads every kernel over all cores
spins waiting for cores that others hold: an elementwise pass over 200k ints
took 48 ms with torch on 2 threads under load and 1.6 ms on 1.  The benchmark
therefore runs every framework on ``--threads`` threads (default 1) so that
the unified op and the native call see the same, stable conditions;
``--threads 0`` leaves each framework's default.
"""
from __future__ import annotations

import os

ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
            "TF_NUM_INTEROP_THREADS")

_limiter = None


def limit(n):
    """Set the thread count for frameworks imported from now on (and for
    child processes), and for numpy's BLAS when threadpoolctl is installed."""
    global _limiter
    if not n:
        return
    for var in ENV_VARS:
        os.environ[var] = str(n)
    if n == 1 and "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
        # XLA's CPU client (jax) sizes its Eigen pool from the cores, not OMP_*.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _limiter = threadpool_limits(limits=n)


def apply(backend, n):
    """Apply the thread count to ``backend``'s framework, already imported."""
    if not n:
        return
    if backend == "torch":
        import torch

        torch.set_num_threads(n)
    elif backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:
            pass  # the runtime already started; TF_NUM_INTRAOP_THREADS set it before


def describe(n):
    return "framework defaults" if not n else f"{n} per framework"
