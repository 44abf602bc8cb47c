import os

import pytest

BUILTIN = ("numpy", "torch", "tensorflow", "theano", "jax", "dask")


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

# Hypothesis' example database lives in the project's cache, not the cwd.
os.environ.setdefault("UNIBACKEND_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".unibackend-cache"))


@pytest.fixture
def numpy_backend():
    import unibackend as ub

    with ub.use_backend("numpy") as B:
        yield B
