"""Training: :class:`Trainer` takes ``ub.value_and_grad`` of the softmax
cross-entropy on the backend in force and hands numpy gradients to an
optimizer (:class:`SGD`, :class:`Adam`) that returns new numpy parameters."""
from __future__ import annotations

import numpy as np

from .. import _registry as R
from .._autodiff import _autodiff_backend, function, value_and_grad
from ..ops import asarray, to_numpy
from .functional import softmax_cross_entropy
from .layers import Dense
from .model import _compiles

__all__ = ["Adam", "SGD", "Trainer"]


class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum, on the numpy
    parameter dict."""

    def __init__(self, lr=0.1, momentum=0.9):
        self.lr, self.momentum = float(lr), float(momentum)
        self.velocity = {}

    def update(self, params, grads):
        """New parameter dict; ``params`` and ``grads`` are not modified."""
        out = {}
        for k, g in grads.items():
            v = self.velocity.get(k)
            v = g if v is None else self.momentum * v + g
            self.velocity[k] = v
            out[k] = (params[k] - self.lr * v).astype(params[k].dtype, copy=False)
        return out


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction, on the numpy parameter dict."""

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        self.m, self.v, self.t = {}, {}, 0

    def update(self, params, grads):
        """New parameter dict; ``params`` and ``grads`` are not modified."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        out = {}
        for k, g in grads.items():
            m = self.m.get(k)
            v = self.v.get(k)
            m = (1 - b1) * g if m is None else b1 * m + (1 - b1) * g
            v = (1 - b2) * g * g if v is None else b2 * v + (1 - b2) * g * g
            self.m[k], self.v[k] = m, v
            step = self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
            out[k] = (params[k] - step).astype(params[k].dtype, copy=False)
        return out


class Trainer:
    """Minimises the softmax cross-entropy of ``model``'s output (a softmax
    :class:`Dense`) on the backend in force, which must have the
    ``autodiff`` capability.

    Each :meth:`step` takes ``ub.value_and_grad`` of the loss with respect to
    every parameter and hands the gradients to the optimizer.  On a backend
    with the ``eager_compiles`` capability the value-and-grad is wrapped in
    ``ub.function``, so a step runs one graph compiled on the first batch
    (and again only for a new input signature).  On a backend without
    autodiff (numpy) it raises ``ub.CapabilityError`` saying which backends can.
    """

    def __init__(self, model, optimizer=None, output=None):
        _autodiff_backend("Trainer", ())  # no autodiff here: CapabilityError now, not mid-epoch
        self.model = model
        self.optimizer = optimizer if optimizer is not None else Adam()
        names, single = model._wanted(output)
        if not single:
            raise ValueError("Trainer: train one output at a time")
        layer = model.by_name[names[0]]
        if not (isinstance(layer, Dense) and layer.activation == "softmax"):
            raise ValueError(f"Trainer: the trained output {layer.name!r} must be a Dense softmax layer")
        self.output = names[0]
        order = model.param_names
        k = len(order)

        def loss(*args):
            params = dict(zip(order, args[:k]))
            values, onehot = list(args[k:-1]), asarray(args[-1])
            z = model.forward(params, values, self.output, logits=True)
            return softmax_cross_entropy(z, onehot)

        self._vg = value_and_grad(loss, argnums=tuple(range(k)))
        self._compiled = {}

    def _step_fn(self):
        B = R.get_backend()
        if not _compiles(B):
            return self._vg
        fn = self._compiled.get(B.name)
        if fn is None:
            vg = self._vg

            def flat(*args):  # a flat tuple of outputs: (loss, *grads)
                value, grads = vg(*args)
                return (value, *grads)

            compiled = function(flat)

            def fn(*args):
                value, *grads = compiled(*args)
                return value, grads

            self._compiled[B.name] = fn
        return fn

    def step(self, data, labels):
        """One optimizer step on a batch; returns its mean loss (a float).
        ``labels``: integer class ids (n,)."""
        model = self.model
        values = model._feed(data)
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise TypeError("Trainer.step: labels must be a 1-D array of integer class ids")
        n_cls = model.by_name[self.output].units
        if labels.size and (labels.min() < 0 or labels.max() >= n_cls):
            raise ValueError(f"Trainer.step: labels must be in [0, {n_cls})")
        onehot = np.zeros((labels.size, n_cls), model.dtype)
        onehot[np.arange(labels.size), labels] = 1
        order = model.param_names
        value, grads = self._step_fn()(*[model.params[n] for n in order], *values, onehot)
        grads = {n: np.asarray(to_numpy(g), dtype=model.dtype) for n, g in zip(order, grads)}
        model.params = self.optimizer.update(model.params, grads)
        return float(to_numpy(value))
