import math
import os

import pytest

BUILTIN = ("numpy", "torch", "tensorflow", "theano", "jax", "dask", "onnx")


def installed_backends(names=BUILTIN):
    """The backends among ``names`` that load here (plugin present, framework installed)."""
    import unibackend as ub

    out = []
    for name in names:
        try:
            with ub.use_backend(name):
                pass
        except (ImportError, ValueError):
            continue
        out.append(name)
    return out

def numpy_ref(fn, *args, **kw):
    """The numpy reference's answer of ``fn(*args, **kw)`` (numpy arrays)."""
    import unibackend as ub

    with ub.use_backend("numpy"):
        return fn(*args, **kw)


def agree(backend, fn, *args, exact=False, device=None, native=None, **kw):
    """The one comparison with the reference: ``fn`` on ``backend`` (on
    ``device``) gives what it gives on numpy -- same shape and dtype, values
    equal (``exact``) or within the conformance suite's float bound -- and
    leaves its numpy inputs unchanged.  ``native``: the type the result must
    have (default: the type of the backend's own tensors, as ``ub.asarray``
    makes them).  Returns the backend's result."""
    import numpy as np

    import unibackend as ub
    from unibackend.conformance.tolerances import terms_bound

    copies = [a.copy() if isinstance(a, np.ndarray) else None for a in args]
    want = numpy_ref(fn, *args, **kw)
    with ub.use_backend(backend, device):
        out = fn(*args, **kw)
        if native is None:
            native = type(ub.asarray(np.zeros(1)))
    same_as_reference(out, want, exact=exact, native=native, n_terms=terms_bound(*args))
    for a, c in zip(args, copies):
        if c is not None:
            np.testing.assert_array_equal(a, c)
    return out


def same_as_reference(out, want, exact=False, native=None, n_terms=None):
    """:func:`agree`'s comparison, for a result computed some other way (a
    framework's own compiled graph, a literal reference): ``out`` is a
    ``native`` (when given) with ``want``'s shape and dtype, values equal
    (``exact``) or within the float bound of a sum of ``n_terms`` terms."""
    import numpy as np

    import unibackend as ub
    from unibackend.conformance.tolerances import TEST_TERMS, assert_within

    if native is not None:  # numpy's own ops give numpy scalars for 0-d results
        assert isinstance(out, native) or (native is np.ndarray and isinstance(out, np.generic)), type(out)
    native_tensor = native is not None and not isinstance(out, (np.ndarray, np.generic))
    got = np.asarray(ub.to_numpy(out) if native_tensor else out)
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    n_terms = TEST_TERMS if n_terms is None else n_terms
    if exact:
        np.testing.assert_array_equal(got, want)
    elif got.dtype.kind == "c":  # assert_within reads real values: each part on its own
        for g, w in ((got.real, want.real), (got.imag, want.imag)):
            assert_within(g, w, n_terms=n_terms, abs_sum=np.abs(want).max(initial=0.0))
    else:
        assert_within(got, want, n_terms=n_terms, dtype=want.dtype if want.dtype.kind == "f" else None)


NNAN = math.copysign(math.nan, -1.0)  # a NaN with the sign bit set (x86's inf - inf)
KTH_FILL = -9.0
_F, nan, inf = KTH_FILL, math.nan, math.inf
#: keep_topk's k-th place held by a NaN, a tie, -0.0 or +inf: (row, k, the
#: answer with fill=KTH_FILL).  tests/test_contract.py runs them eagerly on
#: every backend; a backend's file inside its compilers.
KTH_PLACE = [
    ([0.0, nan, -0.0, 1.0, -0.0], 3, [0.0, nan, _F, 1.0, _F]),       # zeros tie at the k-th place
    ([-0.0, 2.0, 0.0, nan], 3, [-0.0, 2.0, _F, nan]),                # -0.0 first: it stays, sign kept
    ([nan, inf, nan, nan, inf], 2, [nan, _F, nan, _F, _F]),          # more NaNs than k
    ([inf, nan, 3.0, inf, nan], 3, [inf, nan, _F, _F, nan]),         # NaNs, then the first +inf
    ([1.0, NNAN, 2.0], 1, [_F, nan, _F]),                            # a negative NaN is still largest
    ([1.0, NNAN, 2.0, 2.0], 2, [_F, nan, 2.0, _F]),                  # ... and a tie right below it
    ([-inf, -inf, -inf], 2, [-inf, -inf, _F]),                       # -inf at the k-th place
    ([3.0, 1.0, 2.0, 0.0], 2, [3.0, _F, 2.0, _F]),                   # nothing special
]


def special_rows(special, rows):
    """``rows`` copies of one softmax row with ``special`` (NaN, +inf or -inf)
    in the first one: the NaN/inf rules with one slice and with many."""
    import numpy as np

    x = np.tile(np.array([0.1, 0.5, 0.3, 2.0]), (rows, 1))
    x[0, 1] = special
    return x


# Hypothesis' example database lives in the project's cache, not the cwd.
os.environ.setdefault("UNIBACKEND_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".unibackend-cache"))


@pytest.fixture
def numpy_backend():
    import unibackend as ub

    with ub.use_backend("numpy") as B:
        yield B
