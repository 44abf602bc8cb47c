"""The TensorFlow plugin: what belongs to TensorFlow alone -- its own tensors
(tf.constant, tf.Variable, tf.SparseTensor, bfloat16) and their dtype rules,
the fast dot path, the graph paths (tf.function, XLA, unknown dims, a user's
own GradientTape and tf.function, in-graph checks), memory, and the places
where TF's own ops differ from the contract (NaN order, ties, duplicate
scatter indices, no dtype promotion).  The contract itself is tested once
over every backend, tensorflow included, in tests/test_contract.py."""
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import numpy_ref, same_as_reference, special_rows

import unibackend as ub

tf = pytest.importorskip("tensorflow")

inf, nan = np.inf, np.nan


@pytest.fixture(autouse=True)
def tensorflow_backend():
    with ub.use_backend("tensorflow") as B:
        yield B


# -- set-up, dispatch, conversion ---------------------------------------------

def test_backends_lists_tensorflow_without_importing_it():
    code = (
        "import sys, unibackend as ub\n"
        "info = {i.name: i for i in ub.backends()}['tensorflow']\n"
        "assert info.installed and info.version, info\n"
        "assert set(info.capabilities) >= {'autodiff', 'sparse', 'symbolic'}, info\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_eager_graph_variable_and_sparse_tensors_all_select_tensorflow():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    with ub.use_backend("numpy"):
        assert isinstance(ub.softmax(tf.constant(x)), tf.Tensor)
        assert isinstance(ub.softmax(tf.Variable(x)), tf.Tensor)
        assert isinstance(ub.sparse_dot(tf.sparse.from_dense(x), x), tf.Tensor)

        @tf.function
        def in_graph(t):
            out = ub.softmax(t)
            assert isinstance(out, tf.Tensor) and not hasattr(out, "numpy")  # symbolic
            return out

        same_as_reference(in_graph(tf.constant(x)), numpy_ref(ub.softmax, x), native=tf.Tensor)


def test_asarray_is_a_no_op_for_a_tensor_of_the_right_dtype_and_casts_otherwise():
    B = ub.get_backend()
    t = tf.constant([1.0, 2.0], tf.float32)
    assert B.asarray(t) is t
    assert B.asarray(t, np.dtype(np.float32)) is t
    assert B.asarray(t, np.dtype(np.float64)).dtype == tf.float64
    # numpy's rules, not TF's: a Python float list is float64.
    assert ub.asarray([1.0, 2.0]).dtype == tf.float64
    assert ub.asarray(np.arange(3), "float32").dtype == tf.float32
    v = tf.Variable([1.0, 2.0])
    assert isinstance(ub.asarray(v), tf.Tensor)


def test_to_numpy_gives_arrays_and_sparse_gives_scipy_csr_with_duplicates_summed():
    np.testing.assert_array_equal(ub.to_numpy(tf.constant([1.0, 2.0])), [1.0, 2.0])
    st = tf.SparseTensor([[1, 0], [0, 1], [1, 0]], [1.0, 2.0, 3.0], [2, 2])
    out = ub.to_numpy(st)
    assert isinstance(out, sp.csr_matrix)
    np.testing.assert_array_equal(out.toarray(), [[0.0, 2.0], [4.0, 0.0]])


# -- dot / sparse_dot ---------------------------------------------------------

@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)),
                                   ((2, 5, 3), (3, 4)), ((2, 5, 3), (3,))])
def test_dot_of_tf_tensors_is_numpy_dot_for_every_rank_pair(sa, sb):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    same_as_reference(ub.dot(tf.constant(a), tf.constant(b)), numpy_ref(ub.dot, a, b), native=tf.Tensor)


def test_dot_fast_path_gives_the_full_paths_answers_and_errors():
    """Repeated calls on eager tensors go through the plugin's fast_dot: the
    same products, and misaligned or mixed inputs still get the full path."""
    rng = np.random.default_rng(6)
    a, b = tf.constant(rng.standard_normal((3, 4))), tf.constant(rng.standard_normal((4, 2)))
    for _ in range(3):
        same_as_reference(ub.dot(a, b), a.numpy() @ b.numpy(), native=tf.Tensor)
        same_as_reference(ub.dot(a, b[:, 0]), a.numpy() @ b.numpy()[:, 0], native=tf.Tensor)
        same_as_reference(ub.dot(tf.reshape(a, (3, 1, 4)), b), np.dot(a.numpy().reshape(3, 1, 4), b.numpy()), native=tf.Tensor)
        assert ub.dot(tf.cast(a, tf.float32), b).dtype == tf.float64
        with pytest.raises(ValueError, match=r"dot: shapes \(3, 4\) and \(3, 4\) are not aligned"):
            ub.dot(a, a)
        with pytest.raises(ValueError, match=r"dot: b must have 1 or 2 dims"):
            ub.dot(a, tf.ones((4, 2, 2), tf.float64))


def test_dot_promotes_float32_with_float64_although_tf_does_not():
    a = tf.ones((2, 3), tf.float32)
    b = tf.ones((3, 2), tf.float64)
    assert ub.dot(a, b).dtype == tf.float64
    assert ub.dot(a, np.ones(3)).dtype == tf.float64
    assert ub.dot(a, tf.ones(3, tf.float32)).dtype == tf.float32
    assert ub.dot(tf.constant([[1, 2]]), np.ones(2, np.float32)).dtype == tf.float64  # ints -> float64


def test_sparse_dot_adds_duplicates_of_an_unordered_user_sparse_tensor():
    st = tf.SparseTensor([[1, 2], [0, 1], [1, 2], [0, 0]], [1.0, 2.0, 3.0, 4.0], [2, 3])
    w = np.array([[1.0, 10.0], [100.0, 1000.0], [5.0, 7.0]])
    expect = np.array([[4.0, 2.0, 0.0], [0.0, 0.0, 4.0]]) @ w
    same_as_reference(ub.sparse_dot(st, w), expect, native=tf.Tensor)
    same_as_reference(ub.dot(st, tf.constant(w)), expect, native=tf.Tensor)  # a sparse a goes to sparse_dot
    scipy_x = sp.csr_matrix(np.array([[4.0, 2.0, 0.0], [0.0, 0.0, 4.0]]))
    same_as_reference(ub.dot(scipy_x, tf.constant(w)), expect, native=tf.Tensor)  # a scipy x with a tf w


def test_sparse_dot_promotes_a_float32_sparse_tensor_with_float64_w():
    st = tf.sparse.from_dense(tf.constant([[0.0, 2.0], [1.0, 0.0]], tf.float32))
    out = ub.sparse_dot(st, np.array([1.0, 10.0]))
    same_as_reference(out, np.array([20.0, 1.0]), native=tf.Tensor)
    assert st.values.dtype == tf.float32


@pytest.mark.parametrize("entry", [[1, 5], [-1, 0], [2, 0]])
def test_sparse_dot_with_an_entry_outside_the_sparse_tensor_shape_raises_index_error(tensorflow_backend, entry):
    st = tf.SparseTensor([[0, 0], entry], [1.0, 2.0], [2, 3])
    msg = rf"sparse_dot: x stores an entry at index \({entry[0]}, {entry[1]}\), outside its shape \(2, 3\)"
    with pytest.raises(IndexError, match=msg):
        ub.sparse_dot(st, np.ones(3))
    with pytest.raises(IndexError, match=msg):  # the check for tensors on a GPU
        tensorflow_backend._check_sparse_indices(st, host=False)


# -- set_subtensor / inc_subtensor ---------------------------------------------

X = np.arange(12.0).reshape(3, 4)
INDICES = [
    1, -1, (slice(None), 2), (slice(1, None), slice(None, None, 2)), (Ellipsis, 0),
    np.array([2, 0, 2]), (np.array([0, 0, 1]), np.array([1, 1, 3])), X > 5,
    (slice(None, None, -1), 1), ([0, 2], slice(1, 3)),
]


@pytest.mark.parametrize("index", INDICES, ids=range(len(INDICES)))
def test_set_and_inc_subtensor_of_a_tf_tensor_are_numpys(index):
    for op in (ub.set_subtensor, ub.inc_subtensor):
        same_as_reference(op(tf.constant(X), index, 7.0), numpy_ref(op, X, index, 7.0), exact=True, native=tf.Tensor)


X3 = np.arange(60.0).reshape(3, 4, 5)
INDICES3 = [
    (np.array([2, 0, 2]), slice(None)), (np.array([1, 1]), Ellipsis), (np.array([0, 2]), None),
    (slice(None), np.array([3, 0, 3])), (np.array([1, 0]), Ellipsis, 4), (None, np.array([[2], [2]])),
    np.array([True, False, True]), (1, np.array([0, 0, 3])), (slice(1, 3), slice(None), np.array([4, 4])),
    (np.array([0, 1]), slice(None), np.array([2, 3])), (0, slice(None, None, 2)), (Ellipsis, slice(1, 4)),
]


@pytest.mark.parametrize("index", INDICES3, ids=range(len(INDICES3)))
def test_set_and_inc_subtensor_of_a_3d_tf_tensor_are_numpys(index):
    """Whatever part of a tf tensor an index reaches (leading rows, flat
    positions, a strided block), the result is numpy's, duplicates included."""
    sel_shape = X3[index].shape
    value = np.arange(1.0, 1.0 + np.prod(sel_shape)).reshape(sel_shape) * 100
    for op in (ub.set_subtensor, ub.inc_subtensor):
        same_as_reference(op(tf.constant(X3), index, value), numpy_ref(op, X3, index, value), exact=True, native=tf.Tensor)


def test_set_subtensor_with_duplicates_keeps_the_last_write_on_tf_tensors():
    x = tf.zeros(4, tf.float64)
    i, v = tf.constant([1, 3, 1]), np.array([5.0, 6.0, 7.0])
    same_as_reference(ub.set_subtensor(x, i, v), np.array([0.0, 7.0, 0.0, 6.0]), exact=True, native=tf.Tensor)
    same_as_reference(ub.inc_subtensor(x, i, v), np.array([0.0, 12.0, 0.0, 6.0]), exact=True, native=tf.Tensor)


def test_set_subtensor_keeps_x_dtype_and_never_mutates_a_variable():
    v = tf.Variable(np.zeros((2, 2), np.float32))
    out = ub.set_subtensor(v, (0, 1), np.float64(3.0))
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), [[0.0, 3.0], [0.0, 0.0]])
    np.testing.assert_array_equal(v.numpy(), np.zeros((2, 2)))


@pytest.mark.parametrize("index", [3, (0, -5), tf.constant([0, 7]), tf.constant([[-4]])], ids=range(4))
def test_set_subtensor_out_of_range_raises_index_error_not_a_tf_error(index):
    for op in (ub.set_subtensor, ub.inc_subtensor):
        with pytest.raises(IndexError, match=r"_subtensor: index") as info:
            op(tf.constant(X), index, 1.0)
        assert type(info.value) is IndexError


# -- masked_mean ----------------------------------------------------------------

def test_masked_mean_of_a_tf_tensor_with_a_tf_mask_ignores_masked_nan():
    x = np.array([[1.0, nan, 3.0], [inf, -inf, nan]])
    mask = np.array([[1, 0, 1], [0, 0, 0]])
    same_as_reference(ub.masked_mean(tf.constant(x), tf.constant(mask != 0), axis=1), np.array([2.0, 0.0]), native=tf.Tensor)


# -- keep_topk / softmax / topk_gate ---------------------------------------------


@pytest.mark.parametrize("pool", [[-0.0, 0.0, 1.0, inf], [-0.0, 0.0, -1.0, -inf]], ids=["inf", "-inf"])
def test_keep_topk_without_nan_agrees_with_numpy_eagerly_and_in_a_graph(pool):
    """Eager NaN-free input takes TF's top_k indices; a graph takes the
    threshold path: both keep exactly numpy's entries (ties, signed zeros, infs)."""
    rng = np.random.default_rng(5)
    x = rng.choice(np.array(pool), (4, 9, 6)).astype(np.float32)
    graph = tf.function(lambda x, k, axis: ub.keep_topk(x, k, axis=axis, fill=-7.0))
    for axis in (0, 1, 2):
        for k in (1, 2, x.shape[axis] - 1):
            expect = numpy_ref(ub.keep_topk, x, k, axis=axis, fill=-7.0)
            same_as_reference(ub.keep_topk(x, k, axis=axis, fill=-7.0), expect, exact=True, native=tf.Tensor)
            same_as_reference(graph(tf.constant(x), k, axis), expect, exact=True, native=tf.Tensor)


def _pinned_topk_rows():
    """Rows whose k-th place (k=3) is a NaN (either sign), a tie, -0.0 vs
    +0.0, +inf, -inf, or k NaNs, beside rows with nothing special."""
    return np.array([
        [0.5, 3.0, 1.0, 2.0, -1.0, 0.25],     # plain
        [1.0, nan, 2.0, 0.5, -nan, 0.0],      # NaNs (one negative) among the k
        [1.0, 2.0, 1.0, 3.0, 1.0, 0.0],       # a tie straddling the k-th place
        [-0.0, 2.0, 0.0, 3.0, -0.0, -1.0],    # -0.0 == +0.0 at the k-th place
        [inf, 1.0, inf, nan, inf, 2.0],       # NaN above the tied +infs
        [nan, nan, 1.0, nan, nan, inf],       # more NaNs than k
        [-inf, 1.0, -inf, -inf, 2.0, -inf],   # tied -infs at the k-th place
        [4.0, 3.0, 2.0, 1.0, 0.0, -1.0],      # plain
    ])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_keep_topk_pins_nan_ties_and_signed_zeros_at_the_kth_place(mode, dtype):
    """Every mode and float dtype keeps numpy's entries bit for bit (the sign
    of a kept zero, NaN positions), when the rows needing the exact rule sit
    in one array with plain rows, and when every row is plain (the fast path)."""
    x = _pinned_topk_rows().astype(dtype)
    def call(t, k, axis):
        return ub.keep_topk(t, k, axis=axis, fill=-7.0)

    if mode != "eager":
        call = tf.function(call, jit_compile=mode == "xla")
    for rows in (x, x[[0, 7]]):
        for axis, arr in ((1, rows), (0, rows.T.copy())):
            got = call(tf.constant(arr), 3, axis).numpy()
            expect = numpy_ref(ub.keep_topk, arr, 3, axis=axis, fill=-7.0)
            assert got.dtype == expect.dtype
            # bit patterns equal, NaNs canonical: -0.0 stays -0.0, a kept NaN stays NaN
            np.testing.assert_array_equal(np.isnan(got), np.isnan(expect))
            mine, theirs = np.where(np.isnan(got), 0, got), np.where(np.isnan(expect), 0, expect)
            np.testing.assert_array_equal(np.signbit(mine), np.signbit(theirs))
            np.testing.assert_array_equal(mine, theirs)


def _same_bits(got, expect):
    """Equal values, NaN positions and signs of zeros (NaNs canonical)."""
    assert got.dtype == expect.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expect))
    mine, theirs = np.where(np.isnan(got), 0, got), np.where(np.isnan(expect), 0, expect)
    np.testing.assert_array_equal(np.signbit(mine), np.signbit(theirs))
    np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_keep_topk_under_xla_keeps_a_lone_negative_nan_below_the_top_k(dtype):
    """XLA's top_k ranks a NaN with its sign bit set (x86's inf - inf) last,
    so its own k + 1 values look plain: only the whole-array NaN test sends
    the call to the exact rule, which keeps the NaN as the largest entry."""
    x = np.tile(np.arange(8.0), (3, 1))
    x[1, 0] = np.copysign(np.nan, -1.0)
    x = x.astype(dtype)
    assert np.signbit(x[1, 0])
    got = tf.function(lambda t: ub.keep_topk(t, 2, fill=-7.0), jit_compile=True)(tf.constant(x)).numpy()
    _same_bits(got, numpy_ref(ub.keep_topk, x, 2, fill=-7.0))
    assert np.isnan(got[1, 0])


def test_keep_topk_under_tf_vectorized_map_inside_xla_equals_numpy_per_example():
    """pfor's rule for the fast path's scatter builds a shape XLA cannot fix;
    under tf.vectorized_map inside jit_compile the exact rule runs alone."""
    x = np.stack([_pinned_topk_rows(), _pinned_topk_rows()[::-1]]).astype(np.float32)
    f = tf.function(lambda t: tf.vectorized_map(lambda a: ub.keep_topk(a, 3, fill=-7.0), t), jit_compile=True)
    _same_bits(f(tf.constant(x)).numpy(), np.stack([numpy_ref(ub.keep_topk, a, 3, fill=-7.0) for a in x]))


@pytest.mark.parametrize("jit", [False, True])
def test_topk_gate_pins_nan_and_ties_at_the_kth_place_in_graphs(jit):
    """topk_gate in a graph equals the numpy reference on the pinned rows
    (a kept NaN makes its slice NaN; ties keep the lower index)."""
    x = _pinned_topk_rows().astype(np.float32)
    got = tf.function(lambda t: ub.topk_gate(t, 3), jit_compile=jit)(tf.constant(x))
    same_as_reference(got, numpy_ref(ub.topk_gate, x, 3), native=tf.Tensor)


def test_softmax_slice_with_plus_inf_or_nan_is_nan_throughout_in_a_graph():
    x = np.array([[1.0, inf, 2.0], [nan, 0.0, 1.0], [-inf, -inf, -inf], [-inf, 0.0, 0.0]])
    want = np.array([[nan, nan, nan], [nan, nan, nan], [0.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    same_as_reference(tf.function(lambda t: ub.softmax(t))(tf.constant(x)), want, exact=True, native=tf.Tensor)


# -- embedding_mean ---------------------------------------------------------------

TABLE = np.arange(12.0).reshape(6, 2)
IDS = np.array([[1, 1, 2, 0], [0, 0, 0, 0], [5, 3, 0, 0]])


def test_embedding_mean_gradient_is_dense_with_an_exactly_zero_pad_row():
    g = ub.grad(lambda t: tf.reduce_sum(ub.embedding_mean(t, IDS)))(tf.constant(TABLE))
    assert isinstance(g, tf.Tensor) and not isinstance(g, tf.IndexedSlices)
    expect = np.zeros_like(TABLE)
    expect[1], expect[2], expect[3], expect[5] = 2 / 3, 1 / 3, 0.5, 0.5
    same_as_reference(g, expect, native=tf.Tensor)
    assert np.all(g.numpy()[0] == 0.0)


def _embedding_dot_grad(table, ids, u, v, pad_id=0):
    """d/dtable of v . (embedding_mean(table, ids) @ u), by counting in numpy."""
    g = np.zeros_like(table)
    for i, row in enumerate(ids):
        real = row[row != pad_id]
        for r in real:
            g[r] += v[i] / len(real) * u
    return g


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("shape", [(1, 0, 0, 0), (1, 0, 2, 3), (1, 3, 0, 2), (1, 3, 2, 0), (6, 2, 3, 4)],
                         ids=lambda s: "V{}-d{}-n{}-L{}".format(*s))
def test_embedding_mean_jacobian_matches_the_gradient_also_when_empty(graph, shape):
    """tape.jacobian (pfor) and tape.gradient of v . (embedding_mean @ u) are
    the counted gradient, exactly 0 on the pad row, for empty n, d or L too.
    Pinned: (1, 0) table with (0, 0) ids failed in pfor (conformance, grad)."""
    V, d, n, L = shape
    rng = np.random.default_rng(0)
    table = rng.normal(size=(V, d)).astype(np.float32)
    ids = rng.integers(0, V, (n, L)).astype(np.int32)
    u, v = rng.normal(size=d).astype(np.float32), rng.normal(size=n).astype(np.float32)

    def both(t, ids):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(t)
            y = ub.dot(ub.dot(ub.embedding_mean(t, ids, pad_id=0), u), v)
        return tape.jacobian(y, t), tf.convert_to_tensor(tape.gradient(y, t))

    if graph:  # symbolic ids: the plugin's static (vectorizable) path
        both = tf.function(both, input_signature=[tf.TensorSpec([V, d], tf.float32),
                                                  tf.TensorSpec([None, None], tf.int32)])
    jac, grad = both(tf.constant(table), tf.constant(ids))
    expect = _embedding_dot_grad(table, ids, u, v)
    same_as_reference(jac, expect, native=tf.Tensor)
    same_as_reference(grad, expect, native=tf.Tensor)
    assert np.all(jac.numpy()[0] == 0.0) and np.all(grad.numpy()[0] == 0.0)
    from unibackend import _registry
    same_as_reference(_registry.backend("tensorflow").transform_grad(
        lambda t: ub.dot(ub.dot(ub.embedding_mean(t, ub.asarray(ids), pad_id=0), ub.asarray(u)),
                         ub.asarray(v)), "jacrev")(ub.asarray(table)), expect, native=tf.Tensor)


def test_embedding_mean_bad_ids_raise_the_contract_exceptions_on_tf_inputs():
    with pytest.raises(IndexError, match=r"embedding_mean: id 6 is out of range for a table of 6 rows"):
        ub.embedding_mean(tf.constant(TABLE), tf.constant([[1, 6]]))
    with pytest.raises(IndexError, match=r"embedding_mean: id -1 is out of range"):
        ub.embedding_mean(TABLE, tf.constant([[-1, 0]], tf.int32))
    with pytest.raises(TypeError, match=r"embedding_mean: ids must be integers"):
        ub.embedding_mean(TABLE, tf.constant([[1.0]]))


@pytest.mark.parametrize("ids,pad_id,want", [
    (np.array([[3, 0, 5], [0, 0, 1]], np.int32), 0, (1, 5)),
    (np.array([[3, 0, 5], [0, 0, 1]], np.int64), 5, (0, 3)),
    (np.array([[0, 0]], np.int64), 0, None),
    (np.zeros((0, 4), np.int64), 0, None),
    (np.array([[250, 7]], np.uint8), -1, (7, 250)),
    (np.array([[-3, 9]], np.int32), 2**40, (-3, 9)),
], ids=range(6))
def test_id_bounds_on_the_host_and_on_the_device_path_agree(tensorflow_backend, ids, pad_id, want):
    """The CPU path reads the ids through numpy; the path for ids on a GPU
    reduces them in TF: both give the non-pad (min, max)."""
    t = tf.constant(ids)
    assert tensorflow_backend.id_bounds(t, pad_id) == want
    assert tensorflow_backend._device_bounds(t, pad_id) == want


def test_embedding_mean_keeps_memory_linear_no_n_by_l_by_d_gather():
    """The graph holds no tensor of n*L*d elements: every intermediate is at
    most max((n + 1)*d, V*d, nnz*2) elements (a graph's segment mean has one
    extra segment, the padding's, that it drops)."""
    n, L, V, d = 8, 16, 5, 32
    ids = np.random.default_rng(4).integers(0, V, (n, L))
    f = tf.function(lambda t, i: ub.embedding_mean(t, i))
    graph = f.get_concrete_function(tf.TensorSpec((V, d), tf.float64), tf.TensorSpec((n, L), tf.int64)).graph
    limit = max((n + 1) * d, V * d, n * L * 2)
    for op in graph.get_operations():
        for t in op.outputs:
            if t.shape.rank is not None and t.shape.is_fully_defined():
                assert t.shape.num_elements() <= limit, (op.type, t.shape)
    table = TABLE[:V].repeat(16, axis=1)
    same_as_reference(f(tf.constant(table), tf.constant(ids)), numpy_ref(ub.embedding_mean, table, ids), native=tf.Tensor)


def test_embedding_mean_under_xla_holds_no_n_by_l_by_d_buffer():
    """XLA's CPU stores a gather feeding a reduction: the masked gather-sum
    held an (n, L, d) buffer.  The optimized HLO of the XLA path holds no
    buffer larger than max((L + 1) * n, V * d, n * d) elements (the loop
    reads one column of ids per step)."""
    import re

    n, L, V, d = 8, 16, 5, 32
    ids = np.random.default_rng(4).integers(0, V, (n, L))
    table = TABLE[:V].repeat(16, axis=1)
    f = tf.function(lambda t, i: ub.embedding_mean(t, i), jit_compile=True)
    hlo = f.experimental_get_compiler_ir(tf.constant(table), tf.constant(ids))(stage="optimized_hlo")
    sizes = [int(np.prod([int(v) for v in dims.split(",")])) for dims in re.findall(r"\b[a-z]+\d*\[([\d,]+)\]", hlo)]
    assert sizes and max(sizes) <= max((L + 1) * n, V * d, n * d) < n * L * d, max(sizes)
    same_as_reference(f(tf.constant(table), tf.constant(ids)), numpy_ref(ub.embedding_mean, table, ids),
                      native=tf.Tensor)


@pytest.mark.parametrize("shape", [(1, 0, 0, 0), (1, 3, 2, 0), (6, 2, 3, 4)], ids=lambda s: "V{}-d{}-n{}-L{}".format(*s))
def test_embedding_mean_jacobian_inside_xla_matches_the_counted_gradient(shape):
    """tape.jacobian (pfor) inside jit_compile: the loop's own gradient kept
    each step in a TensorList, which XLA cannot compile under pfor; the
    written-out gradient is the counted one, exactly 0 on the pad row."""
    V, d, n, L = shape
    rng = np.random.default_rng(0)
    table = rng.normal(size=(V, d)).astype(np.float32)
    ids = rng.integers(0, V, (n, L)).astype(np.int32)
    u, v = rng.normal(size=d).astype(np.float32), rng.normal(size=n).astype(np.float32)

    @tf.function(jit_compile=True)
    def both(t, ids):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(t)
            y = ub.dot(ub.dot(ub.embedding_mean(t, ids, pad_id=0), u), v)
        return tape.jacobian(y, t), tf.convert_to_tensor(tape.gradient(y, t))

    jac, grad = both(tf.constant(table), tf.constant(ids))
    expect = _embedding_dot_grad(table, ids, u, v)
    same_as_reference(jac, expect, native=tf.Tensor)
    same_as_reference(grad, expect, native=tf.Tensor)
    assert np.all(jac.numpy()[0] == 0.0) and np.all(grad.numpy()[0] == 0.0)


def test_embedding_mean_second_gradient_inside_xla_is_the_counted_one():
    """d/dT |d/dT sum(E(T)^2)|^2 = 8 (M'M)^2 T for E(T) = M T, M the
    row-normalised count matrix: the written-out gradient differentiates
    again (and is dense)."""
    rng = np.random.default_rng(1)
    table = rng.normal(size=(6, 2))
    ids = np.array([[1, 2, 0], [3, 3, 0], [0, 0, 0]])
    M = np.zeros((3, 6))
    for i, row in enumerate(ids):
        for j in row[row != 0]:
            M[i, j] += 1 / np.count_nonzero(row)

    @tf.function(jit_compile=True)
    def second(t):
        with tf.GradientTape() as outer:
            outer.watch(t)
            with tf.GradientTape() as inner:
                inner.watch(t)
                y = tf.reduce_sum(ub.embedding_mean(t, ids) ** 2)
            z = tf.reduce_sum(tf.convert_to_tensor(inner.gradient(y, t)) ** 2)
        return outer.gradient(z, t)

    A = M.T @ M
    same_as_reference(second(tf.constant(table)), 8 * A @ A @ table, native=tf.Tensor)


# -- math for nn ---------------------------------------------------------------------

NN_X = np.array([[0.5, -1.0, 2.0], [3.0, 0.25, -0.5]])


@pytest.mark.parametrize("name, args", [
    ("tanh", ()), ("relu", ()), ("exp", ()), ("log", ()),
    *[(r, (axis, keep)) for r in ("reduce_sum", "reduce_max") for axis in (None, 0, 1) for keep in (False, True)],
])
def test_nn_math_agrees_with_numpy_eager_and_inside_a_tf_function(tensorflow_backend, name, args):
    """Each primitive equals the base's numpy default, as a tf.Tensor, eager
    and traced into a graph (where x is symbolic)."""
    B = tensorflow_backend
    x = np.abs(NN_X) if name == "log" else NN_X
    with ub.use_backend("numpy") as NP:
        want = getattr(NP, name)(x, *args)
    same_as_reference(getattr(B, name)(x, *args), want, native=tf.Tensor)
    traced = tf.function(lambda t: getattr(B, name)(t, *args), input_signature=[tf.TensorSpec([None, 3], tf.float64)])
    same_as_reference(traced(tf.constant(x)), want, native=tf.Tensor)


# -- autodiff and tf.function -------------------------------------------------------


def test_value_and_grad_gives_zeros_for_an_unused_argument_and_watches_variables():
    v = tf.Variable([1.0, 2.0])
    g0, g1 = ub.grad(lambda x, y: tf.reduce_sum(x * x), argnums=(0, 1))(v, np.ones(2))
    same_as_reference(g0, np.array([2.0, 4.0], np.float32), native=tf.Tensor)
    same_as_reference(g1, np.zeros(2), native=tf.Tensor)


def test_ops_on_a_variable_differentiate_under_the_users_own_gradient_tape():
    v = tf.Variable(TABLE)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ub.embedding_mean(v, IDS)) + tf.reduce_sum(ub.softmax(v)[:, 0])
    g = tf.convert_to_tensor(tape.gradient(loss, v))
    g_ref = ub.grad(lambda t: tf.reduce_sum(ub.embedding_mean(t, IDS)) + tf.reduce_sum(ub.softmax(t)[:, 0]))(TABLE)
    same_as_reference(g, g_ref.numpy(), native=tf.Tensor)
    np.testing.assert_array_equal(v.numpy(), TABLE)


def test_every_op_runs_inside_a_users_tf_function_and_agrees_with_eager():
    x = np.array([[1.0, nan, 2.0, 2.0], [0.5, -0.0, 0.0, -inf]])

    @tf.function
    def many(x, ids, table):
        return (ub.argsort(x), ub.argsort(x, descending=True), ub.keep_topk(x, 2), ub.softmax(x),
                ub.masked_mean(x, x > 0, axis=1), ub.set_subtensor(x, (0, np.array([1, 1])), np.array([8.0, 9.0])),
                ub.inc_subtensor(x, (Ellipsis, 1), 1.0), ub.embedding_mean(table, ids),
                ub.dot(table, np.ones(2)), ub.sparse_dot(sp.csr_matrix(np.eye(4)), table[:4]))

    args = (tf.constant(x), tf.constant(IDS), tf.constant(TABLE))
    got = many(*args)
    eager = (ub.argsort(x), ub.argsort(x, descending=True), ub.keep_topk(x, 2), ub.softmax(x),
             ub.masked_mean(x, x > 0, axis=1), ub.set_subtensor(x, (0, np.array([1, 1])), np.array([8.0, 9.0])),
             ub.inc_subtensor(x, (Ellipsis, 1), 1.0), ub.embedding_mean(TABLE, IDS),
             ub.dot(TABLE, np.ones(2)), ub.sparse_dot(sp.csr_matrix(np.eye(4)), TABLE[:4]))
    for g, e in zip(got, eager):
        same_as_reference(g, e.numpy(), exact=True, native=tf.Tensor)


def test_ub_function_is_a_tf_function_that_maps_numpy_to_tf_and_takes_grads():
    @ub.function
    def loss(table, ids):
        return ub.value_and_grad(lambda t: tf.reduce_sum(ub.embedding_mean(t, ids) ** 2))(table)

    value, g = loss(TABLE, IDS)
    v_ref, g_ref = ub.value_and_grad(lambda t: tf.reduce_sum(ub.embedding_mean(t, IDS) ** 2))(TABLE)
    same_as_reference(value, v_ref.numpy(), native=tf.Tensor)
    same_as_reference(g, g_ref.numpy(), native=tf.Tensor)


def test_out_of_range_ids_inside_ub_function_raise_index_error():
    f = ub.function(lambda t, i: ub.embedding_mean(t, i))
    same_as_reference(f(TABLE, IDS), numpy_ref(ub.embedding_mean, TABLE, IDS), native=tf.Tensor)
    msg = r"^embedding_mean: id 9 is out of range for a table of 6 rows \(valid: 0\.\.5, pad_id=0\)$"
    with pytest.raises(IndexError, match=msg) as info:
        f(TABLE, IDS + 4)
    assert type(info.value) is IndexError


def test_out_of_range_ids_inside_a_users_tf_function_fail_the_graph_with_the_contract_message():
    """In a user's own graph the value is only known when it runs: the check
    is an in-graph assert (on every device) carrying the contract's message."""
    f = tf.function(lambda t, i: ub.embedding_mean(t, i))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"embedding_mean: id \d+ is out of range for a table of"):
        f(tf.constant(TABLE), tf.constant(IDS + 4))


SIG = [tf.TensorSpec([None, None], tf.float64), tf.TensorSpec([None], tf.int64)]


def test_set_subtensor_on_unknown_dims_in_a_graph_keeps_last_write_and_adds_duplicates():
    @tf.function(input_signature=SIG)
    def both(x, i):
        return (ub.set_subtensor(x, (i, slice(None, None, -1)), tf.constant([1.0, 2.0, 3.0], tf.float64)),
                ub.inc_subtensor(x, (Ellipsis, i), tf.constant(1.0, tf.float64)))

    x = np.arange(9.0).reshape(3, 3)
    i = np.array([0, 2, 0, -1])
    s, a = both(x, i)
    expect_s = x.copy()
    expect_s[[0, 2], :] = [3.0, 2.0, 1.0]
    same_as_reference(s, expect_s, exact=True, native=tf.Tensor)
    same_as_reference(a, numpy_ref(ub.inc_subtensor, x, (Ellipsis, i), 1.0), exact=True, native=tf.Tensor)


def test_set_subtensor_out_of_range_on_unknown_dims_fails_the_graph():
    @tf.function(input_signature=SIG)
    def put(x, i):
        return ub.set_subtensor(x, i, tf.constant(0.0, tf.float64))

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"set_subtensor: index 3 is out of bounds for axis 0 with size 3"):
        put(np.zeros((3, 3)), np.array([0, 3]))


def test_a_symbolic_index_on_a_static_shape_is_checked_in_graph_and_ub_function_raises_index_error():
    put = ub.function(lambda x, i, v: (ub.set_subtensor(x, i, v), ub.inc_subtensor(x, i, v)))
    i = np.array([1, -1, 1])
    v = np.array([5.0, 6.0, 7.0])
    s, a = put(np.zeros(4), i, v)
    same_as_reference(s, numpy_ref(ub.set_subtensor, np.zeros(4), i, v), exact=True, native=tf.Tensor)
    same_as_reference(a, numpy_ref(ub.inc_subtensor, np.zeros(4), i, v), exact=True, native=tf.Tensor)
    with pytest.raises(IndexError, match=r"^(set|inc)_subtensor: index 4 is out of bounds for axis 0 with size 4$") as info:
        put(np.zeros(4), np.array([0, 4, 0]), v)
    assert type(info.value) is IndexError


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # numpy's dot meets the NaN
def test_ops_on_unknown_dims_in_a_graph_match_numpy():
    """With None dims (an input_signature) every op still gives numpy's
    answer; a mask that broadcasts along a None dim is counted once per row."""
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float64), tf.TensorSpec([None, None], tf.int64),
                                  tf.TensorSpec([None, None], tf.int64)])
    def many(x, mask, ids):
        return (ub.softmax(x), ub.keep_topk(x, 2), ub.argsort(x, axis=0), ub.masked_mean(x, mask, axis=0),
                ub.dot(x, tf.transpose(x)), ub.embedding_mean(x, ids))

    x = np.array([[1.0, nan, 2.0, 2.0], [0.5, -0.0, 0.0, -inf], [3.0, 3.0, -1.0, 0.0]])
    mask = np.array([[1, 0, 1, 1]])
    ids = np.array([[1, 2, 0], [0, 0, 0]])
    got = many(x, mask, ids)
    want = (numpy_ref(ub.softmax, x), numpy_ref(ub.keep_topk, x, 2), numpy_ref(ub.argsort, x, axis=0),
            numpy_ref(ub.masked_mean, x, mask, axis=0),
            numpy_ref(ub.dot, x, x.T), numpy_ref(ub.embedding_mean, x, ids))
    for g, w in zip(got, want):
        same_as_reference(g, w, native=tf.Tensor)


def test_keep_topk_with_k_above_an_unknown_dim_fails_the_graph_with_the_contract_message():
    f = tf.function(lambda x: ub.keep_topk(x, 3), input_signature=[tf.TensorSpec([None], tf.float64)])
    same_as_reference(f(np.arange(4.0)), numpy_ref(ub.keep_topk, np.arange(4.0), 3), native=tf.Tensor)
    msg = r"keep_topk: k=3 is out of range: need 0 <= k <= 2 \(the size of axis 0\)"
    with pytest.raises(tf.errors.InvalidArgumentError, match=msg):
        f(np.arange(2.0))
    with pytest.raises(ValueError, match=msg + r"\Z"):  # ub.function raises the contract's exception
        ub.function(lambda x: ub.keep_topk(x, 3))(tf.constant(np.arange(2.0)))


# -- softmax with NaN / +inf in every float dtype ------------------------------

def softmax_and_gate(t):
    return ub.softmax(t), ub.topk_gate(t, 2)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_softmax_and_topk_gate_with_nan_or_inf_match_numpy_in_graphs(jit, dtype):
    """A NaN or +inf makes its slice NaN throughout, -inf gives 0, other
    slices stay finite (tests/test_contract.py: eagerly), in tf.function and
    XLA alike, one slice or many (one graph per shape: the values change)."""
    graph = tf.function(softmax_and_gate, jit_compile=jit)
    for special in (np.nan, np.inf, -np.inf):
        for rows in (1, 3):
            x = special_rows(special, rows).astype(dtype)
            for got, want in zip(graph(tf.constant(x)), numpy_ref(softmax_and_gate, x)):
                same_as_reference(got, want, native=tf.Tensor)


def test_softmax_of_bfloat16_with_nan_or_inf_is_nan_throughout_and_finite_rows_sum_to_one():
    x = tf.constant(special_rows(np.nan, 2), tf.bfloat16)
    got = ub.softmax(x).numpy().astype(np.float32)
    assert np.isnan(got[0]).all() and abs(got[1].sum() - 1) < 0.02
    got = ub.softmax(tf.constant(special_rows(np.inf, 1), tf.bfloat16)).numpy().astype(np.float32)
    assert np.isnan(got).all()
