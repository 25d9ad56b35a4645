"""Case scores from a prediction: one number per case that orders the labeling queue, most uncertain first.

Model-based scores read a case's entropy map (nats) and predicted label map:

* ``boundary_entropy``: mean entropy over the predicted foreground and a band of
  ``BOUNDARY_BAND_MM`` around it. Errors concentrate on organ boundaries, and restricting the mean
  to this region keeps a large, confidently empty background from diluting the score (a CT of
  the whole trunk would otherwise rank below a tight crop with the same doubtful organ). With no
  predicted foreground the model found nothing; the mean over the whole volume is used then.
* ``structure_entropy`` (the default): the same mean taken per predicted structure (its voxels and
  a box-shaped band of the same half-width around them), then averaged over the structures, as the
  case's mean Dice averages its classes. The one-region mean is dominated by the largest structure
  (the tissue of a chest CT is most of its foreground), whose boundary is easy; per structure, a
  doubtful rib counts as much as the tissue. Its Spearman correlation with a case's 1 - Dice was at
  least ``boundary_entropy``'s for every teacher and cohort measured (7 pairs, 18 unseen cases each:
  0.34-0.93, mean 0.62, against 0.07-0.83, mean 0.44; docs/convergence.md).
* ``top1_entropy``: mean of the 1% most uncertain voxels; sensitive to one small doubtful region
  even when most of the structure is certain.
* ``uncertain_fraction``: the fraction of the volume whose entropy exceeds half the maximum
  (``0.5 ln C``): how much of the case the model is really unsure about.
* ``missing_volume``: for each structure, the share of its expected volume (the median over the
  project's labeled cases, :mod:`napari_ssl_seg.inference.reference_volumes`) that the prediction
  lacks, ``max(0, 1 - predicted / expected)``, averaged over structures. Entropy cannot see a
  structure the model misses with confidence (it predicts background there, certain of it); a
  weak teacher's worst errors are exactly those, and they show as missing volume. Computed only
  where reference volumes exist (a project with labeled cases).

The model-free baselines and the strategy names the queue offers are in
:mod:`napari_ssl_seg.active.strategies`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np

__all__ = [
    "BOUNDARY_BAND_MM",
    "MODEL_STRATEGIES",
    "missing_volume",
    "model_scores",
    "structure_volumes",
    "volume_shortfall",
]

MODEL_STRATEGIES = ("boundary_entropy", "structure_entropy", "top1_entropy", "uncertain_fraction", "missing_volume")
BOUNDARY_BAND_MM = 4.0
TOP_FRACTION = 0.01


def _band_radii(spacing: Sequence[float], band_mm: float) -> list[int]:
    """``band_mm`` in whole voxels per axis, at least one voxel along the finest axes.

    A band thinner than every voxel would be no band at all, so the finest axes (within 1.5x of the
    finest spacing: in-plane for a stack of slices) keep one voxel. Chosen by spacing, not by axis
    position, so a scan stored in another voxel order gets the same band in the world and the same score.
    """
    finest = min(spacing)
    return [max(math.floor(band_mm / s), 1 if s <= 1.5 * finest else 0) for s in spacing]


def _band_structure(spacing: Sequence[float], band_mm: float) -> np.ndarray:
    """An ellipsoid of radius ``band_mm`` in voxels per axis (see :func:`_band_radii`)."""
    radii = _band_radii(spacing, band_mm)
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    inside = sum((g / max(r, 1)) ** 2 for g, r in zip(grid, radii, strict=True))
    return np.asarray(inside <= 1.0)


def _grown_box(box: tuple[slice, ...], pad: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(b.start - p, 0), min(b.stop + p, n)) for b, p, n in zip(box, pad, shape, strict=True))


def _region(label: np.ndarray, spacing: Sequence[float], band_mm: float) -> np.ndarray | None:
    from scipy import ndimage  # here, not at the top: the CLI imports this module to list strategies

    foreground = label > 0
    if not foreground.any():
        return None
    # Dilate inside the foreground's bounding box (plus the band) only: a CT-sized volume with
    # a small organ would otherwise pay for dilating hundreds of millions of background voxels.
    structure = _band_structure(spacing, band_mm)
    pad = [s // 2 for s in structure.shape]
    box = _grown_box(ndimage.find_objects(foreground.astype(np.uint8))[0], pad, label.shape)
    region = np.zeros_like(foreground)
    region[box] = ndimage.binary_dilation(foreground[box], structure=structure)
    return region


def _box_band(mask: np.ndarray, radii: Sequence[int]) -> np.ndarray:
    """``mask`` grown by ``radii`` voxels per axis into a box-shaped band: three 1D maximum filters.

    Not ``boundary_entropy``'s ellipsoid dilation: separable filters cost a few passes over the
    voxels whatever the radius, where dilating every structure of a 300x512x512 CT (0.76 mm in-plane,
    a 7x11x11 ellipsoid) took 43 s, these filters 2.8 s (`benchmarks/case_scores_speed.py`).
    """
    from scipy import ndimage

    band = mask.view(np.uint8)
    for axis, radius in enumerate(radii):
        if radius:
            band = ndimage.maximum_filter1d(band, size=2 * radius + 1, axis=axis, mode="constant")
    return band.view(bool)


def _structure_means(values: np.ndarray, label: np.ndarray, spacing: Sequence[float], band_mm: float) -> list[float]:
    """Mean entropy over each predicted structure and its band, one value per structure present."""
    from scipy import ndimage

    radii = _band_radii(spacing, band_mm)
    means = []
    # find_objects gives every class's bounding box in one pass; each band is grown inside its own box.
    for index, box in enumerate(ndimage.find_objects(label), start=1):
        if box is None:
            continue
        box = _grown_box(box, radii, label.shape)
        band = _box_band(label[box] == index, radii)
        means.append(float(values[box][band].mean()))
    return means


def model_scores(
    entropy: np.ndarray,
    label: np.ndarray,
    spacing: Sequence[float],
    num_classes: int,
    *,
    band_mm: float = BOUNDARY_BAND_MM,
    reference_volumes: Mapping[int, float] | None = None,
    which: Collection[str] | None = None,
) -> dict[str, float]:
    """The model-based scores of one case (see the module docstring), as plain floats.

    ``which`` names the scores wanted (default: all); filling in one score a project lacks should not
    pay for ``boundary_entropy``'s ellipsoid band (seconds on a CT). ``missing_volume`` is included
    only when ``reference_volumes`` ({class: mm^3}) is given.
    """
    if entropy.shape != label.shape:
        raise ValueError(f"entropy map {entropy.shape} and label map {label.shape} differ in shape")
    if entropy.size == 0:
        raise ValueError("cannot score an empty volume")
    wanted = set(MODEL_STRATEGIES if which is None else which)
    unknown = wanted - set(MODEL_STRATEGIES)
    if unknown:
        raise ValueError(f"unknown score(s): {', '.join(sorted(unknown))}")
    values = entropy.astype(np.float32, copy=False)
    result: dict[str, float] = {}
    # With no predicted foreground there is no structure to average over: the whole volume's mean, for both.
    if "boundary_entropy" in wanted:
        region = _region(label, spacing, band_mm)
        result["boundary_entropy"] = float(values.mean()) if region is None else float(values[region].mean())
    if "structure_entropy" in wanted:
        per_structure = _structure_means(values, label, spacing, band_mm)
        result["structure_entropy"] = float(np.mean(per_structure)) if per_structure else float(values.mean())
    if "top1_entropy" in wanted:
        count = max(math.ceil(values.size * TOP_FRACTION), 1)
        flat = values.reshape(-1)
        result["top1_entropy"] = float(np.partition(flat, flat.size - count)[flat.size - count :].mean())
    if "uncertain_fraction" in wanted:
        threshold = 0.5 * math.log(max(num_classes, 2))
        result["uncertain_fraction"] = float(np.count_nonzero(values > threshold) / values.size)
    if reference_volumes and "missing_volume" in wanted:
        result["missing_volume"] = missing_volume(label, spacing, reference_volumes)
    return result


def structure_volumes(label: np.ndarray, spacing: Sequence[float]) -> dict[int, float]:
    """{class: mm^3} of every structure present in ``label`` (background, 0, left out)."""
    voxel = float(np.prod(spacing))
    counts = np.bincount(label.reshape(-1).astype(np.int64, copy=False))
    return {value: float(count) * voxel for value, count in enumerate(counts) if value != 0 and count}


def volume_shortfall(volumes: Mapping[int, float], reference_volumes: Mapping[int, float]) -> float:
    """``missing_volume`` from a prediction's structure volumes (see :func:`structure_volumes`)."""
    expected = {int(k): float(v) for k, v in reference_volumes.items() if k != 0 and v > 0}
    if not expected:
        raise ValueError("missing_volume needs the expected volume of at least one structure")
    shortfalls = [max(0.0, 1.0 - volumes.get(k, 0.0) / volume) for k, volume in expected.items()]
    return float(np.mean(shortfalls))


def missing_volume(label: np.ndarray, spacing: Sequence[float], reference_volumes: Mapping[int, float]) -> float:
    """Mean over the reference's structures of ``max(0, 1 - predicted mm^3 / expected mm^3)``, in [0, 1]."""
    return volume_shortfall(structure_volumes(label, spacing), reference_volumes)
