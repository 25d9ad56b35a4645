"""How fine a spacing a class needs: its thickness, and the Dice a network at a coarser spacing can reach at most.

A network trained at a target spacing predicts at that spacing, and the predictor brings its
probabilities back to the scan's voxels (trilinear) before taking the most probable class. A
structure thinner than a few target voxels then loses its edges however good the network is.
:func:`resampling_ceiling` measures that bound from a label: the label as training takes it
(nearest), one-hot, back trilinearly, most probable class, Dice against the label.
:func:`sampled_ceiling` measures the same at a random sample of voxels, in a second or two for a
full-size CT, which is what the plan reports. The thickness ``2 V / A`` (a plate's thickness, a
rod's radius) says why a class loses more than another.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from napari_ssl_seg.evaluation.dice import class_dice
from napari_ssl_seg.io.orientation import reorientation
from napari_ssl_seg.runtime.class_ids import class_ids
from napari_ssl_seg.store.project import Project
from napari_ssl_seg.training.data import resample_case, resampled_shape

__all__ = [
    "CEILING_CACHE_SETTING",
    "CEILING_CASES",
    "CEILING_SAMPLES",
    "class_surfaces_mm2",
    "project_ceilings",
    "resampling_ceiling",
    "sampled_ceiling",
]

#: Voxels drawn for :func:`sampled_ceiling`: within 0.01 of the full measure for classes of
#: 0.2 % of the voxels and more (tests/test_resolution.py, benchmarks/spacing_ceiling.py).
CEILING_SAMPLES = 1_000_000
#: Labeled cases the plan measures the ceiling on (each read once per target spacing, then cached).
CEILING_CASES = 2
CEILING_CACHE_SETTING = "ceiling_cache"
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


def resampling_ceiling(
    label: np.ndarray, spacing: Sequence[float], target: Sequence[float], classes: int
) -> dict[int, float]:
    """Each foreground class's Dice when a network learns ``label`` at ``target`` exactly (every voxel)."""
    _, taught = resample_case(np.zeros(label.shape, dtype=np.float32), label, spacing, target)
    assert taught is not None
    one_hot = F.one_hot(torch.from_numpy(taught.astype(np.int64)), classes).permute(3, 0, 1, 2).float()
    back = F.interpolate(one_hot[None], size=label.shape, mode="trilinear", align_corners=False)[0]
    predicted = class_ids(back, 0).numpy().astype(label.dtype)
    return class_dice(predicted, label, range(1, classes))


def sampled_ceiling(
    label: np.ndarray,
    spacing: Sequence[float],
    target: Sequence[float],
    classes: int,
    *,
    samples: int = CEILING_SAMPLES,
    seed: int = 0,
) -> dict[int, float]:
    """:func:`resampling_ceiling` at ``samples`` random voxels, without a full-size float copy of anything.

    Only the classes found among the sampled voxels are reported: an absent class says nothing.

    The nearest resampling indexes the label as ``nearest-exact`` interpolation does; the trilinear
    way back is ``grid_sample`` at the sampled voxels' centres, which with ``align_corners=False``
    and border padding is what ``interpolate`` gives there.
    """
    shape = label.shape
    coarse_shape = resampled_shape(shape, spacing, target)
    # nearest-exact: source index floor((i + 0.5) * in / out), clamped.
    picks = [
        np.minimum(np.floor((np.arange(m) + 0.5) * n / m).astype(np.int64), n - 1)
        for n, m in zip(shape, coarse_shape, strict=True)
    ]
    taught = label[np.ix_(*picks)].astype(np.int64)
    one_hot = F.one_hot(torch.from_numpy(taught), classes).permute(3, 0, 1, 2).float()[None]
    rng = np.random.default_rng(seed)
    count = min(samples, label.size)
    flat = rng.integers(0, label.size, size=count) if count < label.size else np.arange(label.size)
    where = np.unravel_index(flat, shape)
    # Normalised (x, y, z) in [-1, 1] of each voxel's centre: the grid's edges at -1 and 1.
    grid = np.stack([(where[axis] + 0.5) / shape[axis] * 2 - 1 for axis in (2, 1, 0)], axis=-1)
    grid_tensor = torch.from_numpy(grid.astype(np.float32)).view(1, 1, 1, count, 3)
    values = F.grid_sample(one_hot, grid_tensor, mode="bilinear", padding_mode="border", align_corners=False)
    predicted = class_ids(values.view(classes, count), 0).numpy()
    reference = label.reshape(-1)[flat].astype(np.int64)
    found = np.flatnonzero(np.bincount(reference, minlength=classes)[1:]) + 1
    return class_dice(predicted, reference, found.tolist())


def project_ceilings(
    project: Project, cases: Mapping[str, int], target: Sequence[float], orientation: str
) -> dict[int, float]:
    """Each class's :func:`sampled_ceiling` at ``target`` over ``cases`` (name: label version), their mean.

    Cached in the project per case, label version and target, so planning again reads nothing.
    """
    stored = project.setting(CEILING_CACHE_SETTING)
    cache: dict[str, dict[str, float]] = json.loads(stored) if stored else {}
    spacing_key = "x".join(f"{float(v):.4f}" for v in target)
    keys = {name: f"{name}@{version}@{spacing_key}" for name, version in cases.items()}
    changed = False
    for name, version in cases.items():
        if keys[name] in cache:
            continue
        image = project.case(name)
        turn = reorientation(image.direction, image.shape, orientation)
        label = turn.to_target(np.asarray(project.read_label(name, version).array))
        label = label.astype(np.uint8 if label.max(initial=0) < 256 else np.int64)
        classes = int(label.max(initial=0)) + 1
        measured = sampled_ceiling(label, turn.target_spacing(image.spacing), target, classes)
        cache[keys[name]] = {str(c): round(d, 4) for c, d in measured.items()}
        changed = True
    if changed:
        kept = set(keys.values())
        project.set_setting(CEILING_CACHE_SETTING, json.dumps({k: v for k, v in cache.items() if k in kept}))
    per_class: dict[int, list[float]] = {}
    for key in keys.values():
        for label_value, dice in cache[key].items():
            per_class.setdefault(int(label_value), []).append(float(dice))
    return {label_value: float(np.mean(values)) for label_value, values in sorted(per_class.items())}
