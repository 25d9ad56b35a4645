"""The dataset fingerprint and the plan made from it (training/fingerprint.py, training/plan.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_project

from napari_ssl_seg.cli import main
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.intensity import normalise_intensity, validate_intensity
from napari_ssl_seg.io import Volume
from napari_ssl_seg.store import Project
from napari_ssl_seg.training import fingerprint as fingerprint_module
from napari_ssl_seg.training.budget import BUDGETS
from napari_ssl_seg.training.config import apply_overrides, preset
from napari_ssl_seg.training.data import load_cases
from napari_ssl_seg.training.fingerprint import fingerprint_project
from napari_ssl_seg.training.plan import PLAN_SETTING, make_plan, plan_project, planned_config


def _project(
    root: Path,
    *,
    spacings: list[tuple[float, float, float]],
    shape: tuple[int, int, int] = (12, 40, 40),
    ct: bool = True,
    names: dict[str, str] | None = None,
    zero_background: bool = False,
) -> Path:
    """Cases of known geometry: a box of class 1 (a quarter of the width) and a slab of class 2."""
    project = Project.create(root, seed=1, name="constructed")
    project.set_setting("label_names", json.dumps(names or {"1": "liver", "2": "spleen"}))
    rng = np.random.default_rng(0)
    for index, spacing in enumerate(spacings):
        label = np.zeros(shape, dtype=np.uint8)
        label[:, 10:20, 10:20] = 1
        label[:, 30:32, 5:35] = 2
        if ct:
            image = np.full(shape, -1000.0, dtype=np.float32)  # air
            image[label == 1] = rng.uniform(40, 60, size=int((label == 1).sum()))
            image[label == 2] = rng.uniform(100, 200, size=int((label == 2).sum()))
        else:
            image = rng.normal(300.0, 20.0, size=shape).astype(np.float32)
            if zero_background:
                image[:, :, :8] = 0.0
                image[:, :, -8:] = 0.0
                image[:, :8] = 0.0
            image[label == 1] += 200.0
        name = f"case_{index:02d}"
        split = "validation" if index == len(spacings) - 1 else "train"
        project.add_case(name, Volume(array=image, spacing=spacing, modality="CT" if ct else None), split=split)
        project.save_label(name, label, author="test")
    project.close()
    return root


def test_fingerprint_reports_spacing_intensities_and_class_sizes(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", spacings=[(5.0, 1.0, 1.0), (3.0, 1.0, 1.0), (4.0, 0.8, 0.8)])
    with Project.open(root) as project:
        fingerprint = fingerprint_project(project)
    assert fingerprint.modality == "CT"
    assert fingerprint.median_spacing == pytest.approx((4.0, 1.0, 1.0))
    assert fingerprint.median_shape == (12, 40, 40)
    stats = fingerprint.foreground_intensity
    # Foreground: class 1 in [40, 60] (100 voxels a slice), class 2 in [100, 200] (60 a slice).
    assert 40 <= stats["percentile_00_5"] < 42 and 195 < stats["percentile_99_5"] <= 200
    sizes = {size.name: size for size in fingerprint.classes}
    assert sizes["liver"].voxel_fraction == pytest.approx(100 / 1600)
    assert sizes["spleen"].voxel_fraction == pytest.approx(60 / 1600)
    # Only the two labeled training cases are sampled, never the validation case.
    assert fingerprint.sampled_cases == ("case_00", "case_01")
    assert sizes["liver"].median_volume_ml == pytest.approx(12 * 100 * 4.0 / 1000)


def test_plan_of_anisotropic_ct(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", spacings=[(5.0, 1.0, 1.0), (3.0, 1.0, 1.0), (4.0, 1.0, 1.0), (4.0, 1.0, 1.0)])
    with Project.open(root) as project:
        plan = make_plan(fingerprint_project(project))
    # Anisotropic: the coarse axis takes the 10th percentile of its spacings (3.3 of 3, 4, 4, 5).
    assert plan.target_spacing == pytest.approx((np.percentile([5, 3, 4, 4], 10), 1.0, 1.0))
    divisor = 2 ** (plan.depth - 1)
    assert all(side % divisor == 0 for side in plan.patch_size)
    assert math.prod(plan.patch_size) <= BUDGETS["cpu"].patch_voxels
    low, high = plan.intensity["window"]
    assert plan.intensity["kind"] == "ct_window" and 40 <= low < 42 and 195 < high <= 200
    assert plan.lateral_augmentation == "on"  # liver and spleen name no side
    assert plan.class_sizes == {"1": "large", "2": "mid"}
    assert planned_config(plan, preset("quick")).intensity_augmentation  # brightness, contrast, gamma


def test_fine_isotropic_data_is_coarsened_until_a_patch_sees_the_anatomy(tmp_path: Path) -> None:
    shape = (96, 96, 96)
    root = _project(tmp_path / "p", spacings=[(1.0, 1.0, 1.0)] * 3, shape=shape, names={"1": "left", "2": "right"})
    with Project.open(root) as project:
        fingerprint = fingerprint_project(project)
    plan = make_plan(fingerprint)
    budget = BUDGETS["cpu"]
    spacing = np.asarray(plan.target_spacing)
    assert spacing == pytest.approx(spacing[0]) and spacing[0] > 1.0  # coarsened, and kept isotropic
    voxels_at_target = np.prod(np.asarray(fingerprint.median_extent_mm) / spacing)
    assert voxels_at_target <= budget.context_ratio * budget.patch_voxels
    assert voxels_at_target > budget.context_ratio * budget.patch_voxels / 1.01**3  # not coarser than needed
    assert plan.lateral_augmentation == "off"  # classes name a side
    # The GPU budget affords more voxels per patch: a finer spacing.
    assert make_plan(fingerprint, budget="gpu").target_spacing[0] < plan.target_spacing[0]


def test_mri_with_zero_background_gets_a_foreground_zscore(tmp_path: Path) -> None:
    spacings = [(2.0, 1.0, 1.0)] * 3
    masked = _project(tmp_path / "masked", spacings=spacings, ct=False, zero_background=True)
    plain = _project(tmp_path / "plain", spacings=spacings, ct=False)
    with Project.open(masked) as project:
        assert make_plan(fingerprint_project(project)).intensity == {"kind": "zscore", "mask": "nonzero"}
    with Project.open(plain) as project:
        assert make_plan(fingerprint_project(project)).intensity == {"kind": "zscore"}


def test_nonzero_zscore_keeps_the_background_at_zero() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((20, 8, 8), dtype=np.float32)
    image[:, 2:6, 2:6] = rng.normal(500, 50, size=(20, 4, 4))
    out = normalise_intensity(image, {"kind": "zscore", "mask": "nonzero"}, slab=3)
    inside = out[:, 2:6, 2:6]
    assert np.all(out[image == 0] == 0)
    assert inside.mean() == pytest.approx(0.0, abs=1e-4) and inside.std() == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(InputError, match="mask"):
        validate_intensity({"kind": "zscore", "mask": "everything"})


def test_a_plan_is_deterministic_and_its_samples_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "p", spacings=[(5.0, 1.0, 1.0), (3.0, 1.0, 1.0), (4.0, 1.0, 1.0)])
    first, _ = plan_project(root, device="cpu")

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached case was read again")

    monkeypatch.setattr(fingerprint_module, "_case_sample", no_reading)
    second, _ = plan_project(root, device="cpu")
    assert first == second
    with Project.open(root) as project:
        stored = json.loads(project.setting(PLAN_SETTING))
        assert stored["plan"] == first.to_dict()
        # A new label version is sampled afresh.
        project.save_label("case_00", np.zeros((12, 40, 40), dtype=np.uint8) + 1, author="test")
    with pytest.raises(AssertionError, match="read again"):
        plan_project(root, device="cpu")


def test_planned_config_carries_the_plan() -> None:
    from napari_ssl_seg.training.plan import TrainingPlan

    plan = TrainingPlan(
        budget="cpu",
        target_spacing=(3.0, 1.5, 1.5),
        patch_size=(16, 48, 48),
        depth=4,
        base_width=8,
        batch_labeled=2,
        batch_unlabeled=2,
        iterations=1000,
        foreground_oversampling=0.33,
        intensity={"kind": "zscore"},
        lateral_augmentation="off",
    )
    config = planned_config(plan, preset("quick"))
    assert config.target_spacing == (3.0, 1.5, 1.5) and config.patch_size == (16, 48, 48)
    assert config.lr_step == 800 and config.rampup_iterations == 1000 and config.plan == plan.to_dict()
    assert TrainingPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    # A plan stored before intensity augmentation existed loads, and trains as it did: without it.
    stored_before = {key: value for key, value in plan.to_dict().items() if key != "intensity_augmentation"}
    assert TrainingPlan.from_dict(stored_before) == plan and not config.intensity_augmentation
    assert apply_overrides(config, ["target_spacing=2,1,1"]).target_spacing == (2.0, 1.0, 1.0)
    with pytest.raises(InputError, match="target_spacing"):
        apply_overrides(config, ["target_spacing=2,0,1"])


def test_training_cases_are_resampled_to_the_target_spacing(tmp_path: Path) -> None:
    root = make_tiny_project(tmp_path / "p")  # (10, 22, 26) voxels at 4 x 1 x 1 mm
    with Project.open(root) as project:
        native = load_cases(project, {"case_00": 1}, {"kind": "zscore"})[0]
        resampled = load_cases(project, {"case_00": 1}, {"kind": "zscore"}, spacing=(2.0, 2.0, 1.0))[0]
    assert resampled.spacing == (2.0, 2.0, 1.0)
    assert resampled.image.shape == (20, 11, 26) and resampled.label.shape == (20, 11, 26)
    assert resampled.label.dtype == native.label.dtype
    assert set(np.unique(resampled.label)) == set(np.unique(native.label))
    # Every voxel keeps its physical size: the class volumes agree to within a voxel layer.
    for value in (1, 2):
        native_ml = (native.label == value).sum() * 4.0
        assert (resampled.label == value).sum() * 4.0 == pytest.approx(native_ml, rel=0.25)


def test_cli_plan_prints_reasons_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path / "p", spacings=[(5.0, 1.0, 1.0), (3.0, 1.0, 1.0), (4.0, 1.0, 1.0)])
    assert main(["plan", str(root), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "patch" in text and "10th percentile" in text and "liver" in text
    assert main(["plan", str(root), "--device", "cpu", "--json", "--budget", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["budget"] == "cpu" and data["fingerprint"]["summary"]["cases"] == 3
    assert any("2 min" in reason for reason in data["plan"]["reasons"])


def test_cli_plan_refuses_a_project_without_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = Project.create(tmp_path / "empty", seed=0)
    project.add_case("a", Volume(array=np.zeros((4, 8, 8), dtype=np.float32), spacing=(1.0, 1.0, 1.0)))
    project.close()
    assert main(["plan", str(tmp_path / "empty")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error:") and "no labeled training case" in error and error.count("\n") == 1


def test_train_follows_the_plan_and_its_card_records_it(tmp_path: Path) -> None:
    from helpers import TINY

    root = make_tiny_project(tmp_path / "p")  # 4 x 1 x 1 mm cases
    out = tmp_path / "run"
    settings = [item for value in TINY for item in ("--set", value)] + ["--set", "target_spacing=2,1,1"]
    argv = ["train", str(root), "--method", "supervised", "--iterations", "2", "--device", "cpu", "--out", str(out)]
    assert main([*argv, *settings]) == 0
    card = json.loads((out / "model.json").read_text())
    plan = card["training"]["config"]["plan"]
    assert plan["budget"] == "cpu" and plan["reasons"]
    assert card["intensity"] == plan["intensity"]
    # --set comes after the plan: the spacing asked for is the one the network learnt and predicts on.
    assert card["spacing"] == [2.0, 1.0, 1.0] and card["patch_size"] == [8, 16, 16]
    with Project.open(root) as project:
        assert json.loads(project.setting(PLAN_SETTING))["plan"] == plan
    # Resuming re-plans; the run goes on with the plan it began with.
    assert main([*argv[:-2], "--out", str(out), "--resume", *settings, "--iterations", "3"]) == 0


def test_an_old_card_without_a_plan_still_predicts(tmp_path: Path) -> None:
    from helpers import tiny_teacher

    from napari_ssl_seg.inference.predictor import Predictor

    weights = tiny_teacher(tmp_path / "old", 3)
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["training"] = {"config": {key: value for key, value in preset("quick").to_dict().items()}}
    for key in ("target_spacing", "plan"):
        card["training"]["config"].pop(key)
    card_path.write_text(json.dumps(card))
    predictor = Predictor.from_checkpoint(weights, device="cpu")
    image = Volume(array=np.random.default_rng(0).normal(size=(20, 40, 40)).astype(np.float32), spacing=(3, 1, 1))
    prediction = predictor.predict(image, uncertainty="none")
    assert prediction.label.array.shape == (20, 40, 40)


def test_the_plan_does_not_depend_on_the_voxel_order_the_files_store(tmp_path: Path) -> None:
    spacings = [(5.0, 1.0, 0.8), (3.0, 1.0, 0.8), (4.0, 1.0, 0.8)]
    stored = _project(tmp_path / "as_is", spacings=spacings, shape=(12, 40, 36))
    transposed = Project.create(tmp_path / "transposed", seed=1, name="constructed")
    with Project.open(stored) as source:
        transposed.set_setting("label_names", source.setting("label_names"))
        for case in source.cases():
            image, label = source.read_image(case.name), source.read_label(case.name).array
            # The same scan with its z and x storage axes swapped: the direction says so.
            swap = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=float) @ np.asarray(image.direction)
            moved = Volume(
                array=np.ascontiguousarray(image.array.transpose(2, 1, 0)),
                spacing=image.spacing[::-1],
                origin=image.origin,
                direction=swap,
                modality=image.modality,
            )
            transposed.add_case(case.name, moved, split=case.split)
            transposed.save_label(case.name, np.ascontiguousarray(label.transpose(2, 1, 0)), author="test")
    transposed.close()
    with Project.open(stored) as a, Project.open(tmp_path / "transposed") as b:
        first, second = fingerprint_project(a), fingerprint_project(b)
    assert [c.shape for c in first.cases] == [c.shape for c in second.cases]
    # NIfTI stores spacing in float32: equal to its precision.
    assert np.allclose(first.spacings, second.spacings, rtol=1e-6)
    plan_a, plan_b = make_plan(first), make_plan(second)
    assert plan_a.patch_size == plan_b.patch_size and plan_a.intensity == plan_b.intensity
    assert plan_a.target_spacing == pytest.approx(plan_b.target_spacing, rel=1e-4)
    # Thickness and the measured Dice ceilings too: both are taken in the canonical orientation.
    assert [c.thickness_mm for c in first.classes] == pytest.approx([c.thickness_mm for c in second.classes])
    measured_a, _ = plan_project(stored, device="cpu")
    measured_b, _ = plan_project(tmp_path / "transposed", device="cpu")
    assert measured_a.class_ceilings and measured_a.class_ceilings == measured_b.class_ceilings


def test_a_time_budget_uses_the_rate_this_project_measured_on_this_machine(tmp_path: Path) -> None:
    from helpers import tiny_config

    from napari_ssl_seg.training.budget import project_rates
    from napari_ssl_seg.training.loop import train

    root = make_tiny_project(tmp_path / "p")
    before, _ = plan_project(root, device="cpu", minutes=30)
    assert any("the development machine's rate" in reason for reason in before.reasons)
    width = BUDGETS["cpu"].base_width  # a run of the network the plan trains
    train(root, tiny_config(iterations=12, log_every=1, base_width=width), root / "runs" / "here", device="cpu")
    measured = project_rates(root, "cpu", base_width=width)["supervised"]
    after, _ = plan_project(root, device="cpu", minutes=30)
    assert any("this machine's rate (run here)" in reason for reason in after.reasons)
    expected = 30 * 60 * measured.it_per_s * measured.patch_voxels / math.prod(after.patch_size)
    # A run of another width is not this plan's rate.
    train(root, tiny_config(iterations=12, log_every=1, base_width=width // 2), root / "runs" / "narrow", device="cpu")
    assert plan_project(root, device="cpu", minutes=30)[0].iterations == after.iterations
    assert after.iterations == max(100, int(round(expected, -2)))
    # Another method's budget is not taken from the supervised run.
    ucmt, _ = plan_project(root, device="cpu", minutes=30, method="ucmt")
    assert any("the development machine's rate" in reason for reason in ucmt.reasons)
    # A method from outside the package was never timed: the plan says whose rate it borrowed.
    external, _ = plan_project(root, device="cpu", minutes=30, method="lab_methods.fixmatch:FixMatch")
    assert any("never measured for it" in reason for reason in external.reasons)
