"""Adapters (unibackend.plugin.Adapter): foreign wrappers of native tensors
go into the ops as the value they hold.  A fake wrapper here; Keras' own in
tests/test_keras.py."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import unibackend as ub
from unibackend import _registry as R
from unibackend.plugin import Adapter

MOD = "ub_fake_wrapping_lib"


class Box:
    def __init__(self, value):
        self.value = value


class Placeholder:
    pass


class BoxAdapter(Adapter):
    name = "box"
    modules = (MOD,)
    unwrapped = 0

    def wrapper_types(self):
        return (Box, Placeholder)

    def unwrap(self, x):
        if isinstance(x, Placeholder):
            raise TypeError("a Placeholder holds no value")
        BoxAdapter.unwrapped += 1
        return x.value


@pytest.fixture
def box_adapter():
    sys.modules[MOD] = types.ModuleType(MOD)
    ub.register_adapter("box", BoxAdapter)
    try:
        yield
    finally:
        R.unregister_adapter("box")
        sys.modules.pop(MOD, None)


def test_a_wrapper_goes_into_every_op_as_its_value(box_adapter):
    """Each op given a wrapper computes what it computes on the held value."""
    rng = np.random.default_rng(0)
    t = rng.standard_normal((6, 3))
    ids = np.array([[1, 2, 0], [0, 0, 0]])
    x = rng.standard_normal((2, 5))
    np.testing.assert_array_equal(ub.embedding_mean(Box(t), ids), ub.embedding_mean(t, ids))
    np.testing.assert_array_equal(ub.topk_gate(Box(x), 2), ub.topk_gate(x, 2))
    np.testing.assert_array_equal(ub.dot(Box(x), Box(t[:5])), ub.dot(x, t[:5]))
    np.testing.assert_array_equal(ub.masked_mean(Box(x), x > 0, 1), ub.masked_mean(x, x > 0, 1))
    np.testing.assert_array_equal(ub.set_subtensor(Box(x), 0, 1.0), ub.set_subtensor(x, 0, 1.0))
    np.testing.assert_array_equal(ub.to_numpy(Box(x)), x)
    assert R.owner(Box(x)) is None  # a numpy value: neutral, as the value itself


def test_a_wrapper_without_a_value_raises_typeerror_naming_the_op(box_adapter):
    with pytest.raises(TypeError, match=r"^softmax: a Placeholder holds no value$"):
        ub.softmax(Placeholder())


def test_an_adapter_whose_module_is_not_imported_is_not_consulted():
    """Nothing is imported to recognise a wrapper: with the adapter's module
    absent from sys.modules the type stays unknown (and is not unwrapped)."""
    ub.register_adapter("box", BoxAdapter)
    try:
        before = BoxAdapter.unwrapped
        with pytest.raises(TypeError):
            ub.softmax(Box(np.ones(3)))  # numpy cannot read a Box
        assert BoxAdapter.unwrapped == before
        assert Box not in R._unwrap
    finally:
        R.unregister_adapter("box")


def test_register_adapter_refuses_an_incomplete_class():
    class Half(Adapter):
        modules = (MOD,)

        def wrapper_types(self):
            return (Box,)

    with pytest.raises(TypeError, match="does not implement: unwrap"):
        ub.register_adapter("half", Half)
