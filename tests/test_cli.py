"""The `unibackend` command as a newcomer meets it: --version, unknown
commands, --report suffixes, --list text, --plugin, a missing hypothesis."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import unibackend as ub
from unibackend import _registry as R
from unibackend import cli
from unibackend.conformance import runner

ROOT = Path(__file__).resolve().parent.parent


def _project():
    """pyproject.toml's [project] table (tomllib is Python 3.11+; tomli before)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_version_is_the_one_in_pyproject(capsys):
    assert cli.main(["--version"]) == 0
    version = _project()["version"]
    assert capsys.readouterr().out.strip() == f"unibackend {version}" == f"unibackend {ub.__version__}"


@pytest.mark.parametrize("argv, word", [(["frobnicate"], "command"), (["--frob"], "option")])
def test_an_unknown_command_is_an_error_naming_it(capsys, argv, word):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"unknown {word} {argv[0]!r}" in err and "conformance" in err


def test_help_exits_zero(capsys):
    assert cli.main(["--help"]) == 0
    assert "conformance" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["r.txt", "r", "r.markdown"])
def test_report_with_an_unknown_suffix_is_an_error_before_any_work(tmp_path, capsys, name):
    path = tmp_path / name
    assert runner.main(["--backends", "numpy", "--ops", "softmax", "--report", str(path)]) == 2
    assert "the suffix must be .json or .md" in capsys.readouterr().out
    assert not path.exists()


def test_list_prints_the_bracketed_text_of_a_check(capsys):
    """--list prints each check's doc as text: rich markup does not eat '[...]'."""
    from unibackend.conformance.checks import CHECKS

    assert runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    bracketed = [c.doc for c in CHECKS.values() if "[" in c.doc]
    assert bracketed, "no check doc holds brackets any more: this test needs another witness"
    for doc in bracketed:
        assert doc in out.replace("\n    ", " ") or doc.split("[")[1].split("]")[0] in out


def test_plugin_option_registers_a_class_from_its_import_path(tmp_path, monkeypatch, capsys):
    (tmp_path / "cli_plugin_mod.py").write_text(textwrap.dedent("""
        from unibackend.plugins.numpy_backend import NumpyBackend

        class Again(NumpyBackend):
            name = "numpy_again"
            alias_of = ""
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert runner.main(["--plugin", "cli_plugin_mod:Again", "--backends", "numpy_again", "--ops", "softmax",
                            "--max-examples", "3", "--quiet"]) == 0
        assert "numpy_again" in R.known()
        assert runner.main(["--plugin", "other=cli_plugin_mod:Again", "--backends", "other", "--ops", "argsort",
                            "--max-examples", "3", "--quiet"]) == 0
    finally:
        R.unregister("numpy_again")
        R.unregister("other")
    capsys.readouterr()


@pytest.mark.parametrize("spec, words", [
    ("no_colon", "expected package.module:Class"),
    ("no_such_module_xyz:Cls", "cannot import it (ModuleNotFoundError"),
    ("unibackend:NoSuchClass", "cannot import it (AttributeError"),
    ("unibackend.plugin:Backend", "the class sets no `name`; write NAME=unibackend.plugin:Backend"),
    ("mine=unibackend.plugin:Backend", "does not implement"),
])
def test_a_bad_plugin_spec_is_a_usage_error_saying_what_is_wrong(capsys, spec, words):
    assert runner.main(["--plugin", spec, "--backends", "numpy"]) == 2
    assert words in capsys.readouterr().out


def test_an_unknown_backend_points_to_the_plugin_option(capsys):
    assert runner.main(["--backends", "boxed_nowhere"]) == 2
    assert "--plugin package.module:Class" in capsys.readouterr().out


def test_without_hypothesis_the_command_names_the_extra_and_exits_2(tmp_path):
    """A blocker on the import path stands in for an install without hypothesis."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class _NoHypothesis:
            def find_spec(self, name, path=None, target=None):
                if name == "hypothesis" or name.startswith("hypothesis."):
                    raise ModuleNotFoundError("No module named 'hypothesis'")
        sys.meta_path.insert(0, _NoHypothesis())
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    res = subprocess.run([sys.executable, "-m", "unibackend", "conformance", "--backends", "numpy"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "pip install 'unibackend[conformance]'" in res.stdout
    assert "Traceback" not in res.stderr


def test_every_backend_extra_brings_the_suites_requirements():
    """pip install 'unibackend[<backend>]' is enough to run `unibackend conformance`."""
    extras = _project()["optional-dependencies"]
    import importlib

    classes = [getattr(importlib.import_module(v.split(":")[0]), v.split(":")[1])
               for v in _project()["entry-points"]["unibackend.backends"].values()]
    # numpy is a core dependency: its plugin's `extra` names no extra
    backend_extras = {cls.extra for cls in classes} - {"", "numpy"}
    assert backend_extras >= {"torch", "tensorflow", "theano", "jax", "dask"}
    for extra in backend_extras:
        names = {req.split(">")[0].split("=")[0].split("[")[0] for req in extras[extra]}
        assert {"hypothesis", "rich"} <= names, extra


def test_readme_lists_every_extra():
    readme = (ROOT / "README.md").read_text()
    extras = _project()["optional-dependencies"]
    assert [e for e in extras if f"| `{e}` |" not in readme] == []


def test_the_changelog_follows_keep_a_changelog_and_has_the_pyproject_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "keepachangelog.com" in text and "## [Unreleased]" in text
    assert f"## [{_project()['version']}]" in text
