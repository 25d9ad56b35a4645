"""Uncertain regions of one case: where the annotator should look first.

The thresholded entropy map is split into 26-connected components; each region is ranked by its
summed entropy (size times doubt), so a large moderately uncertain area outranks a single noisy
voxel. The viewer jumps to a region's entropy-weighted centre, which lies where the doubt is,
unlike the bounding-box centre of a curved region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_ssl_seg.errors import InputError

__all__ = ["UncertainRegion", "default_threshold", "entropy_histogram", "uncertain_regions"]


@dataclass(frozen=True)
class UncertainRegion:
    """One connected region of the thresholded entropy map, in voxel coordinates (z, y, x)."""

    rank: int
    voxels: int
    summed_entropy: float
    mean_entropy: float
    centre: tuple[float, float, float]
    bbox_start: tuple[int, int, int]
    bbox_stop: tuple[int, int, int]
    volume_ml: float

    def describe(self) -> str:
        z, y, x = (round(c) for c in self.centre)
        return f"#{self.rank}: {self.volume_ml:.2f} ml, mean entropy {self.mean_entropy:.2f}, at z={z} y={y} x={x}"


def default_threshold(num_classes: int) -> float:
    """Half the largest possible entropy ln(C): voxels where the classes are far from settled."""
    return 0.5 * math.log(max(num_classes, 2))


def uncertain_regions(
    entropy: np.ndarray,
    threshold: float,
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    min_voxels: int = 1,
    limit: int | None = None,
) -> list[UncertainRegion]:
    """Connected regions where ``entropy >= threshold``, most summed entropy first."""
    values = np.asarray(entropy)
    if values.ndim != 3:
        raise InputError(f"an entropy map must be 3D, got shape {values.shape}")
    mask = np.isfinite(values) & (values >= threshold)
    components, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return []
    indices = np.arange(1, count + 1)
    weights = np.where(mask, values, 0).astype(np.float64)
    sizes = ndimage.sum_labels(mask, components, indices)
    sums = ndimage.sum_labels(weights, components, indices)
    keep = np.flatnonzero(sizes >= min_voxels)
    order = keep[np.argsort(-sums[keep], kind="stable")]
    if limit is not None:
        order = order[:limit]
    centres = ndimage.center_of_mass(weights, components, indices[order]) if len(order) else []
    boxes = ndimage.find_objects(components)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    regions = []
    for rank, (index, centre) in enumerate(zip(order, centres, strict=True), start=1):
        box = boxes[index]
        regions.append(
            UncertainRegion(
                rank=rank,
                voxels=int(sizes[index]),
                summed_entropy=float(sums[index]),
                mean_entropy=float(sums[index] / sizes[index]),
                centre=tuple(float(c) for c in centre),
                bbox_start=tuple(int(s.start) for s in box),
                bbox_stop=tuple(int(s.stop) for s in box),
                volume_ml=float(sizes[index]) * voxel_ml,
            )
        )
    return regions


def entropy_histogram(entropy: np.ndarray, top: float, bins: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Voxel counts per entropy bin over [0, top], leaving out the near-certain voxels.

    Most voxels are certain background; dropping those below 1% of ``top`` keeps their spike from
    flattening the part of the distribution a threshold is chosen in.
    """
    values = np.asarray(entropy, dtype=np.float32).ravel()
    values = values[np.isfinite(values) & (values > 0.01 * max(top, 1e-6))]
    return np.histogram(values, bins=bins, range=(0.0, max(top, 1e-6)))
