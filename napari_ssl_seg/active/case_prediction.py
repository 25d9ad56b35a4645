"""Predict one case with a project's teacher, cache the maps and store its ranking scores.

What ranking does per case and what the Teacher widget asks for: one prediction, every model-based
score saved from it, the maps cached under ``predictions/<model>/`` so the case reopens without the
network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.inference.case_scores import model_scores, structure_volumes, volume_shortfall
from napari_ssl_seg.inference.fit import fit_warnings
from napari_ssl_seg.inference.predictor import VOXEL_ORDER_NOTE, Prediction, Predictor
from napari_ssl_seg.inference.reference_volumes import reference_volumes
from napari_ssl_seg.io import Volume
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import ModelVersion, active_model
from napari_ssl_seg.store.ranking_cache import save_prediction, save_scores

__all__ = ["CasePrediction", "predict_case", "store_case_prediction"]


@dataclass
class CasePrediction:
    case: str
    model: str
    label: Volume
    entropy: Volume | None
    scores: dict[str, float]
    seconds: float
    device: str
    #: What the user should know about this prediction (e.g. a teacher that works in voxel order).
    notes: list[str] = field(default_factory=list)


def store_case_prediction(
    project: Project,
    version: ModelVersion,
    case: str,
    prediction: Prediction,
    *,
    reference: Mapping[int, float] | None = None,
) -> dict[str, float]:
    """Save the prediction's maps and every model score computed from them; returns the scores.

    ``reference`` ({class: mm^3}, see ``reference_volumes``) is computed, leaving ``case`` out,
    when not given; a caller scoring many unlabeled cases passes it once.
    """
    if prediction.uncertainty is None:
        return {}
    label = prediction.label
    values = model_scores(prediction.uncertainty.array, label.array, label.spacing, prediction.num_classes)
    volumes = structure_volumes(label.array, label.spacing)
    if reference is None:
        reference = reference_volumes(project, exclude=[case])
    if reference:
        values["missing_volume"] = volume_shortfall(volumes, reference)
    # One prediction, every model score: switching strategy never re-runs the network.
    for key, value in values.items():
        save_scores(project, version.id, key, {case: value})
    save_prediction(project, version.name, case, label, prediction.uncertainty, volumes=volumes)
    return values


def predict_case(
    project_root: Path | str,
    case: str,
    *,
    device: str = "auto",
    samples: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> CasePrediction:
    """Predict ``case`` with the project's active teacher (opens its own connection: thread-safe)."""
    with Project.open(project_root) as project:
        version = active_model(project)
        if version is None:
            raise InputError("this project has no teacher yet: register one (napari-ssl-seg rank --model) or train")
        image = project.read_image(case)
        predictor = Predictor.from_checkpoint(version.checkpoint(project), device=device)
        fit = fit_warnings(
            predictor.card,
            project_classes=project.label_names(),
            modality=image.modality,
            minimum=float(np.nanmin(image.array)) if image.array.size else None,
            spacing=image.spacing,
        )
        prediction = predictor.predict(image, samples=samples, progress=progress, name=case)
        values = store_case_prediction(project, version, case, prediction)
    return CasePrediction(
        case=case,
        model=version.name,
        label=prediction.label,
        entropy=prediction.uncertainty,
        scores=values,
        seconds=prediction.seconds,
        device=prediction.device,
        notes=[note for note in prediction.notes if note == VOXEL_ORDER_NOTE] + fit,
    )
