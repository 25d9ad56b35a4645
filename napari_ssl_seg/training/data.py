"""Training data: a frozen label snapshot, normalised cases, two-stream patch sampling, validation.

**Snapshot.** Annotators keep saving label versions while a retrain runs, so the loop freezes
``{case: version}`` once at the start and only ever reads those versions; the snapshot goes into
the model card, so every model says exactly which labels it learnt from.

**Sampling.** Every iteration draws ``batch_labeled`` labeled patches and ``batch_unlabeled``
unlabeled patches (the papers' 2 + 2), cases drawn uniformly with replacement. The random
generator of iteration ``i`` on rank ``r`` is seeded from ``(seed, r, i)`` alone, so a resumed run
draws exactly the patches the uninterrupted run would have drawn without storing sampler state,
and each rank of a distributed run sees different patches. Without unlabeled cases the unlabeled
stream draws from the labeled training images (their labels unused): the consistency losses still
regularise on them, which is what the papers do with the labeled half of their batch anyway.

**Augmentation** (MONAI): random crop of the patch size (cases smaller than the patch are padded
once at load time, images with their minimum, labels with background); random rot90 and flips in
the axial (y, x) plane only. Clinical MRI/CT is strongly anisotropic (the cohort: about 10 mm
between slices, 3 mm in plane), so rotating or flipping through z would put thick-slice
resolution where the network expects in-plane detail; inference never sees such images. Rot90 is
used only for square in-plane patches (otherwise the patch shape would change); flips still give
the 180-degree rotation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    RandCropByLabelClassesd,
    RandFlipd,
    RandRotate90d,
    RandSpatialCropd,
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
    "TwoStreamSampler",
    "build_augmentation",
    "class_indices",
    "has_lateral_classes",
    "load_cases",
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


#: The name a class gets when its label map names none (a NIfTI label file, for one).
UNNAMED_CLASS = re.compile(r"class \d+")


def has_lateral_classes(class_names: Mapping[int, str]) -> bool:
    """Whether any class may be one side of a pair ("left lung", "Right kidney", ...).

    A foreground class without a name counts: a label map from a NIfTI file names no class, and
    mirroring left and right under a class that is in fact one side teaches the network to ignore
    the side (measured: the lungs of a cold start on unnamed chest labels, test Dice 0.62-0.67).
    """
    foreground = [name for label, name in class_names.items() if int(label) != 0]
    if any(UNNAMED_CLASS.fullmatch(name.strip().lower()) for name in foreground):
        return True
    words = {word for name in foreground for word in name.lower().replace("_", " ").split()}
    return bool(words & {"left", "right"})


#: What a patch carries through the augmentation: the image, its label, and the method's per-case
#: target where it has one (only labeled patches do, hence ``allow_missing_keys``).
PATCH_KEYS = ("image", "label", "case_target")


def _axial_flips(patch_size: Sequence[int], *, lateral: bool) -> list[Any]:
    transforms: list[Any] = []
    keys = list(PATCH_KEYS)
    if lateral and patch_size[1] == patch_size[2]:
        # Spatial axes are counted without the channel: (0, 1, 2) = (z, y, x); (1, 2) is the axial plane.
        transforms.append(RandRotate90d(keys, prob=0.75, max_k=3, spatial_axes=(1, 2), allow_missing_keys=True))
    transforms.append(RandFlipd(keys, prob=0.5, spatial_axis=1, allow_missing_keys=True))
    if lateral:
        transforms.append(RandFlipd(keys, prob=0.5, spatial_axis=2, allow_missing_keys=True))
    return transforms


def build_augmentation(
    patch_size: Sequence[int], *, lateral: bool = True, foreground_classes: int | None = None
) -> Compose:
    """Random crop, then axial-plane flips and rot90 (square in-plane patches only), on image + label.

    ``lateral=False`` keeps the left-right arrangement: no flip along x (the array's last axis:
    right to left in the canonical LPS orientation :func:`load_cases` gives every case, whatever
    the file's voxel order) and no rot90 (which moves the left side to the front or the right);
    the anterior-posterior flip stays.

    ``foreground_classes=N`` (N classes with background) makes the crop foreground-centred instead,
    nnU-Net's oversampling: a foreground class drawn uniformly among those the case has, then a
    random voxel of it as the patch centre (MONAI ``RandCropByLabelClassesd``; the case's class
    indices come in ``label_indices``, see :func:`class_indices`). Small structures (ribs, the
    cervical spine) are then seen as often as the lungs instead of in proportion to their volume.
    """
    keys = list(PATCH_KEYS)
    patch = tuple(int(v) for v in patch_size)
    if foreground_classes is None:
        crop: Any = RandSpatialCropd(keys, roi_size=patch, random_size=False, allow_missing_keys=True)
    else:
        crop = RandCropByLabelClassesd(
            keys,
            label_key="label",
            spatial_size=patch,
            ratios=[0, *([1] * (foreground_classes - 1))],
            num_classes=foreground_classes,
            num_samples=1,
            indices_key="label_indices",
            warn=False,
            allow_missing_keys=True,
        )
    return Compose([crop, *_axial_flips(patch, lateral=lateral)])


def class_indices(label: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Flat voxel indices of each class 0..num_classes-1 in ``label``, as ``RandCropByLabelClassesd`` takes them."""
    flat = label.ravel()
    return [np.flatnonzero(flat == value) for value in range(num_classes)]


def _plain(tensor: Any) -> torch.Tensor:
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


class Drawn(NamedTuple):
    """One iteration's patches on the CPU."""

    labeled_image: torch.Tensor  # (B_l, 1, z, y, x)
    labeled_target: torch.Tensor  # (B_l, z, y, x) class ids
    unlabeled_image: torch.Tensor  # (B_u, 1, z, y, x)
    case_target: torch.Tensor | None  # (B_l, K, z, y, x): the crops of the method's case targets, if it has any


class TwoStreamSampler:
    """Draws (labeled, unlabeled) augmented patch batches; reproducible per (seed, rank, iteration)."""

    def __init__(
        self,
        labeled: Sequence[CaseData],
        unlabeled: Sequence[CaseData],
        *,
        patch_size: Sequence[int],
        batch_labeled: int,
        batch_unlabeled: int,
        seed: int,
        rank: int = 0,
        lateral: bool = True,
        foreground_fraction: float = 0.0,
        num_classes: int | None = None,
        case_target: Callable[[np.ndarray], np.ndarray | None] | None = None,
    ) -> None:
        if not labeled:
            raise InputError("no labeled training case to sample from")
        self.labeled = list(labeled)
        # No unlabeled case: the unlabeled stream reuses the labeled images (see the module docstring).
        self.unlabeled = list(unlabeled) or self.labeled
        self.patch_size = tuple(int(v) for v in patch_size)
        self.batch_labeled = batch_labeled
        self.batch_unlabeled = batch_unlabeled
        self.seed = int(seed)
        self.rank = int(rank)
        self.augment = build_augmentation(self.patch_size, lateral=lateral)
        self.foreground_fraction = float(foreground_fraction)
        self.foreground_augment = None
        if self.foreground_fraction > 0:
            if num_classes is None or num_classes < 2:
                raise InputError("foreground oversampling needs the class count (at least one foreground class)")
            self.num_classes = int(num_classes)
            self.foreground_augment = build_augmentation(
                self.patch_size, lateral=lateral, foreground_classes=self.num_classes
            )
        # Per labeled case (by position), its class indices and the method's case target (a
        # channel-first array of the case's shape, e.g. UG-MCL's distance maps): computed on first
        # use, kept for the run, cropped and flipped with each of its patches.
        self._indices: dict[int, list[np.ndarray]] = {}
        self.case_target = case_target
        self._case_targets: dict[int, np.ndarray | None] = {}

    def _case_target(self, position: int) -> np.ndarray | None:
        if self.case_target is None:
            return None
        if position not in self._case_targets:
            label = self.labeled[position].label
            self._case_targets[position] = None if label is None else self.case_target(label)
        return self._case_targets[position]

    def _patch(
        self, case: CaseData, rng: np.random.Generator, *, labeled_at: int | None = None, foreground: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One augmented patch: image, label and case target (or None).

        ``labeled_at``: the position of a labeled case, for its case target and, with ``foreground``,
        a foreground-centred crop.
        """
        image = torch.from_numpy(case.image)[None]
        label = (
            torch.from_numpy(case.label)[None] if case.label is not None else torch.zeros_like(image, dtype=torch.uint8)
        )
        data: dict[str, Any] = {"image": image, "label": label}
        augment = self.augment
        if labeled_at is not None:
            case_target = self._case_target(labeled_at)
            if case_target is not None:
                data["case_target"] = torch.from_numpy(case_target)
        if foreground and labeled_at is not None and case.label is not None:
            indices = self._indices.get(labeled_at)
            if indices is None:
                indices = self._indices[labeled_at] = class_indices(case.label, self.num_classes)
            if any(len(found) for found in indices[1:]):  # a case of background only: a plain random crop
                data["label_indices"] = indices
                augment = self.foreground_augment
        augment.set_random_state(seed=int(rng.integers(2**31 - 1)))
        out = augment(data)
        if isinstance(out, list):  # RandCropByLabelClassesd gives num_samples (here one) crops
            out = out[0]
        cropped_target = _plain(out["case_target"]).contiguous() if "case_target" in out else None
        return _plain(out["image"]).float().contiguous(), _plain(out["label"])[0].long().contiguous(), cropped_target

    def batch(self, iteration: int) -> Drawn:
        """The patches of ``iteration`` on the CPU (see :class:`Drawn`)."""
        rng = np.random.default_rng([self.seed, self.rank, int(iteration)])
        images, targets, case_targets, unlabeled = [], [], [], []
        for index in rng.integers(len(self.labeled), size=self.batch_labeled):
            # Drawn only when oversampling, so runs without it draw the patches they always drew.
            foreground = self.foreground_fraction > 0 and rng.random() < self.foreground_fraction
            position = int(index)
            image, target, case_target = self._patch(
                self.labeled[position], rng, labeled_at=position, foreground=foreground
            )
            images.append(image)
            targets.append(target)
            case_targets.append(case_target)
        for index in rng.integers(len(self.unlabeled), size=self.batch_unlabeled):
            unlabeled.append(self._patch(self.unlabeled[int(index)], rng)[0])
        empty = torch.zeros((0, 1, *self.patch_size), dtype=torch.float32)
        stacked_case_targets = None
        if case_targets and all(found is not None for found in case_targets):
            stacked_case_targets = torch.stack(case_targets)
        return Drawn(
            torch.stack(images),
            torch.stack(targets),
            torch.stack(unlabeled) if unlabeled else empty,
            stacked_case_targets,
        )
