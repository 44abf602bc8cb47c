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
_default = None                 # (name, device) set by set_backend / UNIBACKEND_BACKEND
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
    primitive is refused (TypeError naming it)."""
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
    capabilities.  Imports no framework."""
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
    """Make ``name`` the process-wide default backend."""
    global _default
    plugin_class(name)  # unknown name: ValueError now, not at first use
    _default = (name, device)


@contextlib.contextmanager
def use_backend(name: str, device: str | None = None) -> Iterator[Backend]:
    """Use ``name`` inside the block only (context-local: threads and asyncio
    tasks each see their own)."""
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
    """The plugin instance in force here."""
    name, device = in_force()
    return backend(name, device)


_NEUTRAL_MODULES = ("builtins", "numpy", "scipy")


def _classify(t):
    """Backend name owning type ``t``, or None for a neutral type."""
    mod = (getattr(t, "__module__", "") or "").split(".")[0]
    if mod in _NEUTRAL_MODULES:
        return None
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
    """Backend name of a native tensor, or None for a neutral value."""
    name = _type_cache.get(type(x), _MISS)
    return _first_sight(type(x)) if name is _MISS else name


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
