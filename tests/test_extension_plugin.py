"""The extension point: a plugin written only here, with a tensor type of its
own, is registered at run time and then dispatches the ops by tensor type,
serves an ``nn`` model, and passes the conformance suite, with no edit to
the core, ``nn`` or the suite.  A plugin class that lacks a primitive is
refused when it is registered, with the primitive's name.

The tensor type, :class:`Box`, is a thin wrapper around a numpy array; the
plugin computes by unwrapping and asking a numpy plugin instance, so every
answer it gives must be numpy's.
"""
import numpy as np
import pytest
import scipy.sparse as sp
from test_nn import tiny_data as nn_tiny_data
from test_nn import tiny_model

import unibackend as ub
from unibackend import _registry as R
from unibackend import nn
from unibackend.conformance.engine import run_check, select_checks
from unibackend.plugin import Backend, Capabilities
from unibackend.plugins.numpy_backend import NumpyBackend


class Box:
    """A tensor type no built-in plugin knows: its module is this test file,
    not numpy, so dispatch sees it as a native type of its own."""

    __slots__ = ("a",)
    # numpy hands ``ndarray <op> Box`` to Box's reflected operator instead of
    # treating the Box as an object element.
    __array_ufunc__ = None

    def __init__(self, a):
        self.a = np.asarray(a)

    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)
    ndim = property(lambda self: self.a.ndim)

    def __getitem__(self, index):
        return Box(self.a[_unbox(index)])

    def __repr__(self):
        return f"Box({self.a!r})"

    def __neg__(self):
        return Box(-self.a)


def _unbox(v):
    if isinstance(v, Box):
        return v.a
    if isinstance(v, tuple):
        return tuple(_unbox(e) for e in v)
    return v


def _box(v):
    return Box(v) if isinstance(v, (np.ndarray, np.generic)) else v


def _binary(name):
    def op(self, other):
        return Box(getattr(self.a, name)(_unbox(other)))
    op.__name__ = name
    return op


for _name in ("add", "sub", "mul", "truediv", "pow", "matmul", "lt", "le", "gt", "ge", "eq", "ne"):
    setattr(Box, f"__{_name}__", _binary(f"__{_name}__"))
for _name in ("add", "sub", "mul", "truediv", "pow", "matmul"):
    setattr(Box, f"__r{_name}__", _binary(f"__r{_name}__"))
Box.__hash__ = None


class BoxBackend(Backend):
    """Every abstract primitive, each one line: unwrap, ask numpy, wrap.  The
    math ``nn`` needs (tanh, exp, reduce_sum, ...) is left to the base
    class' numpy defaults, which go through ``to_numpy``/``asarray``."""

    name = "boxed"
    modules = (Box.__module__.split(".")[0],)
    capabilities = Capabilities(sparse=True)

    def load(self):
        self.ref = NumpyBackend()
        self.ref.load()

    def version(self):
        return "0.1"

    def native_types(self):
        return (Box,)

    def asarray(self, x, dtype=None):
        if isinstance(x, Box) and (dtype is None or x.a.dtype == dtype):
            return x
        return Box(np.asarray(_unbox(x), dtype=dtype))

    def to_numpy(self, x):
        return np.asarray(_unbox(x))

    def shape(self, x):
        return _unbox(x).shape

    def dtype(self, x):
        return _unbox(x).dtype

    def is_sparse(self, x):
        return self.ref.is_sparse(x)  # scipy CSR is this plugin's sparse tensor too

    def sparse_from_scipy(self, csr):
        return self.ref.sparse_from_scipy(csr)

    def sparse_to_scipy(self, x):
        return self.ref.sparse_to_scipy(x)

    def sparse_info(self, x):
        return self.ref.sparse_info(x)

    def sparse_cast(self, x, dtype):
        return self.ref.sparse_cast(x, dtype)

    def dot(self, a, b):
        return _box(self.ref.dot(a.a, b.a))

    def sparse_dot(self, x, w):
        return _box(self.ref.sparse_dot(x, w.a))

    def argsort(self, x, axis, descending):
        return _box(self.ref.argsort(x.a, axis, descending))

    def set_subtensor(self, x, index, value, accumulate):
        return _box(self.ref.set_subtensor(x.a, index, value.a, accumulate))

    def masked_mean(self, x, mask, axes):
        return _box(self.ref.masked_mean(x.a, mask.a, axes))

    def keep_topk(self, x, k, axis, fill):
        return _box(self.ref.keep_topk(x.a, k, axis, fill))

    def softmax(self, x, axis):
        return _box(self.ref.softmax(x.a, axis))

    def embedding_mean(self, table, ids, pad_id):
        return _box(self.ref.embedding_mean(table.a, ids.a, pad_id))

    def value_and_grad(self, f, argnums, args, kwargs):
        raise ub.CapabilityError("value_and_grad: backend 'boxed' has no autodiff")

    def function(self, f):
        return f


class CompilingBoxBackend(BoxBackend):
    """The same tensors, declaring that its eager ops compile: ``nn`` must then
    run a forward pass as one ``ub.function``, read from the capability alone."""

    name = "boxed_compiling"
    alias_of = "boxed"
    capabilities = Capabilities(sparse=True, eager_compiles=True)
    compiled = 0

    def function(self, f):
        type(self).compiled += 1
        return f


@pytest.fixture
def boxed():
    ub.register("boxed", BoxBackend)
    ub.register("boxed_compiling", CompilingBoxBackend)
    try:
        yield
    finally:
        R.unregister("boxed_compiling")
        R.unregister("boxed")


def _np(x):
    assert isinstance(x, Box), f"expected a Box, got {type(x).__name__}"
    return x.a


# -- (a) ops dispatch by tensor type -----------------------------------------------

def test_ops_on_boxes_run_on_the_boxed_plugin_and_give_numpy_answers(boxed):
    """With numpy in force, a Box argument selects the boxed plugin (the
    result is a Box) and every op gives exactly numpy's result."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    mask = rng.random((4, 6)) > 0.5
    ids = np.array([[1, 2, 0], [0, 0, 0], [3, 3, 1], [5, 0, 0]])
    table = rng.standard_normal((6, 2)).astype(np.float32)
    csr = sp.random(4, 6, density=0.4, format="csr", random_state=0, dtype=np.float32)
    cases = [
        ("dot", lambda X, W: ub.dot(X, W), (x, w)),
        ("sparse_dot", lambda X, W: ub.sparse_dot(csr, W), (x, w)),
        ("argsort", lambda X, W: ub.argsort(X, axis=1, descending=True), (x, w)),
        ("keep_topk", lambda X, W: ub.keep_topk(X, 2, axis=1, fill=0.0), (x, w)),
        ("softmax", lambda X, W: ub.softmax(X), (x, w)),
        ("topk_gate", lambda X, W: ub.topk_gate(X, 3), (x, w)),
        ("masked_mean", lambda X, M: ub.masked_mean(X, M, axis=1), (x, mask)),
        ("set_subtensor", lambda X, W: ub.set_subtensor(X, (slice(1, 3), [0, 0, 5]), 7.0), (x, w)),
        ("inc_subtensor", lambda X, W: ub.inc_subtensor(X, ([0, 0, 2], 1), 1.5), (x, w)),
        ("embedding_mean", lambda t, i: ub.embedding_mean(t, i, pad_id=0), (table, ids)),
        ("tanh", lambda X, W: nn.tanh(X), (x, w)),
        ("reduce_max", lambda X, W: nn.reduce_max(X, axis=0, keepdims=True), (x, w)),
        ("log_softmax", lambda X, W: nn.log_softmax(X), (x, w)),
    ]
    with ub.use_backend("numpy"):
        for name, f, (a, b) in cases:
            want = f(a, b)
            got = f(Box(a), Box(b))
            assert R.owner(got) == "boxed", name
            np.testing.assert_array_equal(_np(got), want, err_msg=name)
            assert _np(got).dtype == want.dtype, name
            np.testing.assert_array_equal(ub.to_numpy(got), want, err_msg=name)


def test_numpy_inputs_with_the_boxed_backend_in_force_give_boxes(boxed):
    """Neutral inputs go to the backend in force, as for a built-in plugin."""
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    with ub.use_backend("boxed"):
        out = ub.softmax(x)
        act = nn.relu(x - 2)
    assert isinstance(out, Box) and isinstance(act, Box)
    with ub.use_backend("numpy"):
        np.testing.assert_array_equal(out.a, ub.softmax(x))
    np.testing.assert_array_equal(act.a, np.maximum(x - 2, 0))




# -- (b) nn ---------------------------------------------------------------------------

def tiny_data():
    """test_nn's inputs, without the labels (nothing trains here)."""
    return nn_tiny_data()[0]


OUTPUTS = ["tag_mean", "hidden", "gate", "moe", "out"]


def test_a_saved_model_predicts_on_the_boxed_backend_as_on_numpy(boxed, tmp_path):
    """Every layer's output of a model saved on numpy and loaded again equals
    numpy's, computed on the boxed plugin (activations included: nn reaches
    them through the plugin primitives, knowing no backend by name)."""
    data = tiny_data()
    path = tiny_model(seed=2).save(tmp_path / "m.npz")
    with ub.use_backend("numpy"):
        want = nn.load(path).predict(data, output=OUTPUTS)
    model = nn.load(path)
    with ub.use_backend("boxed"):
        got = model.predict(data, output=OUTPUTS)
        native = model.forward(model.params, data)
    for name in OUTPUTS:
        assert isinstance(got[name], np.ndarray), name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert isinstance(native, Box), "forward returns the tensors of the backend that ran"
    np.testing.assert_array_equal(native.a, want["out"])


def test_nn_compiles_the_pass_on_a_backend_that_declares_eager_compiles(boxed):
    """``nn`` runs a forward pass as one ``ub.function`` because the plugin
    declares ``eager_compiles``, not because of its name: the pass is built
    once per (backend, outputs) and gives the same answer."""
    model, data = tiny_model(), tiny_data()
    with ub.use_backend("numpy"):
        want = model.predict(data)
    CompilingBoxBackend.compiled = 0
    with ub.use_backend("boxed"):
        model.predict(data)
    assert CompilingBoxBackend.compiled == 0
    with ub.use_backend("boxed_compiling"):
        first = model.predict(data)
        second = model.predict(data)
    assert CompilingBoxBackend.compiled == 1
    np.testing.assert_array_equal(first, want)
    np.testing.assert_array_equal(second, want)


def test_training_on_the_boxed_backend_says_it_has_no_autodiff(boxed):
    with ub.use_backend("boxed"):
        with pytest.raises(ub.CapabilityError, match="'boxed' has no autodiff"):
            nn.Trainer(tiny_model())


# -- (c) the conformance suite --------------------------------------------------------

CHECKS = {c.name: c for c in select_checks()}


@pytest.mark.parametrize("check_name", sorted(CHECKS))
def test_the_boxed_plugin_passes_the_conformance_suite(boxed, check_name):
    """Each check passes on the boxed plugin; it may skip only a check that
    needs a capability the plugin declares absent (autodiff, lazy)."""
    check = CHECKS[check_name]
    res = run_check(check, "boxed", max_examples=5)
    caps = BoxBackend.capabilities
    if res.status == "skip":
        missing = [c for c in check.needs if not getattr(caps, c)]
        assert missing, f"{check_name} skipped though the plugin declares {check.needs}: {res.reason}"
        assert set(missing) <= {"autodiff", "lazy"}, res.reason
    else:
        assert res.status == "pass", f"{res.reason}\n{res.reproducer}"
        assert res.examples > 0


# -- (d) a plugin missing a primitive -------------------------------------------------

def test_a_plugin_class_missing_keep_topk_is_refused_with_its_name():
    """The same plugin less ``keep_topk``: ub.register refuses it with a
    TypeError naming the missing primitive, and the name stays unknown."""
    body = {k: v for k, v in vars(BoxBackend).items() if k not in ("keep_topk", "__dict__", "__weakref__")}
    NoTopk = type("NoTopkBackend", (Backend,), body)
    assert "keep_topk" in NoTopk.__abstractmethods__
    with pytest.raises(TypeError, match="keep_topk"):
        ub.register("no_topk", NoTopk)
    assert "no_topk" not in R.known()
