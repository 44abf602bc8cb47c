"""The exceptions unibackend raises itself (bad input raises numpy's kinds)."""


class BackendNotAvailable(ImportError):
    """A backend's framework is not installed (the message names the pip extra)."""


class CapabilityError(NotImplementedError):
    """The backend in force lacks a capability the call needs (autodiff, sparse, ...)."""
