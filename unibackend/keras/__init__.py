"""Keras 3 layers built on the unified ops: the same answer on every Keras
backend (jax, torch, tensorflow).

    pip install 'unibackend[keras]'

    import keras
    from unibackend.keras import EmbeddingMean, TopKGate, SparseProjection

Each layer has ``compute_output_shape``, ``get_config`` and a registered
serializable name (``unibackend>EmbeddingMean``...), so a model saved as
``.keras`` on one Keras backend loads on another (import ``unibackend.keras``
before ``keras.saving.load_model``).  The weights are ordinary Keras
variables: the ops take a ``keras.Variable`` as its live value (the keras
adapter, ``unibackend.plugins.keras_adapter``), so gradients reach them and
the optimizer updates them.  See docs/keras.md.
"""
from __future__ import annotations

import numpy as np

try:
    import keras
except ImportError as e:  # the one module of the package that needs an extra to import
    raise ImportError("unibackend.keras needs Keras 3: pip install 'unibackend[keras]'") from e

import unibackend as ub
from unibackend import CapabilityError
from unibackend import _registry as R

__all__ = ["EmbeddingMean", "SparseProjection", "TopKGate"]

if "keras" not in R._adapter_names():  # run from a source tree whose entry points are not installed
    from unibackend.plugins.keras_adapter import KerasAdapter

    ub.register_adapter("keras", KerasAdapter)

PACKAGE = "unibackend"


def _pos_int(cls, name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{cls}: {name} must be a positive int, got {v!r}")
    return int(v)


def _last_dim(cls, input_shape):
    d = input_shape[-1] if input_shape else None
    if len(input_shape) != 2 or d is None:
        raise ValueError(f"{cls}: the input must be 2-D (batch, features) with a known last dim, "
                         f"got shape {tuple(input_shape)}")
    return int(d)


@keras.saving.register_keras_serializable(package=PACKAGE)
class EmbeddingMean(keras.layers.Layer):
    """Per row of padded ids (batch, L), the mean of the embeddings of the
    ids that are not ``pad_id``: ``ub.embedding_mean``.  A row of only
    padding gives zeros; the ``pad_id`` row of the table is never read, so it
    gets no gradient and stays as initialised."""

    def __init__(self, input_dim, output_dim, pad_id=0, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = _pos_int("EmbeddingMean", "input_dim", input_dim)
        self.output_dim = _pos_int("EmbeddingMean", "output_dim", output_dim)
        if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)) or not 0 <= pad_id < self.input_dim:
            raise ValueError(f"EmbeddingMean: pad_id must be an int in [0, {self.input_dim}), got {pad_id!r}")
        self.pad_id = int(pad_id)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"EmbeddingMean: ids must be 2-D (batch, length), got shape {tuple(input_shape)}")
        self.embeddings = self.add_weight(shape=(self.input_dim, self.output_dim), name="embeddings",
                                          initializer=self.embeddings_initializer)

    def call(self, ids):
        return ub.embedding_mean(self.embeddings, ids, self.pad_id)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "pad_id": self.pad_id,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TopKGate(keras.layers.Layer):
    """Gate weights (batch, experts): ``ub.topk_gate(x @ kernel + bias, k)``,
    exactly ``k`` nonzero weights per row summing to 1; among equal logits
    the lower index wins, NaN counts as largest (arXiv:1701.06538, without
    the noise and the load-balancing loss)."""

    def __init__(self, experts, k, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.experts = _pos_int("TopKGate", "experts", experts)
        self.k = _pos_int("TopKGate", "k", k)
        if self.k > self.experts:
            raise ValueError(f"TopKGate: k={k} must be at most experts={experts}")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        d = _last_dim("TopKGate", input_shape)
        self.kernel = self.add_weight(shape=(d, self.experts), name="kernel", initializer=self.kernel_initializer)
        self.bias = self.add_weight(shape=(self.experts,), name="bias", initializer=self.bias_initializer) \
            if self.use_bias else None

    def call(self, x):
        logits = ub.dot(x, self.kernel)
        if self.bias is not None:
            logits = keras.ops.add(logits, self.bias)
        return ub.topk_gate(logits, self.k)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.experts)

    def get_config(self):
        return {**super().get_config(), "experts": self.experts, "k": self.k, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}


def _sparse_backends():
    return keras.backend.backend() in ("tensorflow", "jax")


@keras.saving.register_keras_serializable(package=PACKAGE)
class SparseProjection(keras.layers.Layer):
    """A sparse input (batch, features), e.g. a bag of words fed through
    ``keras.Input(shape=(features,), sparse=True)``, times a kernel (plus a
    bias): ``ub.sparse_dot``; the input is never densified.  Keras has
    sparse tensors on its tensorflow and jax backends only: on another one
    the layer raises :class:`unibackend.CapabilityError` when it is made."""

    def __init__(self, units, use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 **kwargs):
        if not _sparse_backends():
            raise CapabilityError(
                f"SparseProjection: Keras has no sparse tensors on its {keras.backend.backend()!r} backend "
                "(only on 'tensorflow' and 'jax'); run Keras on one of those (KERAS_BACKEND), or feed a "
                "dense input to keras.layers.Dense")
        super().__init__(**kwargs)
        self.units = _pos_int("SparseProjection", "units", units)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        d = _last_dim("SparseProjection", input_shape)
        self.kernel = self.add_weight(shape=(d, self.units), name="kernel", initializer=self.kernel_initializer)
        self.bias = self.add_weight(shape=(self.units,), name="bias", initializer=self.bias_initializer) \
            if self.use_bias else None

    def call(self, x):
        # Keras builds a model on a dense stand-in of its sparse input (its
        # symbolic build drops sparse=True): the same product, densely.
        out = ub.sparse_dot(x, self.kernel) if R.resolve("SparseProjection", x).is_sparse(x) \
            else ub.dot(x, self.kernel)
        if self.bias is not None:
            out = keras.ops.add(out, self.bias)
        return out

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}
