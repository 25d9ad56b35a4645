"""How fine a spacing a class needs: its thickness, and the Dice a network at a coarser spacing can reach at most.

A network trained at a target spacing predicts at that spacing, and the predictor brings its
probabilities back to the scan's voxels (trilinear) before taking the most probable class. A
structure thinner than a few target voxels then loses its edges however good the network is. The
plan warns about it from a number the fingerprint gets cheaply, each class's mean thickness
``2 V / A`` (volume over surface area: a plate's thickness, a rod's radius), and
:func:`resampling_ceiling` measures the bound itself from a label (``benchmarks/spacing_ceiling.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from napari_ssl_seg.evaluation.dice import class_dice
from napari_ssl_seg.training.data import resample_case

__all__ = ["CEILING_MARGIN", "CEILING_SLOPE", "class_surfaces_mm2", "estimated_ceiling", "resampling_ceiling"]

#: Dice lost per target voxel across a class's thickness. Fitted on the chest label
#: (benchmarks/spacing_ceiling.py, 2026-12-05): from 1 mm, the measured ceiling of every class at
#: 1.25-4.81 mm isotropic (ribs 0.72-0.96, vertebrae 0.84-0.98, lungs 0.97-0.99) lies within 0.025
#: of ``1 - 0.2 * spacing / thickness``.
CEILING_SLOPE = 0.2
#: How far :func:`estimated_ceiling` has been measured off the real bound, isotropic coarsening:
#: within 0.025 on the chest label, 0.026-0.048 too low on the grey and white matter of the ICBM
#: brain template at 1.5-2.63 mm (benchmarks/spacing_ceiling.py). A plan claims a class out of
#: reach only when the estimate plus this margin is.
CEILING_MARGIN = 0.05
#: An axis resampled by a smaller ratio than this loses less: nothing at 1, all from here on
#: (measured from 1 mm: at 1.25 mm the ribs lose 0.044 of Dice, at 1.5 mm 0.097, at 2 mm 0.111).
FULL_LOSS_RATIO = 1.5
#: Slices compared at a time, so no full-size temporary is made for a large CT.
_SLAB = 16


def class_surfaces_mm2(label: np.ndarray, spacing: Sequence[float], classes: int) -> np.ndarray:
    """Each class's surface area in mm²: the voxel faces it shares with another class, per ``(z, y, x)`` spacing.

    Faces on the volume's border are not counted: a class cut by the field of view is not thinner for it.
    """
    dz, dy, dx = (float(v) for v in spacing)
    face = {0: dy * dx, 1: dz * dx, 2: dz * dy}
    area = np.zeros(classes, dtype=np.float64)

    def add(first: np.ndarray, second: np.ndarray, axis: int) -> None:
        differs = first != second
        area[:] += face[axis] * (
            np.bincount(first[differs], minlength=classes)[:classes]
            + np.bincount(second[differs], minlength=classes)[:classes]
        )

    for start in range(0, label.shape[0], _SLAB):
        slab = label[start : start + _SLAB + 1]  # one slice more: the faces to the next slab
        own = slab[:_SLAB]
        add(slab[:-1], slab[1:], 0)
        add(own[:, :-1], own[:, 1:], 1)
        add(own[:, :, :-1], own[:, :, 1:], 2)
    return area


def estimated_ceiling(
    thickness_mm: float, target_spacing: Sequence[float], source_spacing: Sequence[float] | None = None
) -> float:
    """About the Dice a class of mean thickness ``thickness_mm`` can reach at most when trained at ``target_spacing``.

    Each ``(z, y, x)`` axis counts with the share of its target spacing it coarsens the labels by,
    against ``source_spacing`` (None: from a much finer one): none when it is no coarser, all from
    :data:`FULL_LOSS_RATIO` on; the axes' mean is the spacing that blurs the class. An estimate:
    within 0.025 of :func:`resampling_ceiling` on the chest label for isotropic coarsening, off by
    up to 0.13 where one axis coarsens alone (benchmarks/spacing_ceiling.py).
    """
    if not thickness_mm > 0:
        return 0.0
    target = np.asarray(target_spacing, dtype=float)
    if source_spacing is None:
        share = np.ones(3)
    else:
        ratio = target / np.asarray(source_spacing, dtype=float)
        share = np.clip((ratio - 1.0) / (FULL_LOSS_RATIO - 1.0), 0.0, 1.0)
    blurring = float(np.mean(target * share))
    return float(np.clip(1.0 - CEILING_SLOPE * blurring / thickness_mm, 0.0, 1.0))


def resampling_ceiling(
    label: np.ndarray, spacing: Sequence[float], target: Sequence[float], classes: int
) -> dict[int, float]:
    """Each foreground class's Dice when a network learns ``label`` at ``target`` exactly.

    The label goes to the target spacing as training takes it (nearest), one-hot, back trilinearly
    as the predictor brings probabilities back, and to the most probable class.
    """
    _, taught = resample_case(np.zeros(label.shape, dtype=np.float32), label, spacing, target)
    assert taught is not None
    one_hot = F.one_hot(torch.from_numpy(taught.astype(np.int64)), classes).permute(3, 0, 1, 2).float()
    back = F.interpolate(one_hot[None], size=label.shape, mode="trilinear", align_corners=False)[0]
    predicted = back.argmax(0).numpy().astype(label.dtype)
    return class_dice(predicted, label, range(1, classes))
