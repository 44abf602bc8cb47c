"""What every gradient check shares: ``ub.grad`` on the backend against the
case's analytic float64 gradient and a float64 finite difference of the numpy
reference.

A gradient case differentiates ``f = v . (op(...) . u)`` (or a scalar op),
with every array an argument of ``f`` so a compiling backend compiles once
per signature; the cotangent ``g = v u^T`` is drawn small and from the
colliding pool, so ties and zeros reach the gradient too.
"""
from __future__ import annotations

import inspect

import numpy as np
from hypothesis.extra import numpy as hnp

from .. import strategies as S
from .. import tolerances as T
from ..cases import assert_close, fail, function_of


def cotangent_args(draw, dtype, shapes):
    """Arrays of ``shapes`` in [-4, 4]: the vectors the gradient is taken along."""
    el = S.elements(dtype, lo=-4, hi=4)
    return [draw(hnp.arrays(dtype, s, elements=el, fill=el)) for s in shapes]


def fd_grad(case, argname, linear):
    """Central finite difference in float64 of the case's ``f`` run on the
    numpy reference: 2 points for a linear f (exact up to rounding), else 4."""
    import unibackend as ub

    vals = {k: (a.astype(np.float64) if getattr(a, "dtype", None) is not None and a.dtype.kind == "f" else a)
            for k, a in case.values().items()}
    f = function_of(case.stmt.split("\nresult =")[0])
    params = list(inspect.signature(f).parameters)
    x0 = vals[argname]
    scale = max(1.0, float(np.max(np.abs(np.where(np.isfinite(x0), x0, 0)), initial=0)))
    h = 2.0 ** np.ceil(np.log2(scale)) if linear else T.FD_STEP * scale
    g = np.zeros_like(x0)
    with ub.use_backend("numpy"):
        def at(i, step):
            x = x0.copy()
            x[i] += step
            return float(np.asarray(f(*[x if p == argname else vals[p] for p in params])))
        for i in np.ndindex(x0.shape):
            if linear:
                g[i] = (at(i, h) - at(i, -h)) / (2 * h)
            else:
                g[i] = (8 * (at(i, h) - at(i, -h)) - (at(i, 2 * h) - at(i, -2 * h))) / (12 * h)
    return g


def verify_grad(case, backend, device, argname, abs_bound, n_terms, linear=True, fd_ok=True, props=None):
    """The gradient ``ub.grad`` gives on ``backend`` against the case's
    analytic float64 gradient (its numpy ``want`` statement) and against a
    float64 finite difference of the numpy reference; ``props(got)`` checks
    the op's exact properties first."""
    got = case.run(backend, device)
    x = case.values()[argname]
    if got.shape != x.shape:
        fail(f"the gradient has shape {got.shape}, want {x.shape} (the shape of {argname})", got=got)
    if got.dtype != x.dtype:
        fail(f"the gradient has dtype {got.dtype}, want {x.dtype} (the dtype of {argname})", got=got)
    if props is not None:
        props(got)
    tol = T.sum_tol(abs_bound, n_terms, x.dtype)
    assert_close(got, case.reference().astype(x.dtype), tol, "gradient entries (against the analytic gradient in float64)")
    if fd_ok:
        fd = fd_grad(case, argname, linear)
        assert_close(got, fd.astype(x.dtype), np.maximum(tol, T.fd_tol(abs_bound)),
                     "gradient entries (against a float64 finite difference of the numpy reference)")
    return got
