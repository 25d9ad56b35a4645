"""Intensity normalisation shared by training and inference, described by a model card entry.

A model must see at inference exactly the intensities it saw in training, so both paths call
:func:`normalise_intensity` with the card's ``intensity`` entry:

* ``{"kind": "ct_window", "window": [low, high]}``: Hounsfield units clipped to the window and
  mapped linearly to [0, 1] (CT: absolute units carry meaning, so no per-case statistics).
* ``{"kind": "zscore"}``: zero mean and unit variance over the whole volume (MRI: arbitrary units
  that differ between scanners and sessions). With ``"mask": "nonzero"`` the statistics come from
  the non-zero voxels only and the zero background stays 0 (nnU-Net's choice for skull-stripped
  MRI, where the background would otherwise dominate the mean).

Both are MONAI intensity transforms; this module only chooses and validates them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from monai.transforms import NormalizeIntensity, ScaleIntensityRange

from napari_ssl_seg.errors import InputError

__all__ = ["DEFAULT_CT_WINDOW", "choose_intensity", "normalise_intensity", "validate_intensity"]

DEFAULT_CT_WINDOW = (-1000.0, 1000.0)
# Values this low only occur in Hounsfield units (air is -1000 HU).
CT_EVIDENCE_HU = -500.0


def validate_intensity(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Return a clean copy of an ``intensity`` entry or raise :class:`InputError`."""
    if not isinstance(spec, Mapping):
        raise InputError("model card 'intensity' must be an object with a 'kind'")
    kind = spec.get("kind")
    if kind == "zscore":
        mask = spec.get("mask")
        if mask not in (None, "nonzero"):
            raise InputError(f"intensity zscore mask must be 'nonzero' or absent, got {mask!r}")
        return {"kind": "zscore"} if mask is None else {"kind": "zscore", "mask": mask}
    if kind == "ct_window":
        window = spec.get("window", DEFAULT_CT_WINDOW)
        try:
            low, high = (float(v) for v in window)
        except (TypeError, ValueError):
            raise InputError(f"intensity window must be two numbers, got {window!r}") from None
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise InputError(f"intensity window must satisfy low < high, got {window!r}")
        return {"kind": "ct_window", "window": [low, high]}
    raise InputError(f"unknown intensity normalisation {kind!r} (known: ct_window, zscore)")


def choose_intensity(modality: str | None, array: np.ndarray) -> dict[str, Any]:
    """The normalisation a new model should use for images like ``array``.

    CT when the modality says so or the values reach well below zero (Hounsfield air); z-score
    otherwise.
    """
    is_ct = (modality or "").upper() == "CT" or float(np.nanmin(array)) < CT_EVIDENCE_HU
    if is_ct:
        return {"kind": "ct_window", "window": list(DEFAULT_CT_WINDOW)}
    return {"kind": "zscore"}


def _zscore_statistics(data: np.ndarray, slab: int, *, nonzero: bool = False) -> tuple[float, float]:
    """Mean and (population) standard deviation in float64, slab by slab: no full-size temporary."""
    total = squares = 0.0
    count = 0
    for start in range(0, data.shape[0], slab):
        part = data[start : start + slab].astype(np.float64)
        if nonzero:
            part = part[part != 0]
        total += float(part.sum())
        squares += float(np.square(part).sum())
        count += part.size
    count = max(count, 1)
    mean = total / count
    return mean, float(np.sqrt(max(squares / count - mean * mean, 0.0)))


def normalise_intensity(
    array: np.ndarray, spec: Mapping[str, Any], *, dtype: np.dtype | type = np.float32, slab: int = 16
) -> np.ndarray:
    """``array`` normalised per ``spec``, as a new array of ``dtype`` and the same shape.

    Works ``slab`` slices at a time into the output, so a CT-sized volume never has float32 and
    float64 temporaries of its full size (the z-score statistics are accumulated in float64 first).
    """
    spec = validate_intensity(spec)
    data = np.asarray(array)
    out = np.empty(data.shape, dtype=dtype)
    if spec["kind"] == "ct_window":
        low, high = spec["window"]
        transform = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32)
    else:
        nonzero = spec.get("mask") == "nonzero"
        mean, std = _zscore_statistics(data, slab, nonzero=nonzero) if data.ndim else (0.0, 1.0)
        transform = NormalizeIntensity(subtrahend=mean, divisor=std if std > 0 else 1.0, dtype=np.float32)
    if data.ndim == 0:
        return np.asarray(transform(data.astype(np.float32)), dtype=dtype)
    for start in range(0, data.shape[0], slab):
        source = data[start : start + slab]
        part = transform(source.astype(np.float32))
        part = np.asarray(part.numpy() if hasattr(part, "numpy") else part)
        if spec.get("mask") == "nonzero":
            part = np.where(source != 0, part, 0.0)
        out[start : start + slab] = part
    return out
