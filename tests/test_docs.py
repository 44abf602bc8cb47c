"""The code in the docs runs: docs/plugins.md's complete minimal plugin is a
working plugin that the conformance suite passes."""
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import unibackend as ub
from unibackend import _registry as R
from unibackend.conformance import engine

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def boxed():
    """The plugin of docs/plugins.md, run as the module a user would write."""
    (code,) = [b for b in _python_blocks(DOCS / "plugins.md") if "class BoxBackend" in b]
    mod = types.ModuleType("docs_boxed_plugin")
    sys.modules[mod.__name__] = mod
    try:
        exec(compile(code, str(DOCS / "plugins.md"), "exec"), mod.__dict__)
        yield mod
    finally:
        R.unregister("boxed")
        del sys.modules[mod.__name__]


def test_docs_plugin_receives_its_tensors_and_answers_like_numpy(boxed):
    x = boxed.Box(np.array([[1.0, 3.0, 3.0, 2.0]]))
    kept = ub.keep_topk(x, 2)
    assert isinstance(kept, boxed.Box)
    np.testing.assert_array_equal(kept.a, [[-np.inf, 3.0, 3.0, -np.inf]])
    np.testing.assert_array_equal(ub.to_numpy(ub.argsort(x, descending=True)), [[1, 2, 3, 0]])


@pytest.mark.parametrize("check", engine.select_checks(), ids=lambda c: c.name.replace(" ", "_"))
def test_docs_plugin_passes_the_conformance_suite(boxed, check):
    """Every check passes on the docs' plugin, or is skipped for a capability
    the plugin declares it lacks (autodiff, sparse)."""
    result = engine.run_check(check, "boxed", max_examples=8)
    if result.status == "skip":
        assert "declares no" in result.reason, result.reason
        return
    assert result.status == "pass", f"{result.reason}\n{result.reproducer}"
