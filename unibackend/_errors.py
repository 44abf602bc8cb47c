"""The exceptions unibackend raises itself (bad input raises numpy's kinds)."""


class BackendNotAvailable(ImportError):
    """A backend's framework is not installed (the message names the pip extra)."""


class CapabilityError(NotImplementedError):
    """The backend in force lacks a capability the call needs (autodiff, sparse, ...)."""


def unsupported_in_mode(op: str, mode: str, why: str) -> TypeError:
    """The contract's error for an op a framework cannot run in a call mode
    (a function transform, a compiler): which op, which mode, and why.
    docs/semantics.md ("Call modes") lists every pair that raises it."""
    return TypeError(f"{op}: not supported under {mode}: {why}")
