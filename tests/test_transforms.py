"""Every op in every way users call it on the autodiff backends (torch,
tensorflow, jax): under vmap (``torch.func.vmap``, ``tf.vectorized_map``,
``jax.vmap``) the per-example answers stacked; under grad (``torch.func.grad``
and ``jacrev``, ``tf.GradientTape``, ``jax.grad`` and ``jacrev``) the
contract's gradient, derived here in numpy; inside each graph a user builds
(a plain ``tf.function`` with Grappler's default rewrites, ``jit_compile=True``,
``jax.jit``, ``torch.compile(dynamic=True)``, ``ub.function``) the eager answer.
Where a framework cannot take an op under a transform the call raises the
contract's TypeError naming the op and the transform (docs/semantics.md,
"Call modes").

The inputs are explicit rows holding exactly one special condition each (NaN
but no ties, ties but no NaN, +inf but no NaN, -inf only, ...): a shortcut
chosen by a flag over the whole tensor must not change any of them.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import installed_backends
from hypothesis import given, settings
from hypothesis import strategies as st

import unibackend as ub
from unibackend.conformance.tolerances import assert_within

nan, inf = math.nan, math.inf

# One special condition per row (and a plain one).
ROWS = {
    "plain": [0.5, -1.0, 2.0, 0.25],
    "nan, no ties": [3.0, 1.0, nan, 2.0],
    "ties, no nan": [3.0, 2.0, 2.0, 1.0],
    "+inf, no nan": [0.5, inf, -1.0, 2.0],
    "-inf only": [-inf, 1.0, -inf, 2.0],
    "all -inf": [-inf, -inf, -inf, -inf],
    "nan ties": [nan, 1.0, nan, nan],
    "signed zeros": [-1.0, -0.0, 0.0, -2.0],
}
X = np.array(list(ROWS.values()))
B = len(X)
M = np.array([[1, 0, 1, 1], [1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 1, 1],
              [0, 1, 0, 1], [1, 1, 1, 1], [0, 1, 0, 0], [1, 1, 0, 1]], dtype=bool)
W = np.linspace(-1.0, 1.0, 8).reshape(4, 2)
XD = np.nan_to_num(X, nan=0.5, posinf=3.0, neginf=-3.0)   # finite rows for the products
TABLE = np.arange(18.0).reshape(6, 3) / 7.0
TABLE[0] = nan                                             # the pad row: never read
IDS = np.array([[1, 2, 0], [0, 0, 0], [5, 5, 1], [3, 0, 0], [2, 4, 1], [0, 5, 0], [1, 1, 1], [4, 3, 2]])
IDX = np.array([0, 2, 0])                                  # a position named twice
VALS = np.array([7.0, 8.0, 9.0])
IDXB = (np.arange(B * 3).reshape(B, 3) * 5) % 4            # a different index per example
XS = sp.csr_matrix(np.array([[1.0, 0, 2, 0], [0, 0, 0, 0], [0, 3, 0, -1]]))
WB = np.stack([W * (i + 1) - i for i in range(B)])         # a w per example (B, 4, 2)
TABLES = np.stack([np.where(np.arange(6)[:, None] == 0, nan, TABLE + i) for i in range(3)])


def mask_of_topk(row, k):
    """The positions keep_topk(row, k) keeps: the first k of the contract's
    descending order (stable, NaN first), from the numpy reference."""
    with ub.use_backend("numpy"):
        order = ub.to_numpy(ub.argsort(row, descending=True))
    keep = np.zeros(row.shape, bool)
    keep[order[:k]] = True
    return keep


# name -> (f over one example, batched args, rowwise: f takes the whole batch too)
CASES = {
    "dot": (lambda a: ub.dot(a, W), [XD], True),
    "argsort": (lambda a: ub.argsort(a), [X], True),
    "argsort descending": (lambda a: ub.argsort(a, descending=True), [X], True),
    "keep_topk k=1": (lambda a: ub.keep_topk(a, 1), [X], True),
    "keep_topk k=2": (lambda a: ub.keep_topk(a, 2), [X], True),
    "keep_topk k=3": (lambda a: ub.keep_topk(a, 3), [X], True),
    "softmax": (lambda a: ub.softmax(a), [X], True),
    "topk_gate": (lambda a: ub.topk_gate(a, 2), [X], True),
    "masked_mean": (lambda a, m: ub.masked_mean(a, m, axis=-1), [X, M], True),
    "embedding_mean over ids": (lambda i: ub.embedding_mean(TABLE, i[None])[0], [IDS], False),
    "embedding_mean over tables": (lambda t: ub.embedding_mean(t, IDS), [TABLES], False),
    "set_subtensor": (lambda a: ub.set_subtensor(a, IDX, VALS), [X], False),
    "inc_subtensor": (lambda a: ub.inc_subtensor(a, IDX, VALS), [X], False),
    "set_subtensor slice": (lambda a: ub.set_subtensor(a, slice(1, 3), 7.0), [X], False),
    "set_subtensor batched index": (lambda a, i: ub.set_subtensor(a, i, VALS), [X, IDXB], False),
    "inc_subtensor batched index": (lambda i: ub.inc_subtensor(XD[0], i, VALS), [IDXB], False),
    "inc_subtensor batched value": (lambda v: ub.inc_subtensor(XD[0], IDX, v), [X[:, :3]], False),
    "sparse_dot": (lambda w: ub.sparse_dot(XS, w), [WB], False),
}


def reference(f, args):
    """The numpy backend's per-example answers, stacked."""
    with ub.use_backend("numpy"):
        return np.stack([ub.to_numpy(f(*[a[i] for a in args])) for i in range(len(args[0]))])


def same(got, want, what):
    got = np.asarray(got)
    if want.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, want {want.dtype}"
    assert_within(got, want, n_terms=8, err_msg=what)
    np.testing.assert_array_equal(np.signbit(got[got == 0]), np.signbit(want[got == 0]), err_msg=f"{what}: zeros' signs")


# --- the frameworks' own ways of calling ------------------------------------

class Torch:
    name = "torch"
    quick_graph = None

    def __init__(self):
        import torch

        self.torch = torch
        self.check_errors = (IndexError,)   # checked on the unwrapped values

    def native(self, a):
        return self.torch.as_tensor(np.asarray(a))

    def vmap(self, f, *args):
        return self.vmap_native(f, *[self.native(a) for a in args])

    def vmap_native(self, f, *args):
        return self.torch.func.vmap(f)(*args)

    def grad(self, loss, a):
        return self.torch.func.grad(loss)(self.native(a))

    def jacrev(self, f, a):
        return self.torch.func.jacrev(f)(self.native(a))

    def vmap_grad(self, loss, a):
        return self.torch.func.vmap(self.torch.func.grad(loss))(self.native(a))

    def sum(self, x):
        return x.sum()

    def graphs(self, case=None):
        # aot_eager: Dynamo and AOT autograd trace the graph Inductor would get
        # (test_compiled_torch.py runs Inductor itself); seconds a trace, so
        # only for the ops with a data-dependent shortcut or value check.
        out = {"ub.function": ub.function}
        if case is None or case in TORCH_COMPILED:
            out["torch.compile(dynamic=True)"] = lambda f: self.torch.compile(f, dynamic=True, fullgraph=True,
                                                                               backend="aot_eager")
        return out

    def sparse(self, x):
        c = x.tocoo()
        return self.torch.sparse_coo_tensor(np.stack([c.row, c.col]), c.data, c.shape, check_invariants=True)


class Tensorflow:
    name = "tensorflow"

    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        self.quick_graph = tf.function
        self.check_errors = (tf.errors.InvalidArgumentError,)

    def native(self, a):
        return self.tf.constant(np.asarray(a))

    def vmap(self, f, *args):
        return self.vmap_native(f, *[self.native(a) for a in args])

    def vmap_native(self, f, *args):
        return self.tf.vectorized_map(lambda xs: f(*xs), tuple(args))

    def grad(self, loss, a):
        a = self.native(a)
        with self.tf.GradientTape() as tape:
            tape.watch(a)
            value = loss(a)
        return tape.gradient(value, a)

    def sum(self, x):
        return self.tf.reduce_sum(x)

    def graphs(self, case=None):
        tf = self.tf
        return {"tf.function": tf.function, "tf.function(jit_compile=True)": lambda f: tf.function(f, jit_compile=True),
                "ub.function": ub.function}

    def sparse(self, x):
        c = x.tocoo()
        return self.tf.SparseTensor(np.stack([c.row, c.col], axis=1).astype(np.int64), c.data, c.shape)


class Jax:
    name = "jax"

    def __init__(self):
        import jax

        self.jax = jax
        self.quick_graph = jax.jit
        self.check_errors = (jax.errors.JaxRuntimeError,)

    def native(self, a):
        return self.jax.numpy.asarray(np.asarray(a))

    def vmap(self, f, *args):
        return self.vmap_native(f, *[self.native(a) for a in args])

    def vmap_native(self, f, *args):
        return self.jax.vmap(f)(*args)

    def grad(self, loss, a):
        return self.jax.grad(loss)(self.native(a))

    def jacrev(self, f, a):
        return self.jax.jacrev(f)(self.native(a))

    def vmap_grad(self, loss, a):
        return self.jax.vmap(self.jax.grad(loss))(self.native(a))

    def sum(self, x):
        return x.sum()

    def graphs(self, case=None):
        return {"jax.jit": self.jax.jit, "ub.function": ub.function}

    def sparse(self, x):
        from jax.experimental import sparse

        return sparse.BCOO.from_scipy_sparse(x)


TORCH_COMPILED = {"keep_topk k=2", "softmax", "masked_mean", "embedding_mean over ids", "set_subtensor batched index"}
FRAMEWORKS = {"torch": Torch, "tensorflow": Tensorflow, "jax": Jax}
NAMES = installed_backends(tuple(FRAMEWORKS))


@pytest.fixture(scope="module", params=NAMES)
def fw(request):
    with ub.use_backend(request.param):
        yield FRAMEWORKS[request.param]()


def np_of(x):
    return ub.to_numpy(x)


# --- vmap --------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_vmap_gives_the_stacked_per_example_answers(fw, case):
    f, args, _ = CASES[case]
    want = reference(f, args)
    got = fw.vmap(f, *args)
    same(np_of(got), want, f"{fw.name} vmap {case}")


def test_vmap_over_the_issue_example_keeps_the_nan(fw):
    """The issue's example: keep_topk([[3, 1, nan, 2]], 2) keeps 3 and the NaN
    however it is called (vmap over its one row here)."""
    got = np_of(fw.vmap(lambda a: ub.keep_topk(a, 2), np.array([[3.0, 1.0, nan, 2.0]])))
    np.testing.assert_array_equal(got, [[3.0, -inf, nan, -inf]])


def test_vmap_over_a_backend_sparse_x_closure(fw):
    """sparse_dot with the backend's own sparse tensor held fixed and w batched."""
    xs = fw.sparse(XS)
    f = lambda w: ub.sparse_dot(xs, w)  # noqa: E731
    same(np_of(fw.vmap(f, WB)), reference(lambda w: ub.sparse_dot(XS, w), [WB]), f"{fw.name} vmap sparse_dot native")


def test_vmap_bad_id_fails_with_the_contract_message(fw):
    """An id outside the table in one example fails the whole vmapped call
    with the contract's message, never an answer: the contract's IndexError
    through ub.function; in a user's own graph (tf.vectorized_map, jax.vmap)
    the error the framework surfaces for a failed in-graph check, carrying
    the message (docs/semantics.md)."""
    ids = IDS.copy()
    ids[3, 1] = 9
    msg = r"embedding_mean: id 9 is out of range for a table of 6 rows"
    f = lambda i: ub.embedding_mean(TABLE, i[None])[0]  # noqa: E731
    with pytest.raises(IndexError, match=msg):
        np_of(ub.function(lambda i: fw.vmap_native(f, i))(fw.native(ids)))
    with pytest.raises(Exception, match=msg) as raised:  # noqa: PT011 (the framework's own kind)
        np_of(fw.vmap(f, ids))
    assert isinstance(raised.value, fw.check_errors), type(raised.value)


# What a framework cannot take under its vmap: the contract's TypeError.
UNSUPPORTED_VMAP = {
    "torch": {"set_subtensor": (lambda a, m: ub.set_subtensor(a, m, 0.0), [X, M], "torch.func.vmap")},
    "tensorflow": {"set_subtensor": (lambda a, m: ub.set_subtensor(a, m, 0.0), [X, M], "tf.vectorized_map")},
    "jax": {"set_subtensor": (lambda a, m: ub.set_subtensor(a, m, 0.0), [X, M], "jax.vmap")},
}


@pytest.mark.parametrize("op", ["set_subtensor"])
def test_vmap_over_a_mask_index_raises_the_contract_type_error(fw, op):
    """A boolean mask that differs per example selects a data-dependent number
    of positions: the contract's TypeError names the op and the transform.
    The same mask fixed (not batched) is fine."""
    entry = UNSUPPORTED_VMAP[fw.name].get(op)
    if entry is None:
        f = lambda a, m: ub.set_subtensor(a, m, 0.0)  # noqa: E731
        same(np_of(fw.vmap(f, X, M)), reference(f, [X, M]), f"{fw.name} vmap masked set_subtensor")
        return
    f, args, mode = entry
    with pytest.raises(TypeError, match=rf"{op}: not supported under {mode}: "):
        fw.vmap(f, *args)


# --- graphs ------------------------------------------------------------------

# k=1 and k=3 take keep_topk's paths k=2 takes (the vmap test runs them all)
@pytest.mark.parametrize("case", [c for c in CASES if c not in ("keep_topk k=1", "keep_topk k=3")])
def test_every_graph_gives_the_eager_answer(fw, case):
    """Each graph a user builds gives the contract's answer on every row
    alone (one special condition in the whole tensor) and, for the row-wise
    ops, on the whole batch."""
    f, args, rowwise = CASES[case]
    want = reference(f, args)
    for mode, wrap in fw.graphs(case).items():
        g = wrap(f)
        for i in range(len(args[0])):
            same(np_of(g(*[fw.native(a[i]) for a in args])), want[i], f"{fw.name} {mode} {case} row {i}")
        if rowwise:
            same(np_of(g(*[fw.native(a) for a in args])), want, f"{fw.name} {mode} {case} whole batch")


def test_the_issue_example_in_every_graph(fw):
    """keep_topk([[3, 1, nan, 2]], 2) is [[3, -inf, nan, -inf]] in each graph
    (a plain tf.function gave [[3, -inf, -inf, 2]]: Grappler rewrote a
    NaN-unsafe comparison)."""
    x = fw.native(np.array([[3.0, 1.0, nan, 2.0]]))
    for mode, wrap in fw.graphs().items():
        got = np_of(wrap(lambda a: ub.keep_topk(a, 2))(x))
        np.testing.assert_array_equal(got, [[3.0, -inf, nan, -inf]], err_msg=mode)


# --- grad --------------------------------------------------------------------

U = np.linspace(-1.0, 1.5, 4)   # the cotangent: loss = sum(U * op(x))


def softmax_vjp(s, u):
    return s * (u - (u * s).sum())


def gate_np(row, k):
    with ub.use_backend("numpy"):
        return ub.to_numpy(ub.topk_gate(row, k))


def soft_np(row):
    with ub.use_backend("numpy"):
        return ub.to_numpy(ub.softmax(row))


# name -> (op of one row, rows with a defined gradient, the numpy gradient of sum(U * op(row)))
GRADS = {
    "keep_topk": (lambda a: ub.keep_topk(a, 2), list(ROWS), lambda r: U * mask_of_topk(r, 2)),
    "softmax": (lambda a: ub.softmax(a), ["plain", "ties, no nan", "-inf only", "all -inf", "signed zeros"],
                lambda r: softmax_vjp(soft_np(r), U)),
    "topk_gate": (lambda a: ub.topk_gate(a, 2), ["plain", "ties, no nan", "-inf only", "all -inf", "signed zeros"],
                  lambda r: softmax_vjp(gate_np(r, 2), U)),
    "masked_mean": (lambda a: ub.masked_mean(a, M[0]) * U[0], ["plain", "ties, no nan", "signed zeros"],
                    lambda r: U[0] * M[0] / M[0].sum()),
    "dot": (lambda a: ub.dot(a, W[:, 0]) * U[0], list(ROWS)[:1], lambda r: U[0] * W[:, 0]),
    "set_subtensor": (lambda a: ub.set_subtensor(a, IDX, VALS), ["plain"],
                      lambda r: np.where(np.isin(np.arange(4), IDX), 0.0, U)),
    "inc_subtensor": (lambda a: ub.inc_subtensor(a, IDX, VALS), ["plain"], lambda r: U),
}


def loss_of(fw, op):
    def loss(a):
        out = op(a)
        u = fw.native(U[: out.shape[-1]]) if len(out.shape) else fw.native(1.0)
        return fw.sum(out * u)
    return loss


@pytest.mark.parametrize("op", list(GRADS))
def test_grad_is_the_contract_gradient(fw, op):
    """The framework's grad of sum(U * op(row)) equals the numpy-derived
    gradient on every row where it is defined (keep_topk: U where the
    contract keeps, 0 elsewhere, NaN rows too), and vmap(grad) stacks them."""
    f, rows, want = GRADS[op]
    loss = loss_of(fw, f)
    for r in rows:
        row = np.array(ROWS[r])
        got = np_of(fw.grad(loss, row))
        assert_within(got, want(row), n_terms=8, err_msg=f"{fw.name} grad {op} on {r}")
    if hasattr(fw, "vmap_grad"):
        batch = np.array([ROWS[r] for r in rows])
        got = np_of(fw.vmap_grad(loss, batch))
        assert_within(got, np.stack([want(r) for r in batch]), n_terms=8, err_msg=f"{fw.name} vmap(grad) {op}")


def test_grad_of_embedding_mean_is_zero_on_the_pad_row(fw):
    """d/dtable sum(U' * embedding_mean(table, ids)): each real id's row gets
    its example's cotangent over the row's count; the pad row exactly 0."""
    u = np.linspace(-1.0, 1.0, IDS.shape[0] * 3).reshape(-1, 3)
    table = np.nan_to_num(TABLE)
    want = np.zeros_like(table)
    for i, row in enumerate(IDS):
        real = row[row != 0]
        for j in real:
            want[j] += u[i] / len(real)

    def loss(t):
        return fw.sum(ub.embedding_mean(t, IDS) * fw.native(u))
    got = np_of(fw.grad(loss, table))
    assert_within(got, want, n_terms=8, err_msg=f"{fw.name} grad embedding_mean")
    assert (got[0] == 0).all()


def test_grad_of_sparse_dot_is_xt_g(fw):
    """The gradient w.r.t. w of sum(U * sparse_dot(x, w)) is x.T @ U (x a
    scipy matrix, built inside the transform)."""
    u = np.linspace(-1.0, 1.0, 6).reshape(3, 2)

    def loss(w):
        return fw.sum(ub.sparse_dot(XS, w) * fw.native(u))
    assert_within(np_of(fw.grad(loss, W)), XS.T @ u, n_terms=8, err_msg=f"{fw.name} grad sparse_dot")


@pytest.mark.parametrize("op", ["keep_topk", "softmax"])
def test_jacrev_rows_are_the_contract_vjps(fw, op):
    """jacrev(op)(row)[i] is the vjp of the unit vector e_i."""
    if not hasattr(fw, "jacrev"):
        pytest.skip(f"{fw.name} has no jacrev (tf.GradientTape.jacobian is the same tape)")
    f = GRADS[op][0]
    for r in ("plain", "ties, no nan", "-inf only"):
        row = np.array(ROWS[r])
        got = np_of(fw.jacrev(f, row))
        if op == "keep_topk":
            want = np.diag(mask_of_topk(row, 2).astype(float))
        else:
            s = soft_np(row)
            want = np.diag(s) - np.outer(s, s)
        assert_within(got, want, n_terms=8, err_msg=f"{fw.name} jacrev {op} on {r}")


# --- property: no shortcut changes an answer under vmap or a graph -----------

POOL = [nan, inf, -inf, 0.0, -0.0, 1.0, -1.0, 2.5]


@settings(max_examples=6, deadline=None, derandomize=True)
@given(data=st.data())
def test_vmap_and_graph_agree_with_numpy_on_special_values(data):
    """For rows drawn from a pool of NaN, ±inf, signed zeros and repeated
    values (ties), keep_topk and softmax give numpy's answer per example under
    vmap and in the first graph of each backend."""
    rows = np.array(data.draw(st.lists(st.lists(st.sampled_from(POOL), min_size=5, max_size=5),
                                       min_size=3, max_size=3)))
    k = data.draw(st.integers(1, 4))
    for f in (lambda a: ub.keep_topk(a, k), ub.softmax):
        want = reference(f, [rows])
        for name in NAMES:
            with ub.use_backend(name):
                fw = FRAMEWORKS[name]()
                same(np_of(fw.vmap(f, rows)), want, f"{name} vmap k={k} on {rows.tolist()}")
                if fw.quick_graph is not None:  # (torch.compile takes seconds a trace: the explicit rows above)
                    same(np_of(fw.quick_graph(f)(fw.native(rows))), want, f"{name} graph k={k} on {rows.tolist()}")
