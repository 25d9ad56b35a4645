"""Predict one case with a project's teacher, cache the maps and store its ranking scores.

What ranking does per case and what the Teacher widget asks for: one prediction, every model-based
score saved from it, the maps cached under ``predictions/<model>/`` so the case reopens without the
network. The widget runs it in a child process (:func:`predict_case_in_child`, entry point
``python -m napari_ssl_seg.active.case_prediction PROJECT CASE``), then reads the cached maps back:
a prediction in a thread of the napari process held the interpreter and a core from the event loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_ssl_seg.allocator import keep_freed_memory
from napari_ssl_seg.child_process import ChildCommand, report_progress
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.inference.predictor import Prediction, Predictor
from napari_ssl_seg.inference.scores import model_scores
from napari_ssl_seg.io import Volume
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import ModelVersion, active_model
from napari_ssl_seg.store.scores import read_prediction, save_prediction, save_scores

__all__ = ["CasePrediction", "predict_case", "predict_case_in_child", "store_case_prediction"]


@dataclass
class CasePrediction:
    case: str
    model: str
    label: Volume
    entropy: Volume | None
    scores: dict[str, float]
    seconds: float
    device: str


def store_case_prediction(
    project: Project, version: ModelVersion, case: str, prediction: Prediction
) -> dict[str, float]:
    """Save the prediction's maps and every model score computed from them; returns the scores."""
    if prediction.uncertainty is None:
        return {}
    image_spacing = prediction.label.spacing
    values = model_scores(prediction.uncertainty.array, prediction.label.array, image_spacing, prediction.num_classes)
    # One prediction, every model score: switching strategy never re-runs the network.
    for key, value in values.items():
        save_scores(project, version.id, key, {case: value})
    save_prediction(project, version.name, case, prediction.label, prediction.uncertainty)
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
    )


def predict_case_in_child(
    project_root: Path | str,
    case: str,
    *,
    device: str = "auto",
    samples: int = 8,
    progress: Callable[[int, int], None] | None = None,
    poll_seconds: float = 0.1,
) -> CasePrediction:
    """:func:`predict_case` in a niced child process; blocks (call it off the GUI thread) and reads the maps back.

    The child's ``error:`` line becomes an :class:`InputError`; a killed child is one too.
    """
    child = ChildCommand(
        "napari_ssl_seg.active.case_prediction",
        str(project_root),
        case,
        "--samples",
        str(samples),
        "--device",
        device,
    )
    last = None
    while child.is_running:
        time.sleep(poll_seconds)
        reported = child.progress()
        if progress is not None and reported is not None and reported != last:
            last = reported
            progress(*reported)
    result, error = child.result()
    if error is not None or result is None:
        raise InputError(f"prediction of {case} failed: {(error or 'no result').removeprefix('error: ')}")
    with Project.open(project_root) as project:
        maps = read_prediction(project, result["model"], case)
    if maps is None:
        raise InputError(f"prediction of {case} finished but its maps are not in the project")
    label, entropy = maps
    return CasePrediction(
        case=case,
        model=result["model"],
        label=label,
        entropy=entropy,
        scores={key: float(value) for key, value in result["scores"].items()},
        seconds=float(result["seconds"]),
        device=str(result["device"]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: predict, store, print ``{case, model, scores, seconds, device}`` as JSON."""
    parser = argparse.ArgumentParser(description="Predict one case of a project and store its maps and scores.")
    parser.add_argument("project", type=Path)
    parser.add_argument("case")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        result = predict_case(
            args.project, args.case, device=args.device, samples=args.samples, progress=report_progress
        )
    except Exception as exc:  # the parent shows this line in a notification
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {key: getattr(result, key) for key in ("case", "model", "scores", "seconds", "device")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
