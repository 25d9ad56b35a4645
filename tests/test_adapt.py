"""Adapting the active teacher to the project's scans: a new version, statistics only, activated by the rule."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_project, tiny_trained_project

from napari_ssl_seg.cli import main
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.networks import load_checkpoint, save_checkpoint
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import active_model, model_version, model_versions
from napari_ssl_seg.training.adapt import adapt_active_teacher, adaptation_cases

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_trained_project(tmp_path_factory.mktemp("adapt"))


@pytest.fixture
def trained_root(trained_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(trained_template, root)
    return root


def _weights(project: Project, name: str) -> dict[str, torch.Tensor]:
    networks, _ = load_checkpoint(model_version(project, name).checkpoint(project))
    return networks["model"].state_dict()


def test_adapting_registers_a_child_with_new_statistics_and_the_same_weights(trained_root: Path) -> None:
    with Project.open(trained_root) as project:
        before = active_model(project)
        assert before is not None
        outcome = adapt_active_teacher(project, batches=3, device="cpu")
        versions = {version.name: version for version in model_versions(project)}
        assert set(versions) == {before.name, outcome.new_version}  # the old teacher stays, for rollback
        new = versions[outcome.new_version]
        assert new.parent_id == before.id and outcome.old_version == before.name
        assert outcome.cases == 3 == len(adaptation_cases(project))  # 2 labeled + 1 unlabeled training cases
        assert outcome.validated and outcome.old_dice is not None and outcome.new_dice is not None
        assert outcome.promoted == (outcome.new_dice >= outcome.old_dice)
        assert active_model(project).name == (outcome.new_version if outcome.promoted else before.name)
        assert outcome.active_version == active_model(project).name
        old_weights, new_weights = _weights(project, before.name), _weights(project, outcome.new_version)
        _, card = load_checkpoint(new.checkpoint(project))
    assert card.metrics["batchnorm_statistics"] == {"cases": 3, "patches": 12, "adapted_from": before.name}
    assert card.metrics["validation_dice"] == outcome.new_dice and new.validation_dice == outcome.new_dice
    changed = {key for key in old_weights if not torch.equal(old_weights[key], new_weights[key])}
    assert changed and all(key.rsplit(".", 1)[-1] in STATISTICS for key in changed)


def test_without_a_labeled_validation_case_the_adapted_teacher_is_active_unvalidated(
    trained_template: Path, tmp_path: Path
) -> None:
    from napari_ssl_seg.store.models import register_model

    root = make_tiny_project(tmp_path / "no_validation", validation=0)
    with Project.open(trained_template) as source:
        networks, card = load_checkpoint(active_model(source).checkpoint(source))
    # A shipped teacher's card: its test scores too, measured with the statistics adapting replaces.
    shipped = {**card.metrics, "test_dice": 0.8, "test_hd95_mm": 9.0, "test_cases": ["case_09"], "best_iteration": 2}
    teacher = tmp_path / "shipped.safetensors"
    save_checkpoint(teacher, networks, dataclasses.replace(card, metrics=shipped))
    with Project.open(root) as project:
        old = register_model(project, teacher, activate=True)
        outcome = adapt_active_teacher(project, batches=2, device="cpu")
        assert not outcome.validated and outcome.promoted
        assert active_model(project).name == outcome.new_version != old.name
        _, card = load_checkpoint(active_model(project).checkpoint(project))
    scored = [key for key in card.metrics if "validation" in key or key.startswith("test_")]
    assert scored == [] and card.metrics["best_iteration"] == 2  # scores of other statistics gone, the history kept


def test_adapting_needs_an_active_teacher_and_a_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tiny_project(tmp_path / "untrained")
    with Project.open(root) as project:
        with pytest.raises(InputError, match="no active teacher"):
            adapt_active_teacher(project, device="cpu")
        with pytest.raises(InputError, match="at least 1"):
            adapt_active_teacher(project, batches=0, device="cpu")
    assert main(["adapt", str(root), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no active teacher")
    with Project.open(root) as project:
        assert model_versions(project) == []


def test_the_adapt_command_reports_the_outcome(trained_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["adapt", str(trained_root), "--batches", "2", "--device", "cpu", "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    with Project.open(trained_root) as project:
        assert outcome["active_version"] == active_model(project).name
        assert {version.name for version in model_versions(project)} == {outcome["old_version"], outcome["new_version"]}
    assert outcome["validated"] and outcome["cases"] == 3
    assert main(["adapt", str(trained_root), "--batches", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "validation Dice" in printed and "activated" in printed


def test_the_adapt_command_registers_a_model_file_first(
    trained_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tiny_project(tmp_path / "lab", validation=0)  # a lab's scans, no teacher yet
    with Project.open(trained_template) as source:
        teacher = active_model(source).checkpoint(source)
    assert main(["adapt", str(root), "--model", str(teacher), "--batches", "2", "--device", "cpu", "--json"]) == 0
    printed = capsys.readouterr()
    outcome = json.loads(printed.out)
    assert "registered" in printed.err and not outcome["validated"] and outcome["promoted"]
    with Project.open(root) as project:
        versions = {version.name: version for version in model_versions(project)}
        assert set(versions) == {outcome["old_version"], outcome["new_version"]}
        assert versions[outcome["new_version"]].parent_id == versions[outcome["old_version"]].id
        assert active_model(project).name == outcome["new_version"]
