"""Chunk-invariance, for backends of lazy chunked arrays (the ``lazy``
capability, e.g. dask): no answer may depend on the chunking.

A case of this check is a case of another value check (argsort, keep_topk,
topk_gate, softmax, dot, embedding_mean, masked_mean, set/inc_subtensor)
whose array arguments are first made native and rechunked by drawn chunk
sizes: chunks of one element, uneven chunks, edges anywhere (inside runs of
ties too).  That check's own verify then runs on it, so the properties and
the comparison with the numpy reference are the same as in its own row.
Chunked arrays are rechunked with ``.rechunk(chunks)`` (dask's API).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..cases import Case
from .base import CHECKS, arr, check
from .products import _csr_unsorted

#: The checks whose cases are rechunked (sparse_dot's x is scipy: its w is).
OPS = ("argsort", "keep_topk", "topk_gate", "softmax", "dot", "sparse_dot", "embedding_mean",
       "masked_mean", "set_subtensor", "inc_subtensor")


@st.composite
def axis_chunks(draw, n):
    """Chunk sizes of an axis of ``n``: one chunk, chunks of one, or cuts anywhere."""
    if n <= 1:
        return (n,)
    kind = draw(st.sampled_from(["one", "ones", "cuts", "cuts"]))
    if kind == "one":
        return (n,)
    if kind == "ones":
        return (1,) * n
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), min_size=1)))
    edges = [0] + cuts + [n]
    return tuple(b - a for a, b in zip(edges, edges[1:]))


class ChunkedCase(Case):
    """A case of check ``of``, rechunked (``note`` stays that check's own)."""

    def __init__(self, stmt, args, *, want=None, note="", of=""):
        super().__init__(stmt, args, want=want, note=note)
        self.of = of

    def fresh(self):
        c = super().fresh()
        return ChunkedCase(c.stmt, c.args, want=c.want_stmt, note=c.note, of=self.of)

    def replace(self, **args):
        # a verify that widens an argument (embedding_mean adds id columns)
        # keeps that argument's cuts that still fall inside it
        new = {**self.args, **args}
        for k, v in args.items():
            a = v.value if hasattr(v, "value") else v
            if f"chunks_{k}" in new and isinstance(a, np.ndarray):
                new[f"chunks_{k}"] = tuple(_fit(c, n) for c, n in zip(new[f"chunks_{k}"], a.shape))
        return ChunkedCase(self.stmt, new, want=self.want_stmt, note=self.note, of=self.of)


def _fit(chunks, n):
    """Chunk sizes for an axis of ``n`` with the cuts of ``chunks`` inside it."""
    cuts = [c for c in np.cumsum(chunks)[:-1].tolist() if 0 < c < n]
    edges = [0] + cuts + [n]
    return tuple(b - a for a, b in zip(edges, edges[1:])) if n else (0,)


def chunked_case(name, case, chunks):
    """``case`` of check ``name`` with each array argument in ``chunks``
    (name -> chunk sizes) rechunked before the op; the reference is the
    original statement on numpy."""
    lines, args = [], dict(case.args)
    for k, c in chunks.items():
        args[f"chunks_{k}"] = c
        lines.append(f"{k} = ub.asarray({k}).rechunk(chunks_{k})")
    stmt = "\n".join(lines + [case.stmt])
    want = case.want_stmt or "with ub.use_backend('numpy'):\n    " + case.stmt.replace("\n", "\n    ")
    return ChunkedCase(stmt, args, want=want, note=case.note, of=name)


@st.composite
def chunked_cases(draw):
    name = draw(st.sampled_from(OPS))
    case = draw(CHECKS[name].strategy)
    chunks = {}
    for k, v in case.values().items():
        if isinstance(v, np.ndarray) and v.ndim >= 1 and not (name.endswith("subtensor") and k == "index"):
            chunks[k] = tuple(draw(axis_chunks(n)) for n in v.shape)
    return chunked_case(name, case, chunks)


def _c(name, stmt, chunks, **args):
    return chunked_case(name, Case(stmt, args), chunks)


_ONES = np.ones(6)
CHUNKED_EXAMPLES = (
    # ties across a chunk edge: the lower indices stay, in every direction
    _c("keep_topk", "result = ub.keep_topk(x, k, axis=axis)", {"x": ((1, 3, 2),)}, x=arr(_ONES), k=2, axis=0),
    _c("argsort", "result = ub.argsort(x, axis=axis, descending=descending)", {"x": ((2, 1, 3),)},
       x=arr([0.0, 1.0, np.nan, 1.0, -0.0, np.nan]), axis=0, descending=True),
    _c("keep_topk", "result = ub.keep_topk(x, k, axis=axis)", {"x": ((1, 1), (2, 1, 1))},
       x=arr([[1.0, np.nan, 1.0, 1.0], [2.0, 2.0, 2.0, np.nan]]), k=2, axis=1),
    # an all -inf slice across chunks gives 0s; -inf in another chunk gives 0
    _c("softmax", "result = ub.softmax(x, axis=axis)", {"x": ((1, 1), (1, 2))},
       x=arr([[-np.inf, -np.inf, -np.inf], [0.0, 1.0, -np.inf]]), axis=1),
    # a masked NaN in its own chunk never leaks; a slice with nothing kept gives 0
    _c("masked_mean", "result = ub.masked_mean(x, mask, axis=axis)", {"x": ((1, 1), (1, 2)), "mask": ((2,), (3,))},
       x=arr([[np.nan, 1.0, 2.0], [np.inf, np.nan, 0.0]]), mask=arr([[0, 1, 1], [0, 0, 0]], np.int8), axis=1),
    # duplicate positions in different chunks of x
    _c("set_subtensor", "result = ub.set_subtensor(x, index, value)", {"x": ((1, 2, 3),), "value": ((2, 2),)},
       x=arr(np.zeros(6)), index=arr([5, 0, 5, 0], np.int64), value=arr([1.0, 2.0, 3.0, 4.0])),
    _c("inc_subtensor", "result = ub.inc_subtensor(x, index, value)", {"x": ((1, 2, 3),), "value": ((2, 2),)},
       x=arr(np.zeros(6)), index=arr([5, 0, 5, 0], np.int64), value=arr([1.0, 2.0, 3.0, 4.0])),
    # ids chunked by rows and by columns; the contraction axis of dot in chunks
    _c("embedding_mean", "result = ub.embedding_mean(table, ids, pad_id=pad_id)",
       {"table": ((1, 2), (2,)), "ids": ((1, 2), (1, 1))}, pad_id=0,
       table=arr([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), ids=arr([[1, 0], [2, 2], [0, 0]], np.int64)),
    # the table in row blocks of one row and of uneven rows (partials per
    # (ids chunk, table block), summed): an id repeated across blocks, a row
    # of only padding, the pad id inside the table
    _c("embedding_mean", "result = ub.embedding_mean(table, ids, pad_id=pad_id)",
       {"table": ((1, 1, 1, 1), (1, 1)), "ids": ((2, 1), (3,))}, pad_id=1,
       table=arr([[1.0, -2.0], [3.0, 4.0], [0.5, 6.0], [7.0, -8.0]]),
       ids=arr([[3, 0, 3], [1, 1, 1], [2, 0, 1]], np.int64)),
    _c("embedding_mean", "result = ub.embedding_mean(table, ids, pad_id=pad_id)",
       {"table": ((3, 2), (3,)), "ids": ((1, 1, 1), (4,))}, pad_id=0,
       table=arr(np.arange(15.0, dtype=np.float32).reshape(5, 3)),
       ids=arr([[4, 1, 2, 4], [0, 0, 0, 0], [3, 0, 0, 0]], np.int32)),
    # w in row blocks: x's columns cut to match, partial products summed
    # (an unsorted CSR with a column twice in a row)
    _c("sparse_dot", "result = ub.sparse_dot(x, w)", {"w": ((1, 1, 1), (2,))},
       x=_csr_unsorted(), w=arr(np.arange(6.0).reshape(3, 2))),
    _c("sparse_dot", "result = ub.sparse_dot(x, w)", {"w": ((2, 1),)}, x=_csr_unsorted(), w=arr([1.0, 10.0, 100.0])),
    _c("dot", "result = ub.dot(a, b)", {"a": ((2,), (1, 2, 1)), "b": ((3, 1), (2,))},
       a=arr([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]), b=arr(np.arange(8.0).reshape(4, 2))),
)


@check("chunking", "chunking", chunked_cases(), needs=("lazy",), examples=CHUNKED_EXAMPLES)
def verify_chunked(case, backend, device):
    """Every op gives the numpy reference's answer whatever the chunking of
    its array arguments (chunks of one, uneven chunks, edges inside runs of
    ties; an embedding table or a sparse_dot w in several row blocks): the
    original check's properties hold on the rechunked case."""
    CHECKS[case.of].verify(case, backend, device)

