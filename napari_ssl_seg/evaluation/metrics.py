"""Segmentation metrics per case and class, with failures kept visible.

Dice is :func:`evaluation.dice.class_dice`, the one Dice of the project; Jaccard, HD95 and ASD come
from MONAI (``compute_iou``,
``compute_hausdorff_distance(percentile=95)``, ``compute_average_surface_distance(symmetric=True)``)
on one-hot masks, with the voxel spacing passed in so that distances are in millimetres. The
reference code of the papers reports distances in voxels, which is wrong as soon as the spacing is
anisotropic (LA MRI, most CT), and scores an empty prediction as HD95 = ASD = 0, the best possible
value for the worst possible result. This module never does either.

Empty masks are decided here, before MONAI is called, because MONAI's answers for them are
inconsistent (NaN for HD95 but inf for ASD on an empty prediction, NaN Dice on an empty reference):

============================  =====  =======  ===========  ====================
case                          Dice   Jaccard  HD95 / ASD   status
============================  =====  =======  ===========  ====================
prediction and reference set  MONAI  MONAI    MONAI (mm)   ``ok``
prediction empty              0      0        inf          ``empty_prediction``
reference empty               0      0        inf          ``empty_reference``
both empty                    1      1        0            ``both_empty``
============================  =====  =======  ===========  ====================

* An empty prediction of a structure that is present is a failure: there is no predicted surface,
  so no finite distance describes the result. Dice 0 is the honest overlap.
* A prediction of a structure that is absent is a failure too (every predicted voxel is a false
  positive); no reference surface exists to measure against.
* Both empty is a correct result ("nothing to find, nothing found"), so Dice and Jaccard are 1 and
  distances 0. :func:`summarise` still keeps these zeros out of the distance means by default: no
  surface was measured, and a 0 there would pull the mean distance towards a perfect score.

:func:`summarise` averages Dice and Jaccard over every case (failures count as 0) and HD95 and ASD
over the cases with a measured, finite distance only, and lists the failed (case, class) pairs next
to the means, so a failure can neither vanish from the report nor pass as a good distance. Its
output is plain JSON (infinity never appears: missing means are ``null``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_hausdorff_distance,
    compute_iou,
)

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.evaluation.dice import class_dice

__all__ = [
    "FAILURE_STATUSES",
    "ClassMetrics",
    "Status",
    "case_metrics",
    "format_table",
    "summarise",
]

Status = Literal["ok", "empty_prediction", "empty_reference", "both_empty"]

#: Statuses that are failures: the distance is infinite and the pair is listed in the summary.
FAILURE_STATUSES: frozenset[str] = frozenset({"empty_prediction", "empty_reference"})


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class in one case; distances in millimetres, ``inf`` for a failure."""

    dice: float
    jaccard: float
    hd95_mm: float
    asd_mm: float
    status: Status

    @property
    def failed(self) -> bool:
        """True when the prediction or the reference is empty, but not both."""
        return self.status in FAILURE_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: infinite distances become ``None`` (the status says why)."""
        return {key: _json_float(value) if isinstance(value, float) else value for key, value in asdict(self).items()}


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _check_inputs(
    prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float], classes: Sequence[int]
) -> tuple[tuple[float, float, float], list[int]]:
    prediction = np.asarray(prediction)
    reference = np.asarray(reference)
    if prediction.ndim != 3 or reference.ndim != 3:
        raise InputError(
            f"label maps must be 3D (z, y, x); got prediction {prediction.shape} and reference {reference.shape}"
        )
    if prediction.shape != reference.shape:
        raise InputError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    for name, array in (("prediction", prediction), ("reference", reference)):
        # Float label maps usually mean a probability map was passed by mistake; rounding it here
        # would silently produce a segmentation nobody made.
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            raise InputError(f"{name} must be an integer label map, got dtype {array.dtype}")
    if len(spacing) != 3:
        raise InputError(f"spacing must have three values (z, y, x) in mm, got {tuple(spacing)}")
    spacing_f = tuple(float(s) for s in spacing)
    if not all(math.isfinite(s) and s > 0 for s in spacing_f):
        raise InputError(f"spacing must be positive and finite, got {spacing_f}")
    class_list = [int(c) for c in classes]
    if not class_list:
        raise InputError("no classes to evaluate")
    if len(set(class_list)) != len(class_list):
        raise InputError(f"classes are repeated: {class_list}")
    return (spacing_f[0], spacing_f[1], spacing_f[2]), class_list


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    # (B=1, C=1, z, y, x): MONAI's layout; bool keeps memory at one byte per voxel on large CT.
    return torch.from_numpy(np.ascontiguousarray(mask))[None, None]


def _monai_scalar(values: torch.Tensor) -> float:
    return float(values.reshape(-1)[0].item())


def case_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: tuple[float, float, float],
    classes: Sequence[int],
) -> dict[int, ClassMetrics]:
    """Dice, Jaccard, HD95 and symmetric ASD (mm) of each class in ``classes``.

    ``prediction`` and ``reference`` are integer label maps of the same (z, y, x) shape; ``spacing``
    is (z, y, x) in millimetres, in the same axis order as the arrays. Empty masks follow the
    conventions in the module docstring.
    """
    spacing_f, class_list = _check_inputs(prediction, reference, spacing, classes)
    prediction = np.asarray(prediction)
    reference = np.asarray(reference)
    results: dict[int, ClassMetrics] = {}
    dice_of = class_dice(prediction, reference, class_list)  # the project's one Dice (evaluation.dice)
    for label in class_list:
        pred_mask = prediction == label
        ref_mask = reference == label
        pred_any = bool(pred_mask.any())
        ref_any = bool(ref_mask.any())
        if not pred_any and not ref_any:
            results[label] = ClassMetrics(1.0, 1.0, 0.0, 0.0, "both_empty")
            continue
        if not pred_any:
            results[label] = ClassMetrics(0.0, 0.0, math.inf, math.inf, "empty_prediction")
            continue
        if not ref_any:
            results[label] = ClassMetrics(0.0, 0.0, math.inf, math.inf, "empty_reference")
            continue
        y_pred = _as_batch(pred_mask)
        y_ref = _as_batch(ref_mask)
        with warnings.catch_warnings():
            # MONAI 1.5+ warns about an argument its own code passes internally; it is not ours to fix.
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            # include_background=True: the single channel is the class itself, not a background.
            dice = dice_of[label]
            jaccard = _monai_scalar(compute_iou(y_pred, y_ref, include_background=True))
            hd95 = _monai_scalar(
                compute_hausdorff_distance(y_pred, y_ref, include_background=True, percentile=95, spacing=spacing_f)
            )
            asd = _monai_scalar(
                compute_average_surface_distance(
                    y_pred, y_ref, include_background=True, symmetric=True, spacing=spacing_f
                )
            )
        results[label] = ClassMetrics(dice, jaccard, hd95, asd, "ok")
    return results


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _std(values: Sequence[float]) -> float | None:
    # Population std over cases, as the papers' "mean ± std" tables use; None rather than 0 for n < 2.
    return float(np.std(values)) if len(values) >= 2 else None


def _aggregate(items: Sequence[ClassMetrics], both_empty_in_distance_mean: bool) -> dict[str, Any]:
    dice = [m.dice for m in items]
    jaccard = [m.jaccard for m in items]
    measured = [
        m
        for m in items
        if math.isfinite(m.hd95_mm)
        and math.isfinite(m.asd_mm)
        and (m.status == "ok" or (both_empty_in_distance_mean and m.status == "both_empty"))
    ]
    hd95 = [m.hd95_mm for m in measured]
    asd = [m.asd_mm for m in measured]
    status_counts = {status: 0 for status in ("ok", "empty_prediction", "empty_reference", "both_empty")}
    for m in items:
        status_counts[m.status] += 1
    return {
        "n": len(items),
        "dice_mean": _mean(dice),
        "dice_std": _std(dice),
        "jaccard_mean": _mean(jaccard),
        "jaccard_std": _std(jaccard),
        "hd95_mm_mean": _mean(hd95),
        "hd95_mm_std": _std(hd95),
        "asd_mm_mean": _mean(asd),
        "asd_mm_std": _std(asd),
        "n_distance": len(measured),
        "n_failures": sum(1 for m in items if m.failed),
        "status_counts": status_counts,
    }


def summarise(
    per_case: Mapping[str, Mapping[int, ClassMetrics]],
    *,
    both_empty_in_distance_mean: bool = False,
) -> dict[str, Any]:
    """Per-class and overall means, with failures counted and listed; the result is JSON-serialisable.

    * ``dice_mean`` / ``jaccard_mean``: over every (case, class), failures counting as 0.
    * ``hd95_mm_mean`` / ``asd_mm_mean``: over the pairs with a measured distance only
      (``n_distance`` of them); ``None`` when there is none. Failures are excluded (their distance
      is infinite), and so are ``both_empty`` pairs unless ``both_empty_in_distance_mean`` is set
      (their 0 is a convention, not a measurement).
    * ``failures``: every failed (case, class) pair with its status, sorted by case then class.
    * ``overall`` pools all (case, class) pairs, so a class present in more cases weighs more.

    Class keys are strings, as JSON object keys must be.
    """
    by_class: dict[int, list[ClassMetrics]] = {}
    pooled: list[ClassMetrics] = []
    failures: list[dict[str, Any]] = []
    for case in sorted(per_case):
        for label in sorted(per_case[case]):
            metrics = per_case[case][label]
            by_class.setdefault(int(label), []).append(metrics)
            pooled.append(metrics)
            if metrics.failed:
                failures.append({"case": str(case), "class": int(label), "status": metrics.status})
    return {
        "n_cases": len(per_case),
        "classes": {
            str(label): _aggregate(items, both_empty_in_distance_mean) for label, items in sorted(by_class.items())
        },
        "overall": _aggregate(pooled, both_empty_in_distance_mean),
        "n_failures": len(failures),
        "failures": failures,
        "distance_unit": "mm",
        "both_empty_in_distance_mean": both_empty_in_distance_mean,
    }


def _fmt(value: float | None, width: int, digits: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if math.isinf(value):
        return f"{'inf':>{width}}"
    return f"{value:>{width}.{digits}f}"


def format_table(
    per_case: Mapping[str, Mapping[int, ClassMetrics]],
    summary: Mapping[str, Any],
    class_names: Mapping[int, str] | None = None,
) -> str:
    """A fixed-width text table: one row per (case, class), the means per class, then the failures.

    ``summary`` is :func:`summarise`'s output for the same ``per_case``; ``class_names`` maps labels
    to names (missing labels are shown by number).
    """
    names = dict(class_names or {})

    def name_of(label: int) -> str:
        return names.get(int(label), str(label))

    case_width = max([len("case"), len("mean"), *(len(str(c)) for c in per_case)])
    labels = {int(k) for k in summary.get("classes", {})} | {int(k) for m in per_case.values() for k in m}
    class_width = max([len("class"), *(len(name_of(k)) for k in labels)])
    header = (
        f"{'case':<{case_width}}  {'class':<{class_width}}  {'Dice':>7}  {'Jaccard':>7}  "
        f"{'HD95 mm':>9}  {'ASD mm':>9}  status"
    )
    rule = "-" * len(header)
    lines = [header, rule]
    for case in sorted(per_case):
        for label in sorted(per_case[case]):
            m = per_case[case][label]
            lines.append(
                f"{case!s:<{case_width}}  {name_of(label):<{class_width}}  {_fmt(m.dice, 7, 4)}  "
                f"{_fmt(m.jaccard, 7, 4)}  {_fmt(m.hd95_mm, 9, 2)}  {_fmt(m.asd_mm, 9, 2)}  {m.status}"
            )
    lines.append(rule)

    def mean_row(label_text: str, agg: Mapping[str, Any]) -> str:
        # The distance means cover fewer pairs than Dice whenever something failed; say how many.
        note = f"distances over {agg['n_distance']}/{agg['n']}"
        if agg["n_failures"]:
            note += f", {agg['n_failures']} failed"
        return (
            f"{'mean':<{case_width}}  {label_text:<{class_width}}  {_fmt(agg['dice_mean'], 7, 4)}  "
            f"{_fmt(agg['jaccard_mean'], 7, 4)}  {_fmt(agg['hd95_mm_mean'], 9, 2)}  "
            f"{_fmt(agg['asd_mm_mean'], 9, 2)}  {note}"
        )

    for key, agg in summary.get("classes", {}).items():
        lines.append(mean_row(name_of(int(key)), agg))
    if len(summary.get("classes", {})) > 1:
        lines.append(mean_row("all", summary["overall"]))
    failures = summary.get("failures", [])
    if failures:
        lines.append("")
        lines.append(f"failures ({len(failures)}; Dice 0, distance infinite, not in the distance means):")
        for item in failures:
            lines.append(f"  {item['case']}  {name_of(item['class'])}  {item['status']}")
    return "\n".join(lines)
