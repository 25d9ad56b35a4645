"""How a generated case's label follows its image through the generator's resampling.

``"nearest"`` picks the class at each sample point, so a structure one voxel thin (a rib) appears, doubles or
vanishes wherever the point falls while the image beside it is averaged: labels that no image can predict.
``"linear"`` samples each class's one-hot map as the image is sampled (nnU-Net resamples segmentations this way)
and keeps the class covering most of each new voxel. ``benchmarks/label_aliasing.py`` measures how far the two
disagree (the chest's ribs: Dice 0.71).
"""

from __future__ import annotations

import numpy as np

from napari_ssl_seg.errors import InputError

__all__ = ["LABEL_INTERPOLATIONS", "MAX_ONE_HOT_BYTES", "label_channels", "label_from_channels"]

LABEL_INTERPOLATIONS = ("nearest", "linear")
#: The one-hot maps ``"linear"`` samples (one float32 volume per class) may take at most this.
MAX_ONE_HOT_BYTES = 4 * 2**30


def label_channels(labels: np.ndarray, values: np.ndarray, *, linear: bool) -> np.ndarray:
    """``labels`` (float32 class ids) as the transforms take it: one channel of ids, or one-hot maps per value."""
    if not linear:
        return labels[None]
    needed = len(values) * labels.size * 4
    if needed > MAX_ONE_HOT_BYTES:
        raise InputError(
            f"linear label interpolation needs {needed / 2**30:.1f} GiB for the {len(values)} classes of this base "
            f"(at most {MAX_ONE_HOT_BYTES / 2**30:.0f}); use nearest, or a base with fewer classes or voxels"
        )
    return np.stack([labels == value for value in values]).astype(np.float32)


def label_from_channels(channels: np.ndarray, values: np.ndarray, *, linear: bool) -> np.ndarray:
    """uint8 class ids from sampled channels: the one channel of ids, or the most covered class of the maps."""
    if not linear:
        return np.rint(channels[0]).astype(np.uint8)
    return values[np.argmax(channels, axis=0)].astype(np.uint8)
