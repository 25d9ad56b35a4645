"""BatchNorm statistics re-estimated over every training case at the end of a run, kept only if they validate better."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_project, tiny_config
from torch import nn

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.evaluation.validation import ValidationCase, validate_network
from napari_ssl_seg.networks import load_checkpoint
from napari_ssl_seg.networks.checkpoint import checkpoint_paths, save_checkpoint
from napari_ssl_seg.runtime.precision import Execution
from napari_ssl_seg.store import Project
from napari_ssl_seg.training import batchnorm
from napari_ssl_seg.training.batchnorm import (
    BATCH_PATCHES,
    case_groups,
    recalibrate_export,
    reestimate_batchnorm,
    training_patches,
)
from napari_ssl_seg.training.data import take_snapshot
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.runlog import read_log

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_project(tmp_path_factory.mktemp("tiny") / "project")


@pytest.fixture(scope="module")
def trained(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short run without the re-estimation: its export as trained."""
    out = tmp_path_factory.mktemp("runs") / "as_trained"
    train(tiny_project, tiny_config(amp=False), out, device="cpu")
    return out


def _state(path: Path) -> dict[str, torch.Tensor]:
    networks, _ = load_checkpoint(path)
    return networks["model"].state_dict()


def _split(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(BatchNorm running statistics, every other tensor)."""
    statistics = {key: value for key, value in state.items() if key.rsplit(".", 1)[-1] in STATISTICS}
    return statistics, {key: value for key, value in state.items() if key not in statistics}


def _validation(project: Project) -> list[ValidationCase]:
    snapshot = take_snapshot(project)
    return [
        ValidationCase(name, project.read_image(name), np.asarray(project.read_label(name, version).array))
        for name, version in snapshot.validation.items()
    ]


def test_reestimate_takes_the_statistics_of_the_batches_and_nothing_else() -> None:
    network = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2), nn.Dropout(0.2))
    with torch.no_grad():
        network[0].weight.fill_(1.0)
        network[0].bias.zero_()
    weights = {key: value.clone() for key, value in network.state_dict().items() if "running" not in key}
    generator = torch.Generator().manual_seed(0)
    batches = [3.0 + 2.0 * torch.randn(4, 1, 4, 8, 8, generator=generator) for _ in range(20)]
    torch.manual_seed(11)
    seen = reestimate_batchnorm(network, batches)
    after = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(after, torch.rand(3)), "the training's random stream moved"
    assert seen == 20 and not network.training
    norm = network[1]
    assert torch.allclose(norm.running_mean, torch.full((2,), 3.0), atol=0.05)
    assert torch.allclose(norm.running_var, torch.full((2,), 4.0), atol=0.1)
    assert norm.momentum == 0.1 and int(norm.num_batches_tracked) == 20
    for key, value in weights.items():
        if key != "1.num_batches_tracked":
            assert torch.equal(network.state_dict()[key], value), key
    assert reestimate_batchnorm(nn.Sequential(nn.Conv3d(1, 1, 1)), batches) == 0


def test_mixed_precision_passes_give_the_float32_statistics_to_bfloat16s_precision() -> None:
    def network() -> nn.Module:
        torch.manual_seed(3)
        return nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1),
            nn.BatchNorm3d(4),
            nn.ReLU(),
            nn.Conv3d(4, 4, 3, padding=1),
            nn.BatchNorm3d(4),
        )

    generator = torch.Generator().manual_seed(0)
    batches = [1.0 + 0.5 * torch.randn(2, 1, 4, 8, 8, generator=generator) for _ in range(6)]
    plain, mixed = network(), network()
    reestimate_batchnorm(plain, batches)
    execution = Execution(torch.device("cpu"), torch.bfloat16, channels_last=True)
    assert reestimate_batchnorm(mixed, batches, execution) == 6
    # Laid out as the execution asks (what the predictor then finds), statistics still kept in float32.
    assert mixed[3].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not plain[3].weight.is_contiguous(memory_format=torch.channels_last_3d)
    for index in (1, 4):
        for key in ("running_mean", "running_var"):
            ours, reference = getattr(mixed[index], key), getattr(plain[index], key)
            assert ours.dtype == torch.float32
            assert not torch.equal(ours, reference), "the passes did not run in bfloat16"
            torch.testing.assert_close(ours, reference, rtol=0.03, atol=0.01)


def test_statistics_that_validate_better_replace_the_export(trained: Path, tiny_project: Path, tmp_path: Path) -> None:
    networks, card = load_checkpoint(trained / "model")
    for module in networks["model"].modules():
        if isinstance(module, nn.BatchNorm3d):  # statistics of some other data: the predictions suffer
            module.running_mean += 3.0
            module.running_var *= 30.0
    spoiled = tmp_path / "model"
    save_checkpoint(spoiled, networks, card)
    with Project.open(tiny_project) as project:
        validation = _validation(project)
        snapshot = take_snapshot(project)
        scoring = {"overlap": 0.25, "amp": False, "choose_cleanup": True}
        before = validate_network(networks["model"], validation, card, device=torch.device("cpu"), **scoring).dice
        spoiled_card = dataclasses.replace(card, metrics={**card.metrics, "validation_dice": before})
        save_checkpoint(spoiled, networks, spoiled_card, overwrite=True)
        record = recalibrate_export(
            project, spoiled, snapshot, validation, batches=6, seed=0, lateral=True, device=torch.device("cpu"),
            scoring=scoring,
        )  # fmt: skip
    assert record is not None and record["adopted"]
    assert record["validation_dice_reestimated"] > record["validation_dice_as_trained"] == before
    assert record["cases"] == 3 and record["patches"] == 6 * BATCH_PATCHES  # 2 labeled + 1 unlabeled, no validation
    _, adopted = load_checkpoint(spoiled)
    assert adopted.metrics["validation_dice"] == record["validation_dice_reestimated"]
    assert adopted.metrics["batchnorm_statistics"]["validation_dice_as_trained"] == before
    assert adopted.metrics["best_iteration"] == card.metrics["best_iteration"]
    statistics, weights = _split(_state(spoiled))
    spoiled_statistics, trained_weights = _split(networks["model"].state_dict())
    assert all(torch.equal(weights[key], trained_weights[key]) for key in weights)
    means = [key for key in statistics if key.endswith("running_mean")]
    assert means and not any(torch.allclose(statistics[key], spoiled_statistics[key]) for key in means)


def test_statistics_that_validate_no_better_leave_the_export_untouched(
    trained: Path, tiny_project: Path, tmp_path: Path
) -> None:
    networks, card = load_checkpoint(trained / "model")
    unbeatable = tmp_path / "model"
    save_checkpoint(unbeatable, networks, dataclasses.replace(card, metrics={**card.metrics, "validation_dice": 1.0}))
    files = [path.read_bytes() for path in checkpoint_paths(unbeatable)]
    with Project.open(tiny_project) as project:
        record = recalibrate_export(
            project, unbeatable, take_snapshot(project), _validation(project), batches=2, seed=0, lateral=True,
            device=torch.device("cpu"), scoring={"overlap": 0.25, "amp": False},
        )  # fmt: skip
    assert record is not None and not record["adopted"] and "best" not in record
    assert [path.read_bytes() for path in checkpoint_paths(unbeatable)] == files


def test_a_run_reestimates_at_its_end_and_logs_both_scores(trained: Path, tiny_project: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(tiny_project, tiny_config(amp=False, batchnorm_batches=3), out, device="cpu")
    records = [record for record in read_log(out / "log.jsonl") if record["kind"] == "batchnorm"]
    assert len(records) == 1 and records[0]["iteration"] == 6
    record = records[0]
    _, as_trained = load_checkpoint(trained / "model")
    # The same training as the run without the step: the step starts from the same export.
    assert record["validation_dice_as_trained"] == as_trained.metrics["validation_dice"]
    _, card = load_checkpoint(out / "model")
    best = max(record["validation_dice_as_trained"], record["validation_dice_reestimated"])
    assert card.metrics["validation_dice"] == best == result.best_validation_dice
    assert ("batchnorm_statistics" in card.metrics) == record["adopted"]
    statistics, weights = _split(_state(out / "model"))
    trained_statistics, trained_weights = _split(_state(trained / "model"))
    assert all(torch.equal(weights[key], trained_weights[key]) for key in weights)
    unchanged = all(torch.equal(statistics[key], trained_statistics[key]) for key in statistics)
    assert unchanged != record["adopted"]


def test_a_negative_batch_count_is_refused(tiny_project: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="batchnorm_batches"):
        train(tiny_project, tiny_config(batchnorm_batches=-1), tmp_path / "run", device="cpu")


def test_a_finished_run_resumed_with_the_step_switched_on_reestimates(
    trained: Path, tiny_project: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    train(tiny_project, tiny_config(amp=False, batchnorm_batches=2), run, device="cpu", resume=True)
    records = [record for record in read_log(run / "log.jsonl") if record["kind"] == "batchnorm"]
    assert len(records) == 1 and records[0]["patches"] == 2 * BATCH_PATCHES


def test_the_train_command_reports_what_the_step_found(
    tiny_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import TINY

    from napari_ssl_seg.cli import main

    out = tmp_path / "run"
    settings = [f"--set={item}" for item in [*TINY, "base_width=4", "depth=3", "batchnorm_batches=2"]]
    argv = ["train", str(tiny_project), "--method", "supervised", "--iterations", "2", "--out", str(out)]
    assert main([*argv, "--device", "cpu", *settings]) == 0
    printed = capsys.readouterr().out
    record = next(record for record in read_log(out / "log.jsonl") if record["kind"] == "batchnorm")
    kept = "kept" if record["adopted"] else "not kept"
    assert f"BatchNorm statistics of 3 training cases {kept}" in printed
    assert f"{record['validation_dice_as_trained']:.3f} → {record['validation_dice_reestimated']:.3f}" in printed


def test_a_project_too_large_for_memory_is_read_a_group_at_a_time(
    trained: Path, tiny_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, card = load_checkpoint(trained / "model")
    loaded: list[list[str]] = []
    read_cases = batchnorm.load_cases

    def recording(project: Project, versions: dict, *args: object, **kwargs: object) -> list:
        loaded.append(list(versions))
        return read_cases(project, versions, *args, **kwargs)

    monkeypatch.setattr(batchnorm, "load_cases", recording)
    with Project.open(tiny_project) as project:
        cases = [*take_snapshot(project).labeled, *take_snapshot(project).unlabeled]
        one_case = max(batchnorm._voxels_at(project.case(name), card.spacing) for name in cases)
        assert case_groups(project, cases, card) == [cases]
        assert case_groups(project, cases, card, max_voxels=2 * one_case) == [cases[:2], cases[2:]]
        assert case_groups(project, cases, card, max_voxels=1) == [[name] for name in cases]
        together = list(training_patches(project, cases, card, batches=7, seed=0, lateral=True))
        assert loaded == [cases]
        loaded.clear()
        apart = list(training_patches(project, cases, card, batches=7, seed=0, lateral=True, max_voxels=one_case))
    assert loaded == [[name] for name in cases], "each case read once, one at a time"
    assert len(apart) == len(together) == 7
    assert all(batch.shape == (BATCH_PATCHES, 1, *card.patch_size) for batch in apart)


def test_the_summary_shows_enough_digits_to_tell_the_two_scores_apart() -> None:
    record = {
        "validation_dice_as_trained": 0.82441,
        "validation_dice_reestimated": 0.82449,
        "adopted": True,
        "cases": 8,
    }
    summary = batchnorm.statistics_summary(record)
    assert "0.8244 → 0.8245" in summary and "8 training cases kept" in summary
    assert "0.700 → 0.750" in batchnorm.statistics_summary(
        {**record, "validation_dice_as_trained": 0.7, "validation_dice_reestimated": 0.75}
    )
    assert batchnorm.statistics_summary({"kind": "batchnorm"}) == ""
