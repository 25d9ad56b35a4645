"""Choosing the exported network on the validation split: teacher or one of the students."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import make_tiny_project, tiny_config
from safetensors.torch import load_file

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.evaluation.validation import ValidationScore
from napari_ssl_seg.methods.registry import build_method
from napari_ssl_seg.networks import load_checkpoint
from napari_ssl_seg.training import apply_overrides
from napari_ssl_seg.training import loop as loop_module
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.runlog import read_log
from napari_ssl_seg.training.state import resume_paths


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_project(tmp_path_factory.mktemp("selection") / "project")


def _scripted_validation(monkeypatch: pytest.MonkeyPatch, scores: list[float]) -> list[torch.nn.Module]:
    """Replace validation by scores given in call order; returns the networks validated, in order."""
    seen: list[torch.nn.Module] = []

    def validate(network: torch.nn.Module, cases: Any, *args: Any, **kw: Any) -> ValidationScore:
        seen.append(network)
        score = scores[(len(seen) - 1) % len(scores)]
        return ValidationScore(score, {"case_03": score})

    monkeypatch.setattr(loop_module, "validate_network", validate)
    return seen


def _resume_weights(out: Path, network: str) -> dict[str, torch.Tensor]:
    prefix = f"net.{network}."
    tensors = load_file(str(resume_paths(out)[0]))
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def _same_weights(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> bool:
    state = module.state_dict()
    return set(state) == set(expected) and all(torch.equal(state[k].float(), expected[k].float()) for k in state)


def test_candidates_are_the_inference_network_first_then_the_students() -> None:
    network = tiny_config().network_config(num_classes=3)
    ucmt = build_method("ucmt", network)
    candidates = ucmt.inference_candidates()
    assert list(candidates) == ["teacher", "student1", "student2"]
    assert candidates["student2"] is ucmt.unwrapped("student2")
    # UG-CEMT's student is offered without its training-only cross-attention: a plain V-Net.
    ugcemt = build_method("ugcemt", network)
    assert list(ugcemt.inference_candidates()) == ["teacher", "student"]
    assert type(ugcemt.inference_candidates()["student"]) is type(ugcemt.inference_candidates()["teacher"])
    assert list(build_method("supervised", network).inference_candidates()) == ["model"]


def test_the_best_validating_student_is_exported_with_the_teacher_as_partner(
    tiny_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _scripted_validation(monkeypatch, [0.1, 0.2, 0.5])  # teacher, student1, student2
    config = tiny_config(method="ucmt", iterations=3, inference_selection="validation")
    result = train(tiny_project, config, tmp_path / "run", device="cpu")
    assert len(seen) == 3 and result.best_validation_dice == 0.5
    networks, card = load_checkpoint(tmp_path / "run" / "model.json")
    assert card.metrics["inference_network"] == "student2"
    assert _same_weights(networks["model"], _resume_weights(tmp_path / "run", "student2"))
    assert _same_weights(networks["student"], _resume_weights(tmp_path / "run", "teacher"))
    record = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "validation"][-1]
    assert record["network"] == "student2"
    assert record["candidates"] == {"teacher": 0.1, "student1": 0.2, "student2": 0.5}


def test_by_default_only_the_papers_inference_network_is_validated(
    tiny_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _scripted_validation(monkeypatch, [0.3])
    train(tiny_project, tiny_config(method="ucmt", iterations=3), tmp_path / "run", device="cpu")
    assert len(seen) == 1
    networks, card = load_checkpoint(tmp_path / "run" / "model.json")
    assert card.metrics["inference_network"] == "teacher"
    assert _same_weights(networks["model"], _resume_weights(tmp_path / "run", "teacher"))
    records = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "validation"]
    assert records and all("candidates" not in r and "network" not in r for r in records)


def test_a_tie_keeps_the_papers_network_and_a_bad_choice_is_refused(
    tiny_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted_validation(monkeypatch, [0.4, 0.4])  # MT: teacher, then student
    config = tiny_config(method="mt", iterations=3, inference_selection="validation")
    train(tiny_project, config, tmp_path / "run", device="cpu")
    assert load_checkpoint(tmp_path / "run" / "model.json")[1].metrics["inference_network"] == "teacher"
    with pytest.raises(InputError, match="inference_selection"):
        apply_overrides(tiny_config(), ["inference_selection=students"])
