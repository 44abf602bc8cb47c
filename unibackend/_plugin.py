"""The plugin interface: what a backend declares and the primitives it implements.

The public ops in :mod:`unibackend.ops` check arguments and pin every semantic
that can be pinned above the plugins (axis and k ranges, id ranges, index
normalisation, dtype promotion, last-write-wins).  A plugin receives arguments
that are already valid and normalised, and only computes.  Every plugin file
defines these methods with the same names, in the same order.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    autodiff: bool = False
    sparse: bool = False
    symbolic: bool = False
    devices: bool = False

    def names(self):
        return tuple(k for k, v in self.__dict__.items() if v)


class Backend:
    """Base class of a plugin.  Subclasses set the class attributes and
    implement the primitives below; ``load`` imports the framework."""

    name: str = ""
    #: the top-level module whose presence in ``sys.modules`` means native
    #: tensors of this backend may exist (dispatch never imports anything).
    module: str = ""
    #: the distribution that ``pip install 'unibackend[extra]'`` brings.
    extra: str = ""
    capabilities: Capabilities = Capabilities()

    def __init__(self, device=None):
        self.device = device
        self._loaded = False

    # -- set-up ------------------------------------------------------------
    def load(self):
        """Import the framework.  Raise ImportError when it is missing."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def is_available(self):
        """(True, "") or (False, why) without importing the framework."""
        import importlib.util

        if self.module in sys.modules:
            return True, ""
        if importlib.util.find_spec(self.module) is None:
            return False, f"{self.module} is not installed"
        return True, ""

    def native_types(self) -> tuple:
        """Types of this backend's tensors; called only once ``module`` is imported."""
        raise NotImplementedError

    def check_devices(self, op, tensors):
        """A plugin with devices raises ValueError when ``tensors`` (native,
        two or more) are not all on one device."""

    def for_tensor(self, x):
        """The instance to run on when native tensor ``x`` chose this backend
        (a plugin with devices returns the instance for ``x``'s device)."""
        return self

    # -- conversion --------------------------------------------------------
    def asarray(self, x, dtype=None): ...
    def to_numpy(self, x): ...
    def shape(self, x) -> tuple: ...
    def dtype(self, x): ...
    def plain_float_dtype(self, x):
        """x's dtype when x is a dense native float tensor with a concrete
        ``.shape`` (the ops' fast path), else None."""
        return None
    def is_symbolic(self, x):
        """True when x is a native tensor whose value exists only when a graph
        runs (an index part like that is checked in-graph by the plugin)."""
        return False
    def is_sparse(self, x) -> bool: ...
    def sparse_from_scipy(self, csr): ...
    def sparse_to_scipy(self, x): ...
    def sparse_info(self, x): ...          # (shape, dtype) of a native sparse tensor
    def sparse_cast(self, x, dtype): ...
    def id_bounds(self, ids, pad_id): ...  # (min, max) of the non-pad ids, or None

    # -- ops (arguments already checked and normalised by unibackend.ops) ---
    def dot(self, a, b): ...
    #: Optional: ``fast_dot(a, b)`` gives the product of two tensors of one
    #: type (ops.dot checks that) that need
    #: no conversion (dense, one float dtype, aligned shapes, a N-D, b 1-D or
    #: 2-D), else None.  Once the full path has seen such a pair, ops.dot calls
    #: it first: keyed by the type for a native tensor, by the type and the
    #: backend in force for a neutral one (numpy arrays on the numpy backend).
    fast_dot = None
    def sparse_dot(self, x, w): ...
    def argsort(self, x, axis, descending): ...
    def set_subtensor(self, x, index, value, accumulate): ...
    def masked_mean(self, x, mask, axis): ...
    def keep_topk(self, x, k, axis, fill): ...
    def softmax(self, x, axis): ...
    def embedding_mean(self, table, ids, pad_id): ...

    # -- autodiff and compilation ------------------------------------------
    def value_and_grad(self, f, argnums, args, kwargs): ...
    def function(self, f): ...
