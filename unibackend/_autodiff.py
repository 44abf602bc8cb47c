"""grad, value_and_grad and function: dispatched like the ops."""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable

from . import _registry as R
from ._errors import CapabilityError


@contextlib.contextmanager
def running_on(B):
    """Make plugin ``B`` the backend in force while ``f`` runs, so that
    neutral constants inside ``f`` go where its arguments went."""
    token = R._current.set((B.name, B.device))
    try:
        yield
    finally:
        R._current.reset(token)


def _autodiff_backend(op, args):
    B = R.resolve(op, *args)
    if not B.capabilities.autodiff:
        able = [i.name for i in R.backends() if "autodiff" in i.capabilities and not i.alias_of]
        raise CapabilityError(
            f"{op}: backend {B.name!r} has no autodiff; use one of: {', '.join(able)} "
            f"(e.g. ub.use_backend({able[0]!r}))" if able else f"{op}: no installed backend has autodiff"
        )
    return B


def _check_argnums(op, argnums, nargs):
    """``argnums`` (an int or a tuple of ints) as a tuple of non-negative ints."""
    nums = argnums if isinstance(argnums, tuple) else (argnums,)
    for n in nums:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{op}: argnums must be an int or a tuple of ints, got {argnums!r}")
        if not -nargs <= n < nargs:
            raise ValueError(f"{op}: argnums={argnums!r} is out of range for {nargs} arguments")
    return tuple(n % nargs for n in nums)


def value_and_grad(f: Callable[..., Any], argnums: int | tuple[int, ...] = 0) -> Callable[..., tuple[Any, Any]]:
    """``g(*args) -> (f(*args), df/dargs[argnums])``; f returns a scalar.
    ``argnums`` an int gives one gradient, a tuple gives a tuple."""

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        op = "value_and_grad"
        B = _autodiff_backend(op, args)
        if R._unwrap:
            args = R.unwrap(op, *args)
        nums = _check_argnums(op, argnums, len(args))
        with running_on(B):
            value, grads = B.value_and_grad(f, nums, args, kwargs)
        return value, (tuple(grads) if isinstance(argnums, tuple) else grads[0])

    return wrapped


def grad(f: Callable[..., Any], argnums: int | tuple[int, ...] = 0) -> Callable[..., Any]:
    """``g(*args) -> df/dargs[argnums]``; f returns a scalar."""
    vg = value_and_grad(f, argnums)

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        return vg(*args, **kwargs)[1]

    return wrapped


def function(f: Callable[..., Any]) -> Callable[..., Any]:
    """A callable from arrays to arrays: compiled once per input signature on
    theano, a tf.function on tensorflow, ``f`` itself on torch and numpy."""
    compiled: dict[tuple[str, str | None], Callable[..., Any]] = {}

    @functools.wraps(f)
    def wrapped(*args):
        B = R.resolve("function", *args)
        if R._unwrap:
            args = R.unwrap("function", *args)
        key = (B.name, B.device)
        fn = compiled.get(key)
        if fn is None:
            fn = compiled[key] = B.function(f)
        with running_on(B):
            return fn(*args)

    return wrapped
