"""The exceptions unibackend raises itself, and the words of every contract
error (bad input raises numpy's kinds).

Each builder returns the exception to raise; the core and the plugins raise
what it returns and never compose the sentence themselves, so a bad input
reads the same on every backend and in every mode.  A plugin that checks a
value inside a graph, where the value is known only when the graph runs,
passes a placeholder such as ``"{bad}"`` for it and fills it in there
(:func:`fill`, or ``str.format``).
"""
from __future__ import annotations

import re
from typing import Any


class BackendNotAvailable(ImportError):
    """A backend's framework is not installed (the message names the pip extra)."""


class CapabilityError(NotImplementedError):
    """The backend in force lacks a capability the call needs (autodiff, sparse, ...)."""


def unsupported_in_mode(op: str, mode: str, why: str) -> TypeError:
    """The contract's error for an op a framework cannot run in a call mode
    (a function transform, a compiler): which op, which mode, and why.
    docs/semantics.md ("Call modes") lists every pair that raises it."""
    return TypeError(f"{op}: not supported under {mode}: {why}")
# --------------------------------------------------------------------------
# Bad arguments (TypeError): the kind of thing passed is wrong.

def not_numeric(op: str, arg: str, got: Any) -> TypeError:
    """A tensor argument that holds no numbers: ``got`` is a type name or a dtype."""
    return TypeError(f"{op}: {arg} must be a numeric tensor, got {got}")


def bad_mask(op: str, arg: str, got: Any) -> TypeError:
    """A mask that is neither boolean nor integer (``got``: its type or dtype)."""
    return TypeError(f"{op}: {arg} must be a boolean or integer (0/1) mask, got {got}")


def not_integer_ids(op: str, arg: str, dtype: Any) -> TypeError:
    return TypeError(f"{op}: {arg} must be integers, got dtype {dtype}")


def no_common_dtype(op: str, dtypes: Any, why: Any) -> TypeError:
    return TypeError(f"{op}: cannot combine dtypes {', '.join(map(str, dtypes))}: {why}")


# --------------------------------------------------------------------------
# Bad values (IndexError): an id or an index outside what it indexes.

def id_out_of_range(op: str, bad: Any, rows: Any, pad_id: Any, last: Any = None) -> IndexError:
    """An id outside a table of ``rows`` rows (a graph passes placeholders
    for ``rows`` and ``last``, the last valid id; ``bad`` None: a check that
    cannot report the value, a device assert)."""
    last = rows - 1 if last is None else last
    what = "an id" if bad is None else f"id {bad}"
    return IndexError(f"{op}: {what} is out of range for a table of {rows} rows (valid: 0..{last}, pad_id={pad_id})")


def index_out_of_range(op: str, bad: Any, axis: Any, size: Any) -> IndexError:
    """numpy's words for an int index outside ``-size <= i < size`` (``bad``
    None: a check that cannot report the value)."""
    what = "an index" if bad is None else f"index {bad}"
    return IndexError(f"{op}: {what} is out of bounds for axis {axis} with size {size}")


def index_not_integer(op: str, got: Any) -> IndexError:
    """An index part that is not an int, slice, None, ``...`` or an integer
    or boolean array (``got``: its value or its dtype)."""
    return IndexError(f"{op}: index arrays must be of integer or boolean type, got {got}")


def index_part_invalid(op: str, part: Any) -> IndexError:
    """An index part of no index type (a float, a string, a dict, ...)."""
    return IndexError(f"{op}: index part {part!r} is not valid: use ints, slices, ..., None, "
                      "or integer or boolean arrays")


def index_invalid(op: str, index: Any, xshape: Any, why: Any) -> IndexError:
    """An index numpy refuses for another reason (``why``: numpy's words)."""
    return IndexError(f"{op}: index {index!r} is invalid for shape {tuple(xshape)}: {why}")


def too_many_indices(op: str, used: Any, ndim: Any) -> IndexError:
    return IndexError(f"{op}: too many indices: {used} were indexed but the array has {ndim} dims")


def mask_shape_mismatch(op: str, axis: Any, got: Any, size: Any) -> IndexError:
    return IndexError(f"{op}: a boolean index of size {got} does not match axis {axis} of size {size}")


# --------------------------------------------------------------------------
# Bad shapes and sizes (ValueError).

def does_not_broadcast(op: str, arg: str, shape: Any, target: Any) -> ValueError:
    return ValueError(f"{op}: {arg} of shape {shape} does not broadcast to shape {target}")


def k_out_of_range(op: str, k: Any, n: Any, axis: Any) -> ValueError:
    return ValueError(f"{op}: k={k} is out of range: need 0 <= k <= {n} (the size of axis {axis})")


def dot_not_aligned(a_shape: Any, b_shape: Any, a_last: Any, b_first: Any) -> ValueError:
    """dot's operands whose inner dims differ (a graph passes placeholders)."""
    return ValueError(f"dot: shapes {a_shape} and {b_shape} are not aligned: "
                      f"a's last dim {a_last} != b's first dim {b_first}")


def sparse_dot_not_aligned(x_shape: Any, w_shape: Any, x_cols: Any, w_rows: Any) -> ValueError:
    """sparse_dot's x and w whose inner dims differ (a graph passes placeholders)."""
    return ValueError(f"sparse_dot: shapes {x_shape} and {w_shape} are not aligned: "
                      f"x has {x_cols} columns but w has {w_rows} rows")


def entry_outside_shape(op: str, arg: str, position: Any, shape: Any) -> IndexError:
    """A sparse tensor that stores an entry outside its own dense shape."""
    return IndexError(f"{op}: {arg} stores an entry at index {position}, outside its shape {shape}")


# --------------------------------------------------------------------------
# What one framework cannot do or hold (the backend's name says which).

def cannot_order(op: str, dtype: Any, backend: str) -> TypeError:
    """A dtype the backend's sort primitives cannot order."""
    return TypeError(f"{op}: cannot order values of dtype {dtype} on {backend}")


def unsupported_dtype(backend: str, dtype: Any, why: str) -> TypeError:
    """A dtype the backend cannot hold as asked (``why``: what would happen)."""
    return TypeError(f"{backend} backend: dtype {dtype} {why}")


def unknown_rank(backend: str, what: str) -> ValueError:
    """A tensor whose number of dims is unknown (``what``: how it was declared)."""
    return ValueError(f"{backend}: a tensor of unknown rank ({what}) is not supported")


def two_devices(op: str, first: Any, second: Any, how: str) -> ValueError:
    """An op's tensors on two devices (``how``: the framework's way to move one)."""
    return ValueError(f"{op}: tensors on two devices, {first} and {second}; move one with {how}")


def cpu_only(backend: str, device: Any) -> ValueError:
    return ValueError(f"backend {backend!r} runs on the CPU only, got device={device!r}")


def no_device(backend: str, device: Any, why: Any) -> ValueError:
    return ValueError(f"{backend} backend: no device {device!r} ({why})")


def no_value_yet(what: str, how: str) -> TypeError:
    """to_numpy of a symbolic value: ``what`` it is, ``how`` to get values."""
    return TypeError(f"to_numpy: {what} has no value until its graph runs; {how}")


def not_hashable(op: str, arg: Any) -> TypeError:
    """A static argument of a compiled function that is neither an array nor hashable."""
    return TypeError(f"{op}: argument {arg!r} of type {type(arg).__name__} is neither an array nor hashable")


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fill(message: str) -> list[str]:
    """``message`` cut at its placeholders: text, name, text, name, ..., text
    (a graph joins the text with the values it names)."""
    return _PLACEHOLDER.split(message)
