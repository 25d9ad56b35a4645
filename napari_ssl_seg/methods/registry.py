"""Method names to classes, imported lazily so a missing or broken method breaks only itself.

A name may also be a ``"package.module:Class"`` string, for methods that live outside this package
(tests, experiments); the class must subclass :class:`SemiSupervisedMethod`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from typing import Any

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.method_names import METHODS
from napari_ssl_seg.methods.base import SemiSupervisedMethod

__all__ = ["METHODS", "available_methods", "build_method", "method_class"]


def _module_exists(module: str) -> bool:
    if module in sys.modules:  # e.g. "__main__", whose spec may be None
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def available_methods() -> list[str]:
    """Registered method names whose module is installed (without importing them)."""
    return [name for name, target in METHODS.items() if _module_exists(target.partition(":")[0])]


def method_class(name: str) -> type[SemiSupervisedMethod]:
    """The class behind ``name``; :class:`InputError` for an unknown or unavailable method."""
    target = METHODS.get(name)
    if target is None and ":" in name:
        target = name
    if target is None:
        raise InputError(f"unknown method {name!r} (available: {', '.join(available_methods()) or 'none'})")
    module_name, _, class_name = target.partition(":")
    if not _module_exists(module_name):
        raise InputError(
            f"method {name!r} is not available in this installation (module {module_name} not found; "
            f"available: {', '.join(available_methods()) or 'none'})"
        )
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, SemiSupervisedMethod)):
        raise InputError(f"method {name!r}: {target} is not a SemiSupervisedMethod class")
    return cls


def build_method(
    name: str, network_config: Mapping[str, Any], settings: Mapping[str, Any] | None = None
) -> SemiSupervisedMethod:
    """Instantiate method ``name`` with the V-Net ``network_config`` and method ``settings``.

    Unknown settings (the method's ``ValueError``) become an :class:`InputError`.
    """
    cls = method_class(name)
    try:
        return cls(network_config, settings or {})
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(str(exc)) from None
