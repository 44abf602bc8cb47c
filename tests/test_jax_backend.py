"""The jax plugin: what belongs to jax alone -- x64, BCOO, every op inside
ub.function and inside a user's own jax.jit, with JAX's traps pinned
(duplicate scatter order, out-of-range fill/drop, top_k ties and NaN,
checkify), the kernels' memory and plain/exact paths.  The contract itself is
tested once over every backend, jax included, in tests/test_contract.py."""

import numpy as np
import pytest
from conftest import KTH_FILL, KTH_PLACE

import unibackend as ub
from unibackend.conformance.tolerances import assert_within

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def on_jax(fn, *args, **kw):
    """Run ``fn`` with jax in force; the result must be a jax.Array."""
    with ub.use_backend("jax"):
        out = fn(*args, **kw)
    assert isinstance(out, jax.Array), type(out)
    return np.asarray(out)


# -- the plugin and dtypes -------------------------------------------------

def test_backends_lists_jax_with_autodiff_sparse_and_devices():
    info = {b.name: b for b in ub.backends()}["jax"]
    assert info.installed and set(info.capabilities) >= {"autodiff", "sparse", "devices"}
    assert "symbolic" not in info.capabilities


def test_keep_compiled_code_turns_on_jax_s_persistent_cache_once_and_leaves_a_user_s_alone(tmp_path):
    """In a fresh interpreter (the setting is process-wide): the first call
    turns the cache on in the directory and an eager op's compiled code lands
    there; a second call (a directory already set) changes nothing."""
    import subprocess
    import sys

    code = ("import sys, os, numpy as np, unibackend as ub\n"
            "from unibackend import _registry as R\n"
            "B = R.backend('jax')\n"
            "print(B.keep_compiled_code(sys.argv[1]), B.keep_compiled_code(sys.argv[1] + '-other'))\n"
            "with ub.use_backend('jax'):\n"
            "    ub.to_numpy(ub.keep_topk(np.arange(12.0).reshape(3, 4), 2))\n"
            "print(len(os.listdir(sys.argv[1])), os.path.exists(sys.argv[1] + '-other'))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "xla")], capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    assert out[:2] == ["True", "False"] and int(out[2]) > 0 and out[3] == "False", out


def test_jax_array_selects_jax_while_numpy_is_in_force():
    with ub.use_backend("numpy"):
        out = ub.softmax(jnp.asarray([1.0, 2.0]))
    assert isinstance(out, jax.Array)


def test_float64_input_stays_float64_never_a_silent_downcast():
    with ub.use_backend("jax"):
        x = ub.asarray(np.array([1.0, 2.0]))
        assert x.dtype == np.float64 and jax.config.jax_enable_x64
        assert ub.dot(np.ones((2, 3)), np.ones(3)).dtype == np.float64
        assert ub.argsort(np.array([3.0, 1.0])).dtype == np.int64
        assert ub.softmax(np.ones(3, np.float32)).dtype == np.float32


def test_float64_with_x64_switched_off_again_raises_type_error():
    with ub.use_backend("jax"):
        ub.asarray([1.0])  # loads the plugin (which turns x64 on)
        jax.config.update("jax_enable_x64", False)
        try:
            with pytest.raises(TypeError, match="jax_enable_x64"):
                ub.asarray(np.array([1.0, 2.0]))
        finally:
            jax.config.update("jax_enable_x64", True)


# -- ops -------------------------------------------------------------------

def test_dot_of_misaligned_jax_arrays_is_a_value_error():
    with pytest.raises(ValueError, match="not aligned"):
        ub.dot(jnp.ones((2, 3)), jnp.ones((4, 2)))


def test_sparse_dot_of_a_bcoo_with_duplicates_adds_them():
    from jax.experimental import sparse

    x = sparse.BCOO((jnp.array([1.0, 2.0, 3.0]), jnp.array([[0, 1], [0, 1], [1, 0]])), shape=(2, 2))
    got = np.asarray(ub.sparse_dot(x, jnp.array([[1.0], [10.0]])))
    np.testing.assert_array_equal(got, [[30.0], [3.0]])
    np.testing.assert_array_equal(ub.to_numpy(x).toarray(), [[0, 3], [3, 0]])


_F = KTH_FILL


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_keep_topk_at_the_contracts_kth_places_inside_jit_and_function(dtype):
    """The k-th places that tests/test_contract.py pins eagerly (a NaN, a tie,
    -0.0, +inf), every row in one user's jax.jit and in one ub.function: the
    kernel takes lax.top_k's k-th value only and must decide these itself,
    on its plain path (exactly k entries not below t) and on its exact one alike."""
    xs = [jnp.asarray(np.array(x, dtype)) for x, _, _ in KTH_PLACE]

    def every_row(*xs):
        return [ub.keep_topk(x, k, fill=_F) for x, (_, k, _) in zip(xs, KTH_PLACE)]

    for got_rows in (jax.jit(every_row)(*xs), ub.function(every_row)(*xs)):
        for got, (_, _, want) in zip(got_rows, KTH_PLACE):
            got, want = np.asarray(got), np.array(want, dtype)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(want[~np.isnan(want)]))


def test_keep_topk_rows_on_the_plain_and_the_exact_path_in_one_array():
    """One row with a tie at the k-th place sends the whole call down the exact
    path; each row must still get its own answer (and its gradient: 1 where kept)."""
    x = np.array([[3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0], [np.nan, 0.0, -0.0, 5.0]], np.float32)
    want = np.array([[3.0, _F, 2.0, _F], [1.0, 1.0, _F, _F], [np.nan, _F, _F, 5.0]], np.float32)
    np.testing.assert_array_equal(on_jax(ub.keep_topk, x, 2, fill=_F), want)
    np.testing.assert_array_equal(on_jax(ub.keep_topk, x[:1], 2, fill=_F), want[:1])  # plain path alone
    g = np.asarray(ub.grad(lambda v: jnp.sum(jnp.where(jnp.isnan(v), 0.0, ub.keep_topk(v, 2, fill=0.0))))(
        jnp.asarray(x)))
    # kept entries get 1, except the NaN that the outer where masks out of the sum
    np.testing.assert_array_equal(g, ((want != _F) & ~np.isnan(x)).astype(np.float32))


def test_embedding_mean_bad_id_is_an_index_error_naming_it_before_any_work():
    table = jnp.ones((4, 3))
    for bad in (4, -2):
        with pytest.raises(IndexError, match=f"embedding_mean: id {bad} is out of range for a table of 4 rows"):
            ub.embedding_mean(table, jnp.array([[1, bad, 0]]))


def test_embedding_mean_compiles_to_no_n_l_d_buffer():
    """The jitted kernel's temporary memory is far below the (n, L, d) gather."""
    n, L, V, d = 2048, 64, 1000, 64
    table = jnp.ones((V, d), jnp.float32)
    ids = jnp.ones((n, L), jnp.int32)
    from unibackend import _registry

    B = _registry.backend("jax")
    mem = B._k_embedding_mean.lower(table, ids, 0).compile().memory_analysis()
    gather = n * L * d * 4
    assert mem.temp_size_in_bytes < gather / 8, (mem.temp_size_in_bytes, gather)


def test_subtensor_out_of_range_is_an_index_error_not_jax_drop():
    with pytest.raises(IndexError, match="set_subtensor"):
        ub.set_subtensor(jnp.zeros(3), jnp.array([0, 3]), 1.0)
    with pytest.raises(IndexError, match="inc_subtensor"):
        ub.inc_subtensor(jnp.zeros(3), 5, 1.0)


# -- autodiff --------------------------------------------------------------


def test_grad_of_a_bcoo_argument_is_a_bcoo_on_its_indices():
    from jax.experimental import sparse

    x = sparse.BCOO.fromdense(jnp.array([[0.0, 2.0], [3.0, 0.0]]))
    g = ub.grad(lambda x: jnp.sum(ub.sparse_dot(x, jnp.array([5.0, 7.0]))))(x)
    assert isinstance(g, sparse.BCOO)
    np.testing.assert_array_equal(np.asarray(g.todense()), [[0.0, 7.0], [5.0, 0.0]])


# -- compilation -----------------------------------------------------------

def test_function_traces_once_per_input_signature():
    traces = []

    def f(x):
        traces.append(x.shape)
        return ub.softmax(x)

    F = ub.function(f)
    with ub.use_backend("jax"):
        F(np.ones((2, 3)))
        F(np.zeros((2, 3)))
        assert len(traces) == 1
        F(np.ones((2, 3), np.float32))
        F(np.ones((4, 3)))
    assert len(traces) == 3


def test_every_op_inside_function_gives_the_eager_answer():
    x = np.array([[1.0, 3.0, 3.0, np.nan, 2.0], [0.0, -0.0, -np.inf, 4.0, 4.0]])
    table, ids = np.arange(12.0).reshape(4, 3), np.array([[1, 2, 0], [3, 3, 3]])

    def f(x, table, ids, idx):
        return (ub.keep_topk(x, 2), ub.argsort(x, descending=True), ub.softmax(x), ub.topk_gate(x, 2),
                ub.masked_mean(x, x > 0, axis=1), ub.embedding_mean(table, ids),
                ub.set_subtensor(table, idx, 1.0), ub.inc_subtensor(table, idx, 1.0))

    with ub.use_backend("jax"):
        idx = np.array([1, 1, -1])
        got = ub.function(f)(x, table, ids, idx)
        want = f(x, table, ids, idx)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_bad_id_inside_function_is_the_contract_index_error_naming_it():
    F = ub.function(lambda t, ids: ub.embedding_mean(t, ids))
    table = np.ones((4, 3))
    with ub.use_backend("jax"):
        np.testing.assert_array_equal(np.asarray(F(table, np.array([[1, 2, 0]]))), [[1.0] * 3])
        for bad in (9, -3):
            with pytest.raises(IndexError) as e:
                F(table, np.array([[1, bad, 0]]))
            assert str(e.value) == (f"embedding_mean: id {bad} is out of range for a table of 4 rows "
                                    "(valid: 0..3, pad_id=0)")


def test_bad_index_inside_function_is_an_index_error_and_duplicates_keep_the_last_write():
    F = ub.function(lambda x, i, v: ub.set_subtensor(x, i, v))
    with ub.use_backend("jax"):
        np.testing.assert_array_equal(np.asarray(F(np.zeros(4), np.array([1, 1, 2]), np.array([5.0, 6.0, 7.0]))),
                                      [0, 6, 7, 0])
        with pytest.raises(IndexError, match="set_subtensor: index 7 is out of bounds for axis 0 with size 4"):
            F(np.zeros(4), np.array([1, 7]), np.array([5.0, 6.0]))


def test_grad_inside_function_checks_ids_and_keeps_the_pad_row_at_zero():
    F = ub.function(lambda t, ids: ub.grad(lambda q: jnp.sum(ub.embedding_mean(q, ids)))(t))
    with ub.use_backend("jax"):
        g = np.asarray(F(np.ones((4, 3)), np.array([[1, 2, 0]])))
        with pytest.raises(IndexError, match="id 9"):
            F(np.ones((4, 3)), np.array([[1, 9, 0]]))
    np.testing.assert_array_equal(g[0], 0.0)


def test_bad_id_inside_a_users_jax_jit_fails_the_call_never_answers():
    J = jax.jit(lambda t, ids: ub.embedding_mean(t, ids))
    table = jnp.ones((4, 3))
    np.testing.assert_array_equal(np.asarray(J(table, jnp.array([[1, 2, 0]]))), [[1.0] * 3])
    with pytest.raises(jax.errors.JaxRuntimeError, match="embedding_mean: id 9 is out of range"):
        np.asarray(J(table, jnp.array([[1, 9, 0]])))


def test_users_jax_jit_of_every_op_gives_the_eager_answer():
    x = jnp.array([[1.0, 3.0, 3.0, np.nan, 2.0]])
    J = jax.jit(lambda x: (ub.keep_topk(x, 2), ub.argsort(x), ub.softmax(x), ub.masked_mean(x, x > 1)))
    for g, w in zip(J(x), (ub.keep_topk(x, 2), ub.argsort(x), ub.softmax(x), ub.masked_mean(x, x > 1))):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


# -- nn --------------------------------------------------------------------

def test_model_trained_on_jax_predicts_the_same_on_numpy_and_jax(tmp_path):
    from test_nn import MODEL_TERMS, tiny_data, tiny_model

    from unibackend import nn

    data, labels = tiny_data(n=32)
    model = tiny_model()
    with ub.use_backend("jax"):
        trainer = nn.Trainer(model, nn.Adam(0.05))
        losses = [trainer.step(data, labels) for _ in range(10)]
    assert losses[-1] < 0.8 * losses[0], losses
    path = model.save(tmp_path / "m.npz")
    with ub.use_backend("numpy"):
        ref = nn.load(path).predict(data, output=["gate", "out"])
    with ub.use_backend("jax"):
        got = nn.load(path).predict(data, output=["gate", "out"])
    assert_within(got["out"], ref["out"], n_terms=MODEL_TERMS)
    np.testing.assert_array_equal(got["gate"] > 0, ref["gate"] > 0)
    np.testing.assert_array_equal(got["out"].argmax(1), ref["out"].argmax(1))


def test_inside_a_users_jax_jit_duplicate_writes_keep_the_last_and_a_bad_static_index_raises():
    J = jax.jit(lambda x, v: ub.set_subtensor(x, np.array([1, 3, 1]), v))
    np.testing.assert_array_equal(np.asarray(J(jnp.zeros(4), jnp.array([1.0, 2.0, 3.0]))), [0, 3, 0, 2])
    with pytest.raises(IndexError, match="set_subtensor: index 4 is out of bounds for axis 0 with size 4"):
        jax.jit(lambda x: ub.set_subtensor(x, np.array([4]), 1.0))(jnp.zeros(4))


def test_sync_free_mode_checks_ids_and_indices_in_the_graph_with_the_same_answers():
    from unibackend._checks import sync_free

    table, ids = jnp.arange(12.0).reshape(4, 3), jnp.array([[1, 2, 0], [3, 3, 0]])
    with sync_free():
        np.testing.assert_array_equal(np.asarray(ub.embedding_mean(table, ids)),
                                      np.asarray(ub.embedding_mean(table, np.asarray(ids))))
        np.testing.assert_array_equal(np.asarray(ub.set_subtensor(jnp.zeros(4), jnp.array([1, 1]), jnp.array([5.0, 6.0]))),
                                      [0, 6, 0, 0])
        with pytest.raises(jax.errors.JaxRuntimeError, match="embedding_mean: id 7 is out of range"):
            np.asarray(ub.embedding_mean(table, jnp.array([[1, 7, 0]])))
        with pytest.raises(jax.errors.JaxRuntimeError, match="inc_subtensor: index 9 is out of bounds"):
            np.asarray(ub.inc_subtensor(jnp.zeros(4), jnp.array([9]), 1.0))


def test_an_empty_index_tensor_inside_jit_writes_nothing():
    """Pinned from the compiled conformance run: inc_subtensor of an empty x
    with an empty traced index traced a min over nothing; now it is a no-op."""
    x = np.zeros((0,), np.float32)
    idx = np.zeros((0,), np.int32)
    with ub.use_backend("jax") as B:
        out = B.compile(lambda a, i, v: ub.inc_subtensor(a, i, v))(ub.asarray(x), ub.asarray(idx), ub.asarray(x))
    assert ub.to_numpy(out).shape == (0,)
    y = np.arange(3.0)
    with ub.use_backend("jax") as B:
        out = B.compile(lambda a, i, v: ub.set_subtensor(a, i, v))(ub.asarray(y), ub.asarray(idx[:0]), ub.asarray(y[:0]))
    np.testing.assert_array_equal(ub.to_numpy(out), y)
