"""Export: a model as one portable graph file, through the plugin primitive
:meth:`unibackend.plugin.Backend.export` of the backend that writes the
format (found in the registry by name; this module imports no framework)."""
from __future__ import annotations

import os

from .. import _registry as R
from ..plugin import GraphInput
from .model import Model
from .saving import load

__all__ = ["export_onnx"]


def export_onnx(model: Model | str | os.PathLike, path: str | os.PathLike) -> str:
    """Write ``model`` (a :class:`~unibackend.nn.Model`, or the path of a
    saved ``.npz``) to ``path`` as an ONNX file whose batch axis is open.

    Its inputs are the model's, by name: a dense input as (batch, dim)
    floats; an ids input as (batch, length) int64; a sparse input as three,
    ``<name>_data``, ``<name>_indices`` (int64) and ``<name>_indptr`` (int64),
    the arrays of a CSR matrix.  Its outputs are the model's outputs, by
    layer name.  ONNX Runtime and numpy alone serve it (docs/models.md).
    Needs the onnx plugin (``pip install 'unibackend[onnx]'``); returns the path."""
    model = model if isinstance(model, Model) else load(model)
    B = R.backend("onnx")
    inputs = [GraphInput(x.name, "ids" if x.ids else "sparse" if x.sparse else "dense", model.dtype, x.dim)
              for x in model.inputs]
    names = [o.name for o in model.outputs]
    params = dict(model.params)

    def forward(*values):
        return model.forward(params, list(values), names)

    return B.export(forward, inputs, os.fspath(path))
