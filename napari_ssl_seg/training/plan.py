"""A training plan made from a project's fingerprint: spacing, patch, network, intensity, augmentation.

The rules are nnU-Net's, scaled to a compute budget (:class:`ComputeBudget`):

* **Target spacing**: the median spacing; for anisotropic data (one axis over 3x the finest) the
  coarse axis takes the 10th percentile of its spacings. Then, when the median image at that
  spacing holds more than ``context_ratio`` patches' worth of voxels, the spacing is coarsened
  (finest axes first, as nnU-Net's low-resolution stage does) until it holds no more: a patch must
  see enough of the anatomy to tell the structures (and the sides) apart. The CPU budget's ratio is
  the one of the ``quick`` recipe on the chest cohort it was measured to converge on.
* **Patch**: the median image shape at the target spacing, rounded up to what the network's
  pooling divides, then shrunk along the axis that covers the largest share of the image until it
  fits the budget's voxel count.
* **Network**: the budget's width; its depth, less where the median image is too thin for it.
* **Intensity**: CT clipped to the dataset's foreground percentiles 0.5 and 99.5 (and mapped
  to [0, 1]); anything else a per-image z-score, over the non-zero voxels when the images have a
  zero background (nnU-Net: when cropping to the non-zero region would drop a quarter of the image).
* **Augmentation**: no left-right flips or rot90 when a class names a side, or has no name.
* **What the spacing cannot resolve**: each class's Dice ceiling at the target spacing, measured
  on a few labeled cases (training/resolution.py): the Dice of a network that learned the labels
  exactly at that spacing. A class whose ceiling is under the Dice its size calls for gets a
  warning, since no training at that spacing will reach it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.inference.device import select_device
from napari_ssl_seg.store.project import Project
from napari_ssl_seg.training.budget import (
    BUDGETS,
    MEASURED_ITERATIONS_PER_SECOND,
    WIDTH_COST,
    ComputeBudget,
    MeasuredRate,
    project_rates,
)
from napari_ssl_seg.training.config import TrainConfig
from napari_ssl_seg.training.fingerprint import DatasetFingerprint, fingerprint_project
from napari_ssl_seg.training.resolution import CEILING_CASES, project_ceilings
from napari_ssl_seg.training.sampler import has_lateral_classes

__all__ = [
    "PLAN_SETTING",
    "PLAN_WARNING",
    "TrainingPlan",
    "budget_for_device",
    "make_plan",
    "plan_project",
    "planned_config",
]

#: nnU-Net: an axis is the coarse one when its spacing is over 3x the finest.
ANISOTROPY_RATIO = 3.0
#: Images whose non-zero voxels are fewer than this share get a z-score over the non-zero voxels.
NONZERO_MASK_FRACTION = 0.75
#: A class under this share of the voxels is small, under the mid one mid-sized (for reports).
SMALL_CLASS_FRACTION = 0.005
LARGE_CLASS_FRACTION = 0.05
#: The Dice a class of each size should reach; a spacing whose ceiling is below it is reported.
SIZE_DICE_AIM = {"large": 0.90, "mid": 0.80, "small": 0.70}
#: The sampled ceiling's error (within 0.005 of the full measure on the chest and brain labels):
#: a class is called out of reach only when its ceiling is this far below its aim.
CEILING_TOLERANCE = 0.01


@dataclass(frozen=True)
class TrainingPlan:
    """The settings a run takes from the data, each with the reason it was chosen."""

    budget: str
    target_spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    depth: int
    base_width: int
    batch_labeled: int
    batch_unlabeled: int
    iterations: int
    foreground_oversampling: float
    intensity: dict[str, Any]
    lateral_augmentation: str
    class_sizes: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    #: Each class's measured Dice ceiling at the target spacing (absent from plans made before it).
    class_ceilings: dict[str, float] = field(default_factory=dict)
    #: The reasons a user should see before training: what this plan cannot reach.
    warnings: list[str] = field(default_factory=list)
    #: Brightness, contrast and gamma changes of each patch (False in plans made before 2026-12-05).
    intensity_augmentation: bool = False

    def overrides(self) -> dict[str, Any]:
        """The :class:`TrainConfig` fields the plan sets."""
        return {
            "target_spacing": self.target_spacing,
            "patch_size": self.patch_size,
            "depth": self.depth,
            "base_width": self.base_width,
            "batch_labeled": self.batch_labeled,
            "batch_unlabeled": self.batch_unlabeled,
            "iterations": self.iterations,
            "rampup_iterations": self.iterations,
            "lr_step": round(self.iterations * 0.8),
            "foreground_oversampling": self.foreground_oversampling,
            "intensity": dict(self.intensity),
            "lateral_augmentation": self.lateral_augmentation,
            "intensity_augmentation": self.intensity_augmentation,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_spacing"] = list(self.target_spacing)
        data["patch_size"] = list(self.patch_size)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingPlan:
        values = dict(data)
        values["target_spacing"] = tuple(float(v) for v in values["target_spacing"])
        values["patch_size"] = tuple(int(v) for v in values["patch_size"])
        return cls(**values)


def _fmt(values: Any, digits: int = 2) -> str:
    texts = (f"{float(v):.{digits}f}" for v in values)
    return " x ".join(text.rstrip("0").rstrip(".") if "." in text else text for text in texts)


def _target_spacing(fingerprint: DatasetFingerprint, budget: ComputeBudget, reasons: list[str]) -> np.ndarray:
    spacings = fingerprint.spacings
    target = np.median(spacings, axis=0)
    reasons.append(f"median spacing {_fmt(target)} mm (z, y, x) over {len(spacings)} cases")
    coarse = int(np.argmax(target))
    if target[coarse] > ANISOTROPY_RATIO * target.min():
        target[coarse] = np.percentile(spacings[:, coarse], 10)
        reasons.append(
            f"anisotropic (axis {'zyx'[coarse]} over {ANISOTROPY_RATIO:g}x the finest): that axis takes the "
            f"10th percentile of its spacings, {target[coarse]:.2f} mm"
        )
    extent = np.asarray(fingerprint.median_extent_mm)
    limit = budget.context_ratio * budget.patch_voxels
    start = target.copy()
    while np.prod(extent / target) > limit:
        fine = target < target.max() / 1.01
        target[fine if fine.any() else slice(None)] *= 1.01
    if not np.allclose(start, target):
        reasons.append(
            f"coarsened to {_fmt(target)} mm: at {_fmt(start)} mm the median image ({_fmt(extent, 0)} mm) "
            f"holds {np.prod(extent / start) / budget.patch_voxels:.0f} patches of the {budget.name} budget, "
            f"at most {budget.context_ratio:g} let a patch see enough of it"
        )
    return target


def _patch_and_depth(
    fingerprint: DatasetFingerprint, target: np.ndarray, budget: ComputeBudget, reasons: list[str]
) -> tuple[tuple[int, int, int], int]:
    shape = np.asarray(fingerprint.median_extent_mm) / target
    depth = budget.depth
    # Each pooling halves every axis: the thinnest axis of the median image bounds the depth.
    while depth > 2 and shape.min() < 2 ** (depth - 1) * 2:
        depth -= 1
    if depth != budget.depth:
        reasons.append(f"depth {depth} instead of {budget.depth}: the median image is {shape.min():.0f} voxels thin")
    divisor = 2 ** (depth - 1)
    patch = np.maximum(np.ceil(shape / divisor) * divisor, divisor).astype(int)
    while np.prod(patch) > budget.patch_voxels:
        # Take one pooling step off the axis whose loss leaves the patch covering the largest
        # share of the image along its worst-covered axis (then: the most voxels). A thin axis of
        # three steps loses a third at once, so it shrinks only once the others have given way.
        best: tuple[float, float] | None = None
        for axis in np.flatnonzero(patch > divisor):
            trial = patch.copy()
            trial[axis] -= divisor
            key = (float(np.min(np.minimum(trial / shape, 1.0))), float(np.prod(trial)))
            if best is None or key > best:
                best, chosen = key, trial
        patch = chosen
    # The last step may have taken more than needed: give it back where it fits, worst-covered axis first.
    ceiling = np.maximum(np.ceil(shape / divisor) * divisor, divisor)
    while True:
        fits = [
            a
            for a in range(3)
            if patch[a] < ceiling[a] and np.prod(patch) // patch[a] * (patch[a] + divisor) <= budget.patch_voxels
        ]
        if not fits:
            break
        patch[min(fits, key=lambda a: patch[a] / shape[a])] += divisor
    reasons.append(
        f"patch {_fmt(patch, 0)} voxels ({_fmt(patch * target, 0)} mm) of a median image of {_fmt(shape, 0)} "
        f"voxels at the target spacing; at most {budget.patch_voxels} voxels ({budget.name} budget)"
    )
    return (int(patch[0]), int(patch[1]), int(patch[2])), depth


def _intensity(fingerprint: DatasetFingerprint, reasons: list[str]) -> dict[str, Any]:
    stats = fingerprint.foreground_intensity
    if fingerprint.is_ct:
        low, high = round(stats["percentile_00_5"], 1), round(stats["percentile_99_5"], 1)
        if not low < high:
            high = low + 1.0
        reasons.append(
            f"CT: clipped to the foreground's percentiles 0.5 and 99.5 over {len(fingerprint.sampled_cases)} "
            f"labeled cases, [{low:g}, {high:g}] HU"
        )
        return {"kind": "ct_window", "window": [low, high]}
    if fingerprint.nonzero_fraction < NONZERO_MASK_FRACTION:
        reasons.append(
            f"{fingerprint.modality}: z-score per image over its non-zero voxels (only "
            f"{fingerprint.nonzero_fraction:.0%} of the voxels are non-zero)"
        )
        return {"kind": "zscore", "mask": "nonzero"}
    reasons.append(f"{fingerprint.modality}: z-score per image (arbitrary units differ between scans)")
    return {"kind": "zscore"}


def _class_sizes(fingerprint: DatasetFingerprint) -> dict[str, str]:
    sizes = {}
    for size in fingerprint.classes:
        kind = "large" if size.voxel_fraction >= LARGE_CLASS_FRACTION else "mid"
        kind = "small" if size.voxel_fraction < SMALL_CLASS_FRACTION else kind
        sizes[str(size.label)] = kind
    return sizes


def _ceiling_warnings(
    fingerprint: DatasetFingerprint, target: np.ndarray, sizes: Mapping[str, str], ceilings: Mapping[int, float]
) -> list[str]:
    warnings = []
    for size in fingerprint.classes:
        ceiling, kind = ceilings.get(size.label), sizes.get(str(size.label), "mid")
        if ceiling is None or ceiling + CEILING_TOLERANCE >= SIZE_DICE_AIM[kind]:
            continue
        thickness = ":" if size.thickness_mm is None else f", about {size.thickness_mm:.1f} mm thick,"
        warnings.append(
            f"{size.name}{thickness} at {_fmt(target)} mm no network can reach a Dice over {ceiling:.2f} on it "
            f"({kind} classes aim at {SIZE_DICE_AIM[kind]:.2f}); only a finer spacing resolves it, which takes "
            "a larger budget"
        )
    return warnings


def _iterations(
    budget: ComputeBudget, patch: tuple[int, int, int], minutes: float | None, method: str, here: MeasuredRate | None
) -> int:
    if minutes is None:
        return budget.iterations
    if here is not None:
        rate = here.at_patch(math.prod(patch))
    else:
        rate = MEASURED_ITERATIONS_PER_SECOND.get(method, MEASURED_ITERATIONS_PER_SECOND["supervised"])
        # Measured at the quick patch and width on the CPU; an iteration's cost grows with the patch's voxels.
        reference = budget.measured_patch_voxels or budget.patch_voxels
        rate *= reference / math.prod(patch) / WIDTH_COST.get(budget.base_width, 1.0)
    return max(100, int(round(minutes * 60 * rate, -2)))


def make_plan(
    fingerprint: DatasetFingerprint,
    *,
    budget: str = "cpu",
    minutes: float | None = None,
    method: str = "supervised",
    ceilings: Mapping[int, float] | None = None,
    measured: MeasuredRate | None = None,
) -> TrainingPlan:
    """The plan for ``fingerprint`` under a named :data:`BUDGETS` entry; deterministic for a fingerprint.

    ``minutes`` sets the iteration count from the rate of ``method``: ``measured`` (a run of it on
    this machine), else the 2-core development machine's; None keeps the budget's own count.
    ``ceilings`` (class: Dice ceiling at this plan's target spacing, :func:`plan_project` measures
    them) adds warnings.
    """
    chosen = BUDGETS[budget]
    reasons: list[str] = []
    target = _target_spacing(fingerprint, chosen, reasons)
    patch, depth = _patch_and_depth(fingerprint, target, chosen, reasons)
    intensity = _intensity(fingerprint, reasons)
    names = {size.label: size.name for size in fingerprint.classes}
    lateral = "off" if has_lateral_classes({0: "background", **names}) else "on"
    reasons.append(
        "no left-right flips or rot90: a class names a side or has no name"
        if lateral == "off"
        else "left-right flips and rot90 in augmentation: no class names a side"
    )
    # Measured on the chest cohort (3 seeds) and the brain lesion: docs/planning.md.
    reasons.append("brightness, contrast and gamma changes in augmentation (nnU-Net's): cases differ in them")
    sizes = _class_sizes(fingerprint)
    ceilings = dict(ceilings or {})
    warnings = _ceiling_warnings(fingerprint, target, sizes, ceilings)
    reasons.extend(warnings)
    iterations = _iterations(chosen, patch, minutes, method, measured)
    if minutes is not None:
        if measured is not None:
            where = f"this machine's rate (run {measured.run})"
        elif method in MEASURED_ITERATIONS_PER_SECOND:
            where = "the development machine's rate"
        else:
            # A method from outside the package was never timed: supervised's rate overestimates what fits.
            where = "supervised's rate on the development machine (never measured for it: fewer may fit)"
        reasons.append(f"{iterations} iterations fit {minutes:g} min of {method} at {where}")
    return TrainingPlan(
        budget=chosen.name,
        target_spacing=(float(round(target[0], 4)), float(round(target[1], 4)), float(round(target[2], 4))),
        patch_size=patch,
        depth=depth,
        base_width=chosen.base_width,
        batch_labeled=chosen.batch_labeled,
        batch_unlabeled=chosen.batch_unlabeled,
        iterations=iterations,
        # nnU-Net's third of the patches centred on foreground: small classes are seen at all.
        foreground_oversampling=0.33,
        intensity=intensity,
        lateral_augmentation=lateral,
        intensity_augmentation=True,
        class_sizes=sizes,
        reasons=reasons,
        class_ceilings={str(label): round(value, 3) for label, value in ceilings.items()},
        warnings=warnings,
    )


#: How a plan's warning starts where it is written as a line (the run log's notes, ``train``'s stderr).
PLAN_WARNING = "plan: "

#: The project setting the latest plan is stored under, with the fingerprint it came from.
PLAN_SETTING = "plan"


def budget_for_device(device: str | None) -> str:
    """The budget of the device ``--device`` names: ``gpu`` for CUDA, else ``cpu``."""
    return "gpu" if select_device(device).type == "cuda" else "cpu"


def plan_project(
    project_root: Path | str,
    *,
    device: str | None = "auto",
    minutes: float | None = None,
    method: str = "supervised",
) -> tuple[TrainingPlan, DatasetFingerprint]:
    """Fingerprint and plan a project, and store both in it (the ``plan`` setting)."""
    if minutes is not None and not minutes > 0:
        raise InputError(f"--budget must be a positive number of minutes, got {minutes}")
    with Project.open(project_root) as project:
        fingerprint = fingerprint_project(project)
        budget = budget_for_device(device)
        here = None
        if minutes is not None:  # this machine's rate for the method, at the budget's network width
            rates = project_rates(project.root, select_device(device).type, base_width=BUDGETS[budget].base_width)
            here = rates.get(method)
        plan = make_plan(fingerprint, budget=budget, minutes=minutes, method=method, measured=here)
        labeled = {case.name: case.latest_label_version for case in project.cases() if case.is_labeled}
        measured = {name: int(labeled[name]) for name in fingerprint.sampled_cases[:CEILING_CASES]}
        ceilings = project_ceilings(project, measured, plan.target_spacing, fingerprint.orientation)
        plan = make_plan(fingerprint, budget=budget, minutes=minutes, method=method, ceilings=ceilings, measured=here)
        record = {"plan": plan.to_dict(), "fingerprint": fingerprint.to_dict()}
        project.set_setting(PLAN_SETTING, json.dumps(record))
    return plan, fingerprint


def planned_config(plan: TrainingPlan, base: TrainConfig) -> TrainConfig:
    """``base`` with every setting the plan makes, and the plan itself recorded."""
    values = {**plan.overrides(), "plan": plan.to_dict()}
    return dataclasses.replace(base, **values).validate()
