"""One Dice wherever a segmentation is scored: the loop's checkpoint choice, the card, the promotion, evaluate."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import napari_ssl_seg.evaluation.evaluate as evaluate_module
from napari_ssl_seg.evaluation.dice import case_dice, class_dice
from napari_ssl_seg.evaluation.metrics import case_metrics
from napari_ssl_seg.evaluation.validation import ValidationCase, validate_network
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.io import Volume
from napari_ssl_seg.networks.checkpoint import ModelCard
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.promote import validation_dice

SHAPE = (4, 8, 8)


def toy_case() -> tuple[np.ndarray, np.ndarray]:
    """Class 1 found exactly; class 2 absent from the reference but predicted (a stray blob)."""
    reference = np.zeros(SHAPE, np.uint8)
    reference[1:3, 2:6, 2:6] = 1
    prediction = reference.copy()
    prediction[0, 0, 0:2] = 2
    return prediction, reference


def test_the_empty_mask_rule_is_stated_once():
    prediction, reference = toy_case()
    assert class_dice(prediction, reference, [1, 2]) == {1: 1.0, 2: 0.0}  # stray class: every voxel wrong
    assert class_dice(reference, prediction, [2]) == {2: 0.0}  # missed class
    assert class_dice(reference, reference, [2]) == {2: 1.0}  # in neither: nothing to find, nothing found
    half = np.zeros(SHAPE, np.uint8)
    half[1:3, 2:6, 2:4] = 1
    assert class_dice(half, reference, [1])[1] == pytest.approx(2 * 16 / (16 + 32))
    assert case_dice({1: 1.0, 2: 0.0}) == 0.5 and case_dice({}) == 0.0


def _card() -> ModelCard:
    return ModelCard(
        method="supervised",
        network={"name": "vnet", "num_classes": 3, "in_channels": 1},
        patch_size=(4, 8, 8),
        intensity={"kind": "zscore"},
        classes={0: "background", 1: "organ", 2: "lesion"},
        spacing=(2.0, 1.0, 1.0),
        orientation="LPS",
    )


@pytest.fixture
def scripted_prediction(monkeypatch):
    """Every predictor returns the toy prediction: what differs below is only how it is scored."""
    prediction, _reference = toy_case()

    def predict(self, volume: Volume, **_kwargs):
        return SimpleNamespace(label=volume.with_array(prediction, label_names=None), seconds=0.0, uncertainty=None)

    monkeypatch.setattr(Predictor, "predict", predict)
    return prediction


def test_the_toy_case_scores_the_same_in_the_loop_the_metrics_and_the_promotion(
    tmp_path: Path, monkeypatch, scripted_prediction
):
    _prediction, reference = toy_case()
    image = Volume(array=np.random.default_rng(0).random(SHAPE).astype(np.float32), spacing=(2.0, 1.0, 1.0))
    card = _card()

    # The loop's checkpoint choice (and so the card's validation_dice).
    score = validate_network(
        nn.Identity(), [ValidationCase("toy", image, reference)], card, device=torch.device("cpu"), overlap=0.5
    )
    loop_dice, per_case = score.dice, score.per_case
    # The full metrics of evaluate.
    metrics = case_metrics(scripted_prediction, reference, image.spacing, [1, 2])
    # The promotion of a retrained teacher: evaluate_project over the validation split.
    with Project.create(tmp_path / "p") as project:
        project.add_case("toy", image, split="validation")
        project.save_label("toy", reference)
    monkeypatch.setattr(
        evaluate_module.Predictor, "from_checkpoint", classmethod(lambda cls, *_a, **_k: cls({}, card, device="cpu"))
    )
    with Project.open(tmp_path / "p") as project:
        promoted = validation_dice(project, tmp_path / "unused.safetensors", device="cpu")

    assert loop_dice == per_case["toy"] == 0.5
    assert case_dice({label: m.dice for label, m in metrics.items()}) == 0.5
    assert metrics[2].status == "empty_reference"
    assert promoted == 0.5
