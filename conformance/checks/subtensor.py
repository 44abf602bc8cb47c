"""Indexed writes: set_subtensor and inc_subtensor.

The oracle replays numpy's writes one at a time (the last write wins) for
set_subtensor and ``np.add.at`` in float64 (every write adds) for
inc_subtensor.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .. import strategies as S
from .. import tolerances as T
from ..cases import Arg, Case, assert_close, assert_exact
from .base import arr, check


@st.composite
def subtensor_cases(draw, op):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
    dtype = draw(S.float_dtypes())
    x = draw(S.float_arrays(shape, dtype, lo=-100, hi=100, nan=op == "set_subtensor"))
    index = draw(S.subtensor_indices(shape))
    sel = np.empty(shape, np.int8)[index].shape
    vshape = draw(S.broadcast_value_shapes(sel))
    vdt = draw(S.float_dtypes())
    value: Any
    if vshape == () and draw(st.booleans()):
        value = float(draw(S.elements(vdt, lo=-100, hi=100)))
    elif draw(st.integers(0, 2)) == 0:
        # distinct values: a position named twice must show which write won
        v = np.arange(1, int(np.prod(vshape)) + 1, dtype=vdt).reshape(vshape)
        value = Arg(v, S.array_code(v))
    else:
        value = draw(S.float_arrays(vshape, vdt, lo=-100, hi=100, nan=op == "set_subtensor",
                                    layouts=("C", "transposed")))
    return Case(f"result = ub.{op}(x, index, value)", {"x": x, "index": index, "value": value})


def _writes(x, index, value):
    """(flat positions, broadcast values) of ``x[index] = value`` in numpy's order."""
    pos = np.arange(x.size, dtype=np.int64).reshape(x.shape)[index].reshape(-1)
    vals = np.broadcast_to(np.asarray(value), np.empty(x.shape, np.int8)[index].shape).reshape(-1)
    return pos, vals


# ---------------------------------------------------------------------------
# set_subtensor

# a position named twice ([1, 1, -4]: 1 twice); a negative-step slice with an int
SET_SUBTENSOR_EXAMPLES = [
    Case("result = ub.set_subtensor(x, index, value)",
         {"x": arr(np.zeros(5)), "index": np.array([1, 1, -4]), "value": arr([1.0, 2.0, 3.0])}),
    Case("result = ub.set_subtensor(x, index, value)",
         {"x": arr(np.zeros((3, 2))), "index": (slice(None, None, -2), 1), "value": arr([5.0, 6.0])}),
]


@check("set_subtensor", "set_subtensor", subtensor_cases("set_subtensor"), examples=SET_SUBTENSOR_EXAMPLES)
def verify_set_subtensor(case, backend, device):
    """A copy of x with x[index] = value (numpy's index meaning; a position
    named twice: the last write wins); every value exact; equals numpy."""
    got = case.run(backend, device)
    v = case.values()
    x, index, value = v["x"], v["index"], v["value"]
    want = x.copy().reshape(-1)
    pos, vals = _writes(x, index, value)
    for p, val in zip(pos, vals):  # one write at a time: the last one wins
        want[p] = val
    assert_exact(got, want.reshape(x.shape), "values (against one write at a time, the last wins)")
    assert_exact(got, case.reference())


# ---------------------------------------------------------------------------
# inc_subtensor

# a position named twice gets both additions; a scalar through an Ellipsis and a repeated column
INC_SUBTENSOR_EXAMPLES = [
    Case("result = ub.inc_subtensor(x, index, value)",
         {"x": arr(np.zeros(5)), "index": np.array([1, 1, -4]), "value": arr([1.0, 2.0, 3.0])}),
    Case("result = ub.inc_subtensor(x, index, value)",
         {"x": arr(np.zeros((2, 3), np.float32)), "index": (Ellipsis, np.array([0, 0])), "value": 1.0}),
]


@check("inc_subtensor", "inc_subtensor", subtensor_cases("inc_subtensor"), examples=INC_SUBTENSOR_EXAMPLES)
def verify_inc_subtensor(case, backend, device):
    """A copy of x with x[index] += value, a position named twice getting
    every addition (np.add.at); within the sum tolerance; equals numpy."""
    got = case.run(backend, device)
    v = case.values()
    x, index, value = v["x"], v["index"], v["value"]
    pos, vals = _writes(x, index, value)
    want = x.astype(np.float64).reshape(-1)
    absum = np.abs(want)
    terms = np.ones(x.size)
    vals64 = vals.astype(x.dtype).astype(np.float64)
    np.add.at(want, pos, vals64)
    np.add.at(absum, pos, np.abs(vals64))
    np.add.at(terms, pos, 1)
    tol = T.sum_tol(absum, terms, x.dtype).reshape(x.shape)
    assert_close(got, want.reshape(x.shape).astype(x.dtype), tol,
                 "values (against np.add.at in float64)")
    assert_close(got, case.reference(), tol)
