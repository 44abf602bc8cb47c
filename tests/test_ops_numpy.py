"""Every op on the numpy reference backend against hand-computed answers."""
import numpy as np
import pytest
import scipy.sparse as sp

import unibackend as ub

pytestmark = pytest.mark.usefixtures("numpy_backend")
inf, nan = np.inf, np.nan


# -- dot / sparse_dot --------------------------------------------------------

def test_dot_matches_numpy_for_1d_2d_and_nd():
    a = np.arange(6.0).reshape(2, 3)
    b = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(ub.dot(a, b), a @ b)
    np.testing.assert_array_equal(ub.dot(a, np.ones(3)), [3.0, 12.0])
    assert ub.dot(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 11.0
    a3 = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(ub.dot(a3, np.eye(4)), a3)


def test_dot_promotes_float32_with_float64_to_float64():
    out = ub.dot(np.ones((2, 2), np.float32), np.ones((2, 2), np.float64))
    assert out.dtype == np.float64
    assert ub.dot(np.ones((2, 2), np.float32), np.ones(2, np.float32)).dtype == np.float32


def test_dot_with_sparse_a_goes_to_sparse_dot():
    x = sp.csr_matrix(np.array([[0.0, 2.0], [1.0, 0.0]]))
    np.testing.assert_array_equal(ub.dot(x, np.array([[1.0], [10.0]])), [[20.0], [1.0]])


@pytest.mark.parametrize("fmt", ["csr_matrix", "csc_matrix", "coo_matrix", "csr_array", "coo_array"])
def test_sparse_dot_accepts_every_scipy_format(fmt):
    dense = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    x = getattr(sp, fmt)(dense)
    w = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(ub.sparse_dot(x, w), dense @ w)
    np.testing.assert_array_equal(ub.sparse_dot(x, w[:, 0]), dense @ w[:, 0])


def test_sparse_dot_adds_coo_duplicates_and_keeps_the_input_untouched():
    x = sp.coo_matrix((np.array([1.0, 2.0, 0.0]), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 2))
    w = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(ub.sparse_dot(x, w), [[0.0, 3.0], [0.0, 0.0]])
    assert x.nnz == 3  # duplicates and the explicit zero still stored in the input


def test_sparse_dot_handles_unsorted_csr_indices_without_mutating_input():
    x = sp.csr_matrix((np.array([5.0, 7.0]), np.array([2, 0]), np.array([0, 2])), shape=(1, 3))
    assert not x.has_sorted_indices
    np.testing.assert_array_equal(ub.sparse_dot(x, np.array([1.0, 10.0, 100.0])), [507.0])
    np.testing.assert_array_equal(x.indices, [2, 0])


# -- argsort -----------------------------------------------------------------

def test_argsort_is_stable_in_both_directions():
    x = np.array([2.0, 1.0, 2.0, 1.0, 2.0])
    np.testing.assert_array_equal(ub.argsort(x), [1, 3, 0, 2, 4])
    np.testing.assert_array_equal(ub.argsort(x, descending=True), [0, 2, 4, 1, 3])
    assert ub.argsort(x).dtype == np.int64


def test_argsort_puts_nan_above_inf_and_treats_signed_zeros_as_equal():
    x = np.array([1.0, nan, -0.0, inf, 0.0, nan, -inf])
    np.testing.assert_array_equal(ub.argsort(x), [6, 2, 4, 0, 3, 1, 5])
    np.testing.assert_array_equal(ub.argsort(x, descending=True), [1, 5, 3, 0, 2, 4, 6])


def test_argsort_along_axis_0_of_a_long_tied_column():
    x = np.zeros((40, 2))
    x[::3, 1] = 1.0
    np.testing.assert_array_equal(ub.argsort(x, axis=0)[:, 0], np.arange(40))
    expect = np.concatenate([np.arange(0, 40, 3), [i for i in range(40) if i % 3]])
    np.testing.assert_array_equal(ub.argsort(x, axis=0, descending=True)[:, 1], expect)


# -- set_subtensor / inc_subtensor ----------------------------------------------

def test_set_subtensor_with_slice_int_and_ellipsis():
    x = np.zeros((3, 4))
    np.testing.assert_array_equal(ub.set_subtensor(x, (1, slice(1, 3)), 5.0)[1], [0, 5, 5, 0])
    np.testing.assert_array_equal(ub.set_subtensor(x, (Ellipsis, -1), [1, 2, 3])[:, 3], [1, 2, 3])
    np.testing.assert_array_equal(ub.set_subtensor(x, slice(None, None, -2), 1.0)[:, 0], [1, 0, 1])
    assert not x.any()


def test_set_subtensor_last_write_wins_and_inc_adds_every_write():
    x = np.zeros(4)
    np.testing.assert_array_equal(ub.set_subtensor(x, [2, 0, 2], [1.0, 2.0, 3.0]), [2, 0, 3, 0])
    np.testing.assert_array_equal(ub.inc_subtensor(x, [2, 0, 2], [1.0, 2.0, 3.0]), [2, 0, 4, 0])
    np.testing.assert_array_equal(ub.inc_subtensor(x, np.array([-1, -1]), 1.0), [0, 0, 0, 2])


def test_set_subtensor_with_boolean_mask_and_integer_array_tuple():
    x = np.arange(6.0).reshape(2, 3)
    out = ub.set_subtensor(x, x > 2, 0.0)
    np.testing.assert_array_equal(out, [[0, 1, 2], [0, 0, 0]])
    out = ub.set_subtensor(x, (np.array([0, 1]), np.array([2, 0])), np.array([-1.0, -2.0]))
    np.testing.assert_array_equal(out, [[0, 1, -1], [-2, 4, 5]])
    out = ub.inc_subtensor(x, (slice(None), [0, 0]), 1.0)  # mixed basic + advanced
    np.testing.assert_array_equal(out[:, 0], [2, 5])


def test_set_subtensor_casts_value_to_x_dtype():
    x = np.zeros(3, np.float32)
    out = ub.set_subtensor(x, 0, np.float64(1.5))
    assert out.dtype == np.float32 and out[0] == 1.5


# -- masked_mean ---------------------------------------------------------------

def test_masked_mean_ignores_masked_nan_and_inf_and_gives_zero_for_empty():
    x = np.array([[1.0, nan, 3.0], [inf, 5.0, -inf], [7.0, 8.0, 9.0]])
    mask = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(ub.masked_mean(x, mask, axis=1), [2.0, 5.0, 0.0])


def test_masked_mean_broadcasts_mask_and_takes_tuple_axes():
    x = np.arange(12.0).reshape(2, 3, 2)
    mask = np.array([True, False, True])[None, :, None]
    np.testing.assert_array_equal(ub.masked_mean(x, mask, axis=1), (x[:, 0] + x[:, 2]) / 2)
    assert ub.masked_mean(x, np.ones(x.shape, np.int64), axis=None) == x.mean()
    np.testing.assert_allclose(ub.masked_mean(x, x > 3, axis=(0, 2)), [6.5, 8.5, 7.5])


def test_masked_mean_keeps_float32():
    assert ub.masked_mean(np.ones((2, 2), np.float32), np.ones((2, 2), bool), axis=0).dtype == np.float32


# -- keep_topk / softmax / topk_gate ---------------------------------------------

def test_keep_topk_lower_index_wins_ties():
    x = np.zeros(40)
    x[[3, 17, 30]] = 1.0
    out = ub.keep_topk(x, 2)
    assert np.flatnonzero(np.isfinite(out)).tolist() == [3, 17]
    out = ub.keep_topk(np.zeros(40), 3)
    assert np.flatnonzero(np.isfinite(out)).tolist() == [0, 1, 2]


def test_keep_topk_counts_nan_as_largest():
    x = np.array([1.0, nan, 0.0, nan, 2.0])
    out = ub.keep_topk(x, 3, fill=-1.0)
    np.testing.assert_array_equal(out, [-1.0, nan, -1.0, nan, 2.0])
    out = ub.keep_topk(x, 1, fill=-1.0)
    np.testing.assert_array_equal(out, [-1.0, nan, -1.0, -1.0, -1.0])


def test_keep_topk_k_zero_and_k_size_and_axis_0():
    x = np.array([[3.0, 1.0], [2.0, 5.0], [4.0, 0.0]])
    assert np.isneginf(ub.keep_topk(x, 0)).all()
    np.testing.assert_array_equal(ub.keep_topk(x, 3, axis=0), x)
    np.testing.assert_array_equal(ub.keep_topk(x, 1, axis=0, fill=0.0), [[0, 0], [0, 5], [4, 0]])


def test_softmax_gives_exact_zeros_for_minus_inf_and_for_all_minus_inf_rows():
    x = np.array([[0.0, -inf, 0.0], [-inf, -inf, -inf], [1000.0, 1000.0, -inf]])
    np.testing.assert_array_equal(ub.softmax(x), [[0.5, 0.0, 0.5], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]])


def test_softmax_slice_with_plus_inf_or_nan_is_nan_throughout():
    x = np.array([[inf, 1.0, 2.0], [nan, 1.0, 2.0], [inf, inf, -inf], [0.0, 1.0, 2.0]])
    out = ub.softmax(x)
    assert np.isnan(out[:3]).all()
    assert np.isfinite(out[3]).all()


def test_topk_gate_has_exactly_k_nonzero_weights_summing_to_one():
    logits = np.array([[1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    g = ub.topk_gate(logits, 2)
    np.testing.assert_allclose(g, [[0, 0.5, 0, 0.5], [0.5, 0.5, 0, 0]])
    e = np.exp([2.0, 3.0])
    np.testing.assert_allclose(ub.topk_gate(np.array([1.0, 3.0, 2.0]), 2), [0, e[1] / e.sum(), e[0] / e.sum()])


# -- embedding_mean / pad_ids ---------------------------------------------------

def test_embedding_mean_on_the_classic_padded_example():
    ids = np.array([[0, 0, 1], [2, 3, 0], [2, 10, 11]])
    table = np.arange(24.0).reshape(12, 2)
    expect = [[2.0, 3.0], [5.0, 6.0], [(4 + 20 + 22) / 3, (5 + 21 + 23) / 3]]
    np.testing.assert_allclose(ub.embedding_mean(table, ids), expect)


def test_embedding_mean_counts_repeats_and_gives_zeros_for_padding_rows():
    table = np.array([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0]])
    ids = np.array([[1, 1, 2], [0, 0, 0]], dtype=np.int32)
    np.testing.assert_allclose(ub.embedding_mean(table, ids), [[2 / 3, 1 / 3], [0.0, 0.0]])
    assert ub.embedding_mean(table, np.zeros((0, 4), np.int64)).shape == (0, 2)
    np.testing.assert_array_equal(ub.embedding_mean(table, np.zeros((2, 0), np.int64)), np.zeros((2, 2)))


def test_embedding_mean_with_another_pad_id():
    table = np.array([[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(ub.embedding_mean(table, np.array([[0, 2, -1]]), pad_id=-1), [[2.0]])


def test_embedding_mean_keeps_float32():
    assert ub.embedding_mean(np.ones((3, 2), np.float32), np.array([[1]])).dtype == np.float32


def test_pad_ids_shifts_and_pads_at_the_end():
    out = ub.pad_ids([[0, 1], [], [2, 3, 4]])
    np.testing.assert_array_equal(out, [[1, 2, 0], [0, 0, 0], [3, 4, 5]])
    assert out.dtype == np.int64
    np.testing.assert_array_equal(ub.pad_ids([[5]], pad_id=-1, shift=0, length=3), [[5, -1, -1]])
    assert ub.pad_ids([]).shape == (0, 0)


def test_pad_ids_then_embedding_mean_round_trip():
    table = np.arange(10.0).reshape(5, 2)
    ids = ub.pad_ids([[0, 3], [2]])
    np.testing.assert_allclose(ub.embedding_mean(table, ids), [[(2 + 8) / 2, (3 + 9) / 2], [6, 7]])


# -- conversion ------------------------------------------------------------------

def test_to_numpy_and_asarray_on_numpy():
    x = np.arange(3)
    assert ub.to_numpy(x) is x
    assert ub.asarray([1, 2], dtype="float32").dtype == np.float32
    s = ub.to_numpy(sp.coo_matrix(np.eye(2)))
    assert isinstance(s, sp.csr_matrix)
