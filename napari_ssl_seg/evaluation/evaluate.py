"""Evaluate a model on a project split: segmentation metrics in mm, and how good its uncertainty is.

Segmentation: Dice, Jaccard, HD95 and ASD per case and class (see :mod:`evaluation.metrics`), against
each case's latest label version. Uncertainty (``with_uncertainty``):

* voxel level: the area under the ROC curve of the entropy as a detector of misclassified voxels,
  pooled over the split's voxels, and the expected calibration error of the predicted class's
  probability;
* case level: the Spearman correlation between each ranking score and the case's 1 - Dice, which
  is what ranking by that score relies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.evaluation.dice import case_dice
from napari_ssl_seg.evaluation.metrics import ClassMetrics, case_metrics, summarise
from napari_ssl_seg.evaluation.uncertainty_quality import (
    error_detection_auroc,
    expected_calibration_error,
    spearman,
)
from napari_ssl_seg.evaluation.validation import scored_classes
from napari_ssl_seg.inference.case_scores import model_scores
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.inference.reference_volumes import reference_volumes
from napari_ssl_seg.progress import CaseProgress
from napari_ssl_seg.store import Project

__all__ = ["Evaluation", "evaluate_project"]

SPLITS = ("train", "validation", "test")
# Voxels pooled for the voxel-level AUROC/ECE: enough for three-digit precision, bounded memory.
_VOXELS_PER_CASE = 200_000


@dataclass
class Evaluation:
    split: str
    per_case: dict[str, dict[int, ClassMetrics]]
    summary: dict[str, Any]
    class_names: dict[int, str]
    uncertainty: dict[str, Any] | None = None
    seconds_per_case: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "summary": self.summary,
            "per_case": {
                case: {str(k): metrics.to_dict() for k, metrics in classes.items()}
                for case, classes in self.per_case.items()
            },
            "uncertainty": self.uncertainty,
            "seconds_per_case": self.seconds_per_case,
        }


def _case_dice(metrics: dict[int, ClassMetrics]) -> float:
    return case_dice({label: m.dice for label, m in metrics.items()})


def _uncertainty_report(
    pooled: dict[str, list[np.ndarray]], case_scores: dict[str, dict[str, float]], dice: dict[str, float]
) -> dict[str, Any]:
    entropy = np.concatenate(pooled["entropy"])
    error = np.concatenate(pooled["error"])
    confidence = np.concatenate(pooled["confidence"])
    report: dict[str, Any] = {"voxels": int(entropy.size), "error_rate": float(error.mean())}
    report["auroc_entropy_vs_error"] = float(error_detection_auroc(entropy, error)) if 0 < error.mean() < 1 else None
    report["ece"] = float(expected_calibration_error(confidence, ~error))
    names = sorted(case_scores)
    spearmans: dict[str, float | None] = {}
    for key in next(iter(case_scores.values()), {}):
        values = np.array([case_scores[name][key] for name in names])
        misses = np.array([1.0 - dice[name] for name in names])
        ok = len(names) >= 3 and np.ptp(values) > 0 and np.ptp(misses) > 0
        spearmans[key] = float(spearman(values, misses)) if ok else None
    report["spearman_score_vs_1_minus_dice"] = spearmans
    # A rank correlation over a handful of cases is weak evidence (and undefined below 3): say how many.
    report["spearman_cases"] = len(names)
    return report


def _check_label_values(project: Project, cases: list[str], classes: list[int]) -> None:
    """Refuse before any prediction: scoring only the model's classes would hide what it cannot segment."""
    for name in cases:
        unknown = sorted(set(np.unique(project.read_label(name).array).tolist()) - {0, *classes})
        if unknown:
            raise InputError(
                f"case {name!r} has label value(s) {', '.join(map(str, unknown))} that the model's classes"
                f" ({', '.join(map(str, classes))}) do not include"
            )


def evaluate_project(
    project: Project,
    model: Path | str,
    *,
    split: str = "test",
    device: str = "auto",
    with_uncertainty: bool = False,
    samples: int = 8,
    progress: CaseProgress | None = None,
    only: Sequence[str] | None = None,
) -> Evaluation:
    """Predict every labeled case of ``split`` (of ``only``, if given) and score it against its latest label version."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    cases = [case.name for case in project.cases() if case.split == split and case.is_labeled]
    if only is not None:
        wanted = set(only)
        unknown = sorted(wanted - set(cases))
        if unknown:
            raise InputError(f"not labeled {split} cases of {project.root}: {', '.join(unknown)}")
        cases = [name for name in cases if name in wanted]
    if not cases:
        raise InputError(f"project {project.root} has no labeled {split} case to evaluate on")
    predictor = Predictor.from_checkpoint(model, device=device)
    classes = scored_classes(predictor.card)
    _check_label_values(project, cases, classes)
    rng = np.random.default_rng(0)
    # Expected structure sizes come from labeled cases outside the evaluated ones, never from a test case.
    expected_volumes = reference_volumes(project, exclude=cases) if with_uncertainty else {}
    per_case: dict[str, dict[int, ClassMetrics]] = {}
    pooled: dict[str, list[np.ndarray]] = {"entropy": [], "error": [], "confidence": []}
    scores: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for index, name in enumerate(cases):
        if progress:
            progress(index, len(cases), name)
        image = project.read_image(name)
        reference = project.read_label(name).array
        prediction = predictor.predict(
            image,
            uncertainty=None if with_uncertainty else "none",
            samples=samples,
            name=name,
            keep_confidence=with_uncertainty,
        )
        seconds[name] = round(prediction.seconds, 3)
        predicted = prediction.label.array
        per_case[name] = case_metrics(predicted, reference, image.spacing, classes)
        if with_uncertainty and prediction.uncertainty is not None and prediction.confidence is not None:
            entropy = prediction.uncertainty.array.reshape(-1)
            take = rng.choice(entropy.size, size=min(_VOXELS_PER_CASE, entropy.size), replace=False)
            pooled["entropy"].append(entropy[take].astype(np.float32))
            pooled["error"].append((predicted != reference).reshape(-1)[take])
            pooled["confidence"].append(prediction.confidence.reshape(-1)[take].astype(np.float32))
            scores[name] = model_scores(
                prediction.uncertainty.array,
                predicted,
                image.spacing,
                prediction.num_classes,
                reference_volumes=expected_volumes,
            )
    if progress:
        progress(len(cases), len(cases), "done")
    names = {int(k): v for k, v in predictor.card.classes.items()}
    evaluation = Evaluation(split, per_case, summarise(per_case), names, seconds_per_case=seconds)
    if with_uncertainty and pooled["entropy"]:
        dice = {name: _case_dice(metrics) for name, metrics in per_case.items()}
        evaluation.uncertainty = _uncertainty_report(pooled, scores, dice)
    return evaluation
