"""Examples the conformance suite found where the core or the numpy reference
was wrong, pinned after the fix."""
import numpy as np
import pytest

import unibackend as ub


@pytest.mark.parametrize("name", ["numpy", "torch", "tensorflow", "theano"])
def test_dot_of_native_float64_tensor_with_numpy_array(name):
    """Found by 'grad masked_mean' on tensorflow: ops.dot's fast path compared
    dtypes with ``==``, and ``np.dtype("float64") == None`` is True, so a
    float64 native tensor dotted with a numpy array skipped conversion and the
    plugin got a numpy array (AttributeError: 'tuple' object has no attribute 'rank')."""
    if not any(b.name == name and b.installed for b in ub.backends()):
        pytest.skip(f"{name} not installed")
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    v = np.array([1.0, -1.0])
    with ub.use_backend(name):
        native = ub.asarray(a)
        got = ub.to_numpy(ub.dot(native, v))
    np.testing.assert_array_equal(got, a @ v)
