"""The code in the docs runs as written.

Every ```python block of README.md and docs/**/*.md runs: the blocks of one
page in order, in one namespace (a page is read top to bottom, so a later
block may use what an earlier one defined), in a fresh subprocess whose
working directory is an empty temporary folder.  An HTML comment on the line
before a block says how else to treat it:

- ``<!-- docs-test: skip WHY -->``: not run; WHY is required (a cluster address, a GPU).
- ``<!-- docs-test: file NAME -->``: the block is written to NAME in that folder (a
  module the page's later steps import or name on a command line), not run.
- ``<!-- docs-test: run -->`` before a ```sh block: each line runs in a shell there,
  ``unibackend`` being this checkout's command; ``<!-- docs-test: run, exit N -->``
  expects exit status N.  Other ```sh blocks are not run (installs, make).
- ``<!-- docs-test: output -->`` before a ```text block: what the block before it
  prints, compared exactly (deterministic numbers only).

The lists of backends the docs and help texts give are compared with the registry.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from unibackend import _registry as R

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"(?:<!-- docs-test: (?P<mark>[^>]*?) -->\n+)?```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.S | re.M)


def blocks(page):
    """(line, lang, mark, body) for every fenced block of ``page``."""
    text = page.read_text()
    return [(text[:m.start("body")].count("\n") + 1, m["lang"], (m["mark"] or "").strip(), m["body"])
            for m in FENCE.finditer(text)]


def steps(page):
    """What the page's runner does, in order: JSON-able (kind, line, arg, body) tuples."""
    out = []
    for line, lang, mark, body in blocks(page):
        if mark.startswith("skip"):
            assert mark[4:].strip(), f"{page}:{line}: a skipped block must say why"
        elif mark.startswith("file"):
            out.append(("file", line, mark[4:].strip(), body))
        elif mark == "output":
            assert out and out[-1][0] == "python", f"{page}:{line}: an output block follows a python block"
            out.append(("output", line, None, body))
        elif lang == "python":
            out.append(("python", line, None, body))
        elif mark.startswith("run"):
            m = re.fullmatch(r"run(?:, exit (\d+))?", mark)
            assert m, f"{page}:{line}: bad mark {mark!r}"
            out.append(("sh", line, int(m[1] or 0), body))
        elif mark:
            raise AssertionError(f"{page}:{line}: unknown mark {mark!r}")
    return out


RUNNER = textwrap.dedent(r'''
    import contextlib, io, json, os, subprocess, sys, traceback
    page, steps, plugins = json.load(open(sys.argv[1]))
    sys.path.insert(0, os.getcwd())  # as `python` started in the page's folder
    # the checkout's plugins, as `make install` installs them (the installed metadata may lag)
    import importlib
    import unibackend as ub
    from unibackend import _registry
    for name, target in plugins.items():
        if name not in _registry.known():
            module, _, attr = target.partition(":")
            ub.register(name, getattr(importlib.import_module(module), attr))
    ns = {"__name__": "__main__"}
    env = dict(os.environ)
    out = {}
    for kind, line, arg, body in steps:
        where = f"{page}:{line}"
        if kind == "file":
            with open(arg, "w") as f:
                f.write(body)
        elif kind == "python":
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    exec(compile(body, where, "exec"), ns)
            except BaseException:
                print(f"FAILED {where}\n{traceback.format_exc()}\n{buf.getvalue()}")
                sys.exit(1)
            out[line] = buf.getvalue()
        elif kind == "output":
            prev = max(k for k in out)
            got = "\n".join(s.rstrip() for s in out[prev].strip().splitlines())
            want = "\n".join(s.rstrip() for s in body.strip().splitlines())
            if got != want:
                print(f"FAILED {where}: the block above printed\n{got}\n---- the page says\n{want}")
                sys.exit(1)
        elif kind == "sh":
            for cmd in body.splitlines():
                cmd = cmd.split(" #")[0].strip()
                if not cmd:
                    continue
                res = subprocess.run(cmd, shell=True, env=env, capture_output=True, text=True)
                if res.returncode != arg:
                    print(f"FAILED {where}: `{cmd}` exited {res.returncode}, the page says {arg}\n"
                          f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
                    sys.exit(1)
    print("OK")
''')


def _pages_with_code():
    return [p for p in PAGES if steps(p)]


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_block_of_the_page_runs_as_written(page, tmp_path):
    """Every python block (and every sh block marked run) of the page runs, in
    order, in a fresh process; every output block matches what was printed."""
    (tmp_path / "steps.json").write_text(json.dumps([str(page.relative_to(ROOT)), steps(page), _entry_points()]))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               UNIBACKEND_BACKEND="numpy", MPLBACKEND="Agg")
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "steps.json")],
                         cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0 and res.stdout.rstrip().endswith("OK"), res.stdout[-6000:] + res.stderr[-3000:]


def test_every_skipped_block_says_why():
    for page in PAGES:
        for line, _, mark, _ in blocks(page):
            if mark.startswith("skip"):
                assert len(mark[4:].strip()) > 10, f"{page}:{line}"


# -- lists of backends: from the registry, or compared with it ----------------

def _entry_points():
    """name -> "module:Class" of this checkout's pyproject (the installed metadata may lag)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["entry-points"]["unibackend.backends"]


def _plugin(name):
    import importlib

    module, _, attr = _entry_points()[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _builtin_backends():
    """The built-in backends, aliases left out (the entry points of this checkout)."""
    return sorted(n for n in _entry_points() if not _plugin(n).alias_of)


NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}


def test_no_text_counts_the_backends_wrong():
    """Wherever a doc, docstring or help text says 'N backends' or 'all N built-in
    backends', N is the number of built-in backends the registry has."""
    n = len(_builtin_backends())
    assert n >= 6
    words = "two|three|four|five|six|seven|eight"
    pat = re.compile(rf"\b(?:all|the|on|with) ({words}) (?:built-in |installed )?backends\b"
                     rf"|\b({words}) built-in backends\b", re.I)
    sources = PAGES + sorted((ROOT / "unibackend").glob("*.py")) + sorted((ROOT / "conformance").glob("*.py")) \
        + sorted((ROOT / "benchmarks").glob("*.py")) + [ROOT / "pyproject.toml"]
    wrong = []
    for src in sources:
        for m in pat.finditer(src.read_text()):
            if NUMBER_WORDS[(m[1] or m[2]).lower()] != n:
                wrong.append(f"{src.relative_to(ROOT)}: {m[0]!r}")
    assert not wrong, wrong


def _project():
    """pyproject.toml's [project] table (tomllib is Python 3.11+; tomli before)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _lists_every_backend(text):
    low = text.lower()
    missing = [b for b in _builtin_backends() if b not in low]
    return missing


@pytest.mark.parametrize("where", ["pyproject description", "help(unibackend)", "ub.function", "README"])
def test_backend_lists_name_every_backend_the_registry_has(where):
    import unibackend as ub

    if where == "pyproject description":
        text = _project()["description"]
    elif where == "help(unibackend)":
        text = ub.__doc__
    elif where == "ub.function":
        text = ub.function.__doc__
    else:
        text = (ROOT / "README.md").read_text().split("##")[0]
    text = text.replace("Theano", "theano").replace("PyTensor", "theano").replace("ONNX", "onnx")
    assert not _lists_every_backend(text), text


def test_bench_names_only_backends_that_exist():
    """bench's default list (its --help shows it) names built-in backends only."""
    from unibackend.benchmarks import runner as bench

    assert set(bench.BUILTIN) <= set(_builtin_backends())


# -- the plugin of docs/plugins.md, checked more closely ----------------------

@pytest.fixture(scope="module")
def boxed():
    """The plugin of docs/plugins.md, imported as the module a user would write."""
    import types

    (body,) = [b for _, _, mark, b in blocks(ROOT / "docs" / "plugins.md") if mark == "file boxed_plugin.py"]
    mod = types.ModuleType("boxed_plugin")
    sys.modules[mod.__name__] = mod
    try:
        exec(compile(body, "docs/plugins.md", "exec"), mod.__dict__)
        R.register("boxed", mod.BoxBackend)
        yield mod
    finally:
        R.unregister("boxed")
        del sys.modules[mod.__name__]


def test_docs_plugin_receives_its_tensors_and_answers_like_numpy(boxed):
    import numpy as np

    import unibackend as ub

    x = boxed.Box(np.array([[1.0, 3.0, 3.0, 2.0]]))
    kept = ub.keep_topk(x, 2)
    assert isinstance(kept, boxed.Box)
    np.testing.assert_array_equal(kept.a, [[-np.inf, 3.0, 3.0, -np.inf]])
    np.testing.assert_array_equal(ub.to_numpy(ub.argsort(x, descending=True)), [[1, 2, 3, 0]])


def _checks():
    from unibackend.conformance import engine

    return engine.select_checks()


@pytest.mark.parametrize("check", _checks(), ids=lambda c: c.name.replace(" ", "_"))
def test_docs_plugin_passes_the_conformance_suite(boxed, check):
    """Every check passes on the docs' plugin, or is skipped for a capability
    the plugin declares it lacks (autodiff)."""
    from unibackend.conformance import engine

    result = engine.run_check(check, "boxed", max_examples=8)
    if result.status == "skip":
        assert "declares no" in result.reason, result.reason
        return
    assert result.status == "pass", f"{result.reason}\n{result.reproducer}"


def test_the_reproducer_of_a_plugin_failure_runs_on_its_own(tmp_path):
    """docs/plugins.md's broken plugin fails the softmax check, and the
    reproducer printed for it imports the plugin and runs in a fresh process."""
    page = ROOT / "docs" / "plugins.md"
    for _, _, mark, body in blocks(page):
        if mark.startswith("file "):
            (tmp_path / mark[5:].strip()).write_text(body)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-m", "unibackend", "conformance", "--plugin", "broken_plugin:BrokenBox",
                          "--backends", "broken", "--ops", "softmax", "--report", "r.json", "--quiet"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stdout + res.stderr
    fails = [r for r in json.loads((tmp_path / "r.json").read_text())["results"] if r["status"] == "fail"]
    assert fails
    repro = fails[0]["reproducer"]
    assert "from broken_plugin import BrokenBox" in repro and "ub.register('broken', BrokenBox)" in repro
    (tmp_path / "repro.py").write_text(repro)
    run = subprocess.run([sys.executable, "repro.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "got:" in run.stdout and "want:" in run.stdout, run.stdout + run.stderr


def test_every_flag_and_environment_variable_is_in_docs_conformance():
    """Every option of `unibackend conformance` and every UNIBACKEND_* variable
    the code reads appears in docs/conformance.md."""
    from unibackend.conformance import runner

    page = (ROOT / "docs" / "conformance.md").read_text()
    parser_flags = set(re.findall(r'add_argument\(\s*"(--[a-z-]+)"', (ROOT / "conformance" / "runner.py").read_text()))
    assert "--plugin" in parser_flags and runner.parse_args([]).plugin == []
    code = "".join(p.read_text() for d in ("unibackend", "conformance", "backends") for p in (ROOT / d).rglob("*.py"))
    variables = set(re.findall(r"UNIBACKEND_[A-Z_]+", code))
    missing = sorted(f for f in parser_flags | variables if f"`{f}" not in page)
    assert not missing, missing


def _autodiff_backends():
    """Built-in backends whose plugin declares autodiff (aliases left out)."""
    return {n for n in _builtin_backends() if _plugin(n).capabilities.autodiff}


def test_the_docs_name_exactly_the_autodiff_backends_the_registry_declares():
    """semantics.md's Autodiff section and models.md's Training section list the
    backends that can differentiate: the ones whose plugin declares autodiff."""
    want = _autodiff_backends()
    semantics = (ROOT / "docs" / "semantics.md").read_text()
    m = re.search(r"declares the `autodiff`\s+capability: ([a-z, ]+)\)", semantics)
    assert m, "docs/semantics.md no longer lists the autodiff backends in the sentence this test reads"
    assert {b.strip() for b in m[1].split(",")} == want
    models = (ROOT / "docs" / "models.md").read_text()
    m = re.search(r'ub\.set_backend\("(\w+)"\)\s+# or ((?:"\w+",? ?)+)', models)
    assert m, "docs/models.md's Training block changed shape"
    assert {m[1], *re.findall(r'"(\w+)"', m[2])} == want
