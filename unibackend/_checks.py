"""Argument checks and normalisation shared by every backend.

Each function raises the exception numpy would raise, with a message that
names the op, the argument and what was wrong, before any work is done.
"""
from __future__ import annotations

import contextlib
import contextvars
import numbers
import operator
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

# --------------------------------------------------------------------------
# Sync-free value checks

_sync_free_default = False
_sync_free: contextvars.ContextVar = contextvars.ContextVar("unibackend_sync_free", default=None)


def set_sync_free(enabled: bool = True) -> None:
    """Process default for :func:`sync_free_checks` (False at start)."""
    global _sync_free_default
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"set_sync_free: enabled must be a bool, got {enabled!r}")
    _sync_free_default = bool(enabled)


@contextlib.contextmanager
def sync_free(enabled: bool = True) -> Iterator[None]:
    """Inside the block (context-local), value checks on a device run on the
    device without a host sync: bad ids or indices fail that call or a later
    one, as the framework's own index ops do, and no read outside a table or
    ``x`` ever happens.  The default checks read the values on the host first
    and raise the contract's exception before any work."""
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"sync_free: enabled must be a bool, got {enabled!r}")
    token = _sync_free.set(bool(enabled))
    try:
        yield
    finally:
        _sync_free.reset(token)


def sync_free_checks():
    """Whether value checks on devices run without a host sync here.  Inside a
    compiled function the mode in force when it was traced holds."""
    v = _sync_free.get()
    return _sync_free_default if v is None else v


def is_scipy_sparse(x):
    mod = type(x).__module__
    if not mod.startswith("scipy.sparse"):
        return False
    import scipy.sparse as sp

    return sp.issparse(x)


#: numpy.result_type of every pair of the common dtypes, keyed by their
#: names, computed once: a tracing compiler (torch.compile) follows a dict
#: lookup by strings, but neither hashes a dtype nor calls numpy.result_type.
_PROMOTED = {
    (a.name, b.name): np.result_type(a, b)
    for a in map(np.dtype, "?bhilqBHILQefdFD")
    for b in map(np.dtype, "?bhilqBHILQefdFD")
}


def result_float(op, *dtypes):
    """numpy.result_type of the inputs; integer and bool inputs promote to
    float64 (as numpy's mean does), since every op here computes in floats."""
    dts = [d for d in dtypes if d is not None]
    if not dts:
        return None
    first = dts[0]
    if all(d == first for d in dts):
        out = first
    else:
        pair = len(dts) == 2 and isinstance(dts[0], np.dtype) and isinstance(dts[1], np.dtype)
        out = _PROMOTED.get((dts[0].name, dts[1].name)) if pair else None
        if out is None:
            try:
                out = np.result_type(*dts)
            except TypeError as e:
                raise TypeError(f"{op}: cannot combine dtypes {', '.join(map(str, dts))}: {e}") from None
    if isinstance(out, np.dtype):
        if out.kind in "biu":
            return np.dtype(np.float64)
        if out.kind not in "fc" and out.name != "bfloat16":  # ml_dtypes' bfloat16 is kind "V"
            raise TypeError(f"{op}: dtype {out} is not a number type")
    return out


def check_real(op, arg, dtype):
    """Ops that order values (argsort, keep_topk, softmax) refuse complex
    numbers on every backend (numpy would order them lexicographically)."""
    if isinstance(dtype, np.dtype) and dtype.kind == "c":
        raise TypeError(f"{op}: {arg} is complex ({dtype}); complex numbers have no order")


def axis_index(op, arg, axis, ndim):
    """A non-negative axis in [0, ndim)."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{op}: {arg} must be an int, got {axis!r}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: {arg}={axis} is out of range for an array of {ndim} dims")
    return axis % ndim


def axes_tuple(op, arg, axis, ndim):
    """None (all axes), an int or a tuple of ints -> sorted tuple of distinct axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        out = tuple(axis_index(op, arg, a, ndim) for a in axis)
        if len(set(out)) != len(out):
            raise ValueError(f"{op}: {arg}={tuple(axis)} repeats an axis")
        return tuple(sorted(out))
    return (axis_index(op, arg, axis, ndim),)


def check_ndim(op, arg, shape, allowed):
    nd = len(shape)
    if nd not in allowed:
        want = " or ".join(map(str, allowed)) if len(allowed) < 4 else f">= {min(allowed)}"
        raise ValueError(f"{op}: {arg} must have {want} dims, got shape {tuple(shape)}")


def check_int(op, arg, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: {arg} must be an int, got {value!r}")
    return int(value)


def same_dim(a, b):
    return a is None or b is None or a == b


def check_broadcast(op, arg, shape, target):
    """``shape`` must broadcast to exactly ``target`` (numpy's assignment rule)."""
    if any(d is None for d in tuple(shape) + tuple(target)):
        return
    try:
        out = np.broadcast_shapes(tuple(shape), tuple(target))
    except ValueError:
        out = None
    if out != tuple(target):
        raise ValueError(
            f"{op}: {arg} of shape {tuple(shape)} does not broadcast to shape {tuple(target)}"
        )


def canonical_csr(op, x, dtype=None):
    """A scipy CSR matrix with duplicates summed and indices sorted, without
    touching ``x`` (explicit zeros are kept: they are stored positions)."""
    import scipy.sparse as sp

    if x.ndim != 2:
        raise ValueError(f"{op}: x must be a 2-D sparse matrix, got shape {x.shape}")
    csr = x.tocsr()
    if csr is x and not csr.has_canonical_format:
        csr = csr.copy()
    csr.sum_duplicates()
    if not isinstance(csr, sp.csr_matrix):
        csr = sp.csr_matrix(csr)
    if dtype is not None and csr.dtype != dtype:
        csr = csr.astype(dtype)
    return csr


# --------------------------------------------------------------------------
# set_subtensor / inc_subtensor indices

_PROBE = np.zeros((), np.int8)


def _is_basic_part(p):
    if isinstance(p, (bool, np.bool_)):
        return False
    if isinstance(p, numbers.Integral) or p is Ellipsis:
        return True
    if isinstance(p, slice):
        return p.step is None or operator.index(p.step) > 0
    return False


@dataclass
class Subtensor:
    """A normalised ``x[index]``: what a plugin needs to write it.

    ``basic``: the index is ints and forward slices only, given as ``index`` (a
    tuple with ints made non-negative and slices made explicit), so a plugin
    can assign into a copy.  Otherwise ``positions()`` gives the flat positions
    into ``x`` that the index names, in numpy's order, of shape ``shape``.
    """

    xshape: tuple
    index: tuple
    shape: tuple
    basic: bool
    _pos: np.ndarray | None = field(default=None, repr=False)

    def positions(self):
        if self._pos is None:
            size = int(np.prod(self.xshape, dtype=np.int64))
            self._pos = np.arange(size, dtype=np.int64).reshape(self.xshape)[self.index]
        return self._pos

    def last_writes(self):
        """(positions, take): each position once, with the index into the
        flattened broadcast value of its last write (take None: no repeats)."""
        pos = self.positions().reshape(-1)
        uniq, first_rev = np.unique(pos[::-1], return_index=True)
        if uniq.size == pos.size:
            return pos, None
        return uniq, (pos.size - 1 - first_rev).astype(np.int64)


def subtensor(op, xshape, index, to_numpy):
    """Check ``index`` against ``xshape`` with numpy's rules (IndexError)."""
    parts = index if isinstance(index, tuple) else (index,)
    conv = []
    for p in parts:
        if p is None or p is Ellipsis or isinstance(p, (slice, numbers.Integral, np.bool_)):
            conv.append(p)
        elif isinstance(p, (list, np.ndarray)):
            conv.append(np.asarray(p) if isinstance(p, list) else p)
        else:
            conv.append(to_numpy(p))
    for p in conv:
        if isinstance(p, np.ndarray) and p.dtype.kind not in "biu":
            raise IndexError(
                f"{op}: index arrays must be of integer or boolean type, got {p.dtype}"
            )
    xshape = tuple(int(d) for d in xshape)
    idx = tuple(conv)
    basic = all(_is_basic_part(p) for p in idx)
    probe = np.broadcast_to(_PROBE, xshape)
    try:
        sel = probe[idx]
    except IndexError as e:
        raise IndexError(f"{op}: index {index!r} is invalid for shape {xshape}: {e}") from None
    if basic:
        # Expand the Ellipsis and make every int/slice explicit and non-negative.
        n_real = sum(1 for p in idx if p is not Ellipsis)
        full = []
        for p in idx:
            if p is Ellipsis:
                full.extend([slice(None)] * (len(xshape) - n_real))
            else:
                full.append(p)
        full.extend([slice(None)] * (len(xshape) - len(full)))
        norm = []
        for p, n in zip(full, xshape):
            if isinstance(p, slice):
                norm.append(slice(*slice_bounds(p, n)))
            else:
                norm.append(int(p) % n)
        return Subtensor(xshape, tuple(norm), sel.shape, True)
    return Subtensor(xshape, idx, sel.shape, False)


def slice_bounds(s, n):
    """``s.indices(n)``, written out: torch.compile before torch 2.13 cannot
    trace the builtin ``slice.indices`` (an ``Unsupported`` graph break)."""
    step = 1 if s.step is None else operator.index(s.step)
    if step == 0:
        raise ValueError("slice step cannot be zero")
    lo, hi = (0, n) if step > 0 else (-1, n - 1)

    def clamp(v, default):
        if v is None:
            return default
        v = operator.index(v)
        return max(v + n, lo) if v < 0 else min(v, hi)

    return clamp(s.start, lo if step > 0 else hi), clamp(s.stop, hi if step > 0 else lo), step
