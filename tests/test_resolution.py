"""Class thickness and the Dice ceiling of a coarse training spacing (training/resolution.py, the plan's warning)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from napari_ssl_seg.cli.train import training_config
from napari_ssl_seg.io import Volume
from napari_ssl_seg.store import Project
from napari_ssl_seg.training import resolution
from napari_ssl_seg.training.fingerprint import CACHE_SETTING, fingerprint_project
from napari_ssl_seg.training.plan import SIZE_DICE_AIM, TrainingPlan, plan_project
from napari_ssl_seg.training.resolution import class_surfaces_mm2, resampling_ceiling, sampled_ceiling


def _plates(shape: tuple[int, int, int] = (40, 48, 48), thin: int = 2) -> np.ndarray:
    """Class 1: a plate ``thin`` voxels thick; class 2: a block 16 voxels thick, both through the whole volume."""
    label = np.zeros(shape, dtype=np.uint8)
    label[:, :, 11 : 11 + thin] = 1  # off the coarse grids, as a structure in a scan is
    label[:, :, 25:41] = 2
    return label


def _plates_project(root: Path) -> Path:
    project = Project.create(root, seed=1, name="plates")
    project.set_setting("label_names", json.dumps({"1": "thin plate", "2": "thick block"}))
    # 128 mm at 1 mm: the CPU plan coarsens it (a patch must see the image), which a 1 mm plate does not survive.
    label = _plates((128, 128, 128), thin=1)
    image = np.where(label > 0, 100.0, -1000.0).astype(np.float32)
    for index in range(3):
        name = f"case_{index}"
        project.add_case(name, Volume(array=image, spacing=(1.0, 1.0, 1.0), modality="CT"), split="train")
        project.save_label(name, label, author="test")
    project.close()
    return root


def test_surface_area_counts_the_faces_between_classes_with_their_spacing() -> None:
    label = _plates()
    area = class_surfaces_mm2(label, (2.0, 1.0, 0.5), 3)
    # Each plate has two faces of 40 x 48 voxels across x, each 2.0 x 1.0 mm²; the border is not counted.
    assert area[1] == pytest.approx(2 * 40 * 48 * 2.0)
    assert area[2] == pytest.approx(2 * 40 * 48 * 2.0)
    assert area[0] == pytest.approx(area[1] + area[2])
    # Slab boundaries (every 16 slices) change nothing: a ball's faces along z are all counted, once.
    ball = ((np.indices((40, 40, 40)) - 20) ** 2).sum(0) < 100
    columns = np.count_nonzero(ball.any(axis=0))
    along_z = np.count_nonzero(ball[1:] != ball[:-1])
    assert along_z >= 2 * columns
    total = class_surfaces_mm2(ball.astype(np.uint8), (1.0, 1.0, 1.0), 2)[1]
    assert total == sum(np.count_nonzero(np.diff(ball, axis=axis)) for axis in range(3))


def test_the_sampled_ceiling_is_the_full_measure() -> None:
    label = _plates((24, 48, 96))
    for target in ((2.0, 2.0, 2.0), (3.0, 3.0, 3.0), (4.0, 1.5, 2.5)):
        full = resampling_ceiling(label, (1.0, 1.0, 1.0), target, 3)
        # Every voxel drawn: the same interpolation, so the same Dice.
        assert sampled_ceiling(label, (1.0, 1.0, 1.0), target, 3, samples=label.size) == pytest.approx(full)
        # A fifth of them, drawn at random: within sampling error.
        drawn = sampled_ceiling(label, (1.0, 1.0, 1.0), target, 3, samples=label.size // 5, seed=3)
        assert drawn == pytest.approx(full, abs=0.02)
        # The thin plate loses far more than the thick block.
        assert full[1] < full[2] < 1.0
    assert resampling_ceiling(label, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 3) == {1: 1.0, 2: 1.0}
    # An absent class is not reported (its Dice would say nothing).
    assert set(sampled_ceiling(label, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0), 4)) == {1, 2}


def test_the_plan_measures_each_class_ceiling_and_warns_of_one_out_of_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _plates_project(tmp_path / "p")
    plan, fingerprint = plan_project(root, device="cpu")
    thickness = {size.name: size.thickness_mm for size in fingerprint.classes}
    assert thickness["thin plate"] == pytest.approx(1.0)
    assert thickness["thick block"] == pytest.approx(16.0)
    assert plan.target_spacing[0] > 1.0
    label = _plates((128, 128, 128), thin=1)
    full = resampling_ceiling(label, (1.0, 1.0, 1.0), plan.target_spacing, 3)
    assert plan.class_ceilings == {str(c): pytest.approx(full[c], abs=0.01) for c in (1, 2)}
    assert plan.class_ceilings["1"] < SIZE_DICE_AIM[plan.class_sizes["1"]] <= plan.class_ceilings["2"]
    assert [warning.split(", about")[0] for warning in plan.warnings] == ["thin plate"]
    assert set(plan.warnings) <= set(plan.reasons)
    assert TrainingPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan

    # Planned again: the ceilings come from the project's cache, and nothing is measured.
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("measured again")

    monkeypatch.setattr(resolution, "sampled_ceiling", refuse)
    again, _ = plan_project(root, device="cpu")
    assert again == plan


def test_train_with_the_plan_tells_what_it_cannot_reach(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _plates_project(tmp_path / "p")
    args = argparse.Namespace(method="supervised", overrides=[], iterations=None, config="plan", device="cpu")
    config = training_config(args, root)
    assert config.target_spacing is not None and config.target_spacing[0] > 1.0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("plan: ")]
    assert len(warned) == 1 and warned[0].startswith("plan: thin plate, about 1.0 mm thick, at ")


def test_a_sample_cached_before_thickness_is_taken_again(tmp_path: Path) -> None:
    root = tmp_path / "p"
    project = Project.create(root, seed=1, name="old cache")
    label = _plates()
    project.add_case("a", Volume(array=label.astype(np.float32), spacing=(1.0, 1.0, 1.0)), split="train")
    project.save_label("a", label, author="test")
    with project:
        fingerprint_project(project)
        cache = json.loads(project.setting(CACHE_SETTING))
        for sample in cache.values():
            del sample["class_surface_mm2"]
        project.set_setting(CACHE_SETTING, json.dumps(cache))
        again = fingerprint_project(project)
    assert all(size.thickness_mm is not None for size in again.classes)
