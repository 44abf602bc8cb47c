# Two commands on a fresh machine:  make conformance  |  make test
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# The pip cache-less, quiet install; constraints.txt pins torch to the CPU wheel.
PIPFLAGS = -q --disable-pip-version-check -c constraints.txt

LEGACY_VENV   ?= .venv-theano
# Theano 1.0.5 needs Python <= 3.11 (it imports distutils) and numpy < 1.24.
LEGACY_PYTHON ?= python3.11
LEGACY_PY      = $(LEGACY_VENV)/bin/python
# Theano 1.0.5 looks up a numpy.distutils BLAS entry that numpy>=1.22 no longer has;
# an empty blas.ldflags makes it use its own C/numpy fallbacks instead.
# cxx= : no C compile (every op runs its Python perform): from an empty compiledir the
# theano tests took 12 min with g++ and 30 s without (docs/backends/theano.md).
LEGACY_FLAGS   = THEANO_FLAGS="blas.ldflags=,cxx=,compiledir=$(CURDIR)/.unibackend-cache/theano" UNIBACKEND_THEANO=theano

.PHONY: install test conformance legacy-theano bench lint docs wheel-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIPFLAGS) --upgrade pip
	$(PIP) install $(PIPFLAGS) -e '.[all,test,lint,docs]'
	touch $@

# pytest-xdist: 2 worker processes (this machine's cores), each taking the next test as it
# frees up (worksteal: the theano and dask files are long, and a per-file split left one
# worker idle); TEST_JOBS=0 runs in one process.
TEST_JOBS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist worksteal

# Every call mode (compile paths, ub.function, vmap, grad; the last line prints the
# time of each column), the backends in 2 worker processes; torch compiles with
# aot_eager here (Dynamo's full graph without Inductor's code generation, which
# costs seconds per case on 2 cores).
conformance: install
	UNIBACKEND_TORCH_COMPILER=$${UNIBACKEND_TORCH_COMPILER:-aot_eager} $(VENV)/bin/unibackend conformance --modes all --jobs 2

# ruff (lint and import order) and mypy (types), both configured in pyproject.toml.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The API reference from the docstrings (mkdocs + mkdocstrings), warnings as errors.
docs: install
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

# The wheel installed alone in a fresh venv: plugins listed, modules import, suite on numpy;
# then with the [torch] extra alone (torch pinned by constraints.txt): suite on numpy and torch.
wheel-check:
	PYTHON=$(PYTHON) tools/wheel_check.sh

bench: install
	$(VENV)/bin/unibackend bench --quick --out bench-out

$(LEGACY_VENV)/.installed: pyproject.toml
	test -x $(LEGACY_PY) || $(LEGACY_PYTHON) -m venv $(LEGACY_VENV)
	$(LEGACY_PY) -m pip install -q --disable-pip-version-check 'numpy<1.24' 'scipy<1.14' theano==1.0.5 'hypothesis>=6.80' 'pytest>=7' 'rich>=12'
	$(LEGACY_PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

legacy-theano: $(LEGACY_VENV)/.installed
	$(LEGACY_FLAGS) $(LEGACY_PY) -m pytest -q tests/test_theano_backend.py tests/test_contract.py
	$(LEGACY_FLAGS) $(LEGACY_VENV)/bin/unibackend conformance --backends numpy,theano

clean:
	rm -rf $(VENV) $(LEGACY_VENV) .unibackend-cache build *.egg-info
