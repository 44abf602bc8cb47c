"""The registry: discovery, choosing the backend, dispatch, lazy import."""
import asyncio
import os
import subprocess
import sys
import threading
import types

import numpy as np
import pytest

import unibackend as ub
from unibackend import _registry as R
from unibackend.plugin import Backend
from unibackend.plugins.numpy_backend import NumpyBackend

FRAMEWORKS = ("torch", "tensorflow", "pytensor", "theano", "jax", "scipy")


def test_import_unibackend_imports_no_framework():
    code = (
        "import sys, unibackend as ub; ub.backends(); "
        f"print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_numpy_op_imports_no_framework_but_scipy():
    code = (
        "import sys, numpy as np, unibackend as ub; ub.keep_topk(np.ones(3), 1); "
        "ub.embedding_mean(np.ones((3, 2)), np.array([[1, 2]])); "
        f"print(','.join(m for m in {FRAMEWORKS[:-1]!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_builtin_plugins_are_found_through_entry_points():
    eps = R._discover()
    for name in ("numpy", "torch", "tensorflow", "theano", "pytensor"):
        assert name in eps, name


def test_backends_lists_numpy_installed_with_version_and_capabilities():
    info = {b.name: b for b in ub.backends()}
    assert info["numpy"].installed
    assert info["numpy"].version == np.__version__
    assert "sparse" in info["numpy"].capabilities
    assert "autodiff" not in info["numpy"].capabilities


def test_default_backend_is_numpy_without_env():
    env = {k: v for k, v in os.environ.items() if k != "UNIBACKEND_BACKEND"}
    code = "import unibackend as ub; print(ub.get_backend().name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "numpy"


def test_env_var_sets_default_backend():
    env = dict(os.environ, UNIBACKEND_BACKEND="fakeenv")
    code = (
        "import unibackend as ub\n"
        "from unibackend.plugins.numpy_backend import NumpyBackend\n"
        "class F(NumpyBackend): name = 'fakeenv'\n"
        "ub.register('fakeenv', F)\n"
        "print(ub.get_backend().name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "fakeenv"


def test_unknown_backend_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown backend 'nope'.*numpy"):
        ub.set_backend("nope")
    with pytest.raises(ValueError, match="known backends"):
        with ub.use_backend("nope"):
            pass


class _Missing(NumpyBackend):
    name = "missingfw"
    modules = ("surely_not_a_module_xyz",)
    extra = "missingfw"


def test_missing_framework_raises_backend_not_available_naming_the_extra():
    ub.register("missingfw", _Missing)
    try:
        with pytest.raises(ub.BackendNotAvailable, match=r"pip install 'unibackend\[missingfw\]'"):
            with ub.use_backend("missingfw"):
                pass
        assert issubclass(ub.BackendNotAvailable, ImportError)
        info = {b.name: b for b in ub.backends()}["missingfw"]
        assert not info.installed and "not installed" in info.reason
    finally:
        R.unregister("missingfw")


class _Other(NumpyBackend):
    name = "other"


def test_use_backend_is_context_local_across_threads():
    ub.register("other", _Other)
    try:
        seen = {}
        barrier = threading.Barrier(2)

        def worker(name):
            with ub.use_backend(name):
                barrier.wait()
                seen[name] = ub.get_backend().name

        ts = [threading.Thread(target=worker, args=(n,)) for n in ("numpy", "other")]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert seen == {"numpy": "numpy", "other": "other"}
        assert ub.get_backend().name == "numpy"
    finally:
        R.unregister("other")


def test_use_backend_is_context_local_across_asyncio_tasks():
    ub.register("other", _Other)
    try:
        async def task(name, ev_in, ev_out):
            with ub.use_backend(name):
                ev_out.set()
                await ev_in.wait()
                return ub.get_backend().name

        async def main():
            a, b = asyncio.Event(), asyncio.Event()
            return await asyncio.gather(task("numpy", b, a), task("other", a, b))

        assert asyncio.run(main()) == ["numpy", "other"]
    finally:
        R.unregister("other")


def test_set_backend_is_process_wide_and_use_backend_overrides_it():
    ub.register("other", _Other)
    try:
        ub.set_backend("other")
        assert ub.get_backend().name == "other"
        out = []
        t = threading.Thread(target=lambda: out.append(ub.get_backend().name))
        t.start()
        t.join()
        assert out == ["other"]
        with ub.use_backend("numpy"):
            assert ub.get_backend().name == "numpy"
        assert ub.get_backend().name == "other"
    finally:
        ub.set_backend("numpy")
        R.unregister("other")


class FakeTensor:
    """A native tensor type of a fake framework (module 'fakefw')."""

    __module__ = "fakefw"

    def __init__(self, a):
        self.a = np.asarray(a)


class FakeTensor2:
    """A native tensor type of a second fake framework (module 'fakefw2')."""

    __module__ = "fakefw2"

    def __init__(self, a):
        self.a = np.asarray(a)


def _fake_backend(name, modname, tensor_type):
    class Fake(NumpyBackend):
        modules = (modname,)

        def load(self):
            super().load()

        def native_types(self):
            return (tensor_type,)

        def asarray(self, x, dtype=None):
            if isinstance(x, (FakeTensor, FakeTensor2)):
                x = x.a
            return super().asarray(x, dtype)

    Fake.name = name
    return Fake


@pytest.fixture
def fake_frameworks(monkeypatch):
    monkeypatch.setitem(sys.modules, "fakefw", types.ModuleType("fakefw"))
    monkeypatch.setitem(sys.modules, "fakefw2", types.ModuleType("fakefw2"))
    ub.register("fake1", _fake_backend("fake1", "fakefw", FakeTensor))
    ub.register("fake2", _fake_backend("fake2", "fakefw2", FakeTensor2))
    yield
    R.unregister("fake1")
    R.unregister("fake2")


def test_native_tensor_selects_its_backend(fake_frameworks):
    assert R.resolve("op", np.ones(2), FakeTensor([1.0])).name == "fake1"
    assert R.resolve("op", [1, 2], 3.0).name == "numpy"
    assert R._type_cache[FakeTensor] == "fake1"
    assert R._type_cache[np.ndarray] is None


def test_tensors_of_two_backends_raise_type_error_naming_both(fake_frameworks):
    with pytest.raises(TypeError, match=r"keep_topk: got tensors of two backends, 'fake1' and 'fake2'"):
        R.resolve("keep_topk", FakeTensor([1.0]), FakeTensor2([1.0]))


def test_dispatch_never_imports_a_framework():
    """Classifying an unknown type looks only at sys.modules (the reference
    backend, loaded first, brings scipy; that is its own dependency)."""
    class Unknown:
        pass

    R.backend("numpy")
    before = set(sys.modules)
    assert R.owner(Unknown()) is None
    # a plugin whose framework is already imported may load (and import more of it)
    present = {m.split(".")[0] for m in before}
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in set(FRAMEWORKS) - present}


def test_grad_on_numpy_raises_capability_error_naming_autodiff_backends():
    with ub.use_backend("numpy"):
        with pytest.raises(ub.CapabilityError, match="no autodiff; use one of: .*torch"):
            ub.grad(lambda x: x.sum())(np.ones(3))
        with pytest.raises(ub.CapabilityError):
            ub.value_and_grad(lambda x: x.sum())(np.ones(3))


def test_function_on_numpy_calls_f_itself():
    calls = []

    def f(x):
        calls.append(1)
        return ub.softmax(x)

    g = ub.function(f)
    with ub.use_backend("numpy"):
        np.testing.assert_allclose(g(np.zeros(4)), np.full(4, 0.25))
        g(np.zeros(4))
    assert len(calls) == 2


def test_cli_backends_lists_every_plugin():
    out = subprocess.run([sys.executable, "-m", "unibackend", "backends"], capture_output=True, text=True, check=True)
    for name in ("numpy", "torch", "tensorflow", "theano", "pytensor"):
        assert name in out.stdout


def _copy_of_numpy_plugin(name, without=()):
    """A direct ``Backend`` subclass with the numpy plugin's attributes and
    methods, less the ones named in ``without``."""
    body = {k: v for k, v in vars(NumpyBackend).items()
            if not k.startswith("__") and k not in without}
    body["name"] = name
    return types.new_class(name, (Backend,), exec_body=lambda ns: ns.update(body))


@pytest.mark.parametrize("without, named", [
    (("keep_topk",), r"does not implement the primitive: keep_topk$"),
    (("softmax", "dot"), r"does not implement the primitives: dot, softmax$"),
])
def test_register_refuses_a_plugin_missing_a_primitive_naming_it(without, named):
    cls = _copy_of_numpy_plugin("incomplete", without)
    with pytest.raises(TypeError, match=r"plugin 'incomplete' \(.*incomplete\) " + named):
        ub.register("incomplete", cls)
    assert "incomplete" not in R.known()


class _EntryPoint:
    """Stands for an importlib.metadata.EntryPoint: ``load()`` gives the class."""

    def __init__(self, cls):
        self.cls = cls

    def load(self):
        return self.cls


def test_entry_point_loading_refuses_a_plugin_missing_a_primitive(monkeypatch):
    monkeypatch.setitem(R._discover(), "incomplete", _EntryPoint(_copy_of_numpy_plugin("incomplete", ("keep_topk",))))
    try:
        with pytest.raises(TypeError, match=r"does not implement the primitive: keep_topk"):
            R.plugin_class("incomplete")
        assert "incomplete" not in R._classes  # refused, not cached: every load says why
        with pytest.raises(TypeError, match="keep_topk"):
            with ub.use_backend("incomplete"):
                pass
    finally:
        R.unregister("incomplete")


def test_a_plugin_with_every_primitive_registers_loads_and_runs(monkeypatch):
    complete = _copy_of_numpy_plugin("complete")
    assert complete.__abstractmethods__ == frozenset()
    ub.register("complete", complete)
    monkeypatch.setitem(R._discover(), "complete_ep", _EntryPoint(_copy_of_numpy_plugin("complete_ep")))
    try:
        assert R.plugin_class("complete_ep").name == "complete_ep"
        for name in ("complete", "complete_ep"):
            with ub.use_backend(name):
                assert ub.get_backend().name == name
                np.testing.assert_array_equal(ub.keep_topk(np.array([3.0, 1.0, 2.0]), 2, fill=0.0), [3.0, 0.0, 2.0])
    finally:
        R.unregister("complete")
        R.unregister("complete_ep")
