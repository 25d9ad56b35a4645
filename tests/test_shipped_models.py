"""The shipped teachers: loadable without pickles, traceable through their cards, and they segment."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLE_DIR

from napari_ssl_seg.cohort.generator import generate_case
from napari_ssl_seg.evaluation.metrics import case_metrics
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.io import read_volume
from napari_ssl_seg.networks import load_checkpoint
from napari_ssl_seg.shipped_models import SHIPPED_MODELS, shipped_model_path


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_shipped_teacher_card_records_how_it_was_made(name: str) -> None:
    path = shipped_model_path(name)
    networks, card = load_checkpoint(path)
    assert card.method == name
    assert "student" in networks  # teacher-student disagreement is available
    command = card.training["command"]
    assert "napari-ssl-seg train" in command and f"--method {name}" in command
    assert "--init" in command and card.parent  # warm-started from the supervised teacher, which it names
    assert card.orientation == "LPS"  # the networks saw one patient orientation, whatever the files' voxel order
    assert card.training["seed"] == 0 and card.training["label_versions"]
    assert card.metrics["validation_dice"] > 0.8 and card.metrics["test_failures"] == 0
    assert card.metrics["train_seconds"] > 0 and card.metrics["warm_start_train_seconds"] > 0
    assert card.classes[0] == "background" and len(card.classes) == 8
    assert card.weights_dtype == "float16"
    assert json.loads(path.with_suffix(".json").read_text())["weights_sha256"] == card.weights_sha256


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_shipped_teacher_segments_an_unseen_cohort_case(name: str) -> None:
    # A case index the shipped cohort (12 cases) never generated: unseen in training and validation.
    case = generate_case(
        read_volume(SAMPLE_DIR / "CTChest4.nrrd"), read_volume(SAMPLE_DIR / "Segmentation.seg.nrrd"), seed=0, index=50
    )
    prediction = Predictor.from_checkpoint(shipped_model_path(name), device="cpu").predict(
        case.image, uncertainty="fast", samples=4
    )
    metrics = case_metrics(prediction.label.array, case.label.array, case.image.spacing, classes=list(range(1, 8)))
    # Measured on unseen case 50 with the teachers of 2026-12-05: lungs 0.96, tissue 0.93, thoracic and lumbar
    # spine 0.78-0.80, cervical spine 0.72-0.75, ribs 0.60-0.61. The bounds leave room for a rebuild's noise.
    assert metrics[5].dice > 0.93 and metrics[6].dice > 0.93 and metrics[7].dice > 0.9
    assert metrics[3].dice > 0.72 and metrics[4].dice > 0.72 and metrics[2].dice > 0.6
    assert metrics[1].dice > 0.5
    assert not any(m.failed for m in metrics.values())
    assert prediction.uncertainty is not None and float(prediction.uncertainty.array.max()) > 0
