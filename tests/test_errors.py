"""Every bad input named in the contract raises numpy's exception kind, with
a message naming the op and the argument, on every installed backend.  Also:
no op mutates its inputs."""
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import installed_backends

import unibackend as ub

BACKENDS = installed_backends()


@pytest.fixture(params=BACKENDS)
def backend(request):
    with ub.use_backend(request.param) as B:
        yield B


X = np.arange(12.0).reshape(3, 4)
TABLE = np.ones((5, 2))
IDS = np.array([[1, 2, 0]])

BAD = [
    # (id, call, exception, message pattern)
    ("dot-b-3d", lambda: ub.dot(X, np.ones((4, 2, 2))), ValueError, r"dot: b must have 1 or 2 dims"),
    ("dot-mismatch", lambda: ub.dot(X, np.ones((3, 2))), ValueError, r"dot: shapes \(3, 4\) and \(3, 2\) are not aligned"),
    ("dot-scalar", lambda: ub.dot(np.float64(2.0), np.ones(2)), ValueError, r"dot: a must have at least 1 dim"),
    ("sparse-dense-x", lambda: ub.sparse_dot(X, np.ones(4)), TypeError, r"sparse_dot: x must be sparse"),
    ("sparse-mismatch", lambda: ub.sparse_dot(sp.csr_matrix(X), np.ones((3, 2))),
     ValueError, r"sparse_dot: shapes \(3, 4\) and \(3, 2\) are not aligned"),
    ("sparse-w-3d", lambda: ub.sparse_dot(sp.csr_matrix(X), np.ones((4, 2, 2))),
     ValueError, r"sparse_dot: w must have 1 or 2 dims"),
    ("argsort-axis", lambda: ub.argsort(X, axis=2), ValueError, r"argsort: axis=2 is out of range"),
    ("argsort-axis-type", lambda: ub.argsort(X, axis=1.0), TypeError, r"argsort: axis must be an int"),
    ("argsort-desc-type", lambda: ub.argsort(X, descending="yes"), TypeError, r"argsort: descending must be a bool"),
    ("set-oob", lambda: ub.set_subtensor(X, 3, 0.0), IndexError, r"set_subtensor: index 3 is invalid for shape \(3, 4\)"),
    ("set-oob-neg", lambda: ub.set_subtensor(X, (0, -5), 0.0), IndexError, r"set_subtensor: index"),
    ("set-oob-array", lambda: ub.set_subtensor(X, np.array([0, 7]), 0.0), IndexError, r"set_subtensor: index"),
    ("set-too-many", lambda: ub.set_subtensor(X, (0, 0, 0), 0.0), IndexError, r"set_subtensor: index"),
    ("set-bad-mask", lambda: ub.set_subtensor(X, np.ones(5, bool), 0.0), IndexError, r"set_subtensor: index"),
    ("set-float-index", lambda: ub.set_subtensor(X, np.array([0.0]), 0.0),
     IndexError, r"set_subtensor: index arrays must be of integer"),
    ("set-value-shape", lambda: ub.set_subtensor(X, 0, np.ones(3)),
     ValueError, r"set_subtensor: value of shape \(3,\) does not broadcast to shape \(4,\)"),
    ("inc-oob", lambda: ub.inc_subtensor(X, (slice(None), 4), 1.0), IndexError, r"inc_subtensor: index"),
    ("masked-shape", lambda: ub.masked_mean(X, np.ones(3), axis=0),
     ValueError, r"masked_mean: mask of shape \(3,\) does not broadcast"),
    ("masked-axis", lambda: ub.masked_mean(X, X > 0, axis=(0, 0)), ValueError, r"masked_mean: axis=\(0, 0\) repeats an axis"),
    ("topk-k-big", lambda: ub.keep_topk(X, 5), ValueError, r"keep_topk: k=5 is out of range: need 0 <= k <= 4"),
    ("topk-k-neg", lambda: ub.keep_topk(X, -1), ValueError, r"keep_topk: k=-1 is out of range"),
    ("topk-k-float", lambda: ub.keep_topk(X, 2.0), TypeError, r"keep_topk: k must be an int"),
    ("topk-axis", lambda: ub.keep_topk(X, 1, axis=-3), ValueError, r"keep_topk: axis=-3 is out of range"),
    ("topk-fill", lambda: ub.keep_topk(X, 1, fill="x"), TypeError, r"keep_topk: fill must be a real number"),
    ("gate-k0", lambda: ub.topk_gate(X, 0), ValueError, r"topk_gate: k=0 must be at least 1"),
    ("gate-k-big", lambda: ub.topk_gate(X, 9), ValueError, r"topk_gate: k=9 is out of range"),
    ("argsort-complex", lambda: ub.argsort(X + 1j),
     TypeError, r"argsort: x is complex \(complex128\); complex numbers have no order"),
    ("topk-complex", lambda: ub.keep_topk(X + 1j, 1), TypeError, r"keep_topk: x is complex"),
    ("gate-complex", lambda: ub.topk_gate(X + 1j, 1), TypeError, r"topk_gate: x is complex"),
    ("softmax-complex", lambda: ub.softmax(X + 1j), TypeError, r"softmax: x is complex"),
    ("softmax-axis", lambda: ub.softmax(X, axis=5), ValueError, r"softmax: axis=5 is out of range"),
    ("emb-id-high", lambda: ub.embedding_mean(TABLE, np.array([[1, 5]])),
     IndexError, r"embedding_mean: id 5 is out of range for a table of 5 rows"),
    ("emb-id-neg", lambda: ub.embedding_mean(TABLE, np.array([[-2, 1]])), IndexError, r"embedding_mean: id -2 is out of range"),
    ("emb-float-ids", lambda: ub.embedding_mean(TABLE, np.array([[1.0, 2.0]])),
     TypeError, r"embedding_mean: ids must be integers"),
    ("emb-ids-1d", lambda: ub.embedding_mean(TABLE, np.array([1, 2])), ValueError, r"embedding_mean: ids must have 2 dims"),
    ("emb-table-1d", lambda: ub.embedding_mean(np.ones(5), IDS), ValueError, r"embedding_mean: table must have 2 dims"),
    ("emb-pad-type", lambda: ub.embedding_mean(TABLE, IDS, pad_id=0.5), TypeError, r"embedding_mean: pad_id must be an int"),
]


@pytest.mark.parametrize("call,exc,pattern", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises_the_contract_exception_on_every_backend(backend, call, exc, pattern):
    """Static checks raise when the op is called; on a lazy backend a value
    check (an id outside the table) raises when the result is computed."""
    with pytest.raises(exc, match=pattern) as info:
        out = call()
        if backend.capabilities.lazy:
            ub.to_numpy(out)
    # The exception is exactly numpy's kind, not a framework subclass of it.
    assert type(info.value) is exc


PAD_BAD = [
    ("pad-too-long", lambda: ub.pad_ids([[1, 2, 3]], length=2), ValueError, r"pad_ids: row 0 has 3 ids, more than length=2"),
    ("pad-collides", lambda: ub.pad_ids([[1, -1]]),
     ValueError, r"pad_ids: row 0 holds id -1, which the shift by 1 turns into pad_id=0"),
    ("pad-float", lambda: ub.pad_ids([[1.5]]), TypeError, r"pad_ids: row 0 holds non-integer ids"),
    ("pad-nested", lambda: ub.pad_ids([[[1]]]), ValueError, r"pad_ids: row 0 must be a flat list"),
    ("pad-length-neg", lambda: ub.pad_ids([[1]], length=-1), ValueError, r"pad_ids: length=-1 must be >= 0"),
]


@pytest.mark.parametrize("call,exc,pattern", [b[1:] for b in PAD_BAD], ids=[b[0] for b in PAD_BAD])
def test_pad_ids_bad_input(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_unknown_backend_name_is_a_value_error_listing_known_ones():
    with pytest.raises(ValueError, match="known backends: .*numpy.*torch"):
        ub.set_backend("jaxx")


def _calls():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5))
    x[0, 1] = np.nan
    return [
        ("dot", lambda a: ub.dot(a["x"], a["w"]), {"x": x, "w": rng.normal(size=(5, 2))}),
        ("sparse_dot", lambda a: ub.sparse_dot(a["s"], a["w"]),
         {"s": sp.coo_matrix(([1.0, 2.0], ([0, 0], [1, 1])), shape=(2, 5)), "w": rng.normal(size=(5, 2))}),
        ("argsort", lambda a: ub.argsort(a["x"], descending=True), {"x": x}),
        ("set_subtensor", lambda a: ub.set_subtensor(a["x"], a["i"], a["v"]),
         {"x": x, "i": np.array([0, 0]), "v": np.ones(5)}),
        ("inc_subtensor", lambda a: ub.inc_subtensor(a["x"], (slice(None), 1), a["v"]),
         {"x": x, "v": np.ones(3)}),
        ("masked_mean", lambda a: ub.masked_mean(a["x"], a["m"], axis=1), {"x": x, "m": x > 0}),
        ("keep_topk", lambda a: ub.keep_topk(a["x"], 2), {"x": x}),
        ("softmax", lambda a: ub.softmax(a["x"]), {"x": x}),
        ("topk_gate", lambda a: ub.topk_gate(a["x"], 2), {"x": x}),
        ("embedding_mean", lambda a: ub.embedding_mean(a["t"], a["i"]),
         {"t": rng.normal(size=(4, 3)), "i": np.array([[1, 1, 0], [3, 0, 0]])}),
    ]


def _snapshot(v):
    if sp.issparse(v):
        c = v.tocoo()
        return ("sparse", v.format, c.row.copy(), c.col.copy(), c.data.copy())
    return np.array(v, copy=True)


def _same(a, b):
    if isinstance(a, tuple):
        return a[:2] == b[:2] and all(np.array_equal(p, q, equal_nan=True) for p, q in zip(a[2:], b[2:]))
    return np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("name,call,args", _calls(), ids=[c[0] for c in _calls()])
def test_no_op_mutates_its_inputs(backend, name, call, args):
    before = {k: _snapshot(v) for k, v in args.items()}
    call(args)
    for k, v in args.items():
        assert _same(before[k], _snapshot(v)), f"{name} mutated its argument {k!r} on {backend.name}"
