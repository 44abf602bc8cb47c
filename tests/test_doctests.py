"""The examples in the docstrings run: every public op, the autodiff and
registry functions, and the plugin interface carry numpy-style docstrings
(Parameters, Returns, Raises where it raises, Examples with ``>>>``), and
their examples pass as doctests, on the numpy backend."""
from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import unibackend as ub

MODULES = ["unibackend.ops", "unibackend._autodiff", "unibackend._registry", "unibackend._checks",
           "unibackend.plugin"]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_of_the_module_pass(name):
    module = importlib.import_module(name)
    with ub.use_backend("numpy"):
        result = doctest.testmod(module, optionflags=FLAGS, verbose=False, report=True)
    assert result.attempted > 0, f"{name}: no examples found"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (above)"


PUBLIC = [n for n in ub.__all__ if callable(getattr(ub, n)) and not isinstance(getattr(ub, n), type)]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_function_has_a_numpy_style_docstring_with_an_example(name):
    fn = getattr(ub, name)
    doc = inspect.getdoc(fn) or ""
    sig = inspect.signature(fn)
    if sig.parameters:
        assert "Parameters\n----------" in doc, f"ub.{name}: no Parameters section"
    if sig.return_annotation not in (None, "None"):
        assert "Returns\n-------" in doc or "Yields\n------" in doc, f"ub.{name}: no Returns section"
    assert "Examples\n--------" in doc and ">>> " in doc, f"ub.{name}: no example"


PLUGIN_API = ["Backend", "Capabilities", "missing_primitives", "id_bounds", "stable_descending",
              "check_scalar_output", "scipy_grad_input"]


@pytest.mark.parametrize("name", PLUGIN_API)
def test_the_public_plugin_interface_has_numpy_style_docstrings_with_examples(name):
    from unibackend import plugin

    doc = inspect.getdoc(getattr(plugin, name)) or ""
    assert "Examples\n--------" in doc and ">>> " in doc, name
    assert "Parameters\n----------" in doc or "Returns\n-------" in doc, name
