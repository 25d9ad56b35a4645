"""What a label map must be to be stored, and what changed between two of them."""

from __future__ import annotations

import numpy as np

from napari_ssl_seg.errors import InputError

__all__ = ["as_label_array", "changed_voxels"]


def as_label_array(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as uint8 (uint16 above 255 classes); a one-line error for what is no label map."""
    if array.ndim != 3:
        raise InputError(f"label for {name!r} must be 3D, got shape {tuple(array.shape)}")
    is_integer = np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_
    if not is_integer and not (np.all(np.isfinite(array)) and np.all(np.equal(np.mod(array, 1), 0))):
        raise InputError(f"label for {name!r} has non-integer values")
    if array.size and array.min() < 0:
        raise InputError(f"label for {name!r} has negative values")
    if array.size and array.max() > 65535:
        raise InputError(f"label for {name!r} has values above 65535")
    return array.astype(np.uint8 if array.max() < 256 else np.uint16)


def changed_voxels(before: np.ndarray, after: np.ndarray, name: str) -> int:
    """Voxels whose class differs: the edit that turned ``before`` into ``after``."""
    before = np.asarray(before)
    if before.shape != after.shape:
        raise InputError(f"{name}: the label started from has shape {before.shape}, the saved one {after.shape}")
    return int(np.count_nonzero(before != after))
