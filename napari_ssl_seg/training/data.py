"""Training data: a frozen label snapshot and the normalised cases (patches: :mod:`.sampler`).

**Snapshot.** Annotators keep saving label versions while a retrain runs, so the loop freezes
``{case: version}`` once at the start and only ever reads those versions; the snapshot goes into
the model card, so every model says exactly which labels it learnt from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    SpatialPad,
)

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.inference.predictor import SPACING_TOLERANCE
from napari_ssl_seg.intensity import choose_intensity, normalise_intensity, validate_intensity
from napari_ssl_seg.io.orientation import CANONICAL, reorientation
from napari_ssl_seg.store.project import Project

__all__ = [
    "CaseData",
    "LabelSnapshot",
    "load_cases",
    "resample_case",
    "resampled_shape",
    "resolve_intensity",
    "take_snapshot",
]


@dataclass(frozen=True)
class LabelSnapshot:
    """The label versions a run trains and validates on, frozen at its start."""

    labeled: dict[str, int]
    unlabeled: list[str]
    validation: dict[str, int]
    project_name: str
    classes: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labeled": dict(self.labeled),
            "unlabeled": list(self.unlabeled),
            "validation": dict(self.validation),
            "project_name": self.project_name,
            "classes": {str(key): value for key, value in self.classes.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSnapshot:
        return cls(
            labeled={str(k): int(v) for k, v in data["labeled"].items()},
            unlabeled=[str(v) for v in data["unlabeled"]],
            validation={str(k): int(v) for k, v in data["validation"].items()},
            project_name=str(data["project_name"]),
            classes={int(k): str(v) for k, v in data.get("classes", {}).items()},
        )


def take_snapshot(project: Project) -> LabelSnapshot:
    """Freeze the latest label version of every labeled training and validation case.

    Raises :class:`InputError` when there is nothing to learn from or nothing to select a model
    on (test cases are never used: model selection on the test split inflates reported scores).
    """
    labeled: dict[str, int] = {}
    unlabeled: list[str] = []
    validation: dict[str, int] = {}
    for case in project.cases():
        if case.split == "train":
            if case.is_labeled:
                labeled[case.name] = int(case.latest_label_version)
            else:
                unlabeled.append(case.name)
        elif case.split == "validation" and case.is_labeled:
            validation[case.name] = int(case.latest_label_version)
    if not labeled:
        raise InputError(f"project {project.root} has no labeled training case; label one before training")
    if not validation:
        raise InputError(
            f"project {project.root} has no labeled validation case; models are selected on the validation split"
        )
    names = project.label_names()
    name = project.setting("name") or project.root.name
    return LabelSnapshot(labeled, sorted(unlabeled), validation, name, dict(sorted(names.items())))


@dataclass
class CaseData:
    """One case ready for sampling: normalised float32 image and int64-able label (z, y, x)."""

    name: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]


def _pad_to(array: np.ndarray, patch: Sequence[int], value: float) -> np.ndarray:
    if all(size >= want for size, want in zip(array.shape, patch, strict=True)):
        return array
    target = [max(size, want) for size, want in zip(array.shape, patch, strict=True)]
    padded = SpatialPad(target, value=value)(torch.as_tensor(array)[None])
    return np.asarray(padded.as_tensor()[0] if hasattr(padded, "as_tensor") else padded[0])


def resolve_intensity(project: Project, snapshot: LabelSnapshot, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``given`` (config or ``--init`` model card) validated, else chosen from the first labeled case."""
    if given is not None:
        return validate_intensity(given)
    first = sorted(snapshot.labeled)[0]
    return choose_intensity(project.case(first).modality, project.read_image(first).array)


def load_cases(
    project: Project,
    versions: Mapping[str, int | None],
    intensity: Mapping[str, Any],
    *,
    pad_to: Sequence[int] | None = None,
    orientation: str | None = CANONICAL,
    spacing: Sequence[float] | None = None,
) -> list[CaseData]:
    """Read, reorient, normalise and resample cases; ``versions`` maps a case to its label version (None: image only).

    Every case is reoriented to ``orientation`` (None: kept in its voxel order, for runs that
    continue a teacher whose card records none), so the network sees one anatomy whatever order
    each file stores. With ``spacing`` (z, y, x mm) a case whose spacing differs is resampled to
    it, as the predictor resamples what it is given to the card's spacing: the network trains on
    the voxel size it will predict on. With ``pad_to`` a case smaller than the patch is padded once
    here rather than per sample.
    """
    cases = []
    for name, version in versions.items():
        volume = project.read_image(name)
        turn = reorientation(volume.direction, volume.shape, orientation)
        image = normalise_intensity(turn.to_target(volume.array), intensity)
        label = None
        if version is not None:
            label = np.asarray(project.read_label(name, version).array)
            if label.shape != volume.shape:
                raise InputError(f"case {name!r}: label shape {label.shape} differs from image shape {volume.shape}")
            label = turn.to_target(label.astype(np.uint8 if label.max(initial=0) < 256 else np.int64))
        case_spacing = turn.target_spacing(volume.spacing)
        if spacing is not None and not np.allclose(case_spacing, spacing, rtol=SPACING_TOLERANCE):
            image, label = resample_case(image, label, case_spacing, spacing)
            case_spacing = tuple(float(v) for v in spacing)
        if pad_to is not None:
            image = _pad_to(image, pad_to, float(image.min()))
            label = None if label is None else _pad_to(label, pad_to, 0)
        cases.append(CaseData(name, image, label, case_spacing))
    return cases


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int, int]:
    """The voxel shape of an array of ``shape`` at ``spacing`` once resampled to ``target`` (z, y, x)."""
    a, b, c = (max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))
    return a, b, c


def resample_case(
    image: np.ndarray, label: np.ndarray | None, spacing: Sequence[float], target: Sequence[float]
) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (trilinear, as the predictor resamples) and ``label`` (nearest) from ``spacing`` to ``target``."""
    shape = resampled_shape(image.shape, spacing, target)
    resized = F.interpolate(torch.from_numpy(image)[None, None], size=shape, mode="trilinear", align_corners=False)
    image = resized[0, 0].numpy()
    if label is not None:
        dtype = label.dtype
        moved = F.interpolate(torch.from_numpy(label.astype(np.float32))[None, None], size=shape, mode="nearest-exact")
        label = moved[0, 0].numpy().astype(dtype)
    return np.ascontiguousarray(image), label
