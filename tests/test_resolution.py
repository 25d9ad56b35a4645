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
from napari_ssl_seg.training.fingerprint import CACHE_SETTING, fingerprint_project
from napari_ssl_seg.training.plan import SIZE_DICE_AIM, TrainingPlan, make_plan
from napari_ssl_seg.training.resolution import (
    CEILING_MARGIN,
    CEILING_SLOPE,
    class_surfaces_mm2,
    estimated_ceiling,
    resampling_ceiling,
)


def _plates(shape: tuple[int, int, int] = (40, 48, 48), thin: int = 2) -> np.ndarray:
    """Class 1: a plate ``thin`` voxels thick; class 2: a block 16 voxels thick, both through the whole volume."""
    label = np.zeros(shape, dtype=np.uint8)
    label[:, :, 10 : 10 + thin] = 1
    label[:, :, 24:40] = 2
    return label


def test_surface_area_counts_the_faces_between_classes_with_their_spacing() -> None:
    label = _plates()
    area = class_surfaces_mm2(label, (2.0, 1.0, 0.5), 3)
    # Each plate has two faces of 40 x 48 voxels across x, each 2.0 x 1.0 mm²; the border is not counted.
    assert area[1] == pytest.approx(2 * 40 * 48 * 2.0)
    assert area[2] == pytest.approx(2 * 40 * 48 * 2.0)
    assert area[0] == pytest.approx(area[1] + area[2])
    # Slab boundaries change nothing: faces between slices 15|16 and 31|32 are counted once.
    sphere = (np.indices((40, 40, 40)) - 20) ** 2
    ball = (sphere.sum(0) < 100).astype(np.uint8)
    z_faces = 2 * np.count_nonzero(ball.any(axis=0))  # the ball's top and bottom faces per column
    assert class_surfaces_mm2(ball, (1.0, 1.0, 1.0), 2)[1] >= z_faces


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


def test_fingerprint_reports_thickness_and_the_plan_warns_of_a_ceiling(tmp_path: Path) -> None:
    with Project.open(_plates_project(tmp_path / "p")) as project:
        fingerprint = fingerprint_project(project)
    thickness = {size.name: size.thickness_mm for size in fingerprint.classes}
    assert thickness["thin plate"] == pytest.approx(1.0)
    assert thickness["thick block"] == pytest.approx(16.0)
    plan = make_plan(fingerprint)
    assert plan.target_spacing[0] > 1.0
    ceilings = plan.class_ceilings
    expected = estimated_ceiling(1.0, plan.target_spacing, (1.0, 1.0, 1.0))
    assert ceilings["1"] == pytest.approx(expected, abs=1e-3)
    assert ceilings["1"] + CEILING_MARGIN < SIZE_DICE_AIM[plan.class_sizes["1"]] <= ceilings["2"]
    assert [warning.split(" is about")[0] for warning in plan.warnings] == ["thin plate"]
    assert set(plan.warnings) <= set(plan.reasons)
    # The GPU budget's finer spacing resolves more of it.
    assert make_plan(fingerprint, budget="gpu").class_ceilings["1"] > ceilings["1"]
    assert TrainingPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_train_with_the_plan_tells_what_it_cannot_reach(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _plates_project(tmp_path / "p")
    args = argparse.Namespace(method="supervised", overrides=[], iterations=None, config="plan", device="cpu")
    config = training_config(args, root)
    assert config.target_spacing is not None and config.target_spacing[0] > 1.0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("plan: ")]
    assert len(warned) == 1 and warned[0].startswith("plan: thin plate is about 1.0 mm thick")


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


def test_no_coarsening_costs_nothing_and_each_coarsened_axis_costs() -> None:
    assert estimated_ceiling(3.0, (10.0, 3.0, 3.0), (10.0, 3.0, 3.0)) == 1.0
    assert estimated_ceiling(3.0, (8.0, 3.0, 3.0), (10.0, 3.0, 3.0)) == 1.0  # finer along z: nothing lost
    one_axis = estimated_ceiling(3.0, (20.0, 3.0, 3.0), (10.0, 3.0, 3.0))
    assert one_axis < 1.0
    assert estimated_ceiling(3.0, (20.0, 6.0, 6.0), (10.0, 3.0, 3.0)) < one_axis
    assert estimated_ceiling(3.0, (4.0,) * 3) == pytest.approx(1.0 - CEILING_SLOPE * 4.0 / 3.0)


def test_the_estimate_follows_the_measured_ceiling_of_a_thin_and_a_thick_structure() -> None:
    label = np.zeros((24, 48, 96), dtype=np.uint8)
    label[:, :, 11:13] = 1  # off the coarse grids, as a structure in a scan is
    label[:, :, 25:42] = 2
    for target in ((2.0, 2.0, 2.0), (3.0, 3.0, 3.0)):
        measured = resampling_ceiling(label, (1.0, 1.0, 1.0), target, 3)
        # Thin plates lose far more than thick blocks, and the estimate orders them the same way.
        assert measured[1] < measured[2]
        assert estimated_ceiling(2.0, target) < estimated_ceiling(17.0, target)
        assert measured[2] == pytest.approx(estimated_ceiling(17.0, target), abs=0.05)
    assert resampling_ceiling(label, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 3) == {1: 1.0, 2: 1.0}
