"""Portable models: a few layers that run on any backend, train on the
autodiff ones, and save to one ``.npz`` that serves on plain numpy.

Layers are composed the classic way: each layer is called on the layer(s)
before it, and when a model evaluates a layer, the layer pulls its inputs
from those layers first, so the output of any layer can be asked for by name::

    import unibackend as ub
    from unibackend import nn

    bow = nn.Input("bow", 10000, sparse=True)
    tags = nn.Input("tags", ids=True)
    emb = nn.EmbeddingMean(500, 32, name="tag_mean")(tags)
    hidden = nn.Dense(64, "tanh", name="hidden")(bow, emb)
    gate = nn.TopKGate(8, 2, name="gate")(hidden)
    moe = nn.MixtureOfExperts(32, 8, "relu", name="moe")(hidden, gate)
    out = nn.Dense(5, "softmax", name="out")(moe)
    model = nn.Model([bow, tags], out, seed=0)

    model.predict({"bow": X, "tags": ids})                 # class probabilities
    model.predict({"bow": X, "tags": ids}, output="gate")  # any layer by name

Parameters are a dict of numpy arrays (``model.params``); the forward pass
runs on whichever backend is in force (``ub.use_backend``).  Training
(:class:`Trainer`) takes ``ub.value_and_grad`` of the loss on a backend
with autodiff (on one whose eager ops compile, wrapped in ``ub.function``,
so a step runs one compiled graph) and updates the numpy parameters with
:class:`SGD` or :class:`Adam`.  ``model.save(path)`` writes the parameters and the
architecture (JSON) into one ``.npz``; :func:`load` reads it back with
``allow_pickle=False``: no pickle anywhere.

The package: :mod:`~unibackend.nn.functional` (activations, reductions,
the loss), :mod:`~unibackend.nn.layers`, :mod:`~unibackend.nn.model`,
:mod:`~unibackend.nn.saving` (the file format) and
:mod:`~unibackend.nn.training`; every public name is re-exported here.
Nothing in it names a framework: the math goes through the plugin
primitives, and what differs between backends is read from their
declared capabilities.

Importing this package imports no framework.
"""
from __future__ import annotations

from .export import export_onnx
from .functional import (
    ACTIVATIONS,
    exp,
    log,
    log_softmax,
    reduce_max,
    reduce_sum,
    relu,
    softmax_cross_entropy,
    tanh,
)
from .layers import LAYERS, Dense, EmbeddingMean, Input, Layer, MixtureOfExperts, Projection, TopKGate
from .model import Model
from .saving import FORMAT, FORMAT_VERSION, ModelFileError, load
from .training import SGD, Adam, Trainer

__all__ = [
    "Input", "Projection", "Dense", "EmbeddingMean", "TopKGate",
    "MixtureOfExperts", "Model", "Trainer", "SGD", "Adam", "load",
    "ModelFileError", "export_onnx", "ACTIVATIONS", "softmax_cross_entropy",
    "Layer", "LAYERS", "FORMAT", "FORMAT_VERSION",
    "tanh", "relu", "exp", "log", "reduce_sum", "reduce_max", "log_softmax",
]
