"""The structure_entropy case score: boundary entropy per predicted structure, averaged as mean Dice is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import ranking_cohort, ranking_teacher

from napari_ssl_seg.active import ranking
from napari_ssl_seg.active.strategies import STRATEGIES
from napari_ssl_seg.inference.case_scores import model_scores
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import active_model
from napari_ssl_seg.store.ranking_cache import prediction_paths, read_prediction, scores


def test_a_doubtful_small_structure_counts_as_much_as_a_certain_large_one() -> None:
    label = np.zeros((10, 40, 40), np.uint8)
    label[2:8, 2:20, 2:20] = 1  # large and certain
    label[4:6, 28:32, 28:32] = 2  # small and doubtful, on itself and a one-voxel rim
    entropy = np.zeros(label.shape, np.float16)
    entropy[4:6, 27:33, 27:33] = 0.6
    scored = model_scores(entropy, label, spacing=(1.0, 1.0, 1.0), num_classes=3, band_mm=1.0)
    # Structure 2's band is its box grown by one voxel per axis: 4x6x6 = 144 voxels, 72 of them at 0.6.
    assert scored["structure_entropy"] == pytest.approx((0.0 + 0.3) / 2, abs=1e-3)
    # One region over all the foreground is diluted by the large structure's certain voxels.
    assert scored["boundary_entropy"] < 0.05
    # The same doubt on the large structure's rim instead: it moves structure 1's mean, not structure 2's.
    shifted = np.zeros(label.shape, np.float16)
    shifted[4:6, 1:21, 1] = 0.6
    assert model_scores(shifted, label, (1.0, 1.0, 1.0), 3, band_mm=1.0)["structure_entropy"] < 0.05
    # With nothing predicted there is no structure: the whole-volume mean, as boundary_entropy has.
    empty = model_scores(entropy, np.zeros_like(label), (1.0, 1.0, 1.0), 3)
    assert empty["structure_entropy"] == pytest.approx(float(entropy.astype(np.float32).mean()), rel=1e-3)
    assert "structure_entropy" in STRATEGIES


@pytest.mark.parametrize("spacing", [(10.0, 3.0, 3.0), (5.0, 5.0, 5.0), (2.5, 0.8, 0.8)])
def test_the_scores_do_not_depend_on_the_voxel_order_a_scan_is_stored_in(spacing: tuple[float, ...]) -> None:
    rng = np.random.default_rng(0)
    label = np.zeros((12, 30, 34), np.uint8)
    label[3:9, 4:20, 5:22] = 1
    label[5:7, 22:27, 24:30] = 2
    entropy = (rng.random(label.shape) * label.astype(np.float32) * 0.5 + rng.random(label.shape) * 0.05).astype(
        np.float16
    )
    scored = model_scores(entropy, label, spacing, num_classes=3)
    # The same scan stored x-first and flipped in y (another file's voxel order), its spacing permuted with it.
    order = (2, 1, 0)
    stored = model_scores(
        np.flip(entropy.transpose(order), axis=1),
        np.ascontiguousarray(np.flip(label.transpose(order), axis=1)),
        tuple(spacing[a] for a in order),
        num_classes=3,
    )
    for key in ("boundary_entropy", "structure_entropy"):
        assert stored[key] == pytest.approx(scored[key], rel=1e-6), key


@pytest.fixture
def ranked(tmp_path: Path) -> Iterator[tuple[Project, ranking.RankResult]]:
    project_root = ranking_cohort(tmp_path)
    model = ranking_teacher(tmp_path, seed=2)
    with Project.open(project_root) as project:
        yield project, ranking.rank_project(project, model=model, strategy="boundary_entropy", samples=2)


def test_a_project_ranked_before_the_score_existed_gets_it_from_the_cached_maps(
    ranked: tuple[Project, ranking.RankResult],
) -> None:
    project, first = ranked
    version = active_model(project)
    assert version is not None and first.predicted
    assert set(scores(project, version.id, "structure_entropy")) == set(first.predicted)
    # As a project ranked by an earlier version holds it: the other scores and the maps, not this one.
    with project.transaction() as connection:
        connection.execute("DELETE FROM scores WHERE strategy = 'structure_entropy'")
    broken, *intact = sorted(first.predicted)
    entropy_path = prediction_paths(project, version.name, broken)[1]
    entropy_path.write_bytes(entropy_path.read_bytes()[:100])  # truncated, as by a crash mid-write
    # What the Project dock runs in the background on opening such a project: the readable cases, no network.
    assert ranking.score_queue_from_cache(project.root, "structure_entropy") == len(intact)
    assert set(scores(project, version.id, "structure_entropy")) == set(intact)
    assert ranking.score_queue_from_cache(project.root, "missing_volume") == 0  # rank keeps that one fresh
    second = ranking.rank_project(project, strategy="structure_entropy", samples=2)
    # Only the case whose maps cannot be read runs the network again.
    assert second.predicted == [broken] and sorted(second.reused) == intact
    expected = {}
    for name in first.predicted:
        label, entropy = read_prediction(project, version.name, name)
        expected[name] = model_scores(entropy.array, label.array, label.spacing, 8)["structure_entropy"]
    assert dict(second.queue) == pytest.approx(expected)
    assert [name for name, _ in second.queue] == sorted(expected, key=lambda n: (-expected[n], n))


def test_asking_for_some_scores_gives_exactly_those_with_the_full_sets_values() -> None:
    label = np.zeros((8, 24, 24), np.uint8)
    label[2:6, 3:12, 3:12] = 1
    label[3:5, 15:20, 15:20] = 2
    entropy = (np.random.default_rng(1).random(label.shape) * 0.7).astype(np.float16)
    volumes = {1: 500.0, 2: 400.0}
    full = model_scores(entropy, label, (2.0, 1.0, 1.0), 3, reference_volumes=volumes)
    for key in full:
        assert model_scores(entropy, label, (2.0, 1.0, 1.0), 3, reference_volumes=volumes, which=(key,)) == {
            key: full[key]
        }
    with pytest.raises(ValueError, match="unknown score"):
        model_scores(entropy, label, (2.0, 1.0, 1.0), 3, which=("structure_entropy", "surprise"))


def test_a_queue_whose_cases_are_all_scored_is_served_without_loading_the_teacher(
    ranked: tuple[Project, ranking.RankResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, first = ranked
    version = active_model(project)
    assert version is not None
    with project.transaction() as connection:
        connection.execute("DELETE FROM scores WHERE strategy = 'structure_entropy'")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the teacher was loaded although every case could be scored from its cached maps")

    monkeypatch.setattr(ranking.Predictor, "from_checkpoint", refuse)
    second = ranking.rank_project(project, strategy="structure_entropy", samples=2)
    assert not second.predicted and sorted(second.reused) == sorted(first.predicted)
    assert set(dict(second.queue)) == set(first.predicted)
