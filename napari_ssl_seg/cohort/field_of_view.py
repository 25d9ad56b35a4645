"""The generator's field-of-view crop: a random window per axis that keeps every labeled structure in view."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["KEEP_VOXELS", "class_extents", "draw_crop"]

# Voxels of every labeled structure the field-of-view crop must keep per axis.
KEEP_VOXELS = 2


def draw_crop(
    rng: np.random.RandomState, labels: np.ndarray, classes: frozenset[int], fraction: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Random crop ``(start, size)`` per axis, keeping every class partly in view.

    Real scans cut organs at the field-of-view edge, but a class missing
    entirely would make the case useless for that class. Per axis, the crop
    window ``[a, a + L)`` must overlap each class's extent ``[lo, hi]`` by
    ``keep`` voxels: ``a <= hi - keep + 1`` and ``a + L >= lo + keep``. This
    does not guarantee a 3D overlap; the rare miss is redrawn by the caller.
    """
    extents = class_extents(labels, classes)
    start, size = [], []
    for axis, n in enumerate(labels.shape):
        length = int(rng.randint(math.ceil(fraction[0] * n), math.floor(fraction[1] * n) + 1))
        latest_start, earliest_end = n, 0
        for lo, hi in (extent[axis] for extent in extents):
            keep = min(KEEP_VOXELS, hi - lo + 1)
            latest_start = min(latest_start, hi - keep + 1)
            earliest_end = max(earliest_end, lo + keep)
        # A window this long always fits between the two limits (a = 0 works for L = n).
        length = min(n, max(length, earliest_end - latest_start))
        first = max(0, earliest_end - length)
        last = min(n - length, latest_start)
        start.append(int(rng.randint(first, last + 1)))
        size.append(length)
    return np.array(start), np.array(size)


def class_extents(labels: np.ndarray, classes: frozenset[int]) -> list[list[tuple[int, int]]]:
    """Per present class, the (first, last) index holding it along each axis."""
    extents = []
    for value in sorted(classes):
        mask = labels == value
        if not mask.any():
            continue  # deformed out of view; the caller redraws the case
        per_axis = []
        for axis in range(labels.ndim):
            hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(labels.ndim) if a != axis)))
            per_axis.append((int(hits[0]), int(hits[-1])))
        extents.append(per_axis)
    return extents
