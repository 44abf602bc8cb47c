"""The contract of docs/semantics.md, tested once, on every installed backend.

What goes where:

- here: what an op answers (orders and ties, NaN, +-inf and signed zeros,
  padding, duplicates, empty inputs, result dtypes) and what its gradient is.
  One test per rule, run on every installed backend (numpy always; torch also
  through its GPU code paths on the CPU, and on CUDA when there is one), with
  numpy arguments; the answer is computed by hand, or is the numpy
  reference's (conftest's ``agree``) where agreeing with numpy over many
  inputs is the point.  Gradient rules run on the backends that declare
  ``autodiff``, sparse rules on those that declare ``sparse``.
- tests/test_errors.py: every bad input, on every backend, in every mode.
- tests/test_transforms.py, test_compiled_*.py: the answers under vmap,
  grad transforms and compilers.
- tests/test_<backend>_backend.py: only what belongs to that backend: native
  tensor types and dtypes (bfloat16, torch COO/CSR, tf.SparseTensor, BCOO),
  devices, threads and asyncio, its compile, graph and symbolic paths,
  caches, fast paths, framework-specific algorithm switches, and a user's own
  jit / tf.function / graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import KTH_FILL, KTH_PLACE, NNAN, agree, installed_backends, numpy_ref, same_as_reference, special_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import unibackend as ub
from unibackend.conformance.tolerances import assert_within

inf, nan = np.inf, np.nan


# -- where each test runs ------------------------------------------------------

@dataclass(frozen=True)
class On:
    """A backend (on a device) that a test runs on."""

    name: str
    device: str | None = None

    def use(self):
        return ub.use_backend(self.name, self.device)

    def __call__(self, fn, *args, **kw):
        """``fn(*args, **kw)`` with this backend in force: the result is the
        backend's own tensor (numpy on numpy and eager theano); returned as numpy."""
        with self.use():
            out = fn(*args, **kw)
            native = type(ub.asarray(np.zeros(1)))
        assert isinstance(out, native) or (native is np.ndarray and isinstance(out, np.generic)), (self, type(out))
        return ub.to_numpy(out)

    def check(self, want, fn, *args, exact=True, **kw):
        """``fn`` gives ``want`` here: shape, dtype and values (NaN where it has NaN)."""
        got = self(fn, *args, **kw)
        same_as_reference(got, want, exact=exact)
        return got

    def agree(self, fn, *args, **kw):
        """conftest's ``agree`` here: numpy's answer, inputs untouched; as numpy."""
        return ub.to_numpy(agree(self.name, fn, *args, device=self.device, **kw))

    def grad(self, f, *args, argnums=0):
        """``ub.grad(f, argnums)(*args)`` here, as numpy (scipy CSR for a sparse gradient)."""
        with self.use():
            g = ub.grad(f, argnums)(*args)
        return tuple(ub.to_numpy(x) for x in g) if isinstance(argnums, tuple) else ub.to_numpy(g)


CAPS = {b.name: set(b.capabilities) for b in ub.backends()}


def _targets():
    out = []
    for name in installed_backends():
        out.append(pytest.param((name, None, False), id=name))
        if name == "torch":
            import torch

            out.append(pytest.param(("torch", "cpu", True), id="torch-gpu-paths"))
            if torch.cuda.is_available():
                out.append(pytest.param(("torch", "cuda", False), id="torch-cuda"))
    return out


TARGETS = _targets()


def _enter(param, monkeypatch):
    """The On of ``param``; "torch-gpu-paths" runs on the CPU through the code
    paths meant for GPUs (no data-dependent shortcuts, canonicalised sorts)."""
    name, device, gpu_paths = param
    if gpu_paths:
        from unibackend import _registry as R

        for dev in (None, device):
            monkeypatch.setattr(R.backend(name, dev), "gpu_paths", True)
    return On(name, device)


def _with(capability):
    return [p for p in TARGETS if capability in CAPS[p.values[0][0]]]


@pytest.fixture(params=TARGETS)
def on(request, monkeypatch):
    return _enter(request.param, monkeypatch)


@pytest.fixture(params=_with("sparse"))
def sparse_on(request, monkeypatch):
    return _enter(request.param, monkeypatch)


@pytest.fixture(params=_with("autodiff"))
def grad_on(request, monkeypatch):
    return _enter(request.param, monkeypatch)


def total(y, w=None):
    """sum(y * w) on the backend in force (``w``: numpy weights, cast to y's dtype)."""
    B = ub.get_backend()
    if w is not None:
        y = y * ub.asarray(np.asarray(w), B.dtype(y))
    return B.reduce_sum(y, None, False)


#: hypothesis on a parametrized fixture: the fixture holds nothing an example changes
PROPERTY = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Where each new input signature costs a compile: jax compiles each op's
#: kernel per shape and static argument (0.1-0.8 s a call here), theano each
#: gradient graph (1-2 s).  A sweep over many signatures runs its ``few``
#: cases there (always those the backend's own tests pinned before they moved
#: here) and all of them everywhere else.
FEW_SHAPES = {"jax"}
FEW_GRADIENTS = {"theano"}


def sweep(few, more, targets=TARGETS, thin=FEW_SHAPES):
    """Parameters (target, *case) of every case on every target, except the
    ``more`` cases on the targets in ``thin``; for ``parametrize`` with the
    fixture (``on`` or ``grad_on``) indirect.  A case is a tuple whose last
    item is its id."""
    out = []
    for t in targets:
        for case in few + (more if t.values[0][0] not in thin else []):
            out.append(pytest.param(t.values[0], *case[:-1], id=f"{t.id}-{case[-1]}"))
    return out


def grad_sweep(few, more):
    """:func:`sweep` over the backends with ``autodiff``, thin where gradients compile."""
    return sweep(few, more, targets=_with("autodiff"), thin=FEW_GRADIENTS)


# -- dot -----------------------------------------------------------------------------

def test_dot_by_hand_for_1d_2d_and_nd(on):
    a = np.arange(6.0).reshape(2, 3)
    on.check(np.array([[20.0, 23.0, 26.0, 29.0], [56.0, 68.0, 80.0, 92.0]]), ub.dot, a, np.arange(12.0).reshape(3, 4))
    on.check(np.array([3.0, 12.0]), ub.dot, a, np.ones(3))
    on.check(np.array(11.0), ub.dot, np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    a3 = np.arange(24.0).reshape(2, 3, 4)
    on.check(a3, ub.dot, a3, np.eye(4))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sa,sb", [((5,), (5,)), ((5,), (5, 3)), ((4, 5), (5,)), ((4, 5), (5, 3)),
                                   ((2, 4, 5), (5, 3)), ((2, 4, 5), (5,)), ((0, 5), (5, 3))])
def test_dot_is_numpys_for_every_rank_pair(on, sa, sb, dtype):
    rng = np.random.default_rng(0)
    on.agree(ub.dot, rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype))


def test_dot_promotes_float32_with_float64_and_integers_to_float64(on):
    f32 = np.ones((2, 3), np.float32)
    on.check(np.full((2, 2), 3.0, np.float32), ub.dot, f32, f32.T)
    on.check(np.full(2, 3.0, np.float32), ub.dot, f32, np.ones(3, np.float32))
    on.check(np.array([3.0, 3.0]), ub.dot, f32, np.ones(3))
    on.check(np.full((2, 2), 3.0), ub.dot, f32, np.ones((3, 2)))
    on.check(np.array(14.0), ub.dot, np.arange(4), np.arange(4))
    on.check(np.array([3.0]), ub.dot, np.array([[1, 2]]), np.ones(2, np.float32))


# -- sparse_dot -------------------------------------------------------------------------

def _messy_coo():
    """COO with a duplicate, an explicit zero and unsorted entries."""
    rows = np.array([2, 0, 1, 0, 2, 1])
    cols = np.array([3, 1, 0, 1, 2, 4])
    vals = np.array([1.0, 2.0, -3.0, 4.0, 0.0, 5.0])
    return sp.coo_matrix((vals, (rows, cols)), shape=(3, 5))


@pytest.mark.parametrize("fmt", ["csr_matrix", "csc_matrix", "coo_matrix", "csr_array", "csc_array", "coo_array"])
def test_sparse_dot_takes_every_scipy_format(sparse_on, fmt):
    dense = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    x = getattr(sp, fmt)(dense)
    w = np.arange(6.0).reshape(3, 2)
    sparse_on.check(np.array([[4.0, 6.0], [12.0, 16.0]]), ub.sparse_dot, x, w)
    sparse_on.check(np.array([4.0, 12.0]), ub.sparse_dot, x, w[:, 0])
    sparse_on.check(np.array([[4.0, 6.0], [12.0, 16.0]]), ub.dot, x, w)  # a sparse a goes to sparse_dot


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("wshape", [(5,), (5, 4)])
def test_sparse_dot_of_duplicates_explicit_zeros_and_unsorted_entries_is_numpys(sparse_on, fmt, wshape):
    x = _messy_coo() if fmt == "coo" else _messy_coo().asformat(fmt)
    w = np.random.default_rng(1).standard_normal(wshape)
    sparse_on.agree(ub.sparse_dot, x, w)
    sparse_on.agree(ub.dot, x, w)


def test_sparse_dot_adds_coo_duplicates_and_leaves_the_input_as_it_was(sparse_on):
    x = sp.coo_matrix((np.array([1.0, 2.0, 0.0]), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 2))
    sparse_on.check(np.array([[0.0, 3.0], [0.0, 0.0]]), ub.sparse_dot, x, np.eye(2))
    assert x.nnz == 3  # duplicates and the explicit zero still stored in the input


def test_sparse_dot_of_unsorted_csr_indices_leaves_them_unsorted(sparse_on):
    x = sp.csr_matrix((np.array([5.0, 7.0]), np.array([2, 0]), np.array([0, 2])), shape=(1, 3))
    assert not x.has_sorted_indices
    sparse_on.check(np.array([507.0]), ub.sparse_dot, x, np.array([1.0, 10.0, 100.0]))
    np.testing.assert_array_equal(x.indices, [2, 0])


def test_sparse_dot_keeps_float32_and_promotes_with_float64(sparse_on):
    x = sp.csr_array(sp.random(20, 30, density=0.2, random_state=0, dtype=np.float32))
    w = np.random.default_rng(2).standard_normal((30, 3)).astype(np.float32)
    assert sparse_on.agree(ub.sparse_dot, x, w).dtype == np.float32
    assert sparse_on.agree(ub.sparse_dot, x, w.astype(np.float64)).dtype == np.float64


# -- argsort ------------------------------------------------------------------------

def test_argsort_is_stable_in_both_directions(on):
    x = np.array([2.0, 1.0, 2.0, 1.0, 2.0])
    on.check(np.array([1, 3, 0, 2, 4]), ub.argsort, x)
    on.check(np.array([0, 2, 4, 1, 3]), ub.argsort, x, descending=True)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_argsort_puts_nan_above_inf_and_takes_signed_zeros_as_equal(on, dtype):
    """Descending is not the reverse of ascending: ties and NaNs keep index order both ways.
    A NaN with its sign bit set is still the largest."""
    x = np.array([1.0, nan, -0.0, 2.0, 0.0, 1.0, -inf, NNAN, 2.0, -0.0, inf], dtype)
    on.check(np.array([6, 2, 4, 9, 0, 5, 3, 8, 10, 1, 7]), ub.argsort, x)
    on.check(np.array([1, 7, 10, 3, 8, 0, 5, 2, 4, 9, 6]), ub.argsort, x, descending=True)


def test_argsort_along_axis_0_of_a_long_tied_column(on):
    x = np.zeros((40, 2))
    x[::3, 1] = 1.0
    got = on(ub.argsort, x, axis=0)
    np.testing.assert_array_equal(got[:, 0], np.arange(40))
    expect = np.concatenate([np.arange(0, 40, 3), [i for i in range(40) if i % 3]])
    np.testing.assert_array_equal(on(ub.argsort, x, axis=0, descending=True)[:, 1], expect)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_argsort_with_many_ties_nan_and_signed_zeros_is_numpys_along_every_axis(on, axis, descending):
    rng = np.random.default_rng(3)
    for x in (rng.integers(0, 4, size=(7, 50)).astype(np.float32), rng.integers(0, 3, (6, 40, 5)).astype(np.float64)):
        x[rng.random(x.shape) < 0.1] = nan
        x[rng.random(x.shape) < 0.2] *= -1  # -0.0 among the zeros
        on.agree(ub.argsort, x, axis=axis, descending=descending, exact=True)


@pytest.mark.parametrize("on,dtype", sweep([(np.int32, "int32"), (np.uint64, "uint64"), (np.bool_, "bool")],
                                            [(np.int8, "int8"), (np.int64, "int64"), (np.uint8, "uint8"),
                                             (np.float16, "float16")]), indirect=["on"])
def test_argsort_of_other_dtypes_orders_extremes_and_ties(on, dtype):
    if dtype == np.bool_:
        on.check(np.array([1, 3, 0, 2]), ub.argsort, np.array([True, False, True, False]))
        on.check(np.array([0, 2, 1, 3]), ub.argsort, np.array([True, False, True, False]), descending=True)
    elif dtype != np.float16:
        info = np.iinfo(dtype)
        x = np.array([info.max, 0, info.min, 1, info.max, info.min], dtype)
        on.check(np.array([2, 5, 1, 3, 0, 4] if info.min else [1, 2, 5, 3, 0, 4]), ub.argsort, x)
        on.check(np.array([0, 4, 3, 1, 2, 5] if info.min else [0, 4, 3, 1, 2, 5]), ub.argsort, x, descending=True)
    x = np.random.default_rng(4).integers(0, 3, size=(3, 40)).astype(dtype)
    on.agree(ub.argsort, x, exact=True)
    on.agree(ub.argsort, x, descending=True, exact=True)


def test_argsort_of_a_long_slice_is_stable(on):
    """Long enough that CUDA takes its radix-sort path."""
    x = np.random.default_rng(5).integers(0, 5, size=5000).astype(np.float64)
    x[::7] = -0.0
    for descending in (False, True):
        got = on(ub.argsort, x, descending=descending)
        key = -x[got] if descending else x[got]
        assert (np.diff(key) >= 0).all()
        runs = np.diff(key) == 0
        assert (np.diff(got)[runs] > 0).all()  # equal values in index order


@PROPERTY
@given(x=hnp.arrays(np.float64, st.integers(2, 30), elements=st.sampled_from([0.0, -0.0, 1.0, -1.0, nan, inf, -inf])),
       descending=st.booleans())
def test_argsort_property_stable_both_ways(on, x, descending):
    """For any vector of heavily tied values with NaN, +-inf and signed zeros,
    argsort equals the numpy reference's stable order in both directions."""
    same_as_reference(on(ub.argsort, x, descending=descending), numpy_ref(ub.argsort, x, descending=descending),
                      exact=True)


# -- set_subtensor / inc_subtensor ------------------------------------------------------

def test_subtensor_with_ints_slices_and_ellipsis_by_hand(on):
    x = np.zeros((3, 4))
    np.testing.assert_array_equal(on(ub.set_subtensor, x, (1, slice(1, 3)), 5.0)[1], [0, 5, 5, 0])
    np.testing.assert_array_equal(on(ub.set_subtensor, x, (Ellipsis, -1), [1, 2, 3])[:, 3], [1, 2, 3])
    np.testing.assert_array_equal(on(ub.set_subtensor, x, slice(None, None, -2), 1.0)[:, 0], [1, 0, 1])
    assert not x.any()


def test_set_keeps_the_last_write_and_inc_adds_every_write(on):
    x = np.zeros(4)
    on.check(np.array([2.0, 0, 3, 0]), ub.set_subtensor, x, [2, 0, 2], [1.0, 2.0, 3.0])
    on.check(np.array([2.0, 0, 4, 0]), ub.inc_subtensor, x, [2, 0, 2], [1.0, 2.0, 3.0])
    on.check(np.array([0.0, 0, 0, 2]), ub.inc_subtensor, x, np.array([-1, -1]), 1.0)
    x, idx, v = np.zeros(5), np.array([1, 3, 1, 1]), np.array([1.0, 2.0, 3.0, 4.0])
    on.check(np.array([0.0, 4, 0, 2, 0]), ub.set_subtensor, x, idx, v)
    on.check(np.array([0.0, 8, 0, 2, 0]), ub.inc_subtensor, x, idx, v)


def test_subtensor_with_a_mask_index_arrays_and_basic_with_advanced(on):
    x = np.arange(6.0).reshape(2, 3)
    on.check(np.array([[0.0, 1, 2], [0, 0, 0]]), ub.set_subtensor, x, x > 2, 0.0)
    on.check(np.array([[0.0, 1, -1], [-2, 4, 5]]), ub.set_subtensor, x, (np.array([0, 1]), np.array([2, 0])),
             np.array([-1.0, -2.0]))
    np.testing.assert_array_equal(on(ub.inc_subtensor, x, (slice(None), [0, 0]), 1.0)[:, 0], [2, 5])
    x4 = np.arange(24.0).reshape(4, 6)
    s = on(ub.set_subtensor, x4, (np.array([0, 0, 2, 0]), np.array([1, 1, 1, 1])), np.array([1.0, 2.0, 3.0, 4.0]))
    i = on(ub.inc_subtensor, x4, (np.array([0, 0, 2, 0]), np.array([1, 1, 1, 1])), np.array([1.0, 2.0, 3.0, 4.0]))
    assert s[0, 1] == 4.0 and s[2, 1] == 3.0
    assert i[0, 1] == x4[0, 1] + 7.0 and i[2, 1] == x4[2, 1] + 3.0


X2 = np.arange(12.0).reshape(3, 4)
X3 = np.arange(60.0).reshape(3, 4, 5)
#: one index of each kind (every backend)
INDICES = [
    (X2, 1), (X2, -1), (X2, (0, slice(None))), (X2, (slice(None, None, -1), 0)),
    (X2, np.array([2, 0, 2])),                                    # a row named twice
    (X2, ([0, 1, 1, 0], [1, 2, 2, 1])),                           # positions named twice, as lists
    (X2, (slice(None), [3, -1])), (X2, (Ellipsis, np.array([2, -1, 0]))),
    (X2, (np.array([[0, 2]]), np.array([[1], [0]]))),             # broadcast index arrays
    (X2, X2 > 5), (X2, np.array([True, False, True])),
    (X3, (np.array([2, 0, 2]), slice(None))), (X3, (None, np.array([[2], [2]]))),
    (X3, (np.array([0, 1]), slice(None), np.array([2, 3]))),
]
#: more of each kind (not where each shape compiles: FEW_SHAPES)
MORE_INDICES = [
    (X2, (slice(None), 2)), (X2, (slice(1, None), 2)), (X2, (slice(1, None), slice(None, None, 2))),
    (X2, (Ellipsis, 0)), (X2, (Ellipsis, slice(None, None, 2))), (X2, (1, slice(None, None, -1))),
    (X2, (slice(None), slice(None, None, -2))), (X2, (slice(None, None, 2), -2)),
    (X2, (np.array([0, 0, 1]), np.array([1, 1, 3]))), (X2, ([0, 2], slice(1, 3))),
    (X2, (slice(1, 3), np.array([3, 3, 0]))), (X2, [1, 1]),
    (X3, (np.array([1, 1]), Ellipsis)), (X3, (np.array([0, 2]), None)), (X3, (slice(None), np.array([3, 0, 3]))),
    (X3, (np.array([1, 0]), Ellipsis, 4)), (X3, np.array([True, False, True])), (X3, (1, np.array([0, 0, 3]))),
    (X3, (slice(1, 3), slice(None), np.array([4, 4]))), (X3, (0, slice(None, None, 2))), (X3, (Ellipsis, slice(1, 4))),
]


@pytest.mark.parametrize("on,x,index", sweep([(*c, f"{c[0].ndim}d-{i}") for i, c in enumerate(INDICES)],
                                             [(*c, f"{c[0].ndim}d-more-{i}") for i, c in enumerate(MORE_INDICES)]),
                         indirect=["on"])
def test_set_and_inc_subtensor_are_numpys_for_every_kind_of_index(on, x, index):
    """Whatever part of x an index reaches (leading rows, flat positions, a
    strided block, a reversed slice), the result is numpy's, duplicates
    included (last write / every addition), with a value of the selection's
    shape, a broadcast column and a scalar; no input changes (agree checks)."""
    sel = x[index].shape
    full = np.arange(1.0, 1.0 + np.prod(sel)).reshape(sel) * 100
    for op in (ub.set_subtensor, ub.inc_subtensor):
        for value in (full, full[..., :1], 7.0) if full.ndim > 1 else (full, 7.0):
            on.agree(op, x, index, value, exact=op is ub.set_subtensor or on.device != "cuda")


@pytest.mark.parametrize("shape,index", [((0,), slice(None)), ((0, 3), (slice(None), 1)),
                                         ((2, 3), np.array([], np.int64)), ((0, 0), np.zeros(0, np.int32))])
def test_subtensor_of_an_empty_selection_is_x_unchanged(on, shape, index):
    x = np.zeros(shape, np.float32)
    for op in (ub.set_subtensor, ub.inc_subtensor):
        on.check(x, op, x, index, 1.0)
        on.check(x, op, x, index, np.zeros(x[index].shape, np.float32))
        if shape == (0,):  # a (1,) value broadcast into nothing
            on.check(x, op, x, index, np.array([1.0]))


def test_subtensor_keeps_xs_dtype_and_signed_zeros(on):
    x = np.zeros(3, np.float32)
    on.check(np.array([1.5, 0, 0], np.float32), ub.set_subtensor, x, 0, np.float64(1.5))
    on.check(np.array([[2.0, 2, 2], [1, 1, 1]], np.float32), ub.set_subtensor, np.ones((2, 3), np.float32), 0, 2.0)
    on.check(np.array([[1.0, 1, 1], [5, 5, 5]], np.float32), ub.inc_subtensor, np.ones((2, 3), np.float32),
             np.array([1, 1]), np.float64(2.0))
    got = on.check(np.array([-0.0, 5.0]), ub.set_subtensor, np.array([-0.0, 1.0]), 1, 5.0)
    assert np.signbit(got[0])


@pytest.mark.parametrize("on,dtype", sweep([(d, d) for d in ("uint8", "uint64", "bool")],
                                            [(d, d) for d in ("uint16", "uint32", "int8", "int16")]), indirect=["on"])
@pytest.mark.parametrize("op", [ub.set_subtensor, ub.inc_subtensor], ids=["set", "inc"])
def test_subtensor_of_integer_dtypes_is_numpys(on, op, dtype):
    """Every integer dtype and bool, set and inc (bools add as a logical or,
    as numpy's do), on every backend: onnxruntime's Where has no uint16,
    uint64 or bool kernel, TF's and jax's scatter-add no bool."""
    x = np.array([3, 1, 2, 1, 0]).astype(dtype)
    value = np.array([1, 1, 0]).astype(dtype)
    on.agree(op, x, [4, 0, 4], value, exact=True)
    on.agree(op, x, slice(1, 4), value, exact=True)


# -- masked_mean ----------------------------------------------------------------------

def test_masked_mean_ignores_masked_nan_and_inf_and_gives_zero_where_nothing_holds(on):
    x = np.array([[1.0, nan, 3.0], [inf, 5.0, -inf], [7.0, 8.0, 9.0]])
    on.check(np.array([2.0, 5.0, 0.0]), ub.masked_mean, x, np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]]), axis=1)
    on.check(np.array([2.0, 5.0, 0.0]), ub.masked_mean, x, np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]], bool), axis=1)
    x = np.array([[1.0, nan, 3.0], [inf, -inf, nan], [2.0, 4.0, 6.0]])
    on.check(np.array([2.0, 0.0, 4.0]), ub.masked_mean, x, np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]]), axis=1)


def test_masked_mean_broadcasts_the_mask_and_takes_tuple_axes_and_none(on):
    x = np.arange(12.0).reshape(2, 3, 2)
    on.check((x[:, 0] + x[:, 2]) / 2, ub.masked_mean, x, np.array([True, False, True])[None, :, None], axis=1)
    on.check(np.array(5.5), ub.masked_mean, x, np.ones(x.shape, np.int64), axis=None)
    on.check(np.array([6.5, 8.5, 7.5]), ub.masked_mean, x, x > 3, axis=(0, 2))


def test_masked_mean_reads_an_integer_mask_as_nonzero(on):
    on.check(np.array(1.5), ub.masked_mean, np.arange(4.0), np.array([0, 1, -2, 0]))


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2), -1])
def test_masked_mean_is_numpys_over_axes_with_broadcast_masks_and_keeps_float32(on, axis):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    for mask in (rng.random((4, 5)) < 0.5, (rng.random((4, 1)) < 0.5).astype(np.int32)):
        assert on.agree(ub.masked_mean, x, mask, axis=axis).dtype == np.float32


# -- keep_topk ----------------------------------------------------------------------

def test_keep_topk_keeps_the_lower_index_among_ties(on):
    x = np.zeros(40)
    x[[3, 17, 30]] = 1.0
    want = np.full(40, -inf)
    want[[3, 17]] = 1.0
    on.check(want, ub.keep_topk, x, 2)
    want = np.full(40, -inf)
    want[:3] = 0.0
    on.check(want, ub.keep_topk, np.zeros(40), 3)


def test_keep_topk_counts_nan_as_largest_and_keeps_exactly_k(on):
    x = np.array([1.0, nan, 0.0, nan, 2.0])
    on.check(np.array([-1.0, nan, -1.0, nan, 2.0]), ub.keep_topk, x, 3, fill=-1.0)
    on.check(np.array([-1.0, nan, -1.0, -1.0, -1.0]), ub.keep_topk, x, 1, fill=-1.0)  # the lower-index NaN
    x = np.array([1.0, nan, 2.0, 2.0, nan, 2.0])
    on.check(np.array([-inf, nan, 2.0, -inf, nan, -inf]), ub.keep_topk, x, 3)
    on.check(np.array([0.0, nan, 2.0, 2.0, nan, 0.0]), ub.keep_topk, x, 4, fill=0.0)
    on.check(np.full(6, -1.0), ub.keep_topk, x, 0, fill=-1.0)
    on.check(x, ub.keep_topk, x, 6)
    x = np.array([1.0, nan, 5.0, nan, inf, 2.0])
    for k in range(7):
        assert (~np.isneginf(on.agree(ub.keep_topk, x, k, exact=True))).sum() == k


def test_keep_topk_with_k_zero_k_size_and_axis_0(on):
    x = np.array([[3.0, 1.0], [2.0, 5.0], [4.0, 0.0]])
    on.check(np.full((3, 2), -inf), ub.keep_topk, x, 0)
    on.check(x, ub.keep_topk, x, 3, axis=0)
    on.check(np.array([[0.0, 0.0], [0.0, 5.0], [4.0, 0.0]]), ub.keep_topk, x, 1, axis=0, fill=0.0)
    on.check(np.zeros((3, 0)), ub.keep_topk, np.zeros((3, 0)), 0)
    on.check(np.array([-inf, 2.0]), ub.keep_topk, np.array([1.0, 2.0]), 1, fill=-math.inf)


def test_keep_topk_of_rows_by_hand(on):
    x = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [nan, 0.0, nan, 5.0, -0.0]])
    on.check(np.array([[-inf, 3.0, 3.0, -inf, -inf], [nan, -inf, nan, -inf, -inf]]), ub.keep_topk, x, 2)


@pytest.mark.parametrize("x,k,want", [
    ([1.0, 3.0, 3.0, 3.0, 2.0], 2, [-inf, 3.0, 3.0, -inf, -inf]),     # a tie straddles the k-th place
    ([nan, 1.0, inf, nan, 5.0], 3, [nan, -inf, inf, nan, -inf]),      # NaN counts as largest
    ([-0.0, 0.0, -0.0, 1.0], 2, [-0.0, -inf, -inf, 1.0]),             # -0.0 == +0.0: lower index stays
    ([-0.0, -0.0, 2.0], 2, [-0.0, -inf, 2.0]),                        # a kept -0.0 keeps its sign
    ([-0.0] * 17, 17, [-0.0] * 17),                                   # k == n keeps -0.0 as it is
    ([0.0] * 4, 0, [-inf] * 4),
])
def test_keep_topk_keeps_signed_zeros_as_they_are(on, x, k, want):
    for dtype in (np.float32, np.float64):
        got = on.check(np.array(want, dtype), ub.keep_topk, np.array(x, dtype), k)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(np.array(want, dtype)))




@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_keep_topk_at_a_kth_place_held_by_nan_ties_signed_zero_or_inf(on, dtype):
    for x, k, want in KTH_PLACE:
        want = np.array(want, dtype)
        got = on.check(want, ub.keep_topk, np.array(x, dtype), k, fill=KTH_FILL)
        np.testing.assert_array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(want[~np.isnan(want)]))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_keep_topk_with_many_ties_keeps_exactly_k_as_numpy_chooses(on, axis):
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, size=(6, 6, 6)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = nan
    x[rng.random(x.shape) < 0.1] *= -1  # -0.0 among the zeros
    few = on.name in FEW_SHAPES
    for k in (1, 3) if few else (0, 1, 3, 6):
        assert ((~np.isneginf(on.agree(ub.keep_topk, x, k, axis=axis, exact=True))).sum(axis=axis) == k).all()
    for k in () if few else (0, 3, 6):
        on.agree(ub.keep_topk, x[0].astype(np.float64), k, axis=axis, exact=True)


def test_keep_topk_keeps_float16_and_fill(on):
    rng = np.random.default_rng(8)
    assert on.agree(ub.keep_topk, rng.standard_normal((4, 9)).astype(np.float16), 3, fill=0.0, exact=True).dtype == np.float16
    on.agree(ub.keep_topk, rng.integers(0, 4, size=(9, 5)).astype(np.float16), 3, axis=0, exact=True)
    on.check(np.array([3.0, 0.5, 0.5], np.float32), ub.keep_topk, np.array([3.0, 1.0, 2.0], np.float32), 1, fill=0.5)


@PROPERTY
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(2, 5), st.integers(2, 8)),
                    elements=st.sampled_from([0.0, -0.0, 1.0, 2.0, nan, inf, -inf])),
       data=st.data())
def test_keep_topk_property_exactly_k_stay_as_numpy_chooses(on, x, data):
    """For any matrix of tied values with NaN, +-inf and signed zeros and any
    0 <= k <= n, keep_topk keeps exactly the entries the numpy reference keeps."""
    k = data.draw(st.integers(0, x.shape[1]))
    same_as_reference(on(ub.keep_topk, x, k, fill=-7.0), numpy_ref(ub.keep_topk, x, k, fill=-7.0), exact=True)


# -- softmax / topk_gate --------------------------------------------------------------

def test_softmax_gives_exact_zeros_for_minus_inf_and_for_all_minus_inf_slices(on):
    x = np.array([[0.0, -inf, 0.0], [-inf, -inf, -inf], [1000.0, 1000.0, -inf]])
    on.check(np.array([[0.5, 0.0, 0.5], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]]), ub.softmax, x)
    on.check(np.array([[0.5, 0.0, 0.5], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]]).T, ub.softmax, x.T.copy(), axis=0)


def test_softmax_of_a_slice_with_plus_inf_or_nan_is_nan_throughout(on):
    x = np.array([[1.0, inf, 2.0], [nan, 0.0, 1.0], [inf, inf, -inf], [nan, 0.0, -inf], [-inf, -inf, -inf],
                  [-inf, 0.0, 0.0]])
    want = np.array([[nan] * 3, [nan] * 3, [nan] * 3, [nan] * 3, [0.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    on.check(want, ub.softmax, x)
    on.check(want.T, ub.softmax, x.T.copy(), axis=0)
    x = np.array([[0.1, nan, 0.3, 2.0], [-inf] * 4, [0.0, 1.0, -inf, 2.0], [1.0, inf, 0.0, 0.0]], np.float32)
    got = on.agree(ub.softmax, x)
    assert np.isnan(got[[0, 3]]).all() and (got[1] == 0).all() and got[2, 2] == 0


@pytest.mark.parametrize("on,dtype", sweep([("float32", "float32")], [(d, d) for d in ("float16", "float64")]),
                         indirect=["on"])
def test_softmax_and_topk_gate_with_nan_or_inf_in_one_slice_or_many(on, dtype):
    """A NaN or +inf makes its slice NaN throughout, -inf gives 0, other slices stay finite."""
    for special in (nan, inf, -inf):
        for rows in (1, 3):
            x = special_rows(special, rows).astype(dtype)
            got = on.agree(ub.softmax, x)
            assert np.isnan(got[0]).all() == (special != -inf) and np.isfinite(got[1:]).all()
            on.agree(ub.topk_gate, x, 2)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_is_numpys_over_each_axis_and_stable_for_large_logits(on, axis):
    rng = np.random.default_rng(9)
    on.agree(ub.softmax, rng.standard_normal((3, 4, 5)), axis=axis)
    big = on.agree(ub.softmax, (rng.standard_normal((2, 3, 4)) * 1e4).astype(np.float32), axis=axis)
    assert big.dtype == np.float32 and np.isfinite(big).all()
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -999.0]], np.float32)
    assert np.isfinite(on.agree(ub.softmax, x, axis=1)).all()


@pytest.mark.parametrize("shape,axis", [((3, 0), 1), ((0, 3), 1), ((0, 3), 0)])
def test_softmax_of_an_empty_axis_or_batch_is_empty(on, shape, axis):
    on.check(np.zeros(shape), ub.softmax, np.zeros(shape), axis=axis)


def test_topk_gate_by_hand(on):
    on.check(np.array([[0.0, 0.5, 0.0, 0.5], [0.5, 0.5, 0.0, 0.0]]), ub.topk_gate,
             np.array([[1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]]), 2)
    on.check(np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]), ub.topk_gate,
             np.array([[3.0, 3.0, 3.0, 1.0], [-inf, 0.0, 5.0, 5.0]]), 2)
    on.check(np.array([[0.0, 0.5, 0.5, 0.0, 0.0]]), ub.topk_gate, np.array([[1.0, 3.0, 3.0, 0.5, 2.0]]), 2)
    e = np.exp([2.0, 3.0])
    on.check(np.array([0.0, e[1] / e.sum(), e[0] / e.sum()]), ub.topk_gate, np.array([1.0, 3.0, 2.0]), 2, exact=False)


def test_topk_gate_has_exactly_k_nonzero_weights_summing_to_one(on):
    rng = np.random.default_rng(10)
    for logits, k in ((rng.integers(0, 3, size=(5, 8)).astype(np.float64), 3), (rng.standard_normal((4, 6)), 2)):
        got = on.agree(ub.topk_gate, logits, k)
        assert ((got > 0).sum(axis=1) == k).all()
        np.testing.assert_allclose(got.sum(axis=1), 1.0)


# -- embedding_mean / pad_ids -----------------------------------------------------------

def test_embedding_mean_on_the_classic_padded_example(on):
    ids = np.array([[0, 0, 1], [2, 3, 0], [2, 10, 11]])
    table = np.arange(24.0).reshape(12, 2)
    on.check(np.array([[2.0, 3.0], [5.0, 6.0], [(4 + 20 + 22) / 3, (5 + 21 + 23) / 3]]), ub.embedding_mean, table, ids,
             exact=False)
    on.check(np.array([[2.0]]), ub.embedding_mean, np.array([[1.0], [2.0], [3.0]]), np.array([[0, 2, -1]]), pad_id=-1)


@pytest.mark.parametrize("on,idt", sweep([(np.int32, "int32"), (np.uint8, "uint8")],
                                          [(np.int16, "int16"), (np.int64, "int64")]), indirect=["on"])
def test_embedding_mean_counts_repeats_and_zeros_all_padding_rows_for_every_id_dtype(on, idt):
    table = np.array([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0]])
    on.check(np.array([[2 / 3, 1 / 3], [0.0, 0.0]]), ub.embedding_mean, table, np.array([[1, 1, 2], [0, 0, 0]], idt),
             exact=False)
    table, ids = np.arange(12.0).reshape(6, 2), np.array([[1, 1, 2, 0], [0, 0, 0, 0], [5, 3, 0, 0]], idt)
    on.check(np.array([[(2 + 2 + 4) / 3, (3 + 3 + 5) / 3], [0.0, 0.0], [8.0, 9.0]]), ub.embedding_mean, table, ids,
             exact=False)
    ids = np.random.default_rng(11).integers(0, 6, size=(4, 5)).astype(idt)
    assert on.agree(ub.embedding_mean, table.astype(np.float32), ids).dtype == np.float32


def test_embedding_mean_of_empty_rows_and_no_rows(on):
    table = np.array([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0]])
    on.check(np.zeros((0, 2)), ub.embedding_mean, table, np.zeros((0, 4), np.int64))
    on.check(np.zeros((2, 2)), ub.embedding_mean, table, np.zeros((2, 0), np.int64))
    on.check(np.zeros((2, 2)), ub.embedding_mean, np.ones((3, 2)), np.zeros((2, 0), np.int64))


@pytest.mark.parametrize("pad_id", [0, 2, 5, -1, 6, 100, 2**40])
def test_embedding_mean_skips_any_pad_id_counts_repeats_and_zeros_all_padding_rows(on, pad_id):
    table = np.random.default_rng(12).standard_normal((6, 3))
    real = [i for i in range(6) if i != pad_id]
    ids = np.array([[real[0], pad_id, real[1], real[1]], [pad_id] * 4, [real[2], real[3], real[4], pad_id]])
    got = on.agree(ub.embedding_mean, table, ids, pad_id=pad_id)
    assert_within(got[0], (table[real[0]] + 2 * table[real[1]]) / 3, n_terms=3)
    assert (got[1] == 0).all()
    if pad_id == 2**40:  # a pad_id outside the ids' dtype
        on.agree(ub.embedding_mean, table.astype(np.float32), ids.clip(0, 5).astype(np.int32), pad_id=pad_id)


def test_embedding_mean_never_reads_the_pad_row(on):
    table = np.ones((4, 2))
    table[0] = nan
    on.check(np.array([[1.0, 1.0], [0.0, 0.0]]), ub.embedding_mean, table, np.array([[1, 0], [0, 0]]))


def test_embedding_mean_keeps_float32(on):
    on.check(np.ones((1, 2), np.float32), ub.embedding_mean, np.ones((3, 2), np.float32), np.array([[1]]))


def test_pad_ids_shifts_and_pads_at_the_end():
    out = ub.pad_ids([[0, 1], [], [2, 3, 4]])
    np.testing.assert_array_equal(out, [[1, 2, 0], [0, 0, 0], [3, 4, 5]])
    assert out.dtype == np.int64
    np.testing.assert_array_equal(ub.pad_ids([[5]], pad_id=-1, shift=0, length=3), [[5, -1, -1]])
    assert ub.pad_ids([]).shape == (0, 0)


def test_pad_ids_then_embedding_mean_round_trip(on):
    table = np.arange(10.0).reshape(5, 2)
    on.check(np.array([[(2 + 8) / 2, (3 + 9) / 2], [6.0, 7.0]]), ub.embedding_mean, table, ub.pad_ids([[0, 3], [2]]))


# -- conversion -------------------------------------------------------------------

def test_to_numpy_of_numpy_and_scipy_and_asarray_of_neutral_inputs(on):
    x = np.arange(3)
    assert ub.to_numpy(x) is x
    with on.use():
        assert ub.to_numpy(ub.asarray([1, 2], dtype="float32")).dtype == np.float32
        assert ub.to_numpy(ub.asarray([1.5, 2.0])).dtype == np.float64  # numpy's rules, not the framework's
        assert ub.to_numpy(ub.asarray([1, 2])).dtype == np.int64
        s = ub.to_numpy(sp.coo_matrix(np.eye(2)))
    assert isinstance(s, sp.csr_matrix)


# -- gradients ----------------------------------------------------------------------

def test_value_and_grad_gives_the_value_and_each_argnums_gradient(grad_on):
    def f(a, b, scale=1.0):
        return scale * total(ub.dot(a, b) ** 2)

    rng = np.random.default_rng(13)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal(3)
    with grad_on.use():
        v, (ga, gb) = ub.value_and_grad(f, argnums=(0, 1))(a, b, scale=2.0)
        g1 = ub.grad(f)(a, b)
    r = a @ b
    assert_within(ub.to_numpy(v), np.float64(2 * (r ** 2).sum()), n_terms=6)
    assert_within(ub.to_numpy(ga), 4 * np.outer(r, b), n_terms=6)
    assert_within(ub.to_numpy(gb), 4 * a.T @ r, n_terms=6)
    assert_within(ub.to_numpy(g1), 2 * np.outer(r, b), n_terms=6)


def test_grad_of_an_integer_argument_is_float64_and_an_unused_one_gets_zeros(grad_on):
    with grad_on.use():
        v, (ga, gb) = ub.value_and_grad(lambda a, b: total(ub.asarray(a) * 3.0), argnums=(0, 1))(
            [1, 2], np.ones(2, np.float32))
    assert float(ub.to_numpy(v)) == 9.0
    same_as_reference(ub.to_numpy(ga), np.array([3.0, 3.0]), exact=True)
    same_as_reference(ub.to_numpy(gb), np.zeros(2, np.float32), exact=True)


def test_grad_has_its_arguments_dtype_when_f_promotes_it(grad_on):
    """A float32 w meets a float64 sparse x inside f: its gradient is float32."""
    x = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0]]))
    g = grad_on.grad(lambda w: ub.dot(ub.sparse_dot(x, w), np.ones(2)), np.ones(2, np.float32))
    same_as_reference(g, np.array([1.0, 2.0], np.float32), exact=True)


def test_grad_of_a_function_that_returns_no_scalar_is_type_error(grad_on):
    with grad_on.use(), pytest.raises(TypeError, match=r"^value_and_grad: f must return a scalar, got a value of shape"):
        ub.grad(lambda x: x * 2)(np.ones(3))


def test_sparse_dot_gradient_wrt_w_is_x_transpose_g(grad_on):
    x = _messy_coo()
    g = np.random.default_rng(14).standard_normal((3, 2))
    assert_within(grad_on.grad(lambda w: total(ub.sparse_dot(x, w), g), np.ones((5, 2))), x.T @ g, n_terms=3)


@pytest.mark.parametrize("grad_on,wshape", grad_sweep([((5, 2), "w2d")], [((5,), "w1d")]),
                         indirect=["grad_on"])
def test_sparse_dot_gradient_wrt_a_scipy_x_is_sparse_at_its_stored_positions_only(grad_on, wshape):
    """d/dx sum(x @ w) is the row sum of w at every stored position of x (the
    explicit zero included, duplicates summed), and nothing elsewhere."""
    x = _messy_coo()
    w = np.arange(1.0, 1.0 + np.prod(wshape)).reshape(wshape)
    with grad_on.use():
        gx = ub.grad(lambda x: total(ub.sparse_dot(x, w)))(x)
        assert ub.get_backend().is_sparse(gx), type(gx)
    back = ub.to_numpy(gx)
    canon = x.tocsr()
    canon.sum_duplicates()
    assert sp.issparse(back) and back.nnz == canon.nnz
    np.testing.assert_array_equal(back.indptr, canon.indptr)
    np.testing.assert_array_equal(back.indices, canon.indices)
    np.testing.assert_allclose(back.data, (w.sum(axis=1) if w.ndim == 2 else w)[canon.indices])


def test_sparse_dot_gradient_wrt_scipy_sparse_arrays_and_an_empty_matrix_is_sparse(grad_on):
    def f(x, w):  # one function: a backend that compiles per signature compiles it once
        return total(ub.sparse_dot(x, w))

    w = np.ones((3, 2))
    for x in (sp.coo_array(np.eye(3)), sp.csr_array(np.eye(3)), sp.coo_array((0, 0))):
        wx = w[: x.shape[1]]
        gx = grad_on.grad(f, x, wx)
        assert sp.issparse(gx) and gx.shape == x.shape
        np.testing.assert_array_equal(gx.toarray(), (x.toarray() != 0) * wx.sum(axis=1))
    grad_on.check(w, ub.sparse_dot, sp.csr_array(np.eye(3)), w)


_W6 = np.arange(1.0, 7.0).reshape(2, 3)
#: (f(x, v), x, v, the gradients w.r.t. x and v, id)
SET_GRADIENTS = [
    (lambda x, v: total(ub.set_subtensor(x, np.array([0, 2, 0]), v) ** 2), np.ones(4), np.array([1.0, 2.0, 3.0]),
     np.array([0.0, 2.0, 0.0, 2.0]), np.array([0.0, 4.0, 6.0]), "twice"),  # overwritten: 0; the first write lost
    (lambda x, v: total(ub.set_subtensor(x, (slice(None), 1), v), 2 * np.ones((2, 3))), np.ones((2, 3)),
     np.array([2.0, 3.0]), np.array([[2.0, 0.0, 2.0], [2.0, 0.0, 2.0]]), np.array([2.0, 2.0]), "column"),
]
MORE_SET_GRADIENTS = [
    (lambda x, v: total(ub.set_subtensor(x, np.array([0, 0]), v), [1.0, 2.0, 3.0]), np.ones(3),
     np.array([5.0, 6.0]), np.array([0.0, 2.0, 3.0]), np.array([0.0, 1.0]), "twice-weighted"),
    (lambda x, v: total(ub.set_subtensor(x, (1, slice(0, 2)), v) + ub.inc_subtensor(x, 0, v[0]), _W6),  # and inc
     np.ones((2, 3)), np.ones(2), np.array([[2.0, 4.0, 6.0], [4.0, 5.0, 12.0]]), np.array([4.0 + 1 + 2 + 3, 5.0]),
     "basic-and-inc"),
]


@pytest.mark.parametrize("grad_on,f,x,v,want_x,want_v", grad_sweep(SET_GRADIENTS, MORE_SET_GRADIENTS),
                         indirect=["grad_on"])
def test_set_subtensor_gradient_reaches_untouched_x_and_the_last_write_only(grad_on, f, x, v, want_x, want_v):
    gx, gv = grad_on.grad(f, x, v, argnums=(0, 1))
    same_as_reference(gx, want_x, exact=True)
    same_as_reference(gv, want_v, exact=True)


@pytest.mark.parametrize("grad_on,mask,axis,x,want", grad_sweep(
    [(np.array([1, 0, 1]), None, np.array([1.0, nan, 3.0]), np.array([0.5, 0.0, 0.5]), "int-mask")],
    [(np.array([True, False]), None, np.array([1.0, nan]), np.array([1.0, 0.0]), "bool-mask"),
     (np.array([[1, 0, 1], [0, 0, 0]]), None, np.array([[1.0, nan, 3.0], [inf, -inf, nan]]),
      np.array([[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]), "empty-row")]), indirect=["grad_on"])
def test_masked_mean_gradient_is_zero_and_finite_at_masked_nan(grad_on, mask, axis, x, want):
    same_as_reference(grad_on.grad(lambda x: ub.masked_mean(x, mask, axis=axis), x), want, exact=True)


@pytest.mark.parametrize("grad_on,x", grad_sweep([(np.array([[0.3, 2.0, -1.0, 1.5]]), "plain")],
                                              [(np.array([[0.0, 1.0, 0.0, 1.0]]), "ties")]),
                         indirect=["grad_on"])
def test_topk_gate_gradient_is_zero_off_the_kept_entries(grad_on, x):
    g = grad_on.grad(lambda x: total(ub.topk_gate(x, 2), [[1.0, 2.0, 3.0, 4.0]]), x)
    assert g[0, 0] == 0 and g[0, 2] == 0 and (g[0, [1, 3]] != 0).all() and np.isfinite(g).all()


def test_softmax_gradient_is_zero_and_finite_for_an_all_minus_inf_slice(grad_on):
    g = grad_on.grad(lambda x: total(ub.softmax(x), [[1.0, 2.0], [3.0, 4.0]]), np.array([[-inf, -inf], [0.0, 1.0]]))
    assert (g[0] == 0).all() and np.isfinite(g).all()


@pytest.mark.parametrize("grad_on,pad_id", grad_sweep([(0, "0"), (3, "3")], [(-1, "-1")]), indirect=["grad_on"])
def test_embedding_mean_gradient_is_the_counted_mean_and_exactly_zero_on_the_pad_row(grad_on, pad_id):
    table = np.random.default_rng(15).standard_normal((6, 3))
    ids = np.array([[1, pad_id, 2, 2], [pad_id] * 4])
    w = np.arange(6.0).reshape(2, 3)
    g = grad_on.grad(lambda t: total(ub.embedding_mean(t, ids, pad_id=pad_id), w), table)
    want = np.zeros_like(table)
    want[1] = w[0] / 3
    want[2] = 2 * w[0] / 3
    assert_within(g, want, n_terms=ids.shape[1])
    if 0 <= pad_id < 6:
        assert (g[pad_id] == 0).all()


def test_embedding_mean_pad_row_gradient_is_zero_even_for_a_nan_cotangent(grad_on):
    """An all-padding row whose output gets a NaN cotangent still gives the pad row 0."""
    ids = np.array([[1, 2, 0], [0, 0, 0]])
    g = grad_on.grad(lambda t: total(ub.embedding_mean(t, ids), [[1.0], [nan]]), np.ones((4, 3)))
    same_as_reference(g, np.array([[0.0] * 3, [0.5] * 3, [0.5] * 3, [0.0] * 3]), exact=True)


@pytest.mark.parametrize("grad_on,ids", grad_sweep([(np.zeros((2, 3), np.int64), "all-pad")],
                                                [(np.zeros((0, 0), np.int32), "empty")]),
                         indirect=["grad_on"])
def test_embedding_mean_gradient_is_exactly_zero_when_no_id_is_real(grad_on, ids):
    """Pinned on TF: its dense SparseSegmentMeanGrad leaves its output
    uninitialised when there is no index; called three times, since garbage
    would differ from call to call."""
    def f(t):
        return total(ub.embedding_mean(t, ids))

    for _ in range(3):
        same_as_reference(grad_on.grad(f, np.ones((3, 2), np.float32)), np.zeros((3, 2), np.float32), exact=True)


def test_embedding_mean_gradient_over_no_rows_of_a_zero_width_table(grad_on):
    """Pinned on Theano 1.0.5: the in-graph id check took the min/max of an
    empty ids matrix; the gradient over no rows is zeros of the table's shape."""
    ids = np.zeros((0, 0), np.int32)
    u = v = np.zeros((0,), np.float32)
    g = grad_on.grad(lambda table, u, v: ub.dot(ub.dot(ub.embedding_mean(table, ids), u), v),
                     np.zeros((1, 0), np.float32), u, v)
    assert g.shape == (1, 0) and g.dtype == np.float32
