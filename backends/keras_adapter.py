"""Keras 3 objects in the ops: a ``keras.Variable`` stands for its live value.

An adapter (:class:`unibackend.plugin.Adapter`), consulted only once keras is
imported.  ``variable.value`` is what Keras' own ops read: the framework
tensor the optimizer updates (a torch Parameter, a tf ResourceVariable), the
traced value inside Keras' jitted train step on jax, and the value cast to
the compute dtype inside an autocast scope (mixed precision).  So gradients
flow to the variable, on every Keras backend, and the tensor selects the
backend Keras runs on.
"""
from __future__ import annotations

import sys

from unibackend.plugin import Adapter

#: Why a KerasTensor cannot go into an op; the core puts the op's name first.
SYMBOLIC = (
    "got a symbolic KerasTensor (a functional model's placeholder, which holds no value): "
    "call unibackend ops inside a keras.layers.Layer's call(), where Keras passes real tensors, "
    "or use the layers of unibackend.keras (EmbeddingMean, TopKGate, SparseProjection)"
)


class KerasAdapter(Adapter):
    name = "keras"
    modules = ("keras",)

    def __init__(self):
        keras = sys.modules["keras"]  # consulted only once keras is imported: never imports it
        self._symbolic = keras.KerasTensor

    def wrapper_types(self):
        keras = sys.modules["keras"]
        return (keras.Variable, keras.KerasTensor)

    def unwrap(self, x):
        if isinstance(x, self._symbolic):
            raise TypeError(SYMBOLIC)
        return x.value
