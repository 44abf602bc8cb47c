"""The registry of checks, and what the families of checks share.

A family module defines, for each op, a strategy of cases, the explicit
cases (the known trouble, run first on every run whatever the profile
draws), and the verify function, registered with :func:`check`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable

import numpy as np
from hypothesis import strategies as st

from .. import strategies as S
from ..cases import Arg, Case


@dataclass
class Check:
    name: str                  # the row of the matrix, e.g. "keep_topk", "grad sparse_dot"
    op: str                    # the op it is about (what --ops selects)
    strategy: st.SearchStrategy
    verify: Callable           # verify(case, backend, device): raises Disagreement
    needs: tuple = ()          # capabilities the backend must declare
    doc: str = ""
    examples: tuple = ()       # explicit cases, run before the generated ones
    compiles: bool = True      # whether --compiled runs it inside the backend's compiler


#: name -> Check; the package puts the value checks first, the gradients after.
CHECKS: dict[str, Check] = {}


def check(name: str, op: str, strategy: st.SearchStrategy, needs: Iterable[str] = (),
          examples: Iterable[Case] = (), compiles: bool | None = None):
    """Register the decorated ``verify(case, backend, device)`` as check
    ``name`` about ``op``; its docstring is what ``--list`` prints.
    ``compiles`` (default: not for the gradient or lazy checks) says whether
    ``--compiled`` also runs its cases inside the backend's compiler."""
    def deco(fn):
        if name in CHECKS:
            raise ValueError(f"conformance check {name!r} is registered twice")
        CHECKS[name] = Check(name, op, strategy, fn, tuple(needs), (fn.__doc__ or "").strip(),
                             tuple(examples),
                             not ({"autodiff", "lazy"} & set(needs)) if compiles is None else compiles)
        return fn
    return deco


def arr(values, dtype=np.float64) -> Arg:
    """An explicit case's array argument, with the source that rebuilds it."""
    a = np.array(values, dtype=dtype)
    return Arg(a, S.array_code(a))
