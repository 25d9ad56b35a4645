"""The card's post-processing: islands of a class removed where validation showed it pays, nowhere else."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.evaluation.validation import ValidationCase, validate_network
from napari_ssl_seg.inference.components import (
    choose_largest_component_classes,
    keep_largest_components,
    one_piece_classes,
)
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.io import Volume
from napari_ssl_seg.networks.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from napari_ssl_seg.networks.vnet import VNet

SHAPE = (6, 12, 12)


def _card(**changes) -> ModelCard:
    card = ModelCard(
        method="supervised",
        network={"name": "vnet", "num_classes": 3, "in_channels": 1},
        patch_size=(6, 12, 12),
        intensity={"kind": "ct_window", "window": [-1.0, 1.0]},
        classes={0: "background", 1: "lung", 2: "ribs"},
        spacing=(1.0, 1.0, 1.0),
        orientation="LPS",
    )
    for key, value in changes.items():
        setattr(card, key, value)
    return card


def _lung_and_ribs() -> np.ndarray:
    """Class 1: one large block and a one-voxel island; class 2: two separate true pieces."""
    label = np.zeros(SHAPE, np.uint8)
    label[1:5, 1:6, 1:6] = 1
    label[0, 11, 11] = 1
    label[1:3, 8:10, 1:3] = 2
    label[3:5, 8:10, 8:10] = 2
    return label


def test_only_the_named_classes_lose_their_islands():
    label = _lung_and_ribs()
    cleaned = keep_largest_components(label, [1])
    assert cleaned[0, 11, 11] == 0  # the island went to background
    assert (cleaned == 1).sum() == 4 * 5 * 5  # the block stayed whole
    assert np.array_equal(cleaned == 2, label == 2)  # ribs not named: both pieces kept
    assert label[0, 11, 11] == 1 and cleaned.dtype == label.dtype  # the input is not changed
    both = keep_largest_components(label, [1, 2])
    assert (both == 2).sum() == 8  # one of the two rib pieces


def test_a_diagonal_neighbour_belongs_to_the_component():
    label = np.zeros(SHAPE, np.uint8)
    label[1:3, 1:3, 1:3] = 1
    label[3, 3, 3] = 1  # touches the block's corner only
    assert np.array_equal(keep_largest_components(label, [1]), label)


def test_a_class_is_chosen_only_when_its_mean_dice_rises():
    raw = [{1: 0.90, 2: 0.70, 3: 0.50}, {1: 0.80, 2: 0.70, 3: 0.50}]
    cleaned = [{1: 0.95, 2: 0.40, 3: 0.50}, {1: 0.80, 2: 0.72, 3: 0.50}]
    # 1 rises on average, 2 falls on average although it rises in one case, 3 ties and stays as predicted
    # (no reference says it is one piece).
    assert choose_largest_component_classes(raw, cleaned) == [1]
    with pytest.raises(ValueError, match="raw and"):
        choose_largest_component_classes(raw, cleaned[:1])


def test_a_tie_is_broken_by_the_references_drawing_one_piece():
    raw = [{1: 0.90, 2: 0.70, 3: 0.50}, {1: 0.80, 2: 0.70, 3: 0.50}]
    cleaned = [{1: 0.95, 2: 0.40, 3: 0.50}, {1: 0.80, 2: 0.72, 3: 0.50}]
    # 3 ties: cleaned because the references draw it in one piece. 2 falls: one piece or not, never cleaned.
    assert choose_largest_component_classes(raw, cleaned, one_piece={2, 3}) == [1, 3]


def test_one_piece_classes_are_those_whose_largest_piece_holds_nearly_all():
    first = _lung_and_ribs()
    first[0, 11, 11] = 0  # lung one block, ribs two pieces
    second = np.zeros(SHAPE, np.uint8)
    second[2:4, 2:4, 2:4] = 1
    second[4, 4, 4] = 1  # a diagonal neighbour: still one piece
    second[0:2, 8:10, 8:10] = 2  # ribs in one piece here, but in two in the first label
    assert one_piece_classes([first, second], [1, 2, 3]) == {1}  # 3 is drawn nowhere: no evidence
    second[5, 11, 0] = 1  # a speck beside 9 voxels: 90 % in the largest piece
    assert one_piece_classes([first, second], [1, 2]) == set()
    assert one_piece_classes([first, second], [1, 2], share=0.9) == {1}
    # The ribs' two equal pieces hold half each: no share above one half makes them one piece.
    assert one_piece_classes([first], [2], share=0.51) == set()


def test_validation_chooses_the_clean_up_from_the_raw_predictions(monkeypatch):
    reference = _lung_and_ribs()
    reference[0, 11, 11] = 0  # the island is an error of the network, the two rib pieces are anatomy
    predicted = _lung_and_ribs()
    calls = []

    def predict(self, volume: Volume, **kwargs):
        calls.append(kwargs.get("postprocess"))
        return SimpleNamespace(label=volume.with_array(predicted, label_names=None))

    monkeypatch.setattr(Predictor, "predict", predict)
    image = Volume(array=np.zeros(SHAPE, np.float32), spacing=(1.0, 1.0, 1.0))
    cases = [ValidationCase(name, image, reference) for name in ("a", "b")]
    score = validate_network(nn.Identity(), cases, _card(), device=torch.device("cpu"), overlap=0.5)
    assert calls == [False, False]  # chosen from the network's own argmax
    assert score.largest_component == (1,)
    assert score.postprocessing == {"largest_component": [1]}
    raw_lung = 2 * 100 / (101 + 100)
    assert score.raw_dice == pytest.approx((raw_lung + 1.0) / 2)
    assert score.dice == pytest.approx(1.0) and score.per_case == {"a": 1.0, "b": 1.0}
    # --set postprocessing=false: scored as predicted, nothing chosen.
    cpu = torch.device("cpu")
    plain = validate_network(nn.Identity(), cases, _card(), device=cpu, overlap=0.5, choose_cleanup=False)
    assert plain.largest_component == () and plain.dice == plain.raw_dice == score.raw_dice


def test_validation_cleans_a_class_without_islands_when_every_reference_is_one_piece(monkeypatch):
    reference = _lung_and_ribs()
    reference[0, 11, 11] = 0
    predicted = reference.copy()  # no island on these cases: cleaning changes nothing, a tie for both classes

    def predict(self, volume: Volume, **kwargs):
        return SimpleNamespace(label=volume.with_array(predicted, label_names=None))

    monkeypatch.setattr(Predictor, "predict", predict)
    image = Volume(array=np.zeros(SHAPE, np.float32), spacing=(1.0, 1.0, 1.0))
    cases = [ValidationCase(name, image, reference) for name in ("a", "b")]
    score = validate_network(nn.Identity(), cases, _card(), device=torch.device("cpu"), overlap=0.5)
    # The lung is drawn in one piece: a second piece on another patient's scan can only be wrong.
    # The ribs are drawn in two: left as predicted.
    assert score.largest_component == (1,) and score.dice == score.raw_dice == pytest.approx(1.0)


class _Threshold(nn.Module):
    """Class 1 where the normalised intensity exceeds 0.5, else background: a predictable 'network'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5, torch.full_like(x, -10.0)], dim=1) * 20.0


def _two_blob_volume() -> Volume:
    image = np.full(SHAPE, -1.0, np.float32)
    image[1:5, 1:6, 1:6] = 1.0
    image[4:6, 9:11, 9:11] = 1.0
    return Volume(array=image, spacing=(1.0, 1.0, 1.0))


def test_prediction_follows_the_cards_post_processing():
    volume = _two_blob_volume()
    plain = Predictor({"model": _Threshold()}, _card(), device="cpu", amp=False).predict(volume, uncertainty="none")
    assert (plain.label.array == 1).sum() == 100 + 8 and plain.largest_component == []
    card = _card(postprocessing={"largest_component": [1]})
    predictor = Predictor({"model": _Threshold()}, card, device="cpu", amp=False)
    cleaned = predictor.predict(volume, uncertainty="none")
    assert (cleaned.label.array == 1).sum() == 100 and cleaned.label.array[5, 10, 10] == 0
    assert cleaned.largest_component == [1] and cleaned.summary()["largest_component_only"] == [1]
    raw = predictor.predict(volume, uncertainty="none", postprocess=False)
    assert np.array_equal(raw.label.array, plain.label.array)


def test_the_card_keeps_its_post_processing_and_refuses_a_bad_one(tmp_path: Path):
    network = VNet(in_channels=1, num_classes=3, base_width=4, depth=2)
    card = _card(network=dict(network.config), postprocessing={"largest_component": [1]})
    save_checkpoint(tmp_path / "model", {"model": network}, card)
    _networks, loaded = load_checkpoint(tmp_path / "model")
    assert loaded.postprocessing == {"largest_component": [1]}
    text = json.loads((tmp_path / "model.json").read_text())
    for bad, message in (
        ({"fill_holes": [1]}, "unknown post-processing fill_holes"),
        ({"largest_component": [7]}, "beyond the card's classes"),
        ({"largest_component": ["lung"]}, "invalid literal"),
    ):
        with pytest.raises(InputError, match=message):
            ModelCard.from_json(json.dumps({**text, "postprocessing": bad}))
    del text["postprocessing"]  # a card from before post-processing was recorded
    assert ModelCard.from_json(json.dumps(text)).postprocessing == {}


def test_predict_says_which_classes_lost_their_islands(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from conftest import SAMPLE_DIR
    from helpers import ranking_teacher
    from scipy import ndimage

    from napari_ssl_seg.cli import main
    from napari_ssl_seg.io import read_volume

    def pieces(out: str) -> list[int]:
        argv = ["predict", str(image), "--model", str(model), "--out", str(tmp_path / out), "--uncertainty", "none"]
        assert main(argv) == 0
        label = read_volume(tmp_path / out / "CTChest4_label.nii.gz").array
        return [ndimage.label(label == value, structure=np.ones((3, 3, 3)))[1] for value in range(1, 8)]

    model = ranking_teacher(tmp_path)
    image = SAMPLE_DIR / "CTChest4.nrrd"
    assert max(pieces("as_trained")) > 1  # an untrained network scatters its classes
    assert "islands" not in capsys.readouterr().out
    card_path = model.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["postprocessing"] = {"largest_component": list(range(1, 8))}
    card_path.write_text(json.dumps(card))
    assert max(pieces("cleaned")) <= 1
    assert "islands      removed from" in capsys.readouterr().out
