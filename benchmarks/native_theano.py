"""theano (PyTensor or Theano 1.0.x): the unified op called eagerly against a
function the user compiles by hand.

Called eagerly with arrays, a theano op compiles once per signature and
reuses the compiled function; the cost it adds over calling a hand-compiled
``function`` directly is what is measured here.  The hand-compiled function
of ``dot`` is plain ``T.dot``; for the other ops it is the same ``ub`` op
applied to symbolic inputs (the way ops compose into a user's graph).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from .timing import Candidate


class Natives:
    backend = "theano"
    memory_tool = ""
    sync = None
    copy_bandwidth = None

    def __init__(self, device=None):
        from unibackend import _registry

        B: Any = _registry.backend("theano")  # the theano plugin: its framework modules
        self.th, self.T, self.S = B.th, B.T, B.S
        self.implementation = getattr(B, "implementation", "")
        self.device = "cpu"

    def put(self, x):
        return x

    def put_sparse(self, csr):
        return csr

    def peak_memory(self, fn, args):
        return None

    def _compiled(self, call, inputs, output, args):
        t0 = time.perf_counter()
        f = self.th.function(inputs, output)
        return Candidate("native", "native", call, f, args, setup_s=time.perf_counter() - t0)

    def _var(self, a, name):
        return self.T.TensorType(str(a.dtype), (False,) * a.ndim)(name)

    # -- ops ---------------------------------------------------------------
    def dispatch(self, a, b):
        A, Bv = self._var(a, "a"), self._var(b, "b")
        return [self._compiled("function([a, b], T.dot(a, b))", [A, Bv], self.T.dot(A, Bv), (a, b))]

    def keep_topk(self, x, k):
        import unibackend as ub

        X = self._var(x, "x")
        return [self._compiled(f"function([x], ub.keep_topk(x, {k}))", [X], ub.keep_topk(X, k), (x,))]

    def embedding_mean(self, table, ids):
        import unibackend as ub

        Tb, Ids = self._var(table, "table"), self._var(ids, "ids")
        return [self._compiled("function([table, ids], ub.embedding_mean(table, ids))", [Tb, Ids],
                               ub.embedding_mean(Tb, Ids), (table, ids))]

    def sparse_dot(self, x, w):
        import unibackend as ub

        X = self.S.csr_matrix("x", dtype=str(x.dtype))
        W = self._var(np.asarray(w), "w")
        return [self._compiled("function([x, w], ub.sparse_dot(x, w))", [X, W], ub.sparse_dot(X, W), (x, w))]
