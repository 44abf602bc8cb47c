"""The torch plugin: what belongs to torch alone -- devices (CPU, the GPU
code paths on the CPU, CUDA when present), torch's own tensors and dtypes
(bfloat16, sparse COO/CSR, half-precision sparse), threads and asyncio, the
fast dot path, topk's algorithm switch, plain autograd.  The contract itself
(ties, NaN, -0.0, padding, duplicates, dtypes, gradients) is tested once over
every backend, torch's GPU paths and CUDA included, in tests/test_contract.py."""
import threading

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import agree, numpy_ref, same_as_reference

import unibackend as ub
from unibackend.conformance.tolerances import assert_within

torch = pytest.importorskip("torch")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(params=["cpu", "cpu-gpu-paths"] + DEVICES[1:])
def device(request, monkeypatch):
    """A device name; "cpu-gpu-paths" runs on the CPU through the code paths
    meant for GPUs (no data-dependent shortcuts, canonicalised sorts)."""
    if request.param == "cpu-gpu-paths":
        from unibackend import _registry as R

        for dev in (None, "cpu"):
            monkeypatch.setattr(R.backend("torch", dev), "gpu_paths", True)
        return "cpu"
    return request.param


def on_torch(device, fn, *args, **kw):
    """Run ``fn`` with torch in force on ``device``; the result must be a
    torch tensor on that device."""
    with ub.use_backend("torch", device):
        out = fn(*args, **kw)
    assert isinstance(out, torch.Tensor), type(out)
    assert out.device.type == device
    return out


def agree_on(device, fn, *args, **kw):
    """conftest's ``agree`` with torch on ``device``; the result stays on that device."""
    out = agree("torch", fn, *args, device=device, native=torch.Tensor, **kw)
    assert out.device.type == device
    return out


def T(x, device="cpu", **kw):
    return torch.as_tensor(np.asarray(x), device=device, **kw)


rng = np.random.default_rng(1234)


# -- loading, conversion, devices ---------------------------------------------

def test_backends_lists_torch_with_autodiff_sparse_and_devices():
    info = {b.name: b for b in ub.backends()}["torch"]
    assert info.installed and info.version.split("+")[0] == torch.__version__.split("+")[0]
    assert set(info.capabilities) == {"autodiff", "sparse", "devices", "vmap", "transform_grad"}


def test_asarray_returns_a_torch_tensor_of_the_right_dtype_unchanged():
    x = torch.ones(3, dtype=torch.float32)
    assert ub.asarray(x) is x
    assert ub.asarray(x, "float32") is x
    assert ub.asarray(x, np.float64).dtype == torch.float64


def test_asarray_of_neutral_inputs_keeps_numpy_dtypes():
    with ub.use_backend("torch"):
        assert ub.asarray([1.5, 2.0]).dtype == torch.float64  # torch alone would say float32
        assert ub.asarray([1, 2]).dtype == torch.int64
        assert ub.asarray(3.0).shape == ()
        assert ub.asarray(np.arange(3), "float32").dtype == torch.float32


def test_asarray_accepts_read_only_and_negatively_strided_arrays():
    a = np.arange(6.0)
    a.flags.writeable = False
    with ub.use_backend("torch"):
        np.testing.assert_array_equal(ub.to_numpy(ub.asarray(a)), a)
        np.testing.assert_array_equal(ub.to_numpy(ub.asarray(a[::-1])), a[::-1])


@pytest.mark.parametrize("dt", ["float16", "float32", "float64", "int32", "int64", "bool", "uint8"])
def test_dtype_map_round_trips_between_numpy_and_torch(dt):
    a = np.arange(4).astype(dt)
    with ub.use_backend("torch") as B:
        t = ub.asarray(a)
        assert B.dtype(t) == np.dtype(dt)
        back = ub.to_numpy(t)
    assert back.dtype == np.dtype(dt)
    np.testing.assert_array_equal(back, a)


def test_bfloat16_maps_to_the_ml_dtypes_bfloat16_and_promotes_with_float32():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf = np.dtype(ml_dtypes.bfloat16)
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16)
    with ub.use_backend("torch") as B:
        assert B.dtype(x) == bf
        assert ub.to_numpy(x).dtype == bf
        assert ub.asarray(np.ones(2, bf)).dtype == torch.bfloat16
        assert ub.asarray(x, np.float32).dtype == torch.float32
    # a bfloat16 logits vector meets float32 weights: float32, as numpy says
    out = ub.dot(x, torch.ones(3, 2))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(ub.to_numpy(out), [6.0, 6.0])


def test_bfloat16_values_survive_to_numpy_and_back():
    pytest.importorskip("ml_dtypes")
    x = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
    back = ub.to_numpy(x)
    np.testing.assert_array_equal(back.astype(np.float32), [1.5, -2.0, 3.25])
    with ub.use_backend("torch"):
        assert torch.equal(ub.asarray(back), x)
    out = ub.softmax(x)
    assert out.dtype == torch.bfloat16


def test_without_ml_dtypes_bfloat16_stands_for_itself(monkeypatch):
    import sys

    from unibackend.plugins.torch_backend import TorchBackend

    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes fails
    B = TorchBackend()
    B.load()
    x = torch.tensor([1.5, 2.0], dtype=torch.bfloat16)
    assert B.dtype(x) is torch.bfloat16
    assert B.asarray(np.array([1.5, 2.0]), torch.bfloat16).dtype == torch.bfloat16
    assert B.asarray(x, np.dtype(np.float32)).dtype == torch.float32
    back = B.to_numpy(x)
    assert back.dtype == np.float32 and back.tolist() == [1.5, 2.0]


def test_results_are_torch_tensors_and_to_numpy_brings_them_back(device):
    out = on_torch(device, ub.softmax, np.zeros((2, 3)))
    back = ub.to_numpy(out)
    assert isinstance(back, np.ndarray)
    np.testing.assert_allclose(back, np.full((2, 3), 1 / 3))


def test_neutral_inputs_go_to_the_device_chosen_in_the_context(device):
    with ub.use_backend("torch", device):
        assert ub.asarray(np.ones(2)).device.type == device
        assert ub.dot(np.ones(3), np.ones(3)).device.type == device
        v, g = ub.value_and_grad(lambda x: ub.dot(x, x))(np.ones(3))
    assert v.device.type == g.device.type == device


def test_set_backend_with_a_device_sends_neutral_inputs_there(device):
    from unibackend import _registry as R

    saved = R._default
    try:
        ub.set_backend("torch", device)
        assert ub.softmax([1.0, 2.0]).device.type == device
    finally:
        R._default = saved


def test_backend_in_force_is_per_thread():
    default = type(ub.softmax([0.0, 1.0]))  # whatever the process default is
    seen = {}

    def worker():
        seen["thread"] = type(ub.softmax([0.0, 1.0]))

    with ub.use_backend("torch" if default is np.ndarray else "numpy"):
        th = threading.Thread(target=worker)
        th.start()
        th.join()
        seen["here"] = type(ub.softmax([0.0, 1.0]))
    assert seen["here"] is not default
    assert seen["thread"] is default  # the thread did not inherit the context


def test_backend_in_force_is_per_asyncio_task():
    import asyncio

    async def run(name):
        with ub.use_backend(name):
            await asyncio.sleep(0)  # let the other task switch its backend in between
            return type(ub.softmax([0.0, 1.0]))

    async def both():
        return await asyncio.gather(run("torch"), run("numpy"))

    assert asyncio.run(both()) == [torch.Tensor, np.ndarray]


def test_torch_tensor_selects_torch_while_numpy_is_in_force():
    with ub.use_backend("numpy"):
        out = ub.dot(torch.ones(2, 3), np.ones(3))  # the numpy argument follows the tensor
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), [3.0, 3.0])


@cuda_only
def test_cpu_tensor_stays_on_cpu_when_cuda_is_in_force():
    with ub.use_backend("torch", "cuda"):
        out = ub.dot(torch.ones(2, 3), np.ones(3))
    assert out.device.type == "cpu"


@cuda_only
def test_numpy_input_moves_to_the_cuda_tensor_it_meets():
    with ub.use_backend("torch"):  # CPU in force
        out = ub.dot(torch.ones(2, 3, device="cuda"), np.ones(3))
        mm = ub.masked_mean(torch.ones(2, 3, device="cuda"), np.array([1, 0, 1]), 1)
    assert out.device.type == "cuda" and mm.device.type == "cuda"


def test_torch_and_tensorflow_tensors_together_raise_type_error():
    tf = pytest.importorskip("tensorflow")
    with pytest.raises(TypeError, match="torch.*tensorflow|tensorflow.*torch"):
        ub.dot(torch.ones(2), tf.ones(2))


# -- dot -------------------------------------------------------------------------


def test_dot_of_torch_tensors_on_a_device_matches_numpy(device):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    out = ub.dot(T(a, device), T(b, device))
    assert out.device.type == device
    np.testing.assert_allclose(ub.to_numpy(out), a @ b)


def test_dot_errors_are_value_errors_before_torch_runs():
    with pytest.raises(ValueError, match="dot: b must have 1 or 2 dims"):
        ub.dot(torch.ones(2, 2), torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="not aligned"):
        ub.dot(torch.ones(2, 3), torch.ones(2, 2))


def test_dot_fast_path_leaves_every_other_case_to_the_full_path():
    """Once torch tensors took ops.dot's fastest path, anything not plain
    (misaligned, 3-D b, scalar a, mixed or integer dtypes, sparse a) still
    gets the full path's answer or error."""
    from unibackend import _registry as R

    ub.dot(torch.ones(2, 3), torch.ones(3, 2))
    assert R._fast_dot.get(torch.Tensor) is not None
    with pytest.raises(ValueError, match="not aligned"):
        ub.dot(torch.ones(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match="b must have 1 or 2 dims"):
        ub.dot(torch.ones(2, 2), torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="a must have at least 1 dim"):
        ub.dot(torch.tensor(2.0), torch.ones(2))
    assert ub.dot(torch.ones(2, 3), torch.ones(3, dtype=torch.float64)).dtype == torch.float64
    assert ub.dot(torch.ones(2, 3, dtype=torch.int32), torch.ones(3, dtype=torch.int32)).dtype == torch.float64
    np.testing.assert_allclose(ub.dot(_torch_coo("cpu"), torch.ones(5, dtype=torch.float64)).numpy(),
                               _messy_coo() @ np.ones(5))
    out = ub.dot(torch.ones(2, 4, 3), torch.ones(3))
    assert out.shape == (2, 4) and out.eq(3).all()


# -- sparse_dot ------------------------------------------------------------------

def _messy_coo():
    """COO with a duplicate, an explicit zero and unsorted entries."""
    rows = np.array([2, 0, 1, 0, 2, 1])
    cols = np.array([3, 1, 0, 1, 2, 4])
    vals = np.array([1.0, 2.0, -3.0, 4.0, 0.0, 5.0])
    return sp.coo_matrix((vals, (rows, cols)), shape=(3, 5))


def _torch_coo(device, requires_grad=False, dtype=torch.float64):
    c = _messy_coo()
    idx = torch.tensor(np.vstack([c.row, c.col]), device=device)
    x = torch.sparse_coo_tensor(idx, torch.tensor(c.data, dtype=dtype, device=device), c.shape,
                                check_invariants=True)
    return x.requires_grad_(requires_grad)


def test_sparse_dot_of_an_uncoalesced_torch_coo_adds_duplicates(device):
    x = _torch_coo(device)
    w = rng.standard_normal((5, 2))
    out = ub.sparse_dot(x, w)
    assert out.device.type == device
    np.testing.assert_allclose(ub.to_numpy(out), _messy_coo() @ w)


def test_sparse_dot_of_torch_csr_matches_scipy(device):
    x = _torch_coo(device).coalesce().to_sparse_csr()
    w = rng.standard_normal(5)
    np.testing.assert_allclose(ub.to_numpy(ub.sparse_dot(x, w)), _messy_coo() @ w)


@pytest.mark.parametrize("dt", [torch.float16, torch.bfloat16])
def test_sparse_dot_in_half_precision_runs_where_torch_csr_cannot(device, dt):
    x = _torch_coo(device, dtype=dt).coalesce().to_sparse_csr()
    w = torch.tensor(rng.standard_normal((5, 2)), dtype=dt, device=device)
    out = ub.sparse_dot(x, w)
    assert out.dtype == dt
    want = _messy_coo() @ w.float().cpu().numpy()
    np.testing.assert_allclose(out.float().cpu().numpy(), want, rtol=2e-2, atol=5e-2)


def test_sparse_dot_promotes_a_float32_torch_coo_with_float64_w(device):
    x = _torch_coo(device, dtype=torch.float32)
    out = ub.sparse_dot(x, np.ones(5))
    assert out.dtype == torch.float64
    np.testing.assert_allclose(ub.to_numpy(out), _messy_coo() @ np.ones(5))


def test_sparse_dot_never_densifies_x(device, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("x was densified")

    monkeypatch.setattr(torch.Tensor, "to_dense", refuse)
    with ub.use_backend("torch", device):
        ub.sparse_dot(_messy_coo(), np.ones((5, 2)))
        ub.sparse_dot(_torch_coo(device), np.ones((5, 2)))


def test_sparse_dot_gradient_wrt_a_torch_coo_is_structured(device):
    """d/dx sum(x @ w) = 1 wᵀ at x's stored positions only."""
    x = _torch_coo(device, requires_grad=True)
    w = torch.tensor(rng.standard_normal((5, 2)), device=device)
    ub.sparse_dot(x, w).sum().backward()
    gx = x.grad.coalesce()
    want_pos = _messy_coo().tocsr()
    want_pos.sum_duplicates()
    r, c = gx.indices().cpu().numpy()
    assert len(r) == want_pos.nnz  # the explicit zero is a stored position too
    np.testing.assert_allclose(gx.values().cpu().numpy(), w.sum(1).cpu().numpy()[c])


def test_sparse_dot_gradient_wrt_a_torch_csr_is_structured(device):
    x = _torch_coo(device).coalesce().to_sparse_csr().requires_grad_()
    w = torch.ones(5, 2, dtype=torch.float64, device=device)
    ub.sparse_dot(x, w).sum().backward()
    assert x.grad.layout == torch.sparse_csr
    assert x.grad.values().numel() == x.values().numel()
    np.testing.assert_allclose(x.grad.values().cpu().numpy(), 2.0)


def test_sparse_to_scipy_gives_csr_with_duplicates_summed():
    back = ub.to_numpy(_torch_coo("cpu"))
    assert isinstance(back, sp.csr_matrix)
    np.testing.assert_allclose(back.toarray(), _messy_coo().toarray())


def test_sparse_dot_errors_are_raised_before_torch_runs():
    with pytest.raises(TypeError, match="x must be sparse"):
        ub.sparse_dot(torch.ones(2, 2), torch.ones(2))
    with pytest.raises(ValueError, match="not aligned"):
        ub.sparse_dot(_torch_coo("cpu"), torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="w must have 1 or 2 dims"):
        ub.sparse_dot(_messy_coo(), torch.ones(5, 1, 1))


# -- argsort ---------------------------------------------------------------------


def test_argsort_errors():
    with pytest.raises(ValueError, match="at least 1 dim"):
        ub.argsort(torch.tensor(1.0))
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        ub.argsort(torch.ones(2, 2), axis=2)
    with pytest.raises(TypeError, match="descending must be a bool"):
        ub.argsort(torch.ones(2), descending="yes")


# -- set_subtensor / inc_subtensor -------------------------------------------------

INDICES = [
    (1, 5.0),
    (-1, np.arange(4.0)),
    ((slice(1, None), 2), 7.0),
    ((Ellipsis, slice(None, None, 2)), -1.0),
    (np.array([2, 0, 2]), 3.0),                          # a row named twice
    (([0, 1, 1, 0], [1, 2, 2, 1]), np.array([1.0, 2.0, 3.0, 4.0])),  # positions named twice
    (np.array([[True, False, True, False]] * 3), 9.0),
    ((slice(None), [3, -1]), np.array([[1.0], [2.0], [3.0]])),
    ((slice(None, None, -1), 0), np.array([1.0, 2.0, 3.0])),  # a reversed slice
]


@pytest.mark.parametrize("op", [ub.set_subtensor, ub.inc_subtensor], ids=["set", "inc"])
@pytest.mark.parametrize("index,value", INDICES, ids=range(len(INDICES)))
def test_subtensor_of_a_torch_tensor_is_numpys_leaves_it_untouched_and_stays_on_its_device(device, op, index, value):
    x = rng.standard_normal((3, 4))
    xt = T(x, device)
    out = op(xt, index, value)
    np.testing.assert_array_equal(xt.cpu().numpy(), x)  # the tensor is untouched
    assert out.dtype == xt.dtype and out.device == xt.device
    # CUDA's accumulating scatter adds repeated positions in no fixed order.
    same_as_reference(out, numpy_ref(op, x, index, value), exact=op is ub.set_subtensor or device != "cuda",
                      native=torch.Tensor)


@pytest.mark.parametrize("index", [np.array([1, 0, 1]), (slice(None), 2), (1, slice(None, None, -1))])
def test_subtensor_of_a_transposed_tensor_matches_numpy(device, index):
    x = rng.standard_normal((4, 3))
    xt = T(x.T.copy(), device).T  # same values, column-major strides
    assert not xt.is_contiguous()
    got = ub.to_numpy(ub.set_subtensor(xt, index, 7.0))
    want = x.copy()
    want[index] = 7.0
    np.testing.assert_array_equal(got, want)


def test_subtensor_index_given_as_a_torch_tensor_on_the_device(device):
    x = T(np.zeros(4), device)
    idx = torch.tensor([0, 3, 3], device=device)
    out = ub.inc_subtensor(x, idx, 1.0)
    assert out.tolist() == [1, 0, 0, 2]
    with pytest.raises(IndexError):  # checked before any kernel: no device-side assert
        ub.set_subtensor(x, torch.tensor([0, 4], device=device), 1.0)


def test_subtensor_errors_are_index_and_value_errors():
    x = torch.zeros(3, 4)
    with pytest.raises(IndexError):
        ub.set_subtensor(x, 3, 1.0)
    with pytest.raises(IndexError):
        ub.inc_subtensor(x, (slice(None), [0, -5]), 1.0)
    with pytest.raises(IndexError):
        ub.set_subtensor(x, np.array([0.5]), 1.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        ub.set_subtensor(x, 0, torch.ones(3))


# -- masked_mean -------------------------------------------------------------------


def test_masked_mean_mask_that_does_not_broadcast_raises_value_error():
    with pytest.raises(ValueError, match="mask"):
        ub.masked_mean(torch.ones(3, 4), torch.ones(3, dtype=torch.bool))


# -- keep_topk / topk_gate -----------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_keep_topk_matches_numpy_around_torchs_topk_algorithm_switch(device, k, ties):
    """torch's CPU topk changes algorithm at k * 64 == n; both sides agree with numpy."""
    x = rng.integers(0, 4, size=(5, 128)) if ties else rng.standard_normal((5, 128))
    x = x.astype(np.float64)
    x[0, ::9] = np.nan
    out = agree_on(device, ub.keep_topk, x, k, exact=True)
    assert (~torch.isneginf(out)).sum(dim=1).eq(k).all()


def test_keep_topk_k_out_of_range_is_value_error():
    with pytest.raises(ValueError, match="k=4 is out of range"):
        ub.keep_topk(torch.ones(3), 4)
    with pytest.raises(ValueError, match="k=-1"):
        ub.keep_topk(torch.ones(3), -1)
    with pytest.raises(TypeError, match="k must be an int"):
        ub.keep_topk(torch.ones(3), 1.5)


# -- embedding_mean ----------------------------------------------------------------

TABLE = rng.standard_normal((6, 3))


def test_embedding_mean_of_torch_ids_on_the_device(device):
    ids = torch.tensor([[1, 0, 3]], device=device)
    out = ub.embedding_mean(T(TABLE, device), ids)
    np.testing.assert_allclose(ub.to_numpy(out)[0], (TABLE[1] + TABLE[3]) / 2)


def test_embedding_mean_errors():
    table = torch.ones(4, 2)
    with pytest.raises(IndexError, match="id 4 is out of range"):
        ub.embedding_mean(table, torch.tensor([[1, 4]]))
    with pytest.raises(IndexError, match="id -2"):
        ub.embedding_mean(table, torch.tensor([[1, -2]]), pad_id=-1)
    with pytest.raises(TypeError, match="ids must be integers"):
        ub.embedding_mean(table, torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="ids must have 2 dims"):
        ub.embedding_mean(table, torch.tensor([1, 2]))


def test_id_bounds_ignores_padding_and_is_none_for_all_padding(device):
    with ub.use_backend("torch", device) as B:
        assert B.id_bounds(T([[5, 0, 2], [0, 9, 0]], device), 0) == (2, 9)
        assert B.id_bounds(T([[0, 0]], device), 0) is None
        assert B.id_bounds(T(np.zeros((2, 0), np.int64), device), 0) is None
        assert B.id_bounds(T(np.array([[3, 200]], np.uint8), device), -1) == (3, 200)


# -- math for nn -----------------------------------------------------------------------

NN_X = np.array([[0.5, -1.0, 2.0], [3.0, 0.25, -0.5]])


@pytest.mark.parametrize("name, args", [
    ("tanh", ()), ("relu", ()), ("exp", ()), ("log", ()),
    *[(r, (axis, keep)) for r in ("reduce_sum", "reduce_max") for axis in (None, 0, 1) for keep in (False, True)],
])
def test_nn_math_gives_numpys_values_as_tensors_on_xs_device(device, name, args):
    """Each primitive equals the base's numpy default, as a torch tensor on x's device."""
    x = np.abs(NN_X) if name == "log" else NN_X
    with ub.use_backend("torch", device) as B:
        got = getattr(B, name)(T(x, device), *args)
    assert isinstance(got, torch.Tensor) and got.device.type == device
    with ub.use_backend("numpy") as NP:
        want = getattr(NP, name)(x, *args)
    assert got.dtype == torch.float64 and tuple(got.shape) == want.shape
    assert_within(ub.to_numpy(got), want)


def test_nn_math_is_differentiated_by_autograd(device):
    """d/dx sum(tanh x) = 1 - tanh(x)^2, d/dx sum(log exp relu x) = [x > 0],
    d/dx max_rows(x) = one-hot of each row's max."""
    with ub.use_backend("torch", device) as B:
        g_tanh = ub.grad(lambda x: B.reduce_sum(B.tanh(x), None, False))(NN_X)
        g_relu = ub.grad(lambda x: B.reduce_sum(B.log(B.exp(B.relu(x))), None, False))(NN_X)
        g_max = ub.grad(lambda x: B.reduce_sum(B.reduce_max(x, 1, True), None, False))(NN_X)
    assert_within(ub.to_numpy(g_tanh), 1 - np.tanh(NN_X) ** 2)
    assert_within(ub.to_numpy(g_relu), (NN_X > 0).astype(float))  # exp(x) / exp(x): within rounding
    np.testing.assert_array_equal(ub.to_numpy(g_max), [[0, 0, 1], [1, 0, 0]])


# -- autodiff --------------------------------------------------------------------------


def test_grad_does_not_touch_the_callers_tensor():
    x = torch.ones(3)
    g = ub.grad(lambda x: (x * 2).sum())(x)
    assert g.tolist() == [2.0, 2.0, 2.0]
    assert not x.requires_grad and x.grad is None


def test_function_on_torch_is_the_function_itself():
    with ub.use_backend("torch") as B:
        f = lambda x: x  # noqa: E731
        assert B.function(f) is f
        assert ub.function(lambda x: ub.softmax(x))(torch.zeros(2)).tolist() == [0.5, 0.5]


def test_ops_compose_with_plain_torch_autograd_and_parameters(device):
    """A torch model can use the ops directly: nn.Parameter dispatches to
    torch and loss.backward() reaches it."""
    table = torch.nn.Parameter(torch.tensor(TABLE, device=device))
    w = torch.nn.Parameter(torch.ones(3, 4, dtype=torch.float64, device=device))
    ids = np.array([[1, 2, 0], [3, 0, 0]])
    h = ub.embedding_mean(table, ids)
    loss = ub.topk_gate(ub.dot(h, w), 2).pow(2).sum() + ub.masked_mean(h, np.array([1, 0, 1]))
    loss.backward()
    assert table.grad is not None and w.grad is not None
    assert table.grad[0].eq(0).all() and table.grad[4:].eq(0).all()
    assert torch.isfinite(w.grad).all()


# -- complex inputs -----------------------------------------------------------------

def test_complex_inputs_work_where_numpy_and_torch_agree(device):
    x = (rng.standard_normal((4, 3)) + 1j * rng.standard_normal((4, 3)))
    agree_on(device, ub.dot, x, x.T)
    agree_on(device, ub.masked_mean, x, np.array([1, 0, 1]), axis=1)
    agree_on(device, ub.embedding_mean, x, np.array([[1, 2, 0], [0, 0, 0]]))
    agree_on(device, ub.embedding_mean, x, np.array([[1, 2, -1]]), pad_id=-1)


@pytest.mark.parametrize("op", [ub.argsort, ub.softmax, lambda x: ub.keep_topk(x, 1)],
                         ids=["argsort", "softmax", "keep_topk"])
def test_ops_that_order_values_refuse_complex_with_type_error(op):
    with pytest.raises(TypeError, match="complex numbers have no order"):
        op(torch.ones(3, dtype=torch.complex64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tensors_on_two_devices_raise_value_error_naming_both():
    with pytest.raises(ValueError, match="dot: tensors on two devices, cpu and cuda:0"):
        ub.dot(torch.ones(2, 2), torch.ones(2, 2, device="cuda"))
    with pytest.raises(ValueError, match="dot: tensors on two devices"):
        ub.dot(torch.ones(3, 2), torch.ones(2, device="cuda"))
    with pytest.raises(ValueError, match="embedding_mean: tensors on two devices"):
        ub.embedding_mean(torch.ones(3, 2, device="cuda"), torch.tensor([[1, 2]]))


@pytest.mark.parametrize("shapes", [((0,), (0,)), ((3, 0), (0,)), ((3, 0), (0, 2)), ((2, 3, 0), (0, 4))],
                         ids=["1d", "mv", "mm", "nd"])
def test_dot_over_an_empty_axis_gives_zeros_and_zero_gradients(device, shapes):
    """Pinned from the conformance run on CUDA: cuBLAS's dot failed on n=0."""
    a, b = np.zeros(shapes[0], np.float32), np.zeros(shapes[1], np.float32)
    out = agree_on(device, ub.dot, a, b, exact=True)
    assert out.shape == np.dot(a, b).shape
    with ub.use_backend("torch", device):
        g = ub.grad(lambda a, b: ub.dot(a, b).sum())(a, b)
    assert tuple(g.shape) == shapes[0]


def test_embedding_mean_of_a_zero_width_table_has_a_gradient(device):
    """Pinned from the conformance run on an H100: embedding_bag's backward hit an
    illegal memory access for d == 0."""
    ids = np.array([[1, 0], [0, 0]])
    with ub.use_backend("torch", device):
        g = ub.grad(lambda t: ub.embedding_mean(t, ids).sum())(np.zeros((3, 0), np.float32))
    assert tuple(g.shape) == (3, 0) and g.device.type == device
