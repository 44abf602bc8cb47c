"""Products: dot, sparse_dot, and the gradient of sparse_dot.

The oracle is the dense product in float64 of the densified input (COO
duplicates summed), within the sum tolerance of :mod:`..tolerances`.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .. import strategies as S
from .. import tolerances as T
from ..cases import Arg, Case, assert_close
from .base import arr, check
from .gradient import cotangent_args, verify_grad


def _abs_dense(x):
    """|x| densified (duplicates' absolute values summed), without calling
    scipy's abs(x), which sums a COO's duplicates in place."""
    coo = x.tocoo(copy=True)
    out = np.zeros(x.shape)
    np.add.at(out, (coo.row, coo.col), np.abs(coo.data.astype(np.float64)))
    return out, coo


def _coo_duplicates():
    import scipy.sparse as sp

    data, row, col = np.array([1.0, 2.0, 0.0, -1.0]), np.array([0, 0, 1, 1]), np.array([1, 1, 0, 2])
    x = sp.coo_matrix((data, (row, col)), shape=(3, 3))
    return Arg(x, f"sp.coo_matrix(({S.array_code(data)}, ({S.array_code(row)}, {S.array_code(col)})), shape=(3, 3))")


def _csr_unsorted():
    import scipy.sparse as sp

    data, indices, indptr = np.array([3.0, 1.0, 2.0, 5.0]), np.array([2, 0, 2, 1]), np.array([0, 3, 3, 4])
    x = sp.csr_matrix((data, indices, indptr), shape=(3, 3))
    return Arg(x, f"sp.csr_matrix(({S.array_code(data)}, {S.array_code(indices)}, {S.array_code(indptr)}), shape=(3, 3))")


def _csr_array():
    import scipy.sparse as sp

    data, indices, indptr = np.array([1.0, 2.0, 2.0], np.float32), np.array([1, 0, 1]), np.array([0, 1, 3])
    x = sp.csr_array((data, indices, indptr), shape=(2, 2))
    return Arg(x, f"sp.csr_array(({S.array_code(data)}, {S.array_code(indices)}, {S.array_code(indptr)}), shape=(2, 2))")


# ---------------------------------------------------------------------------
# sparse_dot

@st.composite
def sparse_dot_cases(draw, op="sparse_dot"):
    xdt = draw(S.float_dtypes())
    wdt = draw(st.sampled_from([xdt, np.dtype(np.float32), np.dtype(np.float64)]))
    x, dense = draw(S.sparse_matrices(xdt))
    N = dense.shape[1]
    wshape = (N,) if draw(st.integers(0, 3)) == 0 else (N, draw(st.integers(0, 5)))
    w = draw(S.float_arrays(wshape, wdt, lo=-100, hi=100))
    fn = "ub.sparse_dot" if op == "sparse_dot" else "ub.dot"
    return Case(f"result = {fn}(x, w)", {"x": x, "w": w})


def _verify_sparse_product(case, backend, device):
    got = case.run(backend, device)
    v = case.values()
    x, w = v["x"], v["w"]
    dt = np.result_type(x.dtype, w.dtype)
    xd = x.toarray().astype(np.float64)   # the densified input: duplicates summed
    xa, coo = _abs_dense(x)
    per_row = np.bincount(coo.row, minlength=x.shape[0]) if x.shape[0] else np.zeros(0, np.int64)
    per_row = per_row.reshape((-1,) + (1,) * (w.ndim - 1))
    w64 = w.astype(np.float64)
    # duplicates add up in x's own dtype, before the cast to the result dtype
    tol_dt = x.dtype if coo.nnz and T.eps(x.dtype) > T.eps(dt) and not x.has_canonical_format else dt
    tol = T.sum_tol(xa @ np.abs(w64), per_row + 1, tol_dt)
    assert_close(got, (xd @ w64).astype(dt), tol,
                 "values (against the dense product of the densified x, float64)")
    assert_close(got, case.reference(), tol)


SPARSE_DOT_EXAMPLES = [
    Case("result = ub.sparse_dot(x, w)", {"x": _coo_duplicates(), "w": arr(np.eye(3)[:, :2])}),
    Case("result = ub.sparse_dot(x, w)", {"x": _csr_unsorted(), "w": arr([1.0, 10.0, 100.0])}),
]


# not compiled: a scipy.sparse x is no graph input of torch.compile (Dynamo)
@check("sparse_dot", "sparse_dot", sparse_dot_cases(), needs=("sparse",), examples=SPARSE_DOT_EXAMPLES,
       compiles=False)
def verify_sparse_dot(case, backend, device):
    """sparse_dot(x, w) equals the dense product of the densified x (COO
    duplicates add up, explicit zeros and unsorted indices are fine) within
    the sum tolerance; result dtype numpy's result_type; equals numpy."""
    _verify_sparse_product(case, backend, device)


# ---------------------------------------------------------------------------
# dot

@st.composite
def dot_cases(draw):
    if draw(st.booleans()):
        return draw(sparse_dot_cases(op="dot"))
    adt, bdt = draw(S.float_dtypes()), draw(S.float_dtypes())
    K = draw(st.one_of(st.integers(0, 6), st.integers(17, 30)))
    lead = draw(st.lists(st.integers(0, 4), max_size=2))
    bshape = (K,) if draw(st.integers(0, 3)) == 0 else (K, draw(st.integers(0, 5)))
    a = draw(S.float_arrays(tuple(lead) + (K,), adt, lo=-100, hi=100))
    b = draw(S.float_arrays(bshape, bdt, lo=-100, hi=100))
    return Case("result = ub.dot(a, b)", {"a": a, "b": b})


DOT_EXAMPLES = [
    Case("result = ub.dot(x, w)", {"x": _coo_duplicates(), "w": arr([1.0, 10.0, 100.0], np.float32)}),
    Case("result = ub.dot(a, b)", {"a": arr(np.arange(12.0).reshape(2, 2, 3)), "b": arr(np.ones((3, 2)))}),
    # an empty contraction (K = 0) is all zeros, not NaN (cuBLAS once failed on it)
    Case("result = ub.dot(a, b)", {"a": arr(np.zeros((2, 0)), np.float32), "b": arr(np.zeros((0, 3)), np.float32)}),
]


@check("dot", "dot", dot_cases(), examples=DOT_EXAMPLES)
def verify_dot(case, backend, device):
    """dot equals numpy's dot (N-D a contracts its last axis with b's first);
    a sparse a equals the dense product of the densified a."""
    v = case.values()
    if "x" in v:
        return _verify_sparse_product(case, backend, device)
    got = case.run(backend, device)
    a, b = v["a"], v["b"]
    dt = np.result_type(a.dtype, b.dtype)
    K = a.shape[-1]
    tol = T.sum_tol(np.dot(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64))), K, dt)
    assert_close(got, np.dot(a.astype(np.float64), b.astype(np.float64)).astype(dt), tol,
                 "values (against numpy dot in float64)")
    assert_close(got, case.reference(), tol)


# ---------------------------------------------------------------------------
# grad sparse_dot

GRAD_SPARSE_1D = ("def f(w, x, v):\n    return ub.dot(ub.sparse_dot(x, w), v)\n\nresult = ub.grad(f)(w, x, v)",
                  "result = x.toarray().astype(np.float64).T @ v.astype(np.float64)")
GRAD_SPARSE_2D = ("def f(w, x, u, v):\n    return ub.dot(ub.dot(ub.sparse_dot(x, w), u), v)\n\n"
                  "result = ub.grad(f)(w, x, u, v)",
                  "result = x.toarray().astype(np.float64).T @ np.outer(v, u).astype(np.float64)")


@st.composite
def grad_sparse_dot_cases(draw):
    dtype = draw(S.float_dtypes())
    x, dense = draw(S.sparse_matrices(dtype, max_rows=4, max_cols=8))
    n, N = dense.shape
    M = draw(st.integers(0, 4))
    one_d = draw(st.integers(0, 3)) == 0
    w = draw(S.float_arrays((N,) if one_d else (N, M), dtype, lo=-10, hi=10))
    u, v = cotangent_args(draw, dtype, [(M,), (n,)])
    args = {"x": x, "w": w, "v": Arg(v, S.array_code(v))}
    if one_d:
        stmt, want = GRAD_SPARSE_1D
    else:
        args["u"] = Arg(u, S.array_code(u))
        stmt, want = GRAD_SPARSE_2D
    return Case(stmt, args, want=want)


GRAD_SPARSE_DOT_EXAMPLES = [
    Case(GRAD_SPARSE_2D[0], {"x": _coo_duplicates(), "w": arr(np.arange(6.0).reshape(3, 2)),
                             "v": arr([1.0, -2.0, 0.5]), "u": arr([1.0, 3.0])}, want=GRAD_SPARSE_2D[1]),
    # a scipy sparse *array* as a traced argument (theano's numba linker once could not type it)
    Case(GRAD_SPARSE_1D[0], {"x": _csr_array(), "w": arr([1.0, 2.0], np.float32), "v": arr([1.0, 1.0], np.float32)},
         want=GRAD_SPARSE_1D[1]),
]


@check("grad sparse_dot", "sparse_dot", grad_sparse_dot_cases(), needs=("autodiff", "sparse"),
       examples=GRAD_SPARSE_DOT_EXAMPLES)
def verify_grad_sparse_dot(case, backend, device):
    """The gradient of <sparse_dot(x, w), g> w.r.t. w is x^T g (g = v u^T)."""
    v = case.values()
    x, w = v["x"], v["w"]
    xa, _ = _abs_dense(x)
    g = v["v"].astype(np.float64)
    if "u" in v:
        g = np.outer(g, v["u"].astype(np.float64))
    per_col = np.bincount(x.tocoo().col, minlength=x.shape[1]).reshape((-1,) + (1,) * (w.ndim - 1))
    verify_grad(case, backend, device, "w", xa.T @ np.abs(g), per_col + 2)
