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
