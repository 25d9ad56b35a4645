"""Training patches: two-stream sampling and the augmentation that keeps sides.

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

**Case targets.** A method may ask for one array per labeled case, computed once from the case's
whole label map (``SemiSupervisedMethod.case_target``: UG-MCL's signed distances); it goes through
the same crop, flips and rot90 as the patch's image and label, and takes no random draw, so the
patches drawn are the same with and without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandCropByLabelClassesd,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandSpatialCropd,
)

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.training.data import CaseData

__all__ = [
    "Drawn",
    "TwoStreamSampler",
    "build_augmentation",
    "class_indices",
    "has_lateral_classes",
]


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


def _intensity_changes() -> list[Any]:
    # nnU-Net's intensity augmentation with its probabilities and ranges (brightness x0.75-1.25 p 0.15,
    # contrast about the mean p 0.15, gamma 0.7-1.5 with the mean and spread kept p 0.3), on the image
    # only. Its additive noise and blur are left out: the generated cohorts and real scans have their own.
    return [
        RandScaleIntensityd("image", factors=(-0.25, 0.25), prob=0.15),
        RandScaleIntensityFixedMeand("image", factors=(-0.25, 0.25), preserve_range=True, prob=0.15),
        RandAdjustContrastd("image", gamma=(0.7, 1.5), retain_stats=True, prob=0.3),
    ]


def build_augmentation(
    patch_size: Sequence[int],
    *,
    lateral: bool = True,
    foreground_classes: int | None = None,
    intensity: bool = False,
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

    ``intensity=True`` adds brightness, contrast and gamma changes of the image after them (appended
    last, so the crops and flips a seed draws are those it draws without them).
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
    return Compose([crop, *_axial_flips(patch, lateral=lateral), *(_intensity_changes() if intensity else [])])


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
        intensity_augmentation: bool = False,
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
        self.augment = build_augmentation(self.patch_size, lateral=lateral, intensity=intensity_augmentation)
        self.foreground_fraction = float(foreground_fraction)
        self.foreground_augment = None
        if self.foreground_fraction > 0:
            if num_classes is None or num_classes < 2:
                raise InputError("foreground oversampling needs the class count (at least one foreground class)")
            self.num_classes = int(num_classes)
            self.foreground_augment = build_augmentation(
                self.patch_size,
                lateral=lateral,
                foreground_classes=self.num_classes,
                intensity=intensity_augmentation,
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
