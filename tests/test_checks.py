"""The core's own helpers, against the Python builtins they stand in for."""
from hypothesis import given
from hypothesis import strategies as st

from unibackend._checks import slice_bounds

ends = st.none() | st.integers(-12, 12)


@given(ends, ends, st.none() | st.integers(-5, 5).filter(bool), st.integers(0, 9))
def test_slice_bounds_equal_slice_indices(start, stop, step, n):
    """slice_bounds(s, n) == s.indices(n) for every slice and length (it exists
    because torch.compile before 2.13 cannot trace slice.indices)."""
    s = slice(start, stop, step)
    assert slice_bounds(s, n) == s.indices(n)
