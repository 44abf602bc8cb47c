"""Every op inside torch.compile(fullgraph=True): no graph break, the eager
answer, bad ids and indices failing with the contract's message.

Quick tests compile with backend="aot_eager" (Dynamo + AOTAutograd, no code
generation); one test runs the default Inductor on the CPU (slow: a C++ build).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import unibackend as ub  # noqa: E402
from unibackend import _checks as C  # noqa: E402
from unibackend import _registry as R  # noqa: E402
from unibackend.conformance.tolerances import assert_within  # noqa: E402

_g = torch.Generator().manual_seed(0)
X = torch.randn(4, 8, generator=_g)
W = torch.randn(8, 3, generator=_g)
TABLE = torch.randn(5, 3, generator=_g)
IDS = torch.tensor([[1, 2, 0], [3, 0, 0], [0, 0, 0]])
ROWS = torch.tensor([0, 2, 0, -1])

# (name, function, args): every public op, and set/inc_subtensor with every kind of index part
CASES = [
    ("dot", lambda a, b: ub.dot(a, b), (X, W)),
    ("dot_vec", lambda a, b: ub.dot(a, b[:, 0]), (X, W)),
    ("argsort", lambda a: ub.argsort(a, descending=True), (X,)),
    ("argsort_axis0", lambda a: ub.argsort(a, axis=0), (X,)),
    ("keep_topk", lambda a: ub.keep_topk(a, 3), (X,)),
    ("keep_topk_ties", lambda a: ub.keep_topk(a.round(), 3, axis=0, fill=0.0), (X,)),
    ("topk_gate", lambda a: ub.topk_gate(a, 2), (X,)),
    ("softmax", lambda a: ub.softmax(a), (X,)),
    ("softmax_dead_row", lambda a: ub.softmax(torch.where(a > 9, a, -torch.inf)), (X,)),
    ("embedding_mean", lambda t, i: ub.embedding_mean(t, i), (TABLE, IDS)),
    ("embedding_mean_pad_outside", lambda t, i: ub.embedding_mean(t, i - 1, pad_id=-1), (TABLE, IDS)),
    ("masked_mean", lambda a, m: ub.masked_mean(a, m, axis=1), (X, X > 0)),
    ("masked_mean_all", lambda a, m: ub.masked_mean(a, m), (X, X > 0)),
    ("set_int", lambda a: ub.set_subtensor(a, -1, 0.0), (X,)),
    ("set_slice", lambda a: ub.set_subtensor(a, (slice(None), slice(1, 7, 2)), 5.0), (X,)),
    ("set_negative_step", lambda a: ub.set_subtensor(a, (1, slice(None, None, -3)), 5.0), (X,)),
    ("set_ellipsis_none", lambda a: ub.set_subtensor(a, (Ellipsis, None, 2), 1.0), (X,)),
    ("set_tensor_repeats", lambda a, i: ub.set_subtensor(a, i, torch.arange(32.0).view(4, 8)), (X, ROWS)),
    ("inc_tensor_repeats", lambda a, i: ub.inc_subtensor(a, i, 1.0), (X, ROWS)),
    ("inc_tensor_pair", lambda a, i: ub.inc_subtensor(a, (i, i + 1), 2.0), (X, ROWS)),
    ("set_list", lambda a: ub.set_subtensor(a, (slice(None), [7, 0, 7]), torch.ones(4, 3)), (X,)),
]


def _same(out, ref):
    assert out.dtype == ref.dtype and out.shape == ref.shape
    if not torch.equal(out, ref):  # the compiled kernel may sum in another order: the suite's bound
        assert_within(out.detach().numpy(), ref.detach().numpy().astype(np.float64), err_msg="compiled vs eager")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name,fn,args", CASES, ids=[c[0] for c in CASES])
def test_op_compiles_in_one_graph_with_the_eager_answer(name, fn, args):
    """Property: under torch.compile(fullgraph=True) every op gives exactly
    the eager answer, and Dynamo sees one graph with no break."""
    ref = fn(*args)
    out = torch.compile(fn, backend="aot_eager", fullgraph=True)(*args)
    _same(out, ref)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_inputs_are_not_mutated_by_compiled_subtensor():
    x, i = X.clone(), ROWS.clone()
    torch.compile(lambda a, j: ub.inc_subtensor(a, j, 1.0), backend="aot_eager", fullgraph=True)(x, i)
    assert torch.equal(x, X) and torch.equal(i, ROWS)


def test_compiled_set_subtensor_keeps_the_last_write_of_a_repeated_position():
    x = torch.zeros(3)
    out = torch.compile(lambda a, i, v: ub.set_subtensor(a, i, v), backend="aot_eager", fullgraph=True)(
        x, torch.tensor([1, 1, 1, 2]), torch.tensor([5.0, 6.0, 7.0, 8.0]))
    assert out.tolist() == [0.0, 7.0, 8.0]


def test_a_bad_id_in_compiled_code_raises_the_contract_index_error():
    f = torch.compile(lambda t, i: ub.embedding_mean(t, i), backend="aot_eager", fullgraph=True)
    f(TABLE, IDS)
    with pytest.raises(IndexError, match=r"embedding_mean: id 7 is out of range for a table of 5 rows"):
        f(TABLE, torch.tensor([[1, 7, 0], [0, 0, 0], [0, 0, 0]]))
    with pytest.raises(IndexError, match=r"id -2 is out of range"):
        f(TABLE, torch.tensor([[1, -2, 0], [0, 0, 0], [0, 0, 0]]))


def test_a_bad_index_tensor_in_compiled_code_raises_the_contract_index_error():
    f = torch.compile(lambda a, i: ub.inc_subtensor(a, i, 1.0), backend="aot_eager", fullgraph=True)
    f(X, ROWS)
    with pytest.raises(IndexError, match=r"inc_subtensor: .*index 4 is out of bounds for axis 0 with size 4"):
        f(X, torch.tensor([0, 4]))
    with pytest.raises(IndexError, match=r"index -5 is out of bounds for axis 0 with size 4"):
        f(X, torch.tensor([-5, 0]))


def test_a_static_error_in_compiled_code_carries_the_contract_message():
    """With fullgraph=True Dynamo reports an exception raised while tracing
    as its own Unsupported (a RuntimeError) holding the contract's message;
    without fullgraph the contract's exception itself propagates."""
    with pytest.raises(RuntimeError, match=r"keep_topk: k=9 is out of range"):
        torch.compile(lambda a: ub.keep_topk(a, 9), backend="aot_eager", fullgraph=True)(X)
    torch._dynamo.reset()
    with pytest.raises(ValueError, match=r"keep_topk: k=9 is out of range"):
        torch.compile(lambda a: ub.keep_topk(a, 9), backend="aot_eager")(X)


@pytest.fixture
def gpu_paths_on_cpu():
    """The CPU instance taking the device code paths (what a CUDA tensor takes)."""
    B = R.backend("torch")
    B.gpu_paths = True
    yield B
    B.gpu_paths = False


def test_sync_free_checks_fail_the_call_in_the_device_path(gpu_paths_on_cpu):
    """In the sync-free mode a device checks values with an async assert:
    the call fails (on a CPU at once, RuntimeError) naming the table size;
    good input gives the default mode's answer."""
    bad = torch.tensor([[1, 7, 0]])
    with ub.sync_free():
        assert C.sync_free_checks()
        _same(ub.embedding_mean(TABLE, IDS), ub.embedding_mean(TABLE.double(), IDS).float())
        with pytest.raises(RuntimeError, match=r"embedding_mean: an id is out of range for a table of 5 rows"):
            ub.embedding_mean(TABLE, bad)
        with pytest.raises(RuntimeError, match=r"set_subtensor: an index is out of bounds for axis 0 with size 4"):
            ub.set_subtensor(X, torch.tensor([4]), 0.0)
        ref = X.numpy().copy()
        np.add.at(ref, ROWS.numpy(), 1.0)
        _same(ub.inc_subtensor(X, ROWS, 1.0), torch.from_numpy(ref))
    assert not C.sync_free_checks()
    with pytest.raises(IndexError, match=r"id 7 is out of range"):  # default again: the host check
        ub.embedding_mean(TABLE, bad)


def test_sync_free_switch_default_and_context():
    assert not C.sync_free_checks()
    ub.set_sync_free(True)
    try:
        assert C.sync_free_checks()
        with ub.sync_free(False):
            assert not C.sync_free_checks()
        assert C.sync_free_checks()
    finally:
        ub.set_sync_free(False)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        ub.set_sync_free("yes")


def test_a_compiled_call_first_in_a_fresh_process():
    """The first use of unibackend in a process inside a compiled function
    (nothing classified, no plugin loaded) traces in one graph."""
    code = (
        "import torch, unibackend as ub\n"
        "f = torch.compile(lambda a: ub.keep_topk(ub.softmax(a), 2), backend='aot_eager', fullgraph=True)\n"
        "x = torch.randn(3, 5)\n"
        "assert torch.equal(f(x), ub.keep_topk(ub.softmax(x), 2))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.slow
def test_inductor_on_the_cpu_compiles_ops_with_the_eager_answer():
    """The default backend (Inductor, generated C++): a small model of
    several ops in one graph gives the eager answer and still rejects bad ids."""
    def model(x, table, ids, rows):
        h = ub.embedding_mean(table, ids)
        g = ub.topk_gate(ub.dot(x[:3, :3], h.T), 2)
        return ub.masked_mean(ub.inc_subtensor(g, rows, 1.0), g > 0, axis=1)

    args = (X, TABLE, IDS, torch.tensor([0, 2, 0]))
    f = torch.compile(model, fullgraph=True)
    _same(f(*args), model(*args))
    with pytest.raises(IndexError, match=r"id 9 is out of range"):
        f(X, TABLE, torch.tensor([[9, 0, 0], [0, 0, 0], [0, 0, 0]]), args[3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_sync_free_mode_makes_no_host_sync_on_cuda():
    dev = "cuda"
    x = torch.randn(64, 256, device=dev)
    table, ids = torch.randn(100, 16, device=dev), torch.randint(0, 100, (32, 8), device=dev)
    rows = torch.randint(0, 64, (10,), device=dev)
    calls = [lambda: ub.keep_topk(x, 4), lambda: ub.topk_gate(x, 4), lambda: ub.softmax(x),
             lambda: ub.masked_mean(x, x > 0, axis=1), lambda: ub.embedding_mean(table, ids),
             lambda: ub.inc_subtensor(x, rows, 1.0), lambda: ub.set_subtensor(x, rows, 0.0),
             lambda: ub.argsort(x), lambda: ub.dot(x, x.T)]
    for c in calls:
        c()  # first calls load and cache outside the counted region
    torch.cuda.synchronize()
    with ub.sync_free():
        torch.cuda.set_sync_debug_mode("error")
        try:
            for c in calls:
                c()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


def test_no_framework_is_imported_by_import_unibackend():
    """Loading the plugin classes at import (so they prepare their tracers)
    imports no framework."""
    code = "import sys, unibackend\nprint(sorted({'torch', 'tensorflow', 'jax', 'pytensor', 'theano'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "UNIBACKEND_BACKEND": ""})
    assert out.stdout.strip() == "[]", out.stderr


def test_dot_promotes_mixed_float_dtypes_inside_a_full_graph():
    """dot of a float32 and a float64 tensor compiles without a break (the
    dtype promotion is a lookup, not numpy.result_type) and is float64."""
    import torch

    a, b = torch.randn(3, 4, dtype=torch.float32), torch.randn(4, dtype=torch.float64)
    out = torch.compile(lambda p, q: ub.dot(p, q), fullgraph=True, backend="eager")(a, b)
    assert out.dtype is torch.float64
    torch.testing.assert_close(out, a.double() @ b)


# -- keep_topk's compiled tie rule ------------------------------------------------

def _numpy_keep_topk(x, k, axis, fill=-np.inf):
    with ub.use_backend("numpy"):
        return torch.from_numpy(ub.to_numpy(ub.keep_topk(x.numpy(), k, axis=axis, fill=fill)))


@pytest.fixture(params=["cpu", "cpu-gpu-paths"])
def compiled_path(request):
    """The CPU graph (a torch.cond on "does any slice tie past topk's k?")
    or, with gpu_paths, the device graph (block ranks, no flag read)."""
    B = R.backend("torch")
    B.gpu_paths = request.param == "cpu-gpu-paths"
    yield request.param
    B.gpu_paths = False


def _tie_rows(n=200):
    """Rows of n (200: 13 blocks of 16, the last padded) whose 3rd value ties
    entries after it: in one block, across blocks, a NaN 3rd value, -0.0
    tying +0.0, all tied, and one row without a tie at the boundary."""
    x = torch.full((6, n), -5.0)
    x[0, [7, 9, 11, 150]] = 1.0                          # k=3: 7, 9, 11 (not 150)
    x[1, [3, 40, 41, 90, n - 1]] = 2.0                   # k=3: 3, 40 and the 3.0 at 100
    x[1, 100] = 3.0
    x[2, 5::7] = torch.nan                               # NaN largest, and tied: 5, 12, 19
    x[3, [10, 30, 70]] = torch.tensor([0.0, -0.0, 0.0])  # above -5; -0.0 ties +0.0
    x[3, [2, 3]] = 4.0
    x[4, :] = 0.0                                        # all tied: the first three
    x[5] = torch.arange(float(n)).flip(0)                # no tie: topk's own answer
    return x


@pytest.mark.parametrize("n", [300, 200])
def test_compiled_keep_topk_each_kind_of_tie_alone(compiled_path, n):
    """Each tie kind of _tie_rows as the only slice (so no other slice's tie
    sends the CPU graph to its tie branch): numpy's answer.  The CPU graph
    asks topk for k + 1 = 4 values at n=300 and counts the ties at n=200
    (k * 64 <= n < (k + 1) * 64, torch's CPU topk switch)."""
    f = torch.compile(lambda a: ub.keep_topk(a, 3), backend="aot_eager", fullgraph=True)
    for row in _tie_rows(n):
        x = row[None]
        torch.testing.assert_close(f(x), _numpy_keep_topk(x, 3, -1), equal_nan=True)


def test_compiled_keep_topk_ties_at_the_kth_place_keep_the_lower_index(compiled_path):
    """Ties exactly at the k-th place inside torch.compile(fullgraph=True):
    exactly k stay per slice, the lower indices among equal values, NaN
    largest, -0.0 == +0.0 -- numpy's answer on both compiled paths."""
    x = _tie_rows()
    f = torch.compile(lambda a: ub.keep_topk(a, 3), backend="aot_eager", fullgraph=True)
    out = f(x)
    assert torch.equal(out.isneginf(), _numpy_keep_topk(x, 3, -1).isneginf())
    assert (~out.isneginf()).sum(dim=1).eq(3).all()
    kept = [torch.nonzero(~out[r].isneginf()).flatten().tolist() for r in range(5)]
    assert kept == [[7, 9, 11], [3, 40, 100], [5, 12, 19], [2, 3, 10], [0, 1, 2]]
    torch.testing.assert_close(out, _numpy_keep_topk(x, 3, -1), equal_nan=True)
    # the same slices down axis 0 of a 3-D tensor, another fill
    x3 = x.T.reshape(200, 2, 3).contiguous()
    g = torch.compile(lambda a: ub.keep_topk(a, 3, axis=0, fill=0.5), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(g(x3), _numpy_keep_topk(x3, 3, 0, fill=0.5), equal_nan=True)


# (5, 128), k=2: k * 64 == n, where the CPU graph counts ties instead of asking topk for k + 1
@pytest.mark.parametrize("shape,axis,k", [((7, 50), -1, 4), ((5, 64, 3), 1, 9), ((33, 6), 0, 17), ((4, 1000), 1, 64),
                                          ((5, 128), 1, 2)])
def test_compiled_keep_topk_matches_numpy_on_tie_heavy_inputs(compiled_path, shape, axis, k):
    """Property: on generated inputs of few distinct values (ties at the k-th
    place in most slices, some NaN, signed zeros) the compiled keep_topk is
    numpy's keep_topk; one compiled function serves every draw of a shape."""
    f = torch.compile(lambda a: ub.keep_topk(a, k, axis=axis), backend="aot_eager", fullgraph=True)
    gen = torch.Generator().manual_seed(sum(shape) + k)
    for _ in range(8):
        x = torch.randint(-2, 3, shape, generator=gen).float() * 0.0 ** torch.randint(0, 2, shape, generator=gen)
        x[torch.rand(shape, generator=gen) < 0.05] = torch.nan
        x[torch.rand(shape, generator=gen) < 0.2] *= -1.0                   # some -0.0
        torch.testing.assert_close(f(x), _numpy_keep_topk(x, k, axis), equal_nan=True)


def test_compiled_keep_topk_and_topk_gate_gradients_match_eager(compiled_path):
    """Gradients through the compiled tie rule are eager's: 1 on each kept
    entry of keep_topk, the softmax's Jacobian on the gate's kept ones."""
    x0 = _tie_rows().nan_to_num(nan=7.0)
    w = torch.linspace(-1, 1, 200)
    for op in (lambda a: ub.keep_topk(a, 3, fill=0.0), lambda a: ub.topk_gate(a, 3)):
        grads = []
        for fn in (op, torch.compile(op, backend="aot_eager", fullgraph=True)):
            x = x0.clone().requires_grad_()
            (fn(x) * w).sum().backward()
            grads.append(x.grad)
        assert torch.equal(grads[0], grads[1])
        assert grads[0].ne(0).sum(dim=1).le(3).all() and grads[0].ne(0).any()


def test_compiled_topk_gate_with_ties_at_the_kth_place():
    """topk_gate inside torch.compile: exactly k nonzero weights per slice,
    on the lower indices among tied logits, summing to 1."""
    x = _tie_rows().nan_to_num(nan=7.0)
    out = torch.compile(lambda a: ub.topk_gate(a, 3), backend="aot_eager", fullgraph=True)(x)
    assert torch.equal(out, ub.topk_gate(x, 3))
    assert out.ne(0).sum(dim=1).eq(3).all()
    assert torch.nonzero(out[0]).flatten().tolist() == [7, 9, 11]
    torch.testing.assert_close(out.sum(dim=1), torch.ones(6))


def test_compiled_keep_topk_with_a_traced_fill_and_shapes(compiled_path):
    """A second call with another shape and fill recompiles with symbolic
    sizes and a symbolic float fill (Dynamo's automatic dynamic): the CPU
    graph's torch.cond takes them (found by conformance --compiled)."""
    f = torch.compile(lambda a, fill: ub.keep_topk(a, 1, axis=0, fill=fill), backend="aot_eager", fullgraph=True)
    for shape, fill in (((3, 2), 0.0), ((4, 3), 1.5), ((5, 2), -2.0)):
        x = torch.arange(float(np.prod(shape))).reshape(shape) % 2
        torch.testing.assert_close(f(x, fill), _numpy_keep_topk(x, 1, 0, fill=fill))


def test_compiled_keep_topk_and_topk_gate_on_a_transposed_input(compiled_path):
    """A non-contiguous x (a transpose) with and without ties, through
    recompiles with symbolic sizes: numpy's answer (the CPU graph's two
    branches must agree on one layout; found by conformance --compiled)."""
    f = torch.compile(lambda a: ub.keep_topk(a, 1, axis=0), backend="aot_eager", fullgraph=True)
    g = torch.compile(lambda a: ub.topk_gate(a, 1, axis=0), backend="aot_eager", fullgraph=True)
    for shape in ((2, 1, 17), (3, 1, 5), (4, 2, 6)):
        for x in (torch.zeros(shape).permute(2, 1, 0), torch.arange(float(np.prod(shape))).reshape(shape).permute(2, 1, 0)):
            torch.testing.assert_close(f(x), _numpy_keep_topk(x.contiguous(), 1, 0))
            torch.testing.assert_close(g(x), ub.topk_gate(x.contiguous(), 1, axis=0))


# -- Backend.compile's modes: pinned conformance --compiled finds ----------------------------

@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setenv("UNIBACKEND_TORCH_COMPILER", "aot_eager")
    return R.backend("torch")


def _np_answer(fn, *args):
    with ub.use_backend("numpy"):
        return ub.to_numpy(fn(*args))


@pytest.mark.parametrize("mode", ["fullgraph", "dynamic"])
def test_compiled_keep_topk_down_a_size_1_transposed_layout(aot_eager, mode):
    """keep_topk compiled in each mode is numpy's answer on layouts whose
    size-1 axes have non-row-major strides (x (n, 1) as a transpose: the CPU
    graph's torch.cond branches once differed in stride order, and
    .contiguous() does not restride a size-1 axis), at k + 1 == n and n == k.
    Found by conformance --compiled: [[nan], [250]], k=1, axis=0."""
    cases = [(np.array([[np.nan, 250.0]], np.float32).T, 1, 0),
             (np.array([[np.nan, 250.0]], np.float32).T, 2, 0),
             (np.array([[1.0, 1.0, 3.0]], np.float32).T, 2, 0),
             (np.arange(6, dtype=np.float32).reshape(3, 1, 2).transpose(2, 1, 0), 1, 2),
             (np.array([[2.0], [2.0]], np.float32).T, 1, 1)]
    with ub.use_backend("torch"):
        for x, k, axis in cases:
            torch._dynamo.reset()
            fn = lambda a, k=k, axis=axis: ub.keep_topk(a, k, axis=axis)  # noqa: E731
            out = ub.to_numpy(aot_eager.compile(fn, mode)(ub.asarray(x)))
            np.testing.assert_array_equal(out, _np_answer(fn, x))


_R = slice(None, None, -1)


@pytest.mark.parametrize("mode", ["fullgraph", "dynamic"])
def test_compiled_subtensor_with_a_negative_step_slice_beside_other_index_parts(aot_eager, mode):
    """set/inc_subtensor compiled in each mode is numpy's answer when a
    negative-step slice stands beside an int array or another such slice:
    the slice adds an axis (it once became an arange, an advanced index that
    broadcast with the others).  Found by conformance --compiled: x (0, 0),
    index ([], ::-1); x[::-1, ::-1] with a (3,) value once wrote a diagonal."""
    cases = [((0, 0), (np.zeros((0,), np.int32), _R), (0, 0)),
             ((3, 3), (_R, _R), (3,)),
             ((3, 4), (np.array([0, 2]), _R), (2, 4)),
             ((2, 3, 4), (np.array([1, 0]), slice(None), slice(3, None, -2)), (2, 3, 2)),
             ((2, 3, 4), (np.array([1, 0]), _R, np.array([3, 0])), (2, 3))]
    gen = np.random.default_rng(0)
    with ub.use_backend("torch"):
        for xshape, index, vshape in cases:
            x = gen.standard_normal(xshape).astype(np.float32)
            v = gen.standard_normal(vshape).astype(np.float32)
            for op in (ub.inc_subtensor, ub.set_subtensor):
                torch._dynamo.reset()
                fn = lambda a, b, op=op, index=index: op(a, index, b)  # noqa: E731
                out = ub.to_numpy(aot_eager.compile(fn, mode)(ub.asarray(x), ub.asarray(v)))
                want = _np_answer(fn, x, v)
                assert out.shape == want.shape
                np.testing.assert_allclose(out, want, rtol=1e-6)


@pytest.mark.parametrize("mode", ["fullgraph", "dynamic"])
def test_compiled_subtensor_with_a_boolean_mask_raises_the_contracts_type_error(mode):
    """Pinned from the suite: a numpy boolean mask index inside torch.compile
    selects a data-dependent number of positions (Dynamo: "Could not guard on
    data-dependent expression"); the call raises the contract's TypeError
    naming the op and the mode, never a framework error."""
    from unibackend import _registry

    with ub.use_backend("torch"):
        f = _registry.backend("torch").compile(lambda x, v: ub.inc_subtensor(x, np.array([False]), v), mode)
        with pytest.raises(TypeError, match=r"^inc_subtensor: not supported under torch.compile: a boolean mask"):
            f(ub.asarray(np.array([0.0], np.float32)), ub.asarray(np.zeros(0, np.float32)))
