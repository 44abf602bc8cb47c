"""Every tolerance of the conformance suite, in one place.

Float results are compared with the standard forward error bound of a
floating-point sum: computing ``s = t_1 + ... + t_n`` in precision ``u``
(unit roundoff) in any order gives ``|s_computed - s| <= (n - 1) u sum|t_i|``
(Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §4.2).
Two implementations that each meet the bound differ by at most twice it, and
a mean or a softmax adds a rounding or two of its own.  So a float result is
within ``SLACK * (n + 2) * eps * sum|terms| + floor`` of the reference, where
``eps = 2u`` is the dtype's machine epsilon, ``sum|terms|`` is computed by the
check (the same op applied to absolute values), and ``floor`` absorbs the
subnormal range.  No check has a fudge factor of its own.

Integer results (indices, kept positions, shapes, dtypes) are compared exactly.

The unit tests use the same bound through :func:`assert_within` (and
:func:`rtol_for` where a test needs a relative tolerance): a test says how
many terms its result sums, never a tolerance of its own.
"""
from __future__ import annotations

import numpy as np

#: the factor over the one-sided forward error bound: 2 for two independent
#: implementations, 2 more for the final division / exp of a mean or softmax.
SLACK = 4.0

#: a float64 finite-difference gradient (4-point stencil, step ``FD_STEP``
#: relative to the input's scale) is accurate to about ``FD_RTOL`` times the
#: gradient's scale: truncation O(h^4) plus rounding O(eps / h).
FD_STEP = 1e-3
FD_RTOL = 1e-8


def eps(dtype):
    """Machine epsilon of a float dtype."""
    return float(np.finfo(np.dtype(dtype)).eps)


def floor(dtype, n=1):
    """The absolute slack for results that underflow: ``n`` smallest normals."""
    return float(np.finfo(np.dtype(dtype)).tiny) * (n + 2)


def sum_tol(abs_sum, n_terms, dtype):
    """Tolerance, per element, of a sum of ``n_terms`` terms whose absolute
    values sum to ``abs_sum`` (an array or a number), computed in ``dtype``."""
    n = np.asarray(n_terms, dtype=np.float64)
    return SLACK * (n + 2) * eps(dtype) * np.asarray(abs_sum, dtype=np.float64) + floor(dtype, np.max(n, initial=0))


def softmax_tol(x, out, axis, dtype):
    """Tolerance, per element, of ``softmax(x)`` whose reference is ``out``.

    ``exp(x_i - max)`` carries a relative error of ``eps * (1 + |x_i - max|)``
    (the rounding of the difference, amplified by exp), and the normalising
    sum adds ``n * eps``."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[axis] if x.ndim else 1
    with np.errstate(invalid="ignore"):
        m = np.max(x, axis=axis, keepdims=True) if x.size else np.zeros_like(x)
        m = np.where(np.isfinite(m), m, 0.0)
        spread = np.where(np.isfinite(x), np.abs(x - m), 0.0)
    return SLACK * eps(dtype) * (n + 2 + spread) * np.abs(np.asarray(out, dtype=np.float64)) + floor(dtype, n)


def fd_tol(scale):
    """Tolerance of a float64 finite-difference gradient of the given scale."""
    return FD_RTOL * (np.asarray(scale, dtype=np.float64) + 1.0)


# ---------------------------------------------------------------------------
# the same bound for the unit tests (tests/*.py): one rule instead of a
# tolerance invented per file

#: the most terms a unit test's sum adds when the test does not say: the
#: tests' inputs have at most this many entries along any summed axis.
TEST_TERMS = 64


def terms_bound(*args):
    """The most terms one element of a unibackend op on ``args`` can sum: the
    size of the largest array argument (1 when there is none)."""
    return max([int(np.prod(a.shape)) for a in args if hasattr(a, "shape")] or [1])


def rtol_for(dtype, n_terms=TEST_TERMS):
    """The relative form of :func:`sum_tol`: a result of ``dtype`` that sums
    ``n_terms`` terms of one sign is within ``rtol_for(dtype, n_terms)`` of
    its value, relative to it."""
    return SLACK * (n_terms + 2) * eps(dtype)


def assert_within(actual, expected, *, n_terms=TEST_TERMS, abs_sum=None, dtype=None, err_msg=""):
    """Assert that ``actual`` is within :func:`sum_tol` of ``expected``.

    Each element of ``actual`` (computed in ``dtype``, by default its own
    float dtype, float64 for anything else) is taken as a sum of at most
    ``n_terms`` terms whose absolute values sum to ``abs_sum`` (an array or a
    number); ``expected`` is exact or float64.  ``abs_sum`` defaults to the
    largest finite ``|expected|``: right for a test's inputs of one scale
    whose terms do not cancel (pass ``abs_sum`` when they do).  NaN must be
    where ``expected`` has NaN and an infinity where it has the same one.
    ``expected`` broadcasts (``assert_within(p.sum(axis=1), 1.0)``)."""
    a = np.asarray(actual)
    if dtype is None:
        dtype = a.dtype if a.dtype.kind == "f" else np.float64
    a64, e64 = np.broadcast_arrays(a.astype(np.float64), np.asarray(expected, dtype=np.float64))
    if abs_sum is None:
        finite = np.abs(e64[np.isfinite(e64)])
        abs_sum = float(np.max(finite, initial=0.0))
    tol = np.broadcast_to(sum_tol(abs_sum, n_terms, dtype), e64.shape)
    an, en, ei = np.isnan(a64), np.isnan(e64), np.isinf(e64)
    with np.errstate(invalid="ignore"):
        err = np.abs(a64 - e64)
        bad = (an != en) | (ei & (a64 != e64)) | (~en & ~ei & ~(err <= tol))
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0]) if bad.ndim else ()
        raise AssertionError(
            f"{err_msg + ': ' if err_msg else ''}{int(bad.sum())} of {bad.size} elements differ beyond the "
            f"tolerance of a sum of {n_terms} terms in {np.dtype(dtype).name}; first at index {i}: "
            f"got {a64[i]!r}, want {e64[i]!r}, |difference| {err[i]:.3g} > tolerance {tol[i]:.3g}")
