"""``unibackend conformance --jobs N``: the suite's backends over N worker
processes.

A layer over :func:`runner.run`, not a change to it: each task is one
column of one backend (or a share of the checks of a column that compiles
a graph per case: see :func:`_tasks`), run by ``runner.run`` in a worker
process; the results come back
and are put in the order a one-process run gives, so the matrix, the report
and the per-backend times are the same.  Each worker sends the name of the
check it starts to the parent, which drives the progress display.

Why a pool of our own and not pytest-xdist: the suite's own command runs
without pytest (``unibackend conformance`` runs the checks under hypothesis
directly and prints its matrix), and xdist splits *test items*, so a
backend's checks would spread over workers and each worker would import and
warm every framework (and compile its graphs) again; a column per task
keeps a framework in the few processes that need it and each check's
graphs in one.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queues
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

_progress_queue = None  # set in each worker by _init


def _init(q):
    global _progress_queue
    _progress_queue = q


def _work(backend, check_names, kwargs, columns=None):
    from . import runner
    from .checks import CHECKS

    checks = [CHECKS[n] for n in check_names]

    def progress(check, name):
        if _progress_queue is not None:
            _progress_queue.put((check.name, name))

    return runner.run([backend], checks, progress=progress, columns=columns, **kwargs)


def _tasks(backends, names, modes, jobs=2):
    """The work, longest first: (backend, check names, columns).

    One task per (backend, column), so that N workers finish together: a
    backend's columns land on whichever worker frees up first (each worker
    imports a framework once and keeps it for its next column of it).  A
    backend that compiles a graph per signature (the plugin's declared
    ``eager_compiles``) pays seconds per graph cold, so each of its
    compiled columns is cut into ``jobs`` shares of the checks (at least
    2; alternated: a check and its neighbour cost alike), one per worker:
    shares that run at once compile the same kernels twice (PyTensor
    caches each op's machine code, but a share sees another's only once
    written), so more shares cost more CPU: theano's compiled column, cold,
    took 392 s of CPU in 4 shares and 446 s in 8.  Order: those shares,
    then the eager columns (40 examples per check, against 4 in the other
    modes), then the rest, the compile paths' columns first (a compiler's
    graphs cost seconds each; function, vmap and grad columns took 0.2-15 s
    in the cold run of every mode, where torch's two compiled columns, 22
    and 32 s, had come last and ran alone at the end).  One task per
    backend left a worker idle for the last ~100 s (theano alone took as
    long as every other backend)."""
    from .engine import backend_modes, compiles_eagerly, family

    shares, eager, rest = [], [], []
    for b in backends:
        heavy = compiles_eagerly(b)
        for m in backend_modes(b, modes):
            if family(m) == "eager":
                eager.append((b, names, (m,)))
            elif heavy:
                parts = max(2, jobs)
                shares += [(b, names[i::parts], (m,)) for i in range(parts) if names[i::parts]]
            else:
                rest.append((b, names, (m,)))
    rest.sort(key=lambda t: family(t[2][0]) != "compiled")  # stable: backend order within each
    return shares + eager + rest


def run_parallel(backends, checks, jobs, *, progress=None, **kwargs):
    """``runner.run(backends, checks, progress=progress, **kwargs)`` with the
    backends spread over ``jobs`` worker processes; the same results in the
    same order (check, then backend, then mode).  ``jobs <= 1``, or one
    task: ``runner.run`` in this process."""
    from . import runner

    names = [c.name for c in checks]
    tasks = _tasks(backends, names, kwargs.get("modes", ("eager",)), jobs)
    if jobs <= 1 or len(tasks) <= 1:
        return runner.run(backends, checks, progress=progress, **kwargs)
    by_name = {c.name: c for c in checks}
    # spawn, not fork: the parent may hold framework threads (fork would
    # copy their locks held); each worker imports only its own framework.
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    results = []
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx,
                             initializer=_init, initargs=(q,)) as pool:
        pending = {pool.submit(_work, b, n, kwargs, cols) for b, n, cols in tasks}
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            _drain(q, by_name, progress)
            for f in done:
                results += f.result()
        _drain(q, by_name, progress)
    from .engine import backend_modes

    check_at = {n: i for i, n in enumerate(names)}
    backend_at = {b: i for i, b in enumerate(backends)}
    mode_at = {(b, m): i for b in backends for i, m in enumerate(backend_modes(b, kwargs.get("modes", ("eager",))))}
    results.sort(key=lambda r: (check_at[r.check], backend_at[r.backend], mode_at.get((r.backend, r.mode), 0)))
    return results


def _drain(q, by_name, progress):
    while True:
        try:
            check, name = q.get_nowait()
        except queues.Empty:
            return
        if progress is not None:
            progress(by_name[check], name)


_screen = None  # the real stderr while framework_output_to redirects it


def screen():
    """The stream for the suite's own progress lines: the real stderr, also
    while the frameworks' output goes to the log."""
    return _screen or sys.stderr


def run_quietly(log_path, backends, checks, jobs, **kwargs):
    """:func:`run_parallel` with the frameworks' messages sent to
    ``log_path`` (None: left on the screen)."""
    global _screen
    if log_path is None:
        return run_parallel(backends, checks, jobs, **kwargs)
    with framework_output_to(log_path) as real:
        _screen = real
        try:
            return run_parallel(backends, checks, jobs, **kwargs)
        finally:
            _screen = None


@contextlib.contextmanager
def framework_output_to(path):
    """Send what the frameworks print to the process's stderr (file
    descriptor 2: their C++ logs, Python warnings and logging, and the same
    from worker processes, which inherit it) to ``path`` while the suite
    runs, so the screen shows only the suite's own progress and matrix.
    Yields a text stream on the real stderr for the suite's own lines."""
    import io

    sys.stderr.flush()
    saved = os.dup(2)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 2)
    os.close(log)
    real = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), write_through=True)
    try:
        yield real
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        real.close()
