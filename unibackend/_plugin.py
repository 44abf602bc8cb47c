"""Deprecated: the plugin interface is public now, :mod:`unibackend.plugin`."""
import warnings

from .plugin import Backend, Capabilities  # noqa: F401

warnings.warn("unibackend._plugin is deprecated; import Backend and Capabilities from unibackend.plugin",
              DeprecationWarning, stacklevel=2)
