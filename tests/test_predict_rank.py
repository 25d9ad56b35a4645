"""`predict` and `rank` end to end, case scores, and the project's model registry."""

from __future__ import annotations

import json
import math
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import SAMPLE_DIR
from helpers import ranking_cohort, ranking_teacher

from napari_ssl_seg.active.strategies import least_recent_score, random_score
from napari_ssl_seg.cli import main
from napari_ssl_seg.inference.case_scores import model_scores
from napari_ssl_seg.io import geometry_mismatch, read_volume
from napari_ssl_seg.runtime.precision import execution_for
from napari_ssl_seg.shipped_models import shipped_model_path
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import activate_model, active_model, model_versions, register_model
from napari_ssl_seg.store.ranking_cache import read_prediction, scores


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ranking_cohort(tmp_path_factory.mktemp("rank"))


def test_predict_writes_maps_in_the_source_geometry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = ranking_teacher(tmp_path)
    image = SAMPLE_DIR / "CTChest4.nrrd"
    out = tmp_path / "out"
    assert main(["predict", str(image), "--model", str(model), "--out", str(out), "--samples", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    source = read_volume(image)
    for key in ("label", "entropy"):
        written = read_volume(summary["files"][key])
        assert geometry_mismatch(written, source) is None
    assert set(summary["scores"]) == {"boundary_entropy", "structure_entropy", "top1_entropy", "uncertain_fraction"}
    assert summary["samples"] == 2 and summary["device"] == "cpu"
    entropy = read_volume(summary["files"]["entropy"]).array
    assert entropy.min() >= 0 and entropy.max() <= math.log(8) + 1e-3
    assert summary["precision"] == execution_for(torch.device("cpu")).label


def test_predict_in_float32_agrees_with_the_default_precision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The shipped teacher: a trained network, whose decisions are not coin flips between classes.
    model = shipped_model_path("ucmt")
    image = SAMPLE_DIR / "CTChest4.nrrd"
    labels = {}
    for name, extra in (("default", []), ("float32", ["--float32"])):
        argv = ["predict", str(image), "--model", str(model), "--out", str(tmp_path / name), "--json", *extra]
        assert main([*argv, "--uncertainty", "none"]) == 0
        summary = json.loads(capsys.readouterr().out)
        labels[name] = np.asarray(read_volume(summary["files"]["label"]).array)
        assert summary["precision"] == ("float32" if extra else execution_for(torch.device("cpu")).label)
    for value in range(1, 8):  # every structure; bfloat16 measured 0.991-0.9997 (docs/benchmarks.md)
        mixed, reference = labels["default"] == value, labels["float32"] == value
        dice = 2 * np.logical_and(mixed, reference).sum() / (mixed.sum() + reference.sum())
        assert dice > 0.98, (value, dice)


def test_predict_and_rank_refuse_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], cohort: Path) -> None:
    model = ranking_teacher(tmp_path)
    image = SAMPLE_DIR / "CTChest4.nrrd"
    out = str(tmp_path / "out")

    def refused(argv: list[str], fragment: str) -> None:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("error:") and fragment in err[-1], err
        assert "Traceback" not in "\n".join(err)

    refused(["predict", str(image), "--model", str(tmp_path / "missing.safetensors"), "--out", out], "missing")
    pickled = tmp_path / "evil.pt"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    refused(["predict", str(image), "--model", str(pickled), "--out", out], "pickle")
    card = json.loads(model.with_suffix(".json").read_text())
    card["method"] = "telepathy"
    (tmp_path / "odd.json").write_text(json.dumps(card))
    (tmp_path / "odd.safetensors").write_bytes(model.read_bytes())
    refused(["predict", str(image), "--model", str(tmp_path / "odd.safetensors"), "--out", out], "unknown method")
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 1, 2), np.float32), np.eye(4)), str(flat))
    refused(["predict", str(flat), "--model", str(model), "--out", out], "3D")
    refused(["predict", str(image), "--model", str(model), "--out", out, "--device", "cuda:7"], "device")
    refused(["rank", str(tmp_path / "nowhere"), "--model", str(model)], "not a napari-ssl-seg project")
    refused(["rank", str(cohort), "--model", str(pickled)], "pickle")
    assert not (tmp_path / "out" / "CTChest4_label.nii.gz").exists()


def test_rank_scores_only_the_unlabeled_pool_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cohort: Path
) -> None:
    model = ranking_teacher(tmp_path)
    assert main(["rank", str(cohort), "--model", str(model), "--samples", "2", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    with Project.open(cohort) as project:
        pool = {c.name for c in project.cases() if c.split == "train" and not c.is_labeled}
        queued = [item["case"] for item in first["queue"]]
        assert set(queued) == pool and len(queued) == len(set(queued))
        assert set(first["predicted"]) == pool
        values = [item["score"] for item in first["queue"]]
        assert values == sorted(values, reverse=True)
        version = active_model(project)
        assert version is not None and version.name == first["model"]
        stored = scores(project, version.id, "top1_entropy")
        assert set(stored) == pool
        cached = read_prediction(project, version.name, queued[0])
        assert cached is not None and cached[1] is not None
        assert cached[0].shape == project.case(queued[0]).shape
    # A second run reuses every stored score instead of predicting again.
    assert main(["rank", str(cohort), "--model", str(model), "--strategy", "top1_entropy", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["predicted"] == [] and set(second["reused"]) == pool
    assert main(["rank", str(cohort), "--strategy", "random", "--json"]) == 0
    random_queue = [item["case"] for item in json.loads(capsys.readouterr().out)["queue"]]
    assert sorted(random_queue) == sorted(pool)


def test_model_registry_deduplicates_and_rolls_back(tmp_path: Path, cohort: Path) -> None:
    first = ranking_teacher(tmp_path / "a", seed=1)
    second = ranking_teacher(tmp_path / "b", seed=2)
    with Project.open(cohort) as project:
        before = len(model_versions(project))
        one = register_model(project, first)
        assert register_model(project, first).id == one.id  # the same weights are one version
        two = register_model(project, second, parent=one.id, activate=True)
        assert len(model_versions(project)) == before + 2
        assert active_model(project).id == two.id and two.parent_id == one.id
        assert two.validation_dice == pytest.approx(0.52)
        activate_model(project, one.name)  # rollback
        assert active_model(project).id == one.id
        assert two.checkpoint(project).is_file() and project.root.resolve() in two.checkpoint(project).parents


def test_model_scores_on_constructed_maps() -> None:
    label = np.zeros((10, 20, 20), np.uint8)
    label[4:6, 8:12, 8:12] = 1
    entropy = np.zeros(label.shape, np.float16)
    entropy[4:6, 7:13, 7:13] = 0.6  # doubtful on the structure and a one-voxel rim
    scored = model_scores(entropy, label, spacing=(1.0, 1.0, 1.0), num_classes=2, band_mm=1.0)
    # Region = the structure dilated by one voxel (6-connected ball) -> the rim voxels count too.
    assert 0.3 < scored["boundary_entropy"] <= 0.6
    assert scored["top1_entropy"] == pytest.approx(0.6, abs=1e-3)
    assert scored["uncertain_fraction"] == pytest.approx(72 / 4000)
    # With nothing predicted, the whole-volume mean is used.
    empty = model_scores(entropy, np.zeros_like(label), spacing=(1.0, 1.0, 1.0), num_classes=2)
    assert empty["boundary_entropy"] == pytest.approx(float(entropy.astype(np.float32).mean()), rel=1e-3)
    with pytest.raises(ValueError):
        model_scores(entropy[:5], label, spacing=(1, 1, 1), num_classes=2)


def test_model_free_scores_are_reproducible_and_ordered() -> None:
    assert random_score(0, "case_001") == random_score(0, "case_001")
    assert random_score(0, "case_001") != random_score(1, "case_001")
    assert 0 <= random_score(5, "x") < 1
    now = datetime(2026, 1, 2, tzinfo=UTC)
    older = (now - timedelta(days=3)).isoformat().replace("+00:00", "Z")
    newer = (now - timedelta(hours=1)).isoformat()
    assert least_recent_score(older, now) > least_recent_score(newer, now) > 0


def test_evaluate_reports_metrics_failures_and_uncertainty_quality(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cohort: Path
) -> None:
    model = ranking_teacher(tmp_path)
    argv = ["evaluate", str(cohort), "--model", str(model), "--split", "test", "--uncertainty", "--samples", "2"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    with Project.open(cohort) as project:
        tests = {c.name for c in project.cases() if c.split == "test"}
    assert set(report["per_case"]) == tests
    summary = report["summary"]
    # An untrained model misses structures: each miss is listed, never hidden as a zero distance.
    for failure in summary["failures"]:
        entry = report["per_case"][failure["case"]][str(failure["class"])]
        assert entry["dice"] == 0 and entry["hd95_mm"] is None
    quality = report["uncertainty"]
    assert quality["voxels"] > 0 and 0 <= quality["ece"] <= 1
    assert set(quality["spearman_score_vs_1_minus_dice"]) == {
        "boundary_entropy",
        "structure_entropy",
        "top1_entropy",
        "uncertain_fraction",
        "missing_volume",
    }
    assert main(argv[:4]) == 0
    assert "mean" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # argparse rejects the split before anything runs
        main(["evaluate", str(cohort), "--model", str(model), "--split", "nonsense"])
    assert exit_info.value.code == 2
    assert main(["evaluate", str(cohort), "--model", str(tmp_path / "absent.safetensors")]) == 2


def test_evaluating_some_cases_scores_them_as_the_whole_split_does(tmp_path: Path, cohort: Path) -> None:
    from napari_ssl_seg.errors import InputError
    from napari_ssl_seg.evaluation.evaluate import evaluate_project

    model = ranking_teacher(tmp_path)
    with Project.open(cohort) as project:
        tests = sorted(c.name for c in project.cases() if c.split == "test")
        whole = evaluate_project(project, model, split="test", device="cpu")
        some = evaluate_project(project, model, split="test", device="cpu", only=tests[-1:])
        assert list(some.per_case) == tests[-1:]
        assert some.per_case[tests[-1]] == whole.per_case[tests[-1]]
        with pytest.raises(InputError, match="not labeled test cases"):
            evaluate_project(project, model, split="test", device="cpu", only=[tests[0], "no_such_case"])
