"""Annotation effort in voxels: correcting a teacher's prediction against labeling from scratch.

The product's promise is fewer expert hours. Dice says how close a prediction is; what the
annotator pays is the voxels they must change to turn it into the reference. Labeling from scratch
paints every foreground voxel of the reference; correcting a prediction changes every voxel whose
class differs (painting missed ones, erasing false ones, relabeling swapped ones). Both are also
counted in axial slices touched, since annotators work slice by slice and a slice visited costs
time even for a few voxels.

The store records the same two counts with every label version (``changed_voxels`` against what
the annotator started from, ``foreground_voxels``), so the effort of real corrections is the same
measure as the simulation's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from napari_ssl_seg.store.records import LabelVersion

__all__ = ["CorrectionEffort", "case_correction_ratio", "correction_effort"]


@dataclass(frozen=True)
class CorrectionEffort:
    """What turning a prediction into the reference costs, beside labeling from scratch."""

    changed_voxels: int
    scratch_voxels: int
    changed_slices: int
    scratch_slices: int

    @property
    def voxel_ratio(self) -> float | None:
        """Changed voxels per voxel painted from scratch (None when the reference is empty)."""
        return self.changed_voxels / self.scratch_voxels if self.scratch_voxels else None

    @property
    def slice_ratio(self) -> float | None:
        return self.changed_slices / self.scratch_slices if self.scratch_slices else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "voxel_ratio": self.voxel_ratio, "slice_ratio": self.slice_ratio}


def correction_effort(prediction: np.ndarray, reference: np.ndarray, *, slice_axis: int = 0) -> CorrectionEffort:
    """Voxels and slices to change in ``prediction`` to reach ``reference`` (class ids, same shape).

    ``slice_axis``: the axis an annotator pages through (0, the first array axis, is z for the
    store's (z, y, x) volumes).
    """
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
    other_axes = tuple(axis for axis in range(reference.ndim) if axis != slice_axis % reference.ndim)
    changed = prediction != reference
    foreground = reference != 0
    return CorrectionEffort(
        changed_voxels=int(np.count_nonzero(changed)),
        scratch_voxels=int(np.count_nonzero(foreground)),
        changed_slices=int(np.count_nonzero(changed.any(axis=other_axes))),
        scratch_slices=int(np.count_nonzero(foreground.any(axis=other_axes))),
    )


def case_correction_ratio(versions: Sequence[LabelVersion]) -> float | None:
    """A case's recorded correction effort: voxels changed since the teacher's prediction, per voxel
    labeling from scratch would paint.

    The changed voxels of the version that started from a prediction and of every later version
    are summed (each counts against the one before it) and divided by the latest version's
    foreground. None when no version started from a prediction (imported or drawn from scratch)
    or the counts were not recorded.
    """
    ordered = sorted(versions, key=lambda version: version.version)
    starts = [index for index, version in enumerate(ordered) if version.started_from is not None]
    if not starts:
        return None
    chain = ordered[starts[-1] :]  # the latest restart from a prediction begins the effort anew
    changed = [version.changed_voxels for version in chain]
    foreground = chain[-1].foreground_voxels
    if any(value is None for value in changed) or not foreground:
        return None
    return sum(value for value in changed if value is not None) / foreground
