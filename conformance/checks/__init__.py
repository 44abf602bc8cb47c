"""The checks: for each op, a strategy of cases and what must hold on them.

Every check compares the backend under test with the numpy reference on the
same case (integer results exactly, float results within
:mod:`..tolerances`), then checks the contract's properties on the backend's
own result against an independent oracle (a float64 loop or a lexsort), so
the ``numpy`` column proves the reference itself.  The gradient checks
compare ``ub.grad`` with the analytic gradient in float64 and with a float64
finite difference of the numpy reference.

One module per family of ops; in each, every check sits beside its strategy
and its explicit cases (the trouble some framework is known for, run first
on every run whatever the profile draws):

- :mod:`.topk`: argsort, keep_topk, topk_gate, softmax, grad topk_gate
- :mod:`.products`: sparse_dot, dot, grad sparse_dot
- :mod:`.embedding`: embedding_mean, masked_mean, pad_ids, grad embedding_mean,
  grad masked_mean
- :mod:`.subtensor`: set_subtensor, inc_subtensor
- :mod:`.chunked`: chunk-invariance of lazy chunked arrays (the ``lazy`` capability)
- :mod:`.base`: the registry (:class:`Check`, :data:`CHECKS`, :func:`check`);
  :mod:`.gradient`: what the gradient checks share.
"""
from __future__ import annotations

# importing a family registers its checks (chunked last: its cases are the others', rechunked)
from . import embedding, products, subtensor, topk  # isort: skip
from . import chunked  # isort: skip
from .base import CHECKS, Check, check

#: The families in the matrix's order.
FAMILIES = (topk, products, embedding, subtensor, chunked)

# The matrix's rows: the value checks family by family, then the gradient
# checks (they need autodiff, and take longest) in the same family order.
_family = {f.__name__: i for i, f in enumerate(FAMILIES)}
_rows = sorted(CHECKS.items(), key=lambda item: ("autodiff" in item[1].needs,
                                                 _family[item[1].verify.__module__]))
CHECKS.clear()
CHECKS.update(_rows)

#: The ops the checks are about, in the matrix's order (what ``--ops`` accepts).
OPS = tuple(dict.fromkeys(c.op for c in CHECKS.values()))

__all__ = ["CHECKS", "FAMILIES", "OPS", "Check", "check"]
