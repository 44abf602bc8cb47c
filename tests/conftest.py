import os

import pytest

# Hypothesis' example database lives in the project's cache, not the cwd.
os.environ.setdefault("UNIBACKEND_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".unibackend-cache"))


@pytest.fixture
def numpy_backend():
    import unibackend as ub

    with ub.use_backend("numpy") as B:
        yield B
