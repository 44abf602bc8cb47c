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
from typing import Any

import numpy as np

from . import _errors as E

# --------------------------------------------------------------------------
# Sync-free value checks

_sync_free_default = False
_sync_free: contextvars.ContextVar = contextvars.ContextVar("unibackend_sync_free", default=None)


def set_sync_free(enabled: bool = True) -> None:
    """Set the process default of :func:`sync_free` (False at start).

    Parameters
    ----------
    enabled : bool, default True

    Raises
    ------
    TypeError
        When ``enabled`` is not a bool.

    Examples
    --------
    >>> import unibackend as ub
    >>> ub.set_sync_free(True)
    >>> ub.set_sync_free(False)
    """
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
    and raise the contract's exception before any work.

    Parameters
    ----------
    enabled : bool, default True

    Returns
    -------
    context manager

    Raises
    ------
    TypeError
        When ``enabled`` is not a bool.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> with ub.sync_free():   # on numpy (no device) the checks are the same
    ...     ub.embedding_mean(np.ones((3, 2)), np.array([[1, 2]]))
    array([[1., 1.]])
    """
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
#: (``dtype.name`` is Python code in numpy: 16 reads, not 512, at import.)
_COMMON = [(d.name, d) for d in map(np.dtype, "?bhilqBHILQefdFD")]
_PROMOTED = {(an, bn): np.result_type(a, b) for an, a in _COMMON for bn, b in _COMMON}
del _COMMON


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
                raise E.no_common_dtype(op, dts, e) from None
    if isinstance(out, np.dtype) and out.kind in "biu":
        return np.dtype(np.float64)
    return out


# --------------------------------------------------------------------------
# What a tensor argument may be

#: Python types that never hold numbers (a str is a sequence, a dict iterable).
_NOT_NUMBERS = (str, bytes, bytearray, dict, set, frozenset, type(None))
#: Neutral types that always hold numbers: no conversion needed to know.
_NUMBERS = (bool, int, float, complex)


def is_number_dtype(dt):
    """Whether numpy dtype ``dt`` holds numbers (a framework dtype without a
    numpy twin, torch's bfloat16 without ml_dtypes, counts as a number)."""
    if not isinstance(dt, np.dtype):
        return True
    return dt.kind in "biufc" or dt.name == "bfloat16"  # ml_dtypes' bfloat16 is kind "V"


def dtype_text(x, dt):
    """How an error names the dtype of native tensor ``x`` (its framework's
    own name when numpy's would hide it: a TF string tensor is ``string``, not
    ``object``)."""
    own = getattr(x, "dtype", None)
    if own is None or isinstance(own, np.dtype) or not (isinstance(dt, np.dtype) and dt.kind == "O"):
        return f"dtype {dt}"
    return f"dtype {getattr(own, 'name', own)}"


def neutral_kind(x):
    """The dtype numpy gives neutral ``x`` (a list, a scalar, an array), its
    type name when it is no array at all, None for a Python number.  Its
    answer depends on ``x`` alone: a tracing compiler calls it rather than
    follow it (``Backend.trace_constant``; torch.compile reads no ndarray.dtype)."""
    t = type(x)
    if t is np.ndarray or isinstance(x, np.generic):
        return x.dtype
    if isinstance(getattr(x, "dtype", None), np.dtype):  # scipy.sparse, and other array types
        return x.dtype
    if isinstance(x, _NOT_NUMBERS):
        return t.__name__
    if isinstance(x, _NUMBERS):
        return None
    try:
        return np.asarray(x).dtype
    except (ValueError, TypeError):  # a ragged list: numpy refuses it
        return f"a ragged {t.__name__}"


def check_numeric(op, arg, x, native, error=E.not_numeric):
    """TypeError unless ``x`` holds numbers; ``native``: whether ``x`` is a
    tensor of the backend (then its dtype is read later, nothing is
    converted here); ``error``: the builder of the TypeError."""
    if native or isinstance(x, _NUMBERS):  # (a number a compiler traces as symbolic stays out of neutral_kind)
        return
    got = neutral_kind(x)
    if got is None or (isinstance(got, np.dtype) and is_number_dtype(got)):
        return
    raise error(op, arg, f"dtype {got}" if isinstance(got, np.dtype) else got)


def check_number_dtype(op, arg, x, dt):
    """TypeError unless the dtype ``dt`` of native tensor ``x`` holds numbers."""
    if not is_number_dtype(dt):
        raise E.not_numeric(op, arg, dtype_text(x, dt))


def check_mask(op, arg, x, dt):
    """A mask is boolean or integer: an integer mask counts 0 as False and any
    other value as True (its values are never read to check they are 0/1, so
    the rule is the same eager, traced and lazy).  Anything else: TypeError."""
    if not (isinstance(dt, np.dtype) and dt.kind in "biu"):
        raise E.bad_mask(op, arg, dtype_text(x, dt))


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
    shape, target = tuple(shape), tuple(target)
    # by hand, not np.broadcast_shapes: torch.compile maps that to its own,
    # which raises its RuntimeError while tracing
    fits = len(shape) <= len(target) and all(a == 1 or a == b for a, b in zip(reversed(shape), reversed(target)))
    if not fits:
        raise E.does_not_broadcast(op, arg, shape, target)


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
# set_subtensor / inc_subtensor indices: one walk for every backend

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
    """A normalised ``x[index]`` whose values are all known: what a plugin
    needs to write it.

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


@dataclass
class GraphIndex:
    """An index checked as far as its values are known, for a plugin to apply
    to ``x`` in its graph (``x``'s shape or an index tensor's values exist only
    when the graph runs, or must not be read on the host).

    ``parts``: the index as a tuple (lists made numpy arrays; native tensors
    as given).  ``axes[j]``: the axis of ``x`` that part j starts at (None for
    ``None`` and ``...``).  ``xshape``: ``x``'s shape, None for an open dim.
    Types, the number of axes, boolean shapes and every value known here are
    checked; the plugin checks in its graph the parts :meth:`unchecked` names
    (raising :func:`unibackend.plugin.index_out_of_range`'s error).
    """

    op: str
    parts: tuple
    axes: tuple
    xshape: tuple
    _unchecked: tuple = ()

    def unchecked(self):
        """(j, axis, size) of each int part whose range the plugin checks in
        its graph (``size`` None: the axis' size is open)."""
        return tuple((j, self.axes[j], self.xshape[self.axes[j]]) for j in self._unchecked)


def _index_kind(op, B, p, native):
    """The kind of index part ``p``: 'none', 'ellipsis', 'slice', 'int',
    'bool' (a mask), 'ints' (an int array); IndexError for anything else."""
    if p is None:
        return "none"
    if p is Ellipsis:
        return "ellipsis"
    if isinstance(p, slice):
        return "slice"
    if isinstance(p, (bool, np.bool_)):
        return "bool"
    if isinstance(p, numbers.Integral):
        return "int"
    if native:
        dt = _dtype_of(B, p)
        if isinstance(dt, np.dtype) and dt.kind in "biu":
            return "bool" if dt.kind == "b" else "ints"
        raise E.index_not_integer(op, dtype_text(p, dt)[len("dtype "):])
    if isinstance(p, np.ndarray):
        if p.dtype.kind in "biu":
            return "bool" if p.dtype.kind == "b" else "ints"
        raise E.index_not_integer(op, p.dtype)
    raise E.index_part_invalid(op, p)


def _dtype_of(B, p):
    return B.dtype(p) if B is not None else np.dtype(p.dtype)


def _shape_of(B, p, native):
    if not native:
        return tuple(p.shape)
    return tuple(B.shape(p)) if B is not None else tuple(p.shape)


def index_walk(op, B, index, xshape, owner, to_numpy=None, readable=None):
    """Check ``index`` for ``x`` of shape ``xshape`` (None: an open dim) as far
    as its values are known, numpy's rules and words (IndexError).  Returns
    (parts, kinds, axes, unchecked): ``unchecked`` lists the int parts whose
    range only a graph can check.  ``owner(p)``: whether p is a native tensor;
    ``to_numpy``: reads a native part's values (None: they stay unread);
    ``readable(p)``: whether native part p's values may be read (default: all)."""
    raw = index if isinstance(index, tuple) else (index,)
    parts, kinds = [], []
    for p in raw:
        native = owner(p)
        if isinstance(p, list):
            p = np.asarray(p)
            if p.size == 0 and p.dtype.kind == "f":  # numpy reads x[[]] as an int index
                p = p.astype(np.int64)
        kinds.append(_index_kind(op, B, p, native))
        parts.append(p)
    if kinds.count("ellipsis") > 1:
        raise E.index_invalid(op, index, xshape, "an index can only have a single ellipsis ('...')")

    def width(p, kind):
        if kind == "bool":
            return 0 if isinstance(p, (bool, np.bool_)) else len(_shape_of(B, p, owner(p)))
        return 0 if kind in ("none", "ellipsis") else 1

    widths = [width(p, k) for p, k in zip(parts, kinds)]
    nd = len(xshape)
    if sum(widths) > nd:
        raise E.too_many_indices(op, sum(widths), nd)
    axes: list[int | None] = []
    unchecked: list[int] = []
    axis = 0
    for j, (p, kind, w) in enumerate(zip(parts, kinds, widths)):
        if kind == "ellipsis":
            axes.append(None)
            axis += nd - sum(widths)
            continue
        axes.append(None if kind == "none" else axis)
        if kind == "bool" and w:
            pshape = _shape_of(B, p, owner(p))
            for i, (got, size) in enumerate(zip(pshape, xshape[axis:axis + w])):
                if got is not None and size is not None and got != size:
                    raise E.mask_shape_mismatch(op, axis + i, got, size)
        elif kind in ("int", "ints"):
            size = xshape[axis]
            native = owner(p)
            if size is None or (native and (to_numpy is None or (readable is not None and not readable(p)))):
                unchecked.append(j)
            else:
                vals = np.asarray(to_numpy(p) if native else p)
                bad = vals[(vals < -size) | (vals >= size)]
                if bad.size:
                    raise E.index_out_of_range(op, int(bad.flat[0]), axis, size)
        axis += w
    return tuple(parts), tuple(kinds), tuple(axes), tuple(unchecked)


def graph_index(op, B, index, xshape, owner, readable):
    """The :class:`GraphIndex` of ``index`` (see :func:`index_walk`): native
    parts whose values are ``readable`` are checked here too."""
    parts, _, axes, unchecked = index_walk(op, B, index, xshape, owner, B.to_numpy, readable)
    return GraphIndex(op, parts, axes, tuple(xshape), unchecked)


def subtensor(op, xshape, index, to_numpy, B=None, owner=None):
    """Check ``index`` against the known ``xshape`` with numpy's rules
    (IndexError) and normalise it: a :class:`Subtensor`."""
    xshape = tuple(int(d) for d in xshape)
    if owner is None:  # a plugin's call: every part's values are readable
        owner = _readable
    parts, _, _, _ = index_walk(op, B, index, xshape, owner, to_numpy)
    idx = tuple(np.asarray(to_numpy(p)) if owner(p) else p for p in parts)
    basic = all(_is_basic_part(p) for p in idx)
    probe = np.broadcast_to(_PROBE, xshape)
    try:
        sel = probe[idx]
    except (IndexError, TypeError, ValueError) as e:  # e.g. index arrays that do not broadcast together
        raise E.index_invalid(op, index, xshape, e) from None
    if basic:
        # Expand the Ellipsis and make every int/slice explicit and non-negative.
        n_real = sum(1 for p in idx if p is not Ellipsis)
        full: list[Any] = []
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


def _readable(p):
    """Without a backend: any array-like part other than numpy's own is a
    tensor whose values ``to_numpy`` reads."""
    return not isinstance(p, (np.ndarray, list, slice, numbers.Integral, np.bool_)) and p is not None \
        and p is not Ellipsis and hasattr(p, "dtype")
