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
    ("set-oob", lambda: ub.set_subtensor(X, 3, 0.0),
     IndexError, r"set_subtensor: index 3 is out of bounds for axis 0 with size 3"),
    ("set-oob-neg", lambda: ub.set_subtensor(X, (0, -5), 0.0), IndexError, r"set_subtensor: index"),
    ("set-oob-array", lambda: ub.set_subtensor(X, np.array([0, 7]), 0.0), IndexError, r"set_subtensor: index"),
    ("set-too-many", lambda: ub.set_subtensor(X, (0, 0, 0), 0.0), IndexError, r"set_subtensor: too many indices"),
    ("set-bad-mask", lambda: ub.set_subtensor(X, np.ones(5, bool), 0.0),
     IndexError, r"set_subtensor: a boolean index of size 5 does not match axis 0 of size 3"),
    ("set-float-index", lambda: ub.set_subtensor(X, np.array([0.0]), 0.0),
     IndexError, r"set_subtensor: index arrays must be of integer"),
    ("set-value-shape", lambda: ub.set_subtensor(X, 0, np.ones(3)),
     ValueError, r"set_subtensor: value of shape \(3,\) does not broadcast to shape \(4,\)"),
    ("inc-oob", lambda: ub.inc_subtensor(X, (slice(None), 4), 1.0), IndexError, r"inc_subtensor: index"),
    ("masked-shape", lambda: ub.masked_mean(X, np.ones(3, bool), axis=0),
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
    ("gate-complex", lambda: ub.topk_gate(X + 1j, 1), TypeError, r"topk_gate: logits is complex"),
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


# ==========================================================================
# The table of bad inputs: every case x every installed backend x every call
# mode, one message.  The expected message is built by unibackend._errors'
# builders from the case alone, so one string is asserted on every backend
# and in every mode: the text is the same everywhere, value included.

from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable  # noqa: E402

from unibackend import _errors as E  # noqa: E402


class _Named:
    """A placeholder whose repr is its name (for the docs' message templates)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name

    __str__ = __repr__


#: The rules of the Errors section of docs/semantics.md: (what is wrong,
#: exception, the message with placeholders), built by the same builders.
RULES = {
    "not-numeric": ("a tensor argument that holds no numbers: `None`, `str`, `bytes`, a `dict`, "
                    "an object or string array (numpy, or a framework's string tensor)",
                    E.not_numeric("<op>", "<argument>", "<type or dtype>")),
    "bad-mask": ("a mask that is neither boolean nor integer (a float mask, `None`, a string)",
                 E.bad_mask("<op>", "mask", "<type or dtype>")),
    "index-part": ("an index part of no index type (`1.0`, a string, a dict)",
                   E.index_part_invalid("<op>", _Named("<part>"))),
    "index-dtype": ("an index array of floats (numpy or native, traced too: raised while tracing)",
                    E.index_not_integer("<op>", "<dtype>")),
    "index-range": ("an int index outside its axis (static: when called; a tensor in a graph: "
                    "when the graph runs)", E.index_out_of_range("<op>", "<i>", "<axis>", "<size>")),
    "too-many": ("more indices than `x` has axes", E.too_many_indices("<op>", "<n>", "<ndim>")),
    "mask-index-shape": ("a boolean index whose shape differs from the axes it covers",
                         E.mask_shape_mismatch("<op>", "<axis>", "<n>", "<size>")),
    "id-range": ("an id outside the table (not `pad_id`)",
                 E.id_out_of_range("embedding_mean", "<id>", "<V>", "<pad_id>", "<V-1>")),
    "ids-dtype": ("ids that are not integers", E.not_integer_ids("embedding_mean", "ids", "<dtype>")),
    "broadcast": ("a `value` or `mask` that does not broadcast",
                  E.does_not_broadcast("<op>", "<argument>", "<shape>", "<target>")),
    "k-range": ("`k` outside `0 <= k <= size`", E.k_out_of_range("<op>", "<k>", "<n>", "<axis>")),
}


def docs_table():
    """The Markdown table of RULES, as docs/semantics.md carries it."""
    rows = ["| Bad input | Raises | Message |", "|---|---|---|"]
    for what, exc in RULES.values():
        rows.append(f"| {what} | `{type(exc).__name__}` | `{exc}` |")
    return "\n".join(rows)


W = np.ones((4, 2))
MASK = np.array([True, False, True, False])
IDS2 = np.array([[1, 2, 0], [3, 0, 0]])


@dataclass
class Slot:
    """One tensor argument of one op: ``call(args)`` runs the op on ``args``."""

    op: str
    arg: str
    call: Callable[[dict], Any]
    args: dict
    #: arguments that stay numpy in every mode (an index, sparse input)
    static: tuple = ()


SLOTS = [
    Slot("dot", "a", lambda a: ub.dot(a["a"], a["b"]), {"a": X, "b": W}),
    Slot("dot", "b", lambda a: ub.dot(a["a"], a["b"]), {"a": X, "b": W}),
    Slot("sparse_dot", "w", lambda a: ub.sparse_dot(a["x"], a["w"]), {"x": sp.csr_matrix(X), "w": W}, ("x",)),
    Slot("argsort", "x", lambda a: ub.argsort(a["x"]), {"x": X}),
    Slot("set_subtensor", "x", lambda a: ub.set_subtensor(a["x"], 0, a["value"]), {"x": X, "value": np.ones(4)}),
    Slot("set_subtensor", "value", lambda a: ub.set_subtensor(a["x"], 0, a["value"]), {"x": X, "value": np.ones(4)}),
    Slot("inc_subtensor", "value", lambda a: ub.inc_subtensor(a["x"], 1, a["value"]), {"x": X, "value": np.ones(4)}),
    Slot("masked_mean", "x", lambda a: ub.masked_mean(a["x"], a["mask"]), {"x": X, "mask": MASK}),
    Slot("keep_topk", "x", lambda a: ub.keep_topk(a["x"], 2), {"x": X}),
    Slot("softmax", "x", lambda a: ub.softmax(a["x"]), {"x": X}),
    Slot("topk_gate", "logits", lambda a: ub.topk_gate(a["logits"], 2), {"logits": X}),
    Slot("embedding_mean", "table", lambda a: ub.embedding_mean(a["table"], a["ids"]), {"table": TABLE, "ids": IDS2}),
    Slot("embedding_mean", "ids", lambda a: ub.embedding_mean(a["table"], a["ids"]), {"table": TABLE, "ids": IDS2}),
]

#: (value, how the message names it) of the inputs that hold no numbers
NOT_NUMBERS = [
    (None, "NoneType"), ("abc", "str"), (b"abc", "bytes"), ({"a": 1}, "dict"),
    (np.array([1.0, None], dtype=object), "dtype object"), (np.array(["a", "b"]), "dtype <U1"),
]


@dataclass
class Case:
    id: str
    rule: str
    slot: Slot
    bad: Any            # the value put in slot.arg
    exc: type
    message: str
    #: whether the bad value travels as a native tensor in the native and
    #: compiled modes (a numeric array), else it stays what it is
    tensor: bool = False
    #: the modes this case runs in (None: every mode of the backend)
    modes: tuple | None = None
    extra: dict = field(default_factory=dict)


def _cases():
    out = []
    for s in SLOTS:
        for i, (bad, got) in enumerate(NOT_NUMBERS):
            # every value on every slot eagerly; one value per slot (in turn)
            # in the traced modes, which cost a trace each
            modes = None if i == SLOTS.index(s) % len(NOT_NUMBERS) else ("eager",)
            out.append(Case(f"{s.op}-{s.arg}-{got.replace(' ', '-')}", "not-numeric", s, bad, TypeError,
                            str(E.not_numeric(s.op, s.arg, got)), modes=modes))
    mm = Slot("masked_mean", "mask", lambda a: ub.masked_mean(a["x"], a["mask"]), {"x": X, "mask": MASK})
    for bad, got, tensor in [(None, "None", False), ("1", "str", False),
                             (np.array([1.0, 0.0, 1.0, 0.0]), "dtype float64", True),
                             (np.array(["0", "1", "0", "1"]), "dtype <U1", False)]:
        out.append(Case(f"mask-{got.replace(' ', '-')}", "bad-mask", mm, bad, TypeError,
                        str(E.bad_mask("masked_mean", "mask", got)), tensor=tensor))
    st = Slot("set_subtensor", "index", lambda a: ub.set_subtensor(a["x"], a["index"], 0.0), {"x": X, "index": 0})
    inc = Slot("inc_subtensor", "index", lambda a: ub.inc_subtensor(a["x"], a["index"], 1.0), {"x": X, "index": 0})
    out += [
        Case("index-float-scalar", "index-part", st, 1.0, IndexError, str(E.index_part_invalid("set_subtensor", 1.0))),
        Case("index-str", "index-part", st, "a", IndexError, str(E.index_part_invalid("set_subtensor", "a"))),
        Case("index-float-array", "index-dtype", st, np.array([0.0, 1.0]), IndexError,
             str(E.index_not_integer("set_subtensor", "float64")), tensor=True),
        Case("index-out-of-range", "index-range", inc, np.array([0, 3]), IndexError,
             str(E.index_out_of_range("inc_subtensor", 3, 0, 3)), tensor=True),
        Case("index-negative-out-of-range", "index-range", st, (slice(None), np.array([-5])), IndexError,
             str(E.index_out_of_range("set_subtensor", -5, 1, 4))),
        Case("index-too-many", "too-many", st, (0, 0, 0), IndexError, str(E.too_many_indices("set_subtensor", 3, 2))),
        Case("index-mask-shape", "mask-index-shape", st, np.array([True, False]), IndexError,
             str(E.mask_shape_mismatch("set_subtensor", 0, 2, 3))),
    ]
    em = Slot("embedding_mean", "ids", lambda a: ub.embedding_mean(a["table"], a["ids"]), {"table": TABLE, "ids": IDS2})
    out += [
        Case("id-out-of-range", "id-range", em, np.array([[1, 7, 0]]), IndexError,
             str(E.id_out_of_range("embedding_mean", 7, 5, 0)), tensor=True),
        Case("ids-float", "ids-dtype", em, np.array([[1.0, 2.0]]), TypeError,
             str(E.not_integer_ids("embedding_mean", "ids", "float64")), tensor=True),
        Case("value-broadcast", "broadcast", Slot("set_subtensor", "value", SLOTS[5].call, SLOTS[5].args),
             np.ones(3), ValueError, str(E.does_not_broadcast("set_subtensor", "value", (3,), (4,))), tensor=True),
        Case("k-too-big", "k-range", Slot("keep_topk", "k", lambda a: ub.keep_topk(a["x"], a["k"]), {"x": X, "k": 1}),
             5, ValueError, str(E.k_out_of_range("keep_topk", 5, 4, 1))),
    ]
    return out


CASES = _cases()


def _modes(name):
    """The call modes of backend ``name``: eager (numpy arguments), native
    (the backend's tensors), compiled (Backend.compile: torch.compile,
    tf.function with XLA, jax.jit, a compiled graph), function (ub.function),
    vmap (the framework's own)."""
    modes = ["eager", "native"]
    if name in ("torch", "tensorflow", "jax", "theano"):
        modes.append("compiled")
    if name in ("tensorflow", "jax", "theano"):  # torch's ub.function is the eager function
        modes.append("function")
    if name in ("jax", "torch"):
        modes.append("vmap")
    return modes


def _grid():
    for name in BACKENDS:
        for mode in _modes(name):
            for c in CASES:
                if c.modes is not None and mode not in c.modes:
                    continue
                if mode in ("compiled", "function", "vmap") and c.slot.op == "sparse_dot":
                    continue  # scipy input is no traced argument
                if mode == "vmap" and (c.rule not in ("not-numeric", "bad-mask", "index-dtype", "ids-dtype")
                                       or not _tensor_args(c)):
                    continue  # a batch axis changes the shapes the value checks name; vmap needs an array
                if (name, mode) == ("torch", "compiled") and isinstance(c.bad, np.ndarray) and c.bad.dtype.kind in "OUS":
                    continue  # Dynamo refuses such a constant itself, before unibackend runs
                yield pytest.param(name, mode, c, id=f"{name}-{mode}-{c.id}")


def _tensor_args(c, mode="native"):
    """The arguments of case ``c`` that travel as the backend's tensors
    (arguments of the traced function): numeric arrays; everything else is a
    constant of it."""
    args = {**c.slot.args, c.slot.arg: c.bad}
    out = {k for k, v in args.items()
           if isinstance(v, np.ndarray) and k not in c.slot.static and (k != c.slot.arg or c.tensor)}
    if mode == "compiled" and c.rule in ("index-range", "id-range"):
        # a traced index / id is checked when the graph runs (the framework's
        # own error inside its compiler, docs/semantics.md); static here
        out.discard(c.slot.arg)
    return sorted(out)


def _snapshot_all(args):
    return {k: (_snapshot(v) if isinstance(v, np.ndarray) or sp.issparse(v) else v) for k, v in args.items()}


def _run(name, mode, c):
    """Call case ``c`` on backend ``name`` in ``mode``; returns what the call
    returned (computed, when lazy)."""
    args = dict(c.slot.args)
    args[c.slot.arg] = c.bad
    if mode == "eager":
        return ub.to_numpy(c.slot.call(args)) if name == "dask" else c.slot.call(args)
    B = ub.get_backend()
    names = _tensor_args(c, mode)

    def f(*tensors):
        return c.slot.call({**args, **dict(zip(names, tensors))})

    tensors = [ub.asarray(args[k]) for k in names]
    if mode == "native":
        out = f(*tensors)
        return ub.to_numpy(out) if name == "dask" else out
    if mode == "compiled":
        if name == "torch":
            import torch

            torch._dynamo.reset()  # every case traced afresh (static shapes), as a first call is
        return B.compile(f)(*tensors)
    if mode == "function":
        return ub.function(f)(*tensors)
    if mode == "vmap":
        batched = [ub.asarray(np.stack([args[k], args[k]])) for k in names]
        if name == "jax":
            import jax

            return jax.vmap(f)(*batched)
        import torch

        return torch.vmap(f)(*batched)
    raise AssertionError(mode)


@pytest.mark.parametrize("name,mode,case", list(_grid()))
def test_every_bad_input_fails_the_same_way_on_every_backend_and_mode(name, mode, case):
    """The exception is exactly the case's class, its message is exactly the
    case's (the core's builder: ``<op>: <argument> ...`` naming the value),
    and no input changed."""
    before = _snapshot_all(case.slot.args)
    bad_before = _snapshot(case.bad) if isinstance(case.bad, np.ndarray) else None
    with ub.use_backend(name):
        with pytest.raises(case.exc) as info:
            _run(name, mode, case)
    assert type(info.value) is case.exc, f"{type(info.value).__name__}: {info.value}"
    assert str(info.value) == case.message
    assert str(info.value).startswith(f"{case.slot.op}: {case.slot.arg if case.rule != 'index-range' else 'index'}") \
        or case.rule not in ("not-numeric", "bad-mask")
    after = _snapshot_all(case.slot.args)
    for k in before:
        assert _unchanged(before[k], after[k]), k
    if bad_before is not None:
        assert _unchanged(bad_before, _snapshot(case.bad))


def _unchanged(a, b):
    if isinstance(a, np.ndarray) and a.dtype.kind in "OUS":  # no NaN to compare as equal
        return a.dtype == b.dtype and a.tolist() == b.tolist()
    if isinstance(a, (np.ndarray, tuple)):
        return _same(a, b)
    return a == b


def test_every_rule_has_a_case_and_the_docs_carry_the_table():
    """The Errors section of docs/semantics.md is the table of RULES, and
    every rule is exercised by a case of the grid."""
    from pathlib import Path

    assert {c.rule for c in CASES} == set(RULES)
    text = (Path(__file__).resolve().parent.parent / "docs" / "semantics.md").read_text()
    assert docs_table() in text, "regenerate with: python tests/test_errors.py"


if __name__ == "__main__":
    print(docs_table())
