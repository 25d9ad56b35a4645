"""Does a teacher fit the images and the project it is asked to segment? One-line warnings if not.

A chest-CT teacher run on a brain MRI still returns a segmentation: 90% of the head as "tissue",
vertebrae inside the skull. Nothing in the network can notice; the model card can. The checks are
what the card records against what the image and the project say:

* **classes**: the project's foreground classes against the teacher's (count and names);
* **intensity**: a teacher trained on a Hounsfield window against an image that is not CT (its
  modality says so, or no voxel is below -500, where CT has air), and the reverse;
* **spacing**: the predictor resamples every image to the teacher's spacing. Finer images lose
  nothing the teacher used (a 0.6 mm CT for a 3 mm teacher is fine); an image more than twice as
  coarse on an axis asks the teacher for detail the scan never had. Axes are compared sorted, so a
  file stored in another voxel order is not flagged for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from napari_ssl_seg.intensity import CT_EVIDENCE_HU
from napari_ssl_seg.networks.checkpoint import ModelCard

__all__ = ["SPACING_FACTOR", "fit_warnings", "looks_like_ct"]

SPACING_FACTOR = 2.0


def looks_like_ct(modality: str | None, minimum: float | None) -> bool | None:
    """True/False when the modality or the values tell, None when neither does."""
    if modality:
        return modality.upper() == "CT"
    if minimum is None:
        return None
    return minimum < CT_EVIDENCE_HU


def _names(classes: Mapping[int, str]) -> dict[int, str]:
    return {int(k): str(v) for k, v in classes.items() if int(k) != 0}


def fit_warnings(
    card: ModelCard,
    *,
    project_classes: Mapping[int, str] | None = None,
    modality: str | None = None,
    minimum: float | None = None,
    spacing: Sequence[float] | None = None,
) -> list[str]:
    """The ways ``card``'s teacher does not fit; empty when nothing is known to be off."""
    warnings = []
    teacher = _names(card.classes)
    if project_classes:
        project = _names(project_classes)
        if project and project != teacher:
            warnings.append(
                f"the teacher predicts {len(teacher)} classes ({', '.join(teacher.values())}), this project has "
                f"{len(project)} ({', '.join(project.values())}): its labels will not mean the project's"
            )
    trained_on_ct = card.intensity.get("kind") == "ct_window"
    is_ct = looks_like_ct(modality, minimum)
    if is_ct is not None and is_ct != trained_on_ct:
        seen, given = ("CT (a Hounsfield window)", "not CT") if trained_on_ct else ("MRI-like (z-scored)", "CT")
        warnings.append(f"the teacher was trained on {seen} images and this image is {given}")
    if spacing is not None and card.spacing is not None:
        ours, theirs = np.sort(np.asarray(spacing, float)), np.sort(np.asarray(card.spacing, float))
        ratio = ours / np.maximum(theirs, 1e-6)
        if np.any(ratio > SPACING_FACTOR):
            shown = " x ".join(f"{value:.2g}" for value in ours)
            trained = " x ".join(f"{value:.2g}" for value in theirs)
            warnings.append(
                f"voxel spacing {shown} mm is over {SPACING_FACTOR:g}x coarser than the teacher's {trained} mm "
                "on an axis: it expects detail this scan does not have"
            )
    return warnings
