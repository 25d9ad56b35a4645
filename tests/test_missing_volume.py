"""The missing_volume case score: structures a model misses with confidence, which entropy cannot see."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import ranking_cohort, ranking_teacher

from napari_ssl_seg.active import ranking
from napari_ssl_seg.cli import main
from napari_ssl_seg.inference.case_scores import missing_volume, model_scores
from napari_ssl_seg.inference.reference_volumes import reference_volumes
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import active_model
from napari_ssl_seg.store.ranking_cache import prediction_paths, read_cached, read_prediction, save_prediction, scores

# The rank tests' 6-case cohort (1 labeled training case), built once for this module too.


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ranking_cohort(tmp_path_factory.mktemp("rank"))


def test_missing_volume_on_constructed_labels() -> None:
    label = np.zeros((10, 10, 10), dtype=np.uint8)
    label[:5] = 1  # 500 voxels of 2 mm^3 = 1000 mm^3: all of structure 1's expected volume
    label[5, :5] = 2  # 50 voxels = 100 mm^3 of structure 2's expected 400: 3/4 missing
    spacing = (2.0, 1.0, 1.0)
    assert missing_volume(label, spacing, {1: 1000.0, 2: 400.0}) == pytest.approx((0.0 + 0.75) / 2)
    # Too much of a structure is not a missing structure; an absent one is missing entirely.
    assert missing_volume(label, spacing, {1: 10.0, 3: 50.0}) == pytest.approx((0.0 + 1.0) / 2)
    # Background and structures of no expected size are ignored; with none left there is no score.
    assert missing_volume(label, spacing, {0: 5.0, 1: 1000.0, 2: 0.0}) == 0.0
    with pytest.raises(ValueError, match="expected volume"):
        missing_volume(label, spacing, {0: 5.0})
    entropy = np.zeros(label.shape, dtype=np.float32)
    assert "missing_volume" not in model_scores(entropy, label, spacing, 3)
    assert model_scores(entropy, label, spacing, 3, reference_volumes={2: 400.0})["missing_volume"] == 0.75


def test_reference_is_the_median_over_labeled_train_and_validation_cases(cohort: Path) -> None:
    with Project.open(cohort) as project:
        cases = project.cases()
        used = [c.name for c in cases if c.split in ("train", "validation") and c.is_labeled]
        tests = [c.name for c in cases if c.split == "test"]
        assert len(used) >= 2 and tests

        def volumes(name: str) -> dict[int, float]:
            label = project.read_label(name)
            voxel = float(np.prod(label.spacing))
            return {int(k): float(np.count_nonzero(label.array == k)) * voxel for k in range(1, 8)}

        expected = {k: float(np.median([volumes(name)[k] for name in used])) for k in range(1, 8)}
        reference = reference_volumes(project)
        assert reference == pytest.approx({k: v for k, v in expected.items() if v > 0})
        # Leaving a case out changes the median; test cases never count; nothing labeled left: no reference.
        assert reference_volumes(project, exclude=used[:1]) != reference
        assert reference_volumes(project, exclude=used) == {}


def test_rank_by_missing_volume(tmp_path: Path, capsys: pytest.CaptureFixture[str], cohort: Path) -> None:
    model = ranking_teacher(tmp_path)
    argv = ["rank", str(cohort), "--model", str(model), "--samples", "2", "--strategy", "missing_volume", "--json"]
    assert main(argv) == 0
    queue = json.loads(capsys.readouterr().out)["queue"]
    with Project.open(cohort) as project:
        pool = {c.name for c in project.cases() if c.split == "train" and not c.is_labeled}
        version = active_model(project)
        assert version is not None
        stored = scores(project, version.id, "missing_volume")
    assert [item["case"] for item in queue] == list(stored) and set(stored) == pool
    assert all(0.0 <= value <= 1.0 for value in stored.values())


def test_rank_by_missing_volume_needs_a_labeled_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ranking, "reference_volumes", lambda project, exclude=(): {})
    model = ranking_teacher(tmp_path, seed=1)
    assert main(["rank", str(cohort), "--model", str(model), "--strategy", "missing_volume"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error:") and "no labeled" in error and error.count("\n") == 1


@pytest.fixture
def ranked(tmp_path: Path, cohort: Path) -> Iterator[tuple[Project, ranking.RankResult]]:
    """A copy of the cohort whose unlabeled cases a tiny model has predicted: cached maps and scores."""
    project_root = tmp_path / "cohort"
    shutil.copytree(cohort, project_root)
    model = ranking_teacher(tmp_path, seed=2)
    with Project.open(project_root) as project:
        yield project, ranking.rank_project(project, model=model, strategy="boundary_entropy", samples=2)


def test_new_labels_rescore_missing_volume_without_the_network(
    ranked: tuple[Project, ranking.RankResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, first = ranked
    assert first.predicted and not first.reused
    version = active_model(project)
    assert version is not None
    # An untrained network predicts no structure, which is missing whatever the reference;
    # cached maps with a little of structure 1 make the score depend on its usual size.
    for name in first.predicted:
        label, entropy = read_prediction(project, version.name, name)
        partial = np.zeros_like(label.array)
        partial[0, 0, :10] = 1
        save_prediction(project, version.name, name, dataclasses.replace(label, array=partial), entropy)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network ran again")

    monkeypatch.setattr(ranking.Predictor, "predict", no_network)
    # Cases predicted before: missing_volume comes from their cached maps, not a new pass.
    second = ranking.rank_project(project, strategy="missing_volume", samples=2)
    assert second.predicted == [] and sorted(second.reused) == sorted(first.predicted)
    # The annotator removes structure 1 from one of the reference cases: its usual size changes.
    labeled = [c.name for c in project.cases() if c.split in ("train", "validation") and c.is_labeled]
    old_reference = reference_volumes(project)
    edited = project.read_label(labeled[0]).array.copy()
    edited[edited == 1] = 0
    project.save_label(labeled[0], edited)
    new_reference = reference_volumes(project)
    assert new_reference.get(1) != old_reference.get(1)
    third = ranking.rank_project(project, strategy="missing_volume", samples=2)
    expected = {}
    for name in first.predicted:
        label = read_prediction(project, version.name, name)[0]
        expected[name] = missing_volume(label.array, label.spacing, new_reference)
    assert third.predicted == [] and dict(third.queue) == pytest.approx(expected)
    assert dict(third.queue) != pytest.approx(dict(second.queue))


def test_an_unreadable_cached_prediction_is_predicted_again(ranked: tuple[Project, ranking.RankResult]) -> None:
    project, first = ranked
    version = active_model(project)
    broken, *intact = sorted(first.predicted)
    label_path = prediction_paths(project, version.name, broken)[0]
    label_path.write_bytes(label_path.read_bytes()[:100])  # truncated, as by a crash mid-write
    second = ranking.rank_project(project, strategy="missing_volume", samples=2)
    assert second.predicted == [broken] and sorted(second.reused) == intact
    repaired = read_prediction(project, version.name, broken)
    assert repaired is not None and repaired[0].shape == project.read_image(broken).shape


def test_rescoring_reads_recorded_volumes_and_rereads_a_rewritten_map(
    ranked: tuple[Project, ranking.RankResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, first = ranked
    version = active_model(project)
    reference = reference_volumes(project)
    maps = {name: read_prediction(project, version.name, name)[0] for name in first.predicted}
    reads: list[str] = []

    def counted_read(path: Path) -> object:
        reads.append(path.name)
        return read_cached(path)

    monkeypatch.setattr(ranking, "read_cached", counted_read)
    second = ranking.rank_project(project, strategy="missing_volume", samples=2)
    assert reads == [] and second.predicted == []
    expected = {name: missing_volume(m.array, m.spacing, reference) for name, m in maps.items()}
    assert dict(second.queue) == pytest.approx(expected)
    # A map rewritten after its volumes were recorded: the record is stale, that map is read again.
    rewritten = sorted(maps)[0]
    partial = np.zeros_like(maps[rewritten].array)
    partial[0, 0, :10] = 1
    save_prediction(project, version.name, rewritten, dataclasses.replace(maps[rewritten], array=partial), None)
    third = ranking.rank_project(project, strategy="missing_volume", samples=2)
    assert reads == [prediction_paths(project, version.name, rewritten)[0].name]
    expected[rewritten] = missing_volume(partial, maps[rewritten].spacing, reference)
    assert dict(third.queue) == pytest.approx(expected)
    assert expected[rewritten] != pytest.approx(expected[sorted(maps)[1]])
    # Read once, recorded again: the next rank reads no map.
    ranking.rank_project(project, strategy="missing_volume", samples=2)
    assert len(reads) == 1
