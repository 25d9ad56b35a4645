"""Typed, frozen method settings, checked where they are built.

Each method declares its settings as a frozen dataclass deriving from :class:`MethodSettings`, with
the paper's values as field defaults. Settings arrive as loose JSON-like values (a model card, a
``settings.NAME=VALUE`` override, a test); :meth:`MethodSettings.from_mapping` turns them into the
dataclass, refusing unknown names and values of the wrong type, so a typo or a string where a number
belongs never trains the wrong thing. A method reads ``self.settings.consistency``, never a dict.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Self

__all__ = ["MethodSettings", "SAMSettings", "check_at_most", "check_mc_samples", "check_positive"]


@dataclasses.dataclass(frozen=True)
class MethodSettings:
    """Base of every method's settings: type coercion and the checks every setting shares.

    Numbers must be finite and not negative (every setting of the nine methods is a weight, a
    probability, a count, a scale or a threshold); subclasses add ranges in :meth:`check`.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            value = _coerce(item.name, getattr(self, item.name), hints[item.name])
            object.__setattr__(self, item.name, value)
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` for values out of the method's ranges (the types are already right)."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Self:
        """The settings from loose values; ``ValueError`` naming unknown keys and the known ones."""
        values = dict(values or {})
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            names = ", ".join(sorted(unknown))
            raise ValueError(f"unknown setting(s) {names} (known: {', '.join(sorted(known)) or 'none'})")
        return cls(**values)

    @classmethod
    def names(cls) -> list[str]:
        return [item.name for item in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples as lists), for the model card and the log."""
        return {
            name: list(value) if isinstance(value, tuple) else value for name, value in dataclasses.asdict(self).items()
        }


@dataclasses.dataclass(frozen=True)
class SAMSettings(MethodSettings):
    """Settings of a method whose optimiser is SAM: ``sam_rho``, the radius of its ascent step."""

    sam_rho: float = 0.05


def check_at_most(name: str, value: float, high: float, *, inclusive: bool = True) -> None:
    """``ValueError`` unless ``value`` <= ``high`` (< with ``inclusive=False``); >= 0 holds already."""
    if not (value <= high if inclusive else value < high):
        bound = f"[0, {high}]" if inclusive else f"[0, {high})"
        raise ValueError(f"setting {name!r} must be in {bound}, got {value}")


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"setting {name!r} must be positive, got {value}")


def check_mc_samples(samples: int) -> None:
    if samples < 1:
        raise ValueError(f"setting 'mc_samples' must be at least 1, got {samples}")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the annotated type, or ``ValueError``: ints are accepted where floats belong,
    integral floats where ints belong (JSON has one number type), lists where tuples belong."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"setting {name!r} must not be none")
    for option in options:
        if option is type(None):
            continue
        converted = _as(option, value)
        if converted is not _MISMATCH:
            if isinstance(converted, float) and not (math.isfinite(converted) and converted >= 0):
                raise ValueError(f"setting {name!r} must be a finite number >= 0, got {value!r}")
            if isinstance(converted, int) and not isinstance(converted, bool) and converted < 0:
                raise ValueError(f"setting {name!r} must be >= 0, got {value!r}")
            return converted
    wanted = " or ".join(_KIND_NAMES.get(typing.get_origin(option) or option, str(option)) for option in options)
    raise ValueError(f"setting {name!r} must be {wanted}, got {value!r}")


_MISMATCH = object()
_KIND_NAMES = {float: "a number", int: "a whole number", str: "text", bool: "true or false", tuple: "a list"}


def _as(kind: Any, value: Any) -> Any:
    if kind is bool:
        return value if isinstance(value, bool) else _MISMATCH
    if isinstance(value, bool):
        return _MISMATCH
    if kind is float:
        return float(value) if isinstance(value, int | float) else _MISMATCH
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return _MISMATCH
    if kind is str:
        return value if isinstance(value, str) else _MISMATCH
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list | tuple):
            return _MISMATCH
        (item_kind, *_rest) = typing.get_args(kind)
        items = [_as(item_kind, item) for item in value]
        return _MISMATCH if any(item is _MISMATCH for item in items) else tuple(items)
    raise TypeError(f"unsupported setting type {kind!r}")
