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
    ``argnums`` an int gives one gradient, a tuple gives a tuple.

    ``g`` runs ``f`` on the autodiff backend its arguments select (a native
    tensor's own, else the backend in force).

    Parameters
    ----------
    f : callable
        Returns a scalar (one element), written with the unified ops.
    argnums : int or tuple of int, default 0
        Which positional arguments to differentiate (negative counts from the end).

    Returns
    -------
    callable
        ``g(*args, **kwargs) -> (value, grads)``: ``grads`` one gradient for an
        int ``argnums``, a tuple for a tuple; each gradient has its argument's
        dtype (a scipy.sparse argument gets a sparse gradient).

    Raises
    ------
    CapabilityError
        When ``g`` is called on a backend without autodiff (numpy, dask), naming
        the backends that have it.
    TypeError
        When ``f`` does not return a scalar, or ``argnums`` is not an int or tuple of ints.
    ValueError
        When ``argnums`` is out of range.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> def loss(w, x):
    ...     return ub.masked_mean(ub.dot(x, w) ** 2, np.ones(2, dtype=bool))
    >>> with ub.use_backend("torch"):
    ...     value, g = ub.value_and_grad(loss)(np.array([1.0, 2.0]), np.eye(2))
    >>> float(ub.to_numpy(value)), ub.to_numpy(g)
    (2.5, array([1., 2.]))
    >>> ub.value_and_grad(loss)(np.array([1.0, 2.0]), np.eye(2))  # numpy: no autodiff
    Traceback (most recent call last):
    ...
    unibackend._errors.CapabilityError: value_and_grad: backend 'numpy' has no autodiff; use one of: ...
    """

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
    """``g(*args) -> df/dargs[argnums]``; f returns a scalar.

    :func:`value_and_grad` without the value; the same rules.

    Parameters
    ----------
    f : callable
        Returns a scalar (one element).
    argnums : int or tuple of int, default 0
        Which positional arguments to differentiate.

    Returns
    -------
    callable
        ``g(*args, **kwargs)``: one gradient for an int ``argnums``, a tuple for a tuple.

    Raises
    ------
    CapabilityError
        On a backend without autodiff.
    TypeError
        When ``f`` does not return a scalar.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> with ub.use_backend("torch"):
    ...     g = ub.grad(lambda w: ub.masked_mean(w * w, np.ones(3, dtype=bool)))(np.array([3.0, 0.0, -3.0]))
    >>> ub.to_numpy(g)
    array([ 2.,  0., -2.])
    """
    vg = value_and_grad(f, argnums)

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        return vg(*args, **kwargs)[1]

    return wrapped


def function(f: Callable[..., Any]) -> Callable[..., Any]:
    """A callable from arrays to arrays, compiled the backend's way.

    Compiled once per input signature on theano, a ``tf.function`` on
    tensorflow, ``jax.jit`` (with checkify, so value checks still raise) on
    jax, an ONNX graph per input signature run by ONNX Runtime on onnx, and
    ``f`` itself on the eager torch, numpy and dask (dask is lazy already).  The backend is the one ``f``'s first call selects.

    Parameters
    ----------
    f : callable
        Native tensors (or arrays) in, native tensors out, written with the
        unified ops.

    Returns
    -------
    callable
        Same arguments and results as ``f``.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> softmax_rows = ub.function(lambda x: ub.softmax(x, axis=-1))
    >>> ub.to_numpy(softmax_rows(np.zeros((2, 2))))
    array([[0.5, 0.5],
           [0.5, 0.5]])
    """
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
