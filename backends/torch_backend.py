"""The PyTorch backend: CPU and CUDA.

Native tensors stay on their device; neutral inputs (numpy, scipy, lists,
scalars) go to ``self.device`` (None: CPU).  Every tie, NaN and padding rule
is computed in a device-independent way (never from the order in which
torch.topk or a CUDA sort happens to break ties).
"""
from __future__ import annotations

import ast
import math
import re

import numpy as np

from unibackend.plugin import (
    Backend,
    Capabilities,
    GraphIndex,
    check_broadcast,
    check_scalar_output,
    id_out_of_range,
    index_out_of_range,
    is_scipy_sparse,
    scipy_grad_input,
    slice_bounds,
    sync_free_checks,
    two_devices,
    unsupported_dtype,
    unsupported_in_mode,
)

_CHECK_OPS: dict = {}


def _check_ops(torch):
    """The custom ops behind the value checks of compiled code: they run on
    the host when the graph runs and raise the contract's IndexError naming
    the bad value (registered once per process).  Each returns a copy of its
    input that the lookup then uses, so no compiler drops it."""
    if _CHECK_OPS:
        return _CHECK_OPS

    # (explicit schemas: this module's annotations are strings)
    @torch.library.custom_op("unibackend::check_ids", mutates_args=(),
                             schema="(Tensor ids, SymInt rows, int pad_id) -> Tensor")
    def check_ids(ids, rows, pad_id):
        _raise_bad_id(ids, rows, pad_id)
        return ids.clone()

    @check_ids.register_fake
    def _(ids, rows, pad_id):
        return torch.empty_like(ids)

    @torch.library.custom_op("unibackend::check_index", mutates_args=(),
                             schema="(Tensor index, SymInt size, int axis, str op, SymInt[] shape) -> Tensor")
    def check_index(index, size, axis, op, shape):
        _raise_bad_index(index, size, axis, op, shape)
        return index.clone()

    @check_index.register_fake
    def _(index, size, axis, op, shape):
        return torch.empty_like(index)

    _CHECK_OPS.update(ids=check_ids, index=check_index)
    return _CHECK_OPS


def _unwrapped(x):
    """x without its torch.func wrappers (vmap's batched tensor, grad's
    tracking tensor): every example's values, readable on the host."""
    from torch._C import _functorch

    while _functorch.is_functorch_wrapped_tensor(x):
        x = _functorch.get_unwrapped(x)
    return x


def _raise_bad_id(ids, rows, pad_id):
    ids = _unwrapped(ids)
    real = ids[ids != pad_id]
    if real.numel():
        lo, hi = int(real.min()), int(real.max())
        if lo < 0 or hi >= rows:
            raise id_out_of_range("embedding_mean", lo if lo < 0 else hi, rows, pad_id)


_on_device: dict = {}   # "torch@cuda:1" -> the plugin instance for that device


def _device_instance(name, device):
    """The key of ``name``'s instance on ``device`` in ``_on_device``, made on
    first use.  Marked for Dynamo, which calls it at trace time and keeps the
    key (its lock and imports cannot be traced)."""
    key = f"{name}@{device}"
    if key not in _on_device:
        from unibackend._registry import backend

        _on_device[key] = backend(name, None if device == "cpu" else device)
    return key


_device_instance._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _raise_bad_index(index, size, axis, op, shape):
    index = _unwrapped(index)
    if index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < -size or hi >= size:
            raise index_out_of_range(op, lo if lo < -size else hi, axis, size)


_OBSERVED = re.compile(r"raised exception (TypeError|ValueError|IndexError)\((.*)\)\s*$", re.S)
_OBSERVED_KINDS = {"TypeError": TypeError, "ValueError": ValueError, "IndexError": IndexError}


def _observed(e):
    """The contract's exception that Dynamo observed while tracing, rebuilt
    from the text of the Unsupported error it raised instead (None: none)."""
    cause = e.__cause__
    if cause is None or not type(cause).__name__.startswith("Observed"):
        return None
    found = _OBSERVED.match(str(cause.args[0]) if cause.args else "")
    if found is None:
        return None
    try:
        msg = ast.literal_eval(found.group(2))
    except (ValueError, SyntaxError):
        return None
    return _OBSERVED_KINDS[found.group(1)](msg) if isinstance(msg, str) else None


class TorchBackend(Backend):
    name = "torch"
    modules = ("torch",)
    extra = "torch"
    distributions = ("torch",)
    capabilities = Capabilities(autodiff=True, sparse=True, symbolic=False, devices=True, vmap=True,
                                transform_grad=True)
    #: torch.compile(fullgraph=True), with static shapes and with dynamic=True
    compile_modes = ("fullgraph", "dynamic")

    # -- set-up ------------------------------------------------------------
    def load(self):
        import warnings

        import torch

        self.torch = torch
        self.F = torch.nn.functional
        self._Tensor = torch.Tensor
        self._strided = torch.strided
        self._coo = torch.sparse_coo
        self._csr = torch.sparse_csr
        self._dev = torch.device(self.device) if self.device is not None else torch.device("cpu")
        if self._dev.type == "cuda" and self._dev.index is None:
            # "cuda" means the current device; its tensors say cuda:N
            self._dev = torch.device("cuda", torch.cuda.current_device())
        self._is_cuda = self._dev.type == "cuda"
        self._is_cpu = self._dev.type == "cpu"
        self.gpu_paths = False  # True: CPU tensors take the GPU code paths too (to test them)
        self._matmul = torch.matmul
        self._mm = torch.mm
        pairs = [
            (torch.float16, np.float16), (torch.float32, np.float32), (torch.float64, np.float64),
            (torch.int8, np.int8), (torch.int16, np.int16), (torch.int32, np.int32),
            (torch.int64, np.int64), (torch.uint8, np.uint8), (torch.bool, np.bool_),
            (torch.complex64, np.complex64), (torch.complex128, np.complex128),
        ]
        for t, n in ((getattr(torch, "uint16", None), np.uint16),
                     (getattr(torch, "uint32", None), np.uint32),
                     (getattr(torch, "uint64", None), np.uint64)):
            if t is not None:
                pairs.append((t, n))
        self._to_np = {t: np.dtype(n) for t, n in pairs}
        self._small_ints = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
        self._signed = {u: s for u, s in ((getattr(torch, "uint16", None), torch.int16),
                                          (getattr(torch, "uint32", None), torch.int32),
                                          (getattr(torch, "uint64", None), torch.int64)) if u is not None}
        try:  # bfloat16 has a numpy dtype only through ml_dtypes (shipped with TF/JAX)
            import ml_dtypes

            self._bf16 = np.dtype(ml_dtypes.bfloat16)
        except ImportError:
            self._bf16 = torch.bfloat16  # no numpy dtype: the torch dtype stands for itself
        self._to_np[torch.bfloat16] = self._bf16
        self._to_torch = {n: t for t, n in self._to_np.items()}
        self._float_np = {t: n for t, n in self._to_np.items() if t.is_floating_point}
        # torch warns once per process that CSR is "beta": spend that warning
        # here, silenced, rather than on a user's first sparse_dot.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.sparse_csr_tensor(torch.zeros(2, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                                    torch.zeros(0), size=(1, 1), check_invariants=False)
        self._compiling = torch.compiler.is_compiling
        # torch.func's vmap/grad/jacrev wrap tensors: no value may be read
        # (vmap) and no data-dependent shortcut taken under them.
        self._wrapped = torch._C._functorch.is_functorch_wrapped_tensor
        self._to_np_pairs = tuple((n, t) for t, n in self._to_np.items())
        _check_ops(torch)
        self._loaded = True

    @staticmethod
    def trace_constant(fn):
        # What torch.compiler.assume_constant_result does, without importing
        # torch: Dynamo calls fn while tracing and keeps its answer.
        fn._dynamo_marked_constant = True

    def is_tracing(self, x):
        return self._compiling() or self._transformed(x)

    def _in_graph(self, x):
        """Whether value checks on x run in its graph (traced, or sync-free
        on a device) rather than reading the values on the host first."""
        return self._compiling() or (self._gpu_way(x) and sync_free_checks())

    def _batched(self, x):
        """Whether x is batched by torch.func.vmap (at any level of wrapping)."""
        from torch._C import _functorch

        while not self._compiling() and self._wrapped(x):
            if _functorch.is_batchedtensor(x):
                return True
            x = _functorch.get_unwrapped(x)
        return False

    def _transformed(self, *xs):
        """Whether any of xs is under a torch.func transform (vmap, grad,
        jacrev) run eagerly (Dynamo traces the transforms itself, and cannot
        trace this question)."""
        wrapped = self._wrapped
        return not self._compiling() and any(isinstance(x, self._Tensor) and wrapped(x) for x in xs)

    def version(self):
        from importlib.metadata import version

        return version("torch")

    def native_types(self):
        return (self.torch.Tensor,)

    def check_devices(self, op, tensors):
        first = tensors[0].device
        for x in tensors[1:]:
            if x.device != first:
                raise two_devices(op, first, x.device, ".to()")

    def for_tensor(self, x):
        if self._is_cpu and x.is_cpu:  # the common case, without building x.device
            return self
        dev = x.device
        if dev == self._dev:
            return self
        # Another device: the instance comes from a function Dynamo runs at trace
        # time (a first use inside torch.compile must not trace the registry's lock).
        return _on_device[_device_instance(self.name, str(dev))]

    # -- conversion --------------------------------------------------------
    def asarray(self, x, dtype=None):
        if isinstance(x, self._Tensor):  # native: stays on its device
            if dtype is None:
                return x
            td = self._torch_dtype(dtype)
            return x if x.dtype is td else x.to(td)
        if self._compiling():
            # a neutral value while tracing (numpy cannot be traced into):
            # Python scalars and lists by numpy's rules, on the device
            t = self.torch
            out = t.as_tensor(x, device=self._dev)
            if out.is_floating_point() or out.is_complex():
                out = t.as_tensor(x, dtype=t.complex128 if out.is_complex() else t.float64, device=self._dev)
            return out if dtype is None else self.asarray(out, dtype)
        t = self._host_tensor(x, dtype)
        # non_blocking: a copy from pageable host memory is staged before it
        # returns, so the array may go; a blocking one counts as a host sync
        return t.to(self._dev, non_blocking=True) if self._is_cuda else t

    def _host_tensor(self, x, dtype=None):
        """A CPU tensor of neutral ``x`` (numpy's dtype rules, memory shared
        with a numpy array where torch can)."""
        a = x if type(x) is np.ndarray else np.asarray(x)
        if dtype is not None and not isinstance(dtype, np.dtype):  # bfloat16 without ml_dtypes
            return self._host_tensor(a).to(self._torch_dtype(dtype))
        if dtype is not None and a.dtype != dtype:
            if dtype == self._bf16:
                return self._host_tensor(a, np.float32).to(self.torch.bfloat16)
            a = a.astype(dtype)
        elif a.dtype == self._bf16:
            return self._host_tensor(a.astype(np.float32)).to(self.torch.bfloat16)
        if not a.flags.writeable:
            a = a.copy()  # a tensor must never alias read-only memory
        try:
            return self.torch.from_numpy(a)
        except ValueError:  # negative strides, which torch cannot view
            return self.torch.from_numpy(a.copy())

    def _torch_dtype(self, dtype):
        if self._compiling():
            # numpy dtypes as dict keys defeat the tracer; equality does not
            for nd, pair in self._to_np_pairs:
                if nd == dtype:
                    return pair
        td = self._to_torch.get(dtype)
        if td is None:
            if isinstance(dtype, self.torch.dtype):
                return dtype
            raise unsupported_dtype("torch", dtype, "has no torch equivalent")
        return td

    def to_numpy(self, x):
        if not isinstance(x, self._Tensor):
            return np.asarray(x)
        x = x.detach()
        if x.dtype is self.torch.bfloat16:
            if isinstance(self._bf16, np.dtype):
                return x.cpu().view(self.torch.int16).numpy().view(self._bf16)
            return x.cpu().float().numpy()
        return x.cpu().resolve_conj().numpy()

    def shape(self, x):
        return x.shape

    def dtype(self, x):
        return self._to_np[x.dtype]

    def plain_float_dtype(self, x):
        if isinstance(x, self._Tensor):
            dt = self._float_np.get(x.dtype)
            if dt is not None and x.layout is self._strided:
                return dt
        return None

    def is_sparse(self, x):
        return isinstance(x, self._Tensor) and x.layout is not self._strided

    def sparse_from_scipy(self, csr):
        t = self.torch
        if t._C._functorch.maybe_current_level() is not None:
            # inside torch.func.vmap/grad a CSR tensor cannot even be built
            # ("Sparse CSR tensors do not have strides"); a COO one can
            coo = csr.tocoo()
            out = t.sparse_coo_tensor(t.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64)),
                                      self._host_tensor(coo.data), size=csr.shape, check_invariants=False)
            return out.to(self._dev) if self._is_cuda else out
        out = t.sparse_csr_tensor(
            t.from_numpy(csr.indptr), t.from_numpy(csr.indices), self._host_tensor(csr.data),
            size=csr.shape, check_invariants=False,
        )
        return out.to(self._dev) if self._is_cuda else out

    def sparse_to_scipy(self, x):
        import scipy.sparse as sp

        x = x.detach()
        if x.layout is not self._csr:
            x = x.to_sparse_coo().coalesce().to_sparse_csr() if x.layout is not self._coo \
                else x.coalesce().to_sparse_csr()
        return sp.csr_matrix(
            (self.to_numpy(x.values()), self.to_numpy(x.col_indices()), self.to_numpy(x.crow_indices())),
            shape=tuple(x.shape),
        )

    def sparse_info(self, x):
        return tuple(x.shape), self._to_np[x.dtype]

    def sparse_cast(self, x, dtype):
        return x.to(self._torch_dtype(dtype))

    def id_bounds(self, ids, pad_id):
        t = self.torch
        if ids.numel() == 0 or self._in_graph(ids):  # (then embedding_mean checks them in its graph)
            return None
        if self._wrapped(ids):
            ids = _unwrapped(ids)  # under vmap: every example's ids at once
        if ids.dtype not in self._small_ints:
            ids = ids.to(t.int64)  # torch's uint16/32/64 lack reductions
        info = t.iinfo(ids.dtype)
        if info.min <= pad_id <= info.max:
            real = ids != pad_id
            lo = t.where(real, ids, info.max).amin()
            hi = t.where(real, ids, info.min).amax()
        else:  # pad_id cannot occur in ids of this dtype
            lo, hi = ids.amin(), ids.amax()
        lo, hi = t.stack([lo, hi]).tolist()  # one device sync
        return None if lo > hi else (int(lo), int(hi))

    # -- ops ---------------------------------------------------------------
    def dot(self, a, b):
        if a.shape[-1] == 0:
            # An empty contraction is all zeros; cuBLAS's dot/gemv fail on it
            # (CUBLAS_STATUS_INTERNAL_ERROR, then an illegal memory access).
            return (a.sum(-1, keepdim=True) * b.sum(0)).reshape(a.shape[:-1] + b.shape[1:])
        # matmul with a 1-D or 2-D b is numpy's dot, an N-D a included.
        return self._mm(a, b) if a.dim() == 2 and b.dim() == 2 else self._matmul(a, b)

    def fast_dot(self, a, b):
        dt = a.dtype
        if dt is b.dtype and dt in self._float_np and a.layout is self._strided and b.layout is self._strided:
            if a.dim() == 2 and b.dim() == 2:
                try:  # torch.mm checks the shapes itself, cheaper than reading them here
                    return self._mm(a, b)
                except RuntimeError:  # misaligned: the full path says why
                    return None
            sa, sb = a.shape, b.shape
            if sa and 0 < len(sb) < 3 and sa[-1] == sb[0] != 0:  # empty: see dot
                try:
                    return self._matmul(a, b)
                except RuntimeError:  # two devices: the full path says so
                    return None
        return None

    def sparse_dot(self, x, w):
        t = self.torch
        vec = w.dim() == 1
        w2 = w.unsqueeze(1) if vec else w
        if self._transformed(x, w):
            return self._sparse_dot_transformed(x, w2).squeeze(1) if vec else self._sparse_dot_transformed(x, w2)
        if x.layout is not self._coo and x.layout is not self._csr:
            x = x.to_sparse_csr() if x.layout is t.sparse_csc else x.to_sparse_coo()
        if x.requires_grad:
            # COO keeps the gradient w.r.t. x structured (CSR's backward is dense).
            xs = x if x.layout is self._coo else x.to_sparse_coo()
            out = t.sparse.mm(xs, w2)
        elif x.layout is self._coo:
            x = x.coalesce()
            out = x.to_sparse_csr() @ w2 if self._csr_dtype(x) else t.sparse.mm(x, w2)
        elif self._csr_dtype(x):
            out = x @ w2
        elif x.is_cuda:
            # CUDA has no half-precision sparse product ("addmm_sparse_cuda"
            # not implemented for Half/BFloat16): compute in float32.
            out = t.sparse.mm(x.to_sparse_coo().float(), w2.float()).to(w2.dtype)
        else:
            out = t.sparse.mm(x.to_sparse_coo(), w2)
        return out.squeeze(1) if vec else out

    def _sparse_dot_transformed(self, x, w2):
        """sparse_dot under torch.func (torch's sparse products have no vmap
        rule and CSR none for grad): the rows of w each stored entry needs,
        scaled and added up per row of x; O(nnz * M) memory, x never dense."""
        t = self.torch
        if self._batched(x):
            raise unsupported_in_mode("sparse_dot", "torch.func.vmap", "torch.func cannot batch a torch sparse "
                                      "tensor; batch w, or stack the examples' x into one sparse matrix")
        xc = (x if x.layout is self._coo else x.to_sparse_coo()).coalesce()
        rows, cols = xc.indices()
        terms = w2[cols] * xc.values().unsqueeze(1)
        return t.zeros((x.shape[0], w2.shape[1]), dtype=w2.dtype, device=w2.device).index_add(0, rows, terms)

    def _csr_dtype(self, x):
        # CSR matmul exists for float32/float64 everywhere; half precision goes through COO.
        return x.dtype is self.torch.float32 or x.dtype is self.torch.float64

    def _gpu_way(self, x):
        """Whether x takes the GPU code paths: no data-dependent shortcut
        (reading a value back would stall the stream), sorts canonicalised."""
        return self.gpu_paths or not x.is_cpu or self._compiling() or self._wrapped(x)

    def argsort(self, x, axis, descending):
        t = self.torch
        if x.dtype is t.bool:
            x = x.to(t.uint8)
        elif x.is_floating_point() and self._gpu_way(x):
            # GPU sorts are radix sorts on the bit pattern: make -0.0 == +0.0
            # and every NaN the same (positive) NaN so that ties stay ties.
            x = t.where(t.isnan(x), math.nan, x + 0.0)
        return t.argsort(x, dim=axis, descending=descending, stable=True)

    def set_subtensor(self, x, index, value, accumulate):
        signed = self._signed.get(x.dtype)
        if signed is not None:
            # torch's index_put has no uint16/32/64 kernel; the same bits as
            # signed ints give the same writes and (modular) additions.
            return self.set_subtensor(x.view(signed), index, value.view(signed), accumulate).view(x.dtype)
        if isinstance(index, GraphIndex):
            return self._set_in_graph(x, index, value, accumulate)
        if self._transformed(value):  # no in-place write of a value batched by torch.func
            return self._write_flat(x, self._positions(index.positions(), x.device), value, accumulate)
        if index.basic:
            out = x.clone()
            if accumulate:
                out[index.index] += value
            else:
                out[index.index] = value
            return out
        # Flat positions are row-major: write into a C-contiguous copy.
        out = x.clone(memory_format=self.torch.contiguous_format)
        flat = out.view(-1)
        vals = value.broadcast_to(index.shape).reshape(-1)
        if accumulate:
            flat.index_put_((self._positions(index.positions(), x.device),), vals, accumulate=True)
        else:
            pos, take = index.last_writes()
            if take is not None:
                vals = vals[self._positions(take, x.device)]
            flat.index_put_((self._positions(pos, x.device),), vals)
        return out

    def _set_in_graph(self, x, index, value, accumulate):
        """set/inc_subtensor with a GraphIndex (traced, or sync-free index
        tensors): positions found and index tensors checked in the graph."""
        t = self.torch
        op = index.op
        parts = [t.as_tensor(p, device=x.device) if isinstance(p, np.ndarray) else p for p in index.parts]
        shape = tuple(x.shape)
        for j, axis, _ in index.unchecked():
            if isinstance(parts[j], self._Tensor):
                parts[j] = self._checked_index(op, parts[j], shape[axis], axis, shape)
        flipped = []
        for j, (p, axis) in enumerate(zip(parts, index.axes)):
            if isinstance(p, self._Tensor) and p.dtype is t.bool and self._compiling():
                # (Dynamo: "Could not guard on data-dependent expression" otherwise)
                raise unsupported_in_mode(op, "torch.compile", "a boolean mask index selects a number of positions "
                                          "known only from its values; index with np.nonzero(mask) instead")
            if isinstance(p, self._Tensor) and p.dtype is t.bool and self._batched(p):
                raise unsupported_in_mode(op, "torch.func.vmap", "a boolean mask index selects a different number "
                                          "of positions in each example; batch an integer index instead")
            if isinstance(p, slice) and p.step is not None and p.step < 0:
                # torch slices step forward only: the same slice of the axis
                # flipped (an arange here would be an advanced index, and
                # broadcast with the others instead of adding an axis)
                n = shape[axis]
                start, stop, step = slice_bounds(p, n)
                parts[j] = slice(n - 1 - start, n - 1 - stop, -step)
                flipped.append(axis)
        grid = t.arange(x.numel(), device=x.device).view(shape)
        pos = (grid.flip(flipped) if flipped else grid)[tuple(parts)]
        check_broadcast(op, "value", tuple(value.shape), tuple(pos.shape))
        return self._write_flat(x, pos, value, accumulate)

    def _write_flat(self, x, pos, value, accumulate):
        """A copy of x with value written (added) at the row-major flat
        positions pos, out of place: under torch.func.vmap any of x, pos and
        value may be batched without the others."""
        t = self.torch
        vals = value.broadcast_to(pos.shape).reshape(-1)
        flat, pos = x.reshape(-1), pos.reshape(-1)
        if accumulate:
            return flat.index_put((pos,), vals, accumulate=True).view(x.shape)
        # last write wins: every write to a position carries the last one's value
        win = t.full((x.numel(),), -1, dtype=t.int64, device=x.device).scatter_reduce(
            0, pos, t.arange(pos.numel(), device=x.device), "amax")
        return flat.index_put((pos,), vals[win[pos]]).view(x.shape)

    def _checked_index(self, op, p, size, axis, shape):
        t = self.torch
        if not sync_free_checks():
            if self._compiling():
                return _check_ops(t)["index"](p, size, axis, op, list(shape))
            _raise_bad_index(p, size, axis, op, shape)  # a CPU tensor: no sync to save
            return p
        t._assert_async(((p >= -size) & (p < size)).all(), str(index_out_of_range(op, None, axis, size)))
        return p.clamp(-size, size - 1)  # the device assert may come later: never write outside x

    def _positions(self, a, device):
        t = self.torch.from_numpy(np.ascontiguousarray(a).reshape(-1))
        return t.to(device) if device.type != "cpu" else t

    def masked_mean(self, x, mask, axes):
        t = self.torch
        keep = (mask if mask.dtype is t.bool else mask != 0).broadcast_to(x.shape)
        total = None
        if not self._gpu_way(x):
            # torch.where branches per element on the CPU (slow for a random
            # mask), so multiply by the mask; a NaN/inf anywhere in a slice
            # makes its sum non-finite, and only then is it done with where.
            total = (x * keep).sum(dim=axes)
            if not bool(t.isfinite(total).all()):
                total = None
        if total is None:
            total = t.where(keep, x, 0).sum(dim=axes)  # masked NaN/inf never touch the sum
        count = keep.sum(dim=axes, dtype=t.int32).clamp(min=1).to(x.dtype)
        return total / count

    def keep_topk(self, x, k, axis, fill):
        t = self.torch
        n = x.shape[axis]
        if k == n:
            return x.clone()
        if k == 0:
            return t.full_like(x, fill)
        if self._compiling():
            if x.is_cpu and not self.gpu_paths:
                # A CPU graph reads a flag for free (no device to wait for):
                # topk's choice scattered into fill unless some slice ties
                # past the k-th place (then topk's tie order decided), as
                # torch.cond so nothing breaks the graph.  Inductor, 512x4096:
                # 1.05x topk + scatter at k=4 (the flag from topk(k + 1), as
                # eager; 1.08x from a count of the tied entries).
                if (k + 1) * 64 <= n or k * 64 > n:
                    vals, idx = t.topk(x, k + 1, dim=axis)
                    v = vals.detach()
                    kth, nxt = v.narrow(axis, k - 1, 1), v.narrow(axis, k, 1)
                    excess = ((kth == nxt) | ((kth != kth) & (nxt != nxt))).any()
                    vals, idx = vals.narrow(axis, 0, k), idx.narrow(axis, 0, k)
                else:  # k + 1 would cross torch's CPU topk switch: count the ties
                    vals, idx = t.topk(x, k, dim=axis)
                    above, tied, room = self._topk_masks(x, vals, k, axis)
                    excess = (tied.sum(dim=axis, keepdim=True, dtype=room.dtype) > room).any()
                # fill as a tensor: a traced float (Dynamo's automatic dynamic)
                # cannot be an operand of torch.cond, a tensor can; both
                # branches in row-major strides (cond compares the stride
                # order, size-1 axes included, where .contiguous() of a
                # transposed (n, 1) x would keep its (1, n) strides)
                fill_t = t.full((), fill, dtype=x.dtype, device=x.device)
                row_major = t.contiguous_format
                return t.cond(excess,
                              lambda x, vals, idx, f: self._keep_topk_blocks(x, vals, k, axis, f).clone(
                                  memory_format=row_major),
                              lambda x, vals, idx, f: f.expand_as(x).scatter(axis, idx, vals).clone(
                                  memory_format=row_major),
                              (x, vals, idx, fill_t))
            vals = t.topk(x, k, dim=axis).values
            return self._keep_topk_blocks(x, vals, k, axis, fill)
        if not (self.gpu_paths or (x.is_cuda and sync_free_checks()) or self._transformed(x)):
            # topk's own choice is the contract's unless the k-th and the
            # (k+1)-th values tie.  Asking costs no device sync on the CPU and
            # one on a GPU, still cheaper there than the ~15 kernels of the
            # device-independent path below (on an H100, 512x4096: 222 vs 288 us
            # at k=4, 205 vs 309 us at k=64; native top-k + scatter ~115 us).
            if x.is_cuda or (k + 1) * 64 <= n or k * 64 > n:
                # torch's CPU topk switches algorithm at k * 64 == n: asking
                # for one more value is free unless that crosses the switch.
                vals, idx = t.topk(x, k + 1, dim=axis)  # torch.topk ranks NaN largest
                nxt = vals.detach().narrow(axis, k, 1)
                vals, idx = vals.narrow(axis, 0, k), idx.narrow(axis, 0, k)
                out = None
            else:
                vals, idx = t.topk(x, k, dim=axis)
                out = x.detach().scatter(axis, idx, -math.inf)  # the rest of x; reused for the result
                nxt = out.amax(dim=axis, keepdim=True)
            v = vals.detach()
            kth = v.narrow(axis, k - 1, 1)
            if not bool(((kth == nxt) | (t.isnan(kth) & t.isnan(nxt))).any()):
                out = t.full_like(x, fill) if out is None else out.fill_(fill)
                return out.scatter_(axis, idx, vals)
        else:
            v = t.topk(x.detach(), k, dim=axis).values
            kth = v.narrow(axis, k - 1, 1)
        # Device independent, eager: everything above the k-th value stays; of
        # the entries equal to it, the first ones by index fill the places left.
        # (Eager on a device a cumsum over x is one kernel; the compiled path's
        # block ranks below are cheaper under Inductor but launch ~10 more.)
        xd = x.detach()
        nan_t = t.isnan(kth)
        above = (xd <= kth).logical_not_().logical_and_(~nan_t)      # a NaN x is above a number
        tied = (xd == kth).logical_or_(t.isnan(xd).logical_and_(nan_t))
        room = ((v == kth) | (t.isnan(v) & nan_t)).sum(dim=axis, keepdim=True)
        keep = above.logical_or_(tied.logical_and_(tied.cumsum(dim=axis, dtype=t.int32) <= room))
        return t.where(keep, x, fill)

    def _count_dtype(self, n):
        # Counts of at most n in floats: Inductor's CPU code vectorises a
        # float sum and not an int32 one (measured 0.35 vs 4.3 ms, 512x4096).
        return self.torch.float32 if n <= 1 << 24 else self.torch.float64

    def _topk_masks(self, x, vals, k, axis):
        """(above, tied, room) of the k-th value of each slice: the entries
        above it, those equal to it (NaN ties NaN, -0.0 ties +0.0), and how
        many of the k places the tied ones take.  NaN as x != x: Inductor
        vectorises a comparison but not isnan."""
        xd, v = x.detach(), vals.detach()
        kth = v.narrow(axis, k - 1, 1)
        nan_t = kth != kth
        xnan = xd != xd
        above = (xd > kth) | (xnan & ~nan_t)                          # a NaN x is above a number
        tied = (xd == kth) | (xnan & nan_t)
        room = ((v == kth) | ((v != v) & nan_t)).sum(dim=axis, keepdim=True, dtype=self._count_dtype(x.shape[axis]))
        return above, tied, room

    def _keep_topk_blocks(self, x, vals, k, axis, fill):
        """keep_topk without a host sync or a full-length cumsum: the tied
        entries kept are those up to the position of the room-th tied entry,
        found from per-block counts (blocks of ~sqrt(n)) and one cumsum inside
        the block that holds it.  Inductor, 512x4096: 1.2x topk + scatter at
        k=4 (vs 2.9x with a cumsum over x)."""
        t = self.torch
        n = x.shape[axis]
        above, tied, room = self._topk_masks(x, vals, k, axis)
        p = self._nth_true(tied.movedim(axis, -1), room.movedim(axis, -1), n).movedim(-1, axis)
        shape = [1] * x.dim()
        shape[axis] = n
        pos = t.arange(n, device=x.device).view(shape)
        return t.where(above | (tied & (pos <= p)), x, fill)

    def _nth_true(self, mask, nth, n):
        """Per slice of the last axis (kept as size 1): the position of the
        nth True of mask (nth >= 1, a float count no larger than mask's)."""
        s = 8
        while s * s < n:
            s *= 2
        nb = -(-n // s)
        f = mask.to(nth.dtype)
        if nb * s != n:
            f = self.F.pad(f, (0, nb * s - n))
        blocks = f.unflatten(-1, (nb, s))
        cnt = blocks.sum(-1)
        upto = cnt.cumsum(-1)
        b = (upto < nth).sum(-1, keepdim=True)                          # blocks wholly before the nth
        inner = blocks.gather(-2, b.unsqueeze(-1).expand(*b.shape, s)).squeeze(-2).cumsum(-1)
        rank = inner + (upto.gather(-1, b) - cnt.gather(-1, b))
        return b * s + (rank < nth).sum(-1, keepdim=True)

    def softmax(self, x, axis):
        t = self.torch
        if x.shape[axis] == 0:
            return x.clone()
        out = t.softmax(x, dim=axis)
        # Only an all -inf slice needs fixing, and torch makes such a slice
        # all NaN; on the CPU look at one entry per slice first (no sync cost).
        if not self._gpu_way(x) and not bool(t.isnan(out.narrow(axis, 0, 1)).any()):
            return out
        dead = x.amax(dim=axis, keepdim=True) == -math.inf
        if x.requires_grad or self._transformed(x):
            # Keep NaN out of the backward pass: feed dead slices zeros.
            return t.where(dead, 0, t.softmax(t.where(dead, 0, x), dim=axis))
        return out.masked_fill_(dead, 0)

    def embedding_mean(self, table, ids, pad_id):
        t = self.torch
        n, L = ids.shape
        V, d = table.shape
        if n == 0 or L == 0 or d == 0:  # (embedding_bag's CUDA backward crashes on d == 0)
            return table.new_zeros((n, d))
        if ids.dtype is not t.int64 and (ids.dtype is not t.int32 or not -2**31 <= pad_id < 2**31):
            # (torch compares int32 ids with a wider pad_id modulo 2**32: 2**40 would match id 0)
            ids = ids.to(t.int64)
        if self._in_graph(ids):
            if not sync_free_checks():
                ids = _check_ops(t)["ids"](ids, V, pad_id)
            else:
                t._assert_async((((ids >= 0) & (ids < V)) | (ids == pad_id)).all(),
                                str(id_out_of_range("embedding_mean", None, V, pad_id)))
                # the device assert may fire after the lookup is queued: every
                # read stays inside the table (a pad id stays what it is)
                ids = t.where(ids == pad_id, ids, ids.clamp(0, V - 1))
        if table.is_complex():  # embedding_bag takes real tables only
            return t.complex(self.embedding_mean(table.real, ids, pad_id),
                             self.embedding_mean(table.imag, ids, pad_id))
        if 0 <= pad_id < V:
            # padding_idx leaves pad entries out of the sum and of the divisor,
            # gives all-padding rows zeros, and the pad row a zero gradient.
            return self.F.embedding_bag(ids, table, mode="mean", padding_idx=pad_id)
        # pad_id is no row of the table: point pad entries at row 0 with weight 0.
        real = ids != pad_id
        count = real.sum(dim=1, keepdim=True).clamp(min=1).to(table.dtype)
        weights = real.to(table.dtype) / count
        return self.F.embedding_bag(t.where(real, ids, 0), table, mode="sum",
                                    per_sample_weights=weights)

    # -- math for nn (torch's own functions: autograd records them) -------
    def tanh(self, x):
        return self.asarray(x).tanh()

    def relu(self, x):
        return self.asarray(x).relu()

    def exp(self, x):
        return self.asarray(x).exp()

    def log(self, x):
        return self.asarray(x).log()

    def reduce_sum(self, x, axis, keepdims):
        return self.asarray(x).sum(dim=axis, keepdim=keepdims)

    def reduce_max(self, x, axis, keepdims):
        return self.asarray(x).amax(dim=axis, keepdim=keepdims)

    # -- autodiff and compilation ------------------------------------------
    def value_and_grad(self, f, argnums, args, kwargs):
        t = self.torch
        args = list(args)
        for n in set(argnums):
            args[n] = self._grad_input(args[n])
        value = f(*args, **kwargs)
        if not isinstance(value, self._Tensor):
            value = self.asarray(value)
        check_scalar_output(tuple(value.shape))
        inputs = [args[n] for n in argnums]
        if value.requires_grad:
            grads = t.autograd.grad(value, inputs, allow_unused=True)
        else:
            grads = (None,) * len(inputs)
        return value.detach(), tuple(g if g is not None else t.zeros_like(a) for g, a in zip(grads, inputs))

    def _grad_input(self, x):
        """A fresh float leaf tensor requiring grad (a sparse one for sparse x)."""
        t = self.torch
        if is_scipy_sparse(x):
            x = self.sparse_from_scipy(scipy_grad_input(x)).to_sparse_coo()
        elif not isinstance(x, self._Tensor):
            x = self.asarray(x)
        if not (x.is_floating_point() or x.is_complex()):
            x = x.to(t.float64)
        if x.layout is self._coo:
            x = x.coalesce()
        return x.detach().requires_grad_()

    def function(self, f):
        return f

    def compile(self, f, mode=None):
        # Inductor by default; UNIBACKEND_TORCH_COMPILER=aot_eager traces the
        # same graph (Dynamo + AOT autograd) without generating code: make
        # conformance uses it to stay within its time (docs/backends/torch.md).
        import os

        dynamic = self._compile_mode(mode) == "dynamic"
        compiler = os.environ.get("UNIBACKEND_TORCH_COMPILER", "").strip() or "inductor"
        compiled = self.torch.compile(f, fullgraph=True, backend=compiler, **({"dynamic": True} if dynamic else {}))
        unsupported = self.torch._dynamo.exc.Unsupported

        def run(*args, **kwargs):
            try:
                return compiled(*args, **kwargs)
            except unsupported as e:
                # fullgraph=True turns an exception raised while tracing (the
                # core's check of a bad argument) into Unsupported("Observed
                # exception"), with the original only as text: raise that.
                found = _observed(e)
                if found is None:
                    raise
                raise found from None

        run.compiled = compiled  # type: ignore[attr-defined]  # for tests: torch's own compiled function
        return run

    def vmap(self, f):
        return self.torch.func.vmap(f)

    def transform_grad(self, f, how="grad"):
        func = self.torch.func
        return func.grad(f) if how == "grad" else func.jacrev(f)
