"""Finding plugins, choosing the backend in force, and dispatch by tensor type.

Plugins are found through the entry-point group ``unibackend.backends`` (the
built-in ones too).  Nothing here imports a framework: a type is matched
against a backend's tensor types only once that backend's framework module is
already in ``sys.modules``, and the answer is cached per type.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import BackendNotAvailable
from .plugin import Backend, missing_primitives

GROUP = "unibackend.backends"
DEFAULT = "numpy"

_entry_points = None            # name -> EntryPoint
_classes: dict = {}             # name -> plugin class
_instances: dict = {}           # (name, device) -> loaded plugin instance
_lock = threading.RLock()
_default: tuple[str, str | None] | None = None  # (name, device) set by set_backend / UNIBACKEND_BACKEND
_current: contextvars.ContextVar = contextvars.ContextVar("unibackend_backend", default=None)
_type_cache: dict = {}          # type -> backend name, or None for neutral types
_fast_dot: dict = {}            # native type -> its plugin's fast_dot (see ops.dot)
# backend name -> whether a call its native tensors select still needs the
# backend in force: when an alias of it is known, or when its plugin leaves
# ``for_tensor`` to the base (the device of the instance in force then counts).
# Filled when a type is classified; read instead of the context variable so
# that dispatch on a native tensor is plain dict lookups, which tracing
# compilers (torch.compile) follow without a break.
_needs_force: dict = {}


def _discover():
    global _entry_points
    if _entry_points is None:
        from importlib.metadata import entry_points

        eps = entry_points()
        group = eps.select(group=GROUP) if hasattr(eps, "select") else eps.get(GROUP, ())
        _entry_points = {ep.name: ep for ep in group}
    return _entry_points


def _checked(name, cls):
    """``cls`` when it is a complete plugin class, else TypeError naming what is missing."""
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"plugin {name!r}: {cls!r} is not a subclass of unibackend.plugin.Backend")
    missing = missing_primitives(cls)
    if missing:
        raise TypeError(
            f"plugin {name!r} ({cls.__module__}.{cls.__qualname__}) does not implement "
            f"the primitive{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"
        )
    if isinstance(cls.modules, str) or not cls.modules:
        raise TypeError(f"plugin {name!r}: modules must be a non-empty tuple of module names, got {cls.modules!r}")
    return cls


def register(name: str, cls: type[Backend]) -> None:
    """Register a plugin class by hand (tests, or a plugin not installed as a
    distribution).  Entry points are the normal way.  A class that misses a
    primitive is refused (TypeError naming it).

    Parameters
    ----------
    name : str
        What ``ub.set_backend``, ``ub.use_backend`` and ``--backends`` call it.
    cls : type
        A subclass of :class:`unibackend.plugin.Backend`.

    Raises
    ------
    TypeError
        When ``cls`` is not a complete plugin class (naming what is missing).

    Examples
    --------
    >>> import unibackend as ub
    >>> from unibackend.plugins.numpy_backend import NumpyBackend
    >>> ub.register("again", type("Again", (NumpyBackend,), {"name": "again"}))
    >>> "again" in [b.name for b in ub.backends()]
    True
    >>> unregister("again")
    >>> ub.register("broken", object)
    Traceback (most recent call last):
    ...
    TypeError: plugin 'broken': <class 'object'> is not a subclass of unibackend.plugin.Backend
    """
    _checked(name, cls)
    _prepare_tracers(cls)
    with _lock:
        _discover()
        _classes[name] = cls
        for key in [k for k in _instances if k[0] == name]:
            del _instances[key]
        _type_cache.clear()
        _seed_neutral()
        _fast_dot.clear()
        _needs_force.clear()


def unregister(name: str) -> None:
    with _lock:
        _classes.pop(name, None)
        (_entry_points or {}).pop(name, None)
        for key in [k for k in _instances if k[0] == name]:
            del _instances[key]
        _type_cache.clear()
        _seed_neutral()
        _fast_dot.clear()
        _needs_force.clear()


def known() -> list[str]:
    """Names of every known plugin, sorted."""
    return sorted(set(_discover()) | set(_classes))


def plugin_class(name: str) -> type[Backend]:
    cls = _classes.get(name)
    if cls is None:
        ep = _discover().get(name)
        if ep is None:
            raise ValueError(
                f"unknown backend {name!r}; known backends: {', '.join(known())}"
            )
        cls = _classes[name] = _checked(name, ep.load())
        _prepare_tracers(cls)
    return cls


def backend(name: str, device: str | None = None) -> Backend:
    """The loaded plugin instance for ``name`` on ``device``."""
    key = (name, device)
    inst = _instances.get(key)
    if inst is not None:
        return inst
    with _lock:
        inst = _instances.get(key)
        if inst is None:
            cls = plugin_class(name)
            inst = cls(device=device)
            ok, why = inst.is_available()
            if not ok:
                raise BackendNotAvailable(
                    f"backend {name!r} is not available: {why}; "
                    f"install it with: pip install 'unibackend[{cls.extra or name}]'"
                )
            try:
                inst.load()
            except ImportError as e:
                raise BackendNotAvailable(
                    f"backend {name!r} could not import its framework ({e}); "
                    f"install it with: pip install 'unibackend[{cls.extra or name}]'"
                ) from e
            _instances[key] = inst
    return inst


@dataclass(frozen=True)
class BackendInfo:
    name: str
    installed: bool
    reason: str
    version: str
    capabilities: tuple
    alias_of: str = ""


def backends() -> list[BackendInfo]:
    """Every known plugin: name, installed or not (and why not), version,
    capabilities.  Imports no framework.

    Returns
    -------
    list of BackendInfo
        Sorted by name; each has ``name``, ``installed``, ``reason`` (why not),
        ``version``, ``capabilities`` (names) and ``alias_of``.

    Examples
    --------
    >>> import unibackend as ub
    >>> numpy_info = [b for b in ub.backends() if b.name == "numpy"][0]
    >>> numpy_info.installed, numpy_info.capabilities
    (True, ('sparse',))
    """
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in known():
        try:
            cls = plugin_class(name)
        except Exception as e:  # a broken third-party entry point
            out.append(BackendInfo(name, False, f"plugin failed to load: {e}", "", ()))
            continue
        probe = cls(device=None)
        ok, why = probe.is_available()
        ver = ""
        if ok:
            try:
                ver = probe.version()
            except Exception:
                for dist in cls.distributions or cls.modules:
                    try:
                        ver = version(dist)
                        break
                    except PackageNotFoundError:
                        continue
        out.append(BackendInfo(name, ok, why, ver, cls.capabilities.names(),
                               cls.alias_of))
    return out


def _initial_default():
    global _default
    if _default is None:
        name = os.environ.get("UNIBACKEND_BACKEND", "").strip() or DEFAULT
        _default = (name, None)
    return _default


def set_backend(name: str, device: str | None = None) -> None:
    """Make ``name`` the process-wide default backend.

    A context's :func:`use_backend` block still wins inside it; the
    environment variable ``UNIBACKEND_BACKEND`` sets the default at start.

    Parameters
    ----------
    name : str
        A known backend (``ub.backends()``).
    device : str, optional
        For a backend with devices, e.g. ``"cuda"``.

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.

    Examples
    --------
    >>> import unibackend as ub
    >>> ub.set_backend("numpy")
    >>> ub.get_backend().name
    'numpy'
    """
    global _default
    plugin_class(name)  # unknown name: ValueError now, not at first use
    _default = (name, device)


@contextlib.contextmanager
def use_backend(name: str, device: str | None = None) -> Iterator[Backend]:
    """Use ``name`` inside the block only (context-local: threads and asyncio
    tasks each see their own).

    Parameters
    ----------
    name : str
        A known backend.
    device : str, optional
        For a backend with devices.

    Yields
    ------
    Backend
        The plugin instance in force in the block.

    Raises
    ------
    ValueError
        For an unknown name.

    Examples
    --------
    >>> import unibackend as ub
    >>> with ub.use_backend("numpy") as B:
    ...     B.name, type(ub.softmax([0.0, 0.0])).__name__
    ('numpy', 'ndarray')
    """
    plugin_class(name)
    token = _current.set((name, device))
    try:
        yield backend(name, device)
    finally:
        _current.reset(token)


def in_force():
    """(name, device) of the backend in force in this context."""
    return _current.get() or _default or _initial_default()


def get_backend() -> Backend:
    """The plugin instance in force here.

    Returns
    -------
    Backend
        From the innermost :func:`use_backend`, else :func:`set_backend`, else
        ``UNIBACKEND_BACKEND``, else numpy.

    Examples
    --------
    >>> import unibackend as ub
    >>> with ub.use_backend("numpy"):
    ...     ub.get_backend().name
    'numpy'
    """
    name, device = in_force()
    return backend(name, device)


_NEUTRAL_MODULES = ("builtins", "numpy", "scipy")


def _classify(t):
    """Backend name owning type ``t``, or None for a neutral type."""
    mod = (getattr(t, "__module__", "") or "").split(".")[0]
    if mod in _NEUTRAL_MODULES:
        return None
    if _adapt(t):
        return _WRAPPED
    for name in known():
        try:
            cls = plugin_class(name)
        except Exception:
            continue
        if cls.alias_of:
            continue
        if not any(m in sys.modules for m in cls.modules):
            continue
        try:
            types = backend(name).native_types()
        except Exception:
            continue
        if types and issubclass(t, types):
            _needs_force[name] = _force_matters(name)
            return name
    return None


def _force_matters(name):
    """Whether dispatch on a native tensor of ``name`` must read the backend
    in force (see ``_needs_force``)."""
    if plugin_class(name).for_tensor is Backend.for_tensor:
        return True
    for other in known():
        try:
            if plugin_class(other).alias_of == name:
                return True
        except Exception:  # a broken third-party entry point aliases nothing
            continue
    return False


_MISS = object()


def _first_sight(t):
    """Backend name owning type ``t``, or None for a neutral type; the first
    time, the type is classified and its plugin loaded.

    The answer depends on ``t`` alone, so a plugin whose framework traces
    Python (torch.compile) marks this function for its tracer to run, once,
    instead of following it into entry points and imports
    (:meth:`Backend.trace_constant`)."""
    name = _type_cache.get(t, _MISS)
    if name is _MISS:
        name = _type_cache[t] = _classify(t)
    return name


def owner(x):
    """Backend name of a native tensor (or of the one a wrapper holds), or
    None for a neutral value."""
    name = _type_cache.get(type(x), _MISS)
    if name is _MISS:
        name = _first_sight(type(x))
    return owner(unwrap("owner", x)[0]) if name is _WRAPPED else name


def _seed_neutral():
    """Classify the builtin and numpy scalar types up front: a first call
    inside a traced function then meets its ints, floats and slices as known
    types (classifying reads strings that a tracer may refuse to follow)."""
    for t in (int, float, complex, bool, str, bytes, slice, type(None), type(Ellipsis),
              list, tuple, range, dict, np.ndarray, *set(np.sctypeDict.values())):
        _type_cache.setdefault(t, None)


def _prepare_tracers(cls):
    """Let plugin class ``cls`` mark, for its framework's tracer, the core
    functions whose answers are fixed for a trace: the first look at a type,
    the sync-free mode."""
    from ._checks import neutral_kind, sync_free_checks

    for fn in (_first_sight, sync_free_checks, _in_force_key, neutral_kind):
        try:
            cls.trace_constant(fn)
        except Exception:  # a third-party hook failing must not break dispatch
            pass


def _load_own_plugins():
    """Load the classes of the plugins this package ships (imports no
    framework) so that each prepares its tracer before any call is traced:
    a compiled function may be the first use of unibackend in a process.
    The modules are found in the package itself, not through the entry
    points (importlib.metadata alone costs tens of ms at import)."""
    import importlib
    import pkgutil

    from . import plugins

    for info in pkgutil.iter_modules(plugins.__path__):
        name = f"{plugins.__name__}.{info.name}"
        try:
            mod = importlib.import_module(name)
        except Exception:  # a plugin module that fails to import fails later, by name
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, type) and issubclass(obj, Backend) and obj.__module__ == name:
                _prepare_tracers(obj)


# -- adapters: foreign wrappers of native tensors (unibackend.plugin.Adapter)

ADAPTER_GROUP = "unibackend.adapters"
_WRAPPED = "<wrapper>"          # _type_cache's mark of a wrapper type (not a backend name)
_unwrap: dict = {}              # wrapper type -> its adapter's unwrap; read by the ops
_adapter_classes: dict[str, Any] = {}  # name -> Adapter class (entry points, register_adapter)
_adapter_instances: dict = {}   # name -> Adapter instance
_adapters_found = False


def _adapter_names():
    global _adapters_found
    if not _adapters_found:
        from importlib.metadata import entry_points

        eps = entry_points()
        group = eps.select(group=ADAPTER_GROUP) if hasattr(eps, "select") else eps.get(ADAPTER_GROUP, ())
        for ep in group:
            _adapter_classes.setdefault(ep.name, ep)
        _adapters_found = True
    return list(_adapter_classes)


def _adapter(name):
    inst = _adapter_instances.get(name)
    if inst is None:
        cls = _adapter_classes[name]
        if not isinstance(cls, type):  # an entry point, loaded at first need
            cls = _adapter_classes[name] = _checked_adapter(name, cls.load())
        inst = _adapter_instances[name] = cls()
    return inst


def _checked_adapter(name, cls):
    from .plugin import Adapter

    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError(f"adapter {name!r}: {cls!r} is not a subclass of unibackend.plugin.Adapter")
    missing = missing_primitives(cls)
    if missing:
        raise TypeError(f"adapter {name!r} ({cls.__module__}.{cls.__qualname__}) does not implement: "
                        f"{', '.join(missing)}")
    if isinstance(cls.modules, str) or not cls.modules:
        raise TypeError(f"adapter {name!r}: modules must be a non-empty tuple of module names, got {cls.modules!r}")
    return cls


def _adapt(t):
    """Whether type ``t`` is a wrapper of an adapter whose module is
    imported; if so its unwrap goes to ``_unwrap``.  The first time, the
    adapters' entry points are read."""
    for name in _adapter_names():
        cls = _adapter_classes[name]
        mods = getattr(cls, "modules", None) if isinstance(cls, type) else None
        if mods is not None and not any(m in sys.modules for m in mods):
            continue
        try:
            ad = _adapter(name)
            if not any(m in sys.modules for m in ad.modules):
                continue
            types = ad.wrapper_types()
        except Exception:  # a broken third-party adapter must not break dispatch
            continue
        if types and issubclass(t, types):
            _unwrap[t] = ad.unwrap
            return True
    return False


def register_adapter(name: str, cls: type) -> None:
    """Register an :class:`~unibackend.plugin.Adapter` class by hand (tests,
    or one not installed as a distribution); entry points of the group
    ``unibackend.adapters`` are the normal way.

    Parameters
    ----------
    name : str
        The adapter's name (a later registration under the same name replaces it).
    cls : type
        A subclass of :class:`~unibackend.plugin.Adapter` that implements
        ``wrapper_types`` and ``unwrap``.

    Raises
    ------
    TypeError
        When ``cls`` is not a complete ``Adapter`` subclass.

    Examples
    --------
    >>> import numpy as np, unibackend as ub
    >>> from unibackend.plugin import Adapter
    >>> class Boxed:  # a library's wrapper of a numpy array
    ...     def __init__(self, value):
    ...         self.value = value
    >>> class BoxedAdapter(Adapter):
    ...     modules = ("builtins",)
    ...     def wrapper_types(self):
    ...         return (Boxed,)
    ...     def unwrap(self, x):
    ...         return x.value
    >>> ub.register_adapter("boxed", BoxedAdapter)
    >>> ub.softmax(Boxed(np.array([0.0, 0.0])))
    array([0.5, 0.5])
    """
    _checked_adapter(name, cls)
    with _lock:
        _adapter_names()
        _adapter_classes[name] = cls
        _adapter_instances.pop(name, None)
        _type_cache.clear()
        _seed_neutral()
        _unwrap.clear()


def unregister_adapter(name: str) -> None:
    with _lock:
        _adapter_names()
        _adapter_classes.pop(name, None)
        _adapter_instances.pop(name, None)
        _type_cache.clear()
        _seed_neutral()
        _unwrap.clear()


def unwrap(op: str, *args: Any) -> tuple:
    """``args`` with every adapter's wrapper replaced by the native value it
    holds (types already seen by :func:`resolve`); a wrapper without a value
    raises TypeError, named after ``op``."""
    get = _unwrap.get
    out = list(args)
    for i, a in enumerate(args):
        fn = get(type(a))
        if fn is not None:
            try:
                out[i] = fn(a)
            except TypeError as e:
                raise TypeError(f"{op}: {e}") from None
    return tuple(out)
def _in_force_key():
    """(name, device) of the backend in force.  A tracing compiler calls it
    once per trace (``trace_constant``): it reads a context variable, which
    torch.compile cannot follow."""
    return _current.get() or _default or _initial_default()


def resolve(op: str, *args: Any) -> Backend:
    """The plugin an op runs on: the owner of its native tensors, else the
    backend in force.  Tensors of two backends: TypeError naming both.

    This runs on every op call, so the common case (types seen before, the
    backend in force already loaded) is a few dict lookups."""
    found = first = same = None
    get = _type_cache.get
    for a in args:
        name = get(type(a), _MISS)
        if name is _MISS:
            name = _first_sight(type(a))
        if name is not None:
            if name is _WRAPPED:  # an adapter's wrapper: the native value it holds decides
                (a,) = unwrap(op, a)
                name = owner(a)
                if name is None:
                    continue
            if found is None:
                found, first = name, a
            elif name == found:
                # kept here, not looked up again: a tracer may hold a copy of
                # the cache taken before this call classified a new type
                same = [first, a] if same is None else same + [a]
            else:
                raise TypeError(
                    f"{op}: got tensors of two backends, {found!r} and {name!r}; "
                    f"convert one with ub.to_numpy() or ub.asarray()"
                )
    if found is None:
        cur = _in_force_key()
        return _instances.get(cur) or backend(*cur)
    if _needs_force.get(found, True):
        cur = _in_force_key()
        if found == cur[0] or plugin_class(cur[0]).alias_of == found:
            inst = _instances.get(cur) or backend(*cur)
        else:
            inst = _instances.get((found, None)) or backend(found)
    else:  # the tensor alone picks the instance (its device): no context read
        inst = _instances.get((found, None)) or backend(found)
    if same is not None and inst.capabilities.devices:
        inst.check_devices(op, same)
    return inst.for_tensor(first)


_seed_neutral()
_load_own_plugins()
