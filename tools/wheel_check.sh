#!/usr/bin/env bash
# The built wheel, installed alone in a fresh environment (numpy, scipy and the
# conformance extra, no framework): every plugin is listed, every module
# imports by its dotted path, and the suite passes on numpy.  Then the wheel
# with the [torch] extra alone (what a pip user installs): the suite runs on
# numpy and torch with nothing else installed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PYTHON=${PYTHON:-python3}
out=build/wheel-check
rm -rf "$out"
mkdir -p "$out"
$PYTHON -m pip wheel -q --disable-pip-version-check --no-deps -w "$out/dist" .
wheel=$(ls "$out"/dist/unibackend-*.whl)
$PYTHON -m venv "$out/venv"
"$out/venv/bin/python" -m pip install -q --disable-pip-version-check "unibackend[conformance] @ file://$PWD/$wheel"
cd "$out"  # away from the checkout, so only the installed wheel is importable
venv/bin/unibackend backends | tee backends.txt
for name in numpy torch tensorflow theano pytensor jax dask onnx; do
  grep -q "^$name " backends.txt || { echo "wheel check: backend $name is not listed"; exit 1; }
done
venv/bin/python - <<'PY'
import importlib, pkgutil, sys
import unibackend
names = [m.name for m in pkgutil.walk_packages(unibackend.__path__, "unibackend.")]
for sub in ("unibackend.plugins", "unibackend.conformance", "unibackend.benchmarks", "unibackend.nn"):
    assert any(n.startswith(sub + ".") for n in names), f"{sub} is missing from the wheel"
failed = []
for n in names:
    if n.endswith(("test_conformance", "._plugin", ".__main__")):
        continue  # a pytest module, the deprecated shim (warns), the command line (runs)
    try:
        importlib.import_module(n)
    except ImportError as e:
        if n != "unibackend.keras" or "unibackend[keras]" not in str(e):
            failed.append(f"{n}: {type(e).__name__}: {e}")  # (unibackend.keras: names its extra)
    except Exception as e:
        failed.append(f"{n}: {type(e).__name__}: {e}")
frameworks = [m for m in ("torch", "tensorflow", "pytensor", "theano", "jax", "dask", "onnxruntime", "spox", "onnx")
              if m in sys.modules]
assert not failed, "modules that do not import:\n" + "\n".join(failed)
assert not frameworks, f"importing the modules imported {frameworks}"
assert (importlib.resources.files("unibackend") / "py.typed").is_file(), "py.typed is not shipped"
print(f"wheel check: {len(names)} modules import by their dotted path; py.typed shipped")
PY
venv/bin/unibackend conformance --backends numpy --quiet

# [torch] alone; -c constraints.txt: torch==2.13.0, the CPU wheel (never an unpinned CUDA build)
$PYTHON -m venv venv-torch
venv-torch/bin/python -m pip install -q --disable-pip-version-check -c "$root/constraints.txt" \
  "unibackend[torch] @ file://$root/$wheel"
venv-torch/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
venv-torch/bin/unibackend conformance --backends numpy,torch --quiet
