"""Rank a project's unlabeled cases, most uncertain first: what the annotator labels next.

Each unlabeled training case is predicted once per model (resumable: cases already scored by
that model are skipped unless forced); all model-based scores come from the same prediction and
are stored together, with the prediction itself cached for the viewer. Model-free baselines are
stored with no model. Validation and test cases are never queued: labeling them would leak the
data a teacher is judged on into its training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from napari_ssl_seg.active.case_prediction import store_case_prediction
from napari_ssl_seg.active.strategies import (
    DEFAULT_STRATEGY,
    MODEL_FREE_STRATEGIES,
    STRATEGIES,
    least_recent_score,
    random_score,
)
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.inference.case_scores import MODEL_STRATEGIES, model_scores, structure_volumes, volume_shortfall
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.inference.reference_volumes import reference_volumes
from napari_ssl_seg.progress import CaseProgress
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import ModelVersion, active_model, register_model, version_card
from napari_ssl_seg.store.ranking_cache import (
    prediction_paths,
    read_cached,
    read_cached_volumes,
    read_prediction,
    save_cached_volumes,
    save_scores,
    scores,
)

__all__ = ["RankResult", "candidate_cases", "rank_project", "score_queue_from_cache"]


@dataclass
class RankResult:
    strategy: str
    model: ModelVersion | None
    queue: list[tuple[str, float]]
    predicted: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    seconds_per_case: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "strategy": self.strategy,
            "model": None if self.model is None else self.model.name,
            "queue": [{"case": name, "score": score} for name, score in self.queue],
            "predicted": self.predicted,
            "reused": self.reused,
            "seconds_per_case": self.seconds_per_case,
        }


def candidate_cases(project: Project) -> list[str]:
    """Unlabeled training cases: the pool the annotator picks from."""
    return [case.name for case in project.cases() if case.split == "train" and not case.is_labeled]


def _last_touched(project: Project) -> dict[str, str]:
    rows = project.read(
        "SELECT c.name, COALESCE((SELECT MAX(created_at) FROM label_versions WHERE case_id = c.id), c.created_at)"
        " FROM cases c"
    )
    return dict(rows)


def _model_free(project: Project, names: list[str]) -> None:
    touched = _last_touched(project)
    save_scores(project, None, "random", {name: random_score(project.seed, name) for name in names})
    save_scores(project, None, "least_recent", {name: least_recent_score(touched[name]) for name in names})


def _resolve_model(project: Project, model: Path | str | None) -> ModelVersion:
    if model is not None:
        return register_model(project, model)
    active = active_model(project)
    if active is None:
        raise InputError(f"project {project.root} has no active model; pass --model")
    return active


def _rescore_missing_volume(
    project: Project, version: ModelVersion, names: list[str], reference: dict[int, float]
) -> set[str]:
    """Rescore ``names`` from their cached predictions against today's reference; returns those rescored.

    The reference moves with every label saved, so a stored missing_volume score goes stale
    without the model changing. The structure volumes recorded beside the cached label map are
    all the score needs: no network pass, and no label map read unless that record is missing.
    A case whose cached prediction is gone or unreadable is left out, to be predicted again.
    """
    fresh: dict[str, float] = {}
    for name in names:
        volumes = read_cached_volumes(project, version.name, name)
        if volumes is None:
            label = read_cached(prediction_paths(project, version.name, name)[0])
            if label is None:
                continue
            volumes = structure_volumes(label.array, label.spacing)
            save_cached_volumes(project, version.name, name, volumes)
        fresh[name] = volume_shortfall(volumes, reference)
    if fresh:
        save_scores(project, version.id, "missing_volume", fresh)
    return set(fresh)


def _score_from_maps(
    project: Project,
    version: ModelVersion,
    names: list[str],
    strategy: str,
    progress: CaseProgress | None = None,
) -> set[str]:
    """Give ``names`` the ``strategy`` score from their cached predictions; returns those scored.

    A case scored by this model before a score existed (a project ranked by an older version) gets it
    without the network. A case whose cached maps are gone or unreadable is left out, to be predicted again.
    """
    if not names:
        return set()
    num_classes = version_card(project, version).num_classes
    rescored: dict[str, float] = {}
    for index, name in enumerate(names):
        if progress:
            progress(index, len(names), name)
        cached = read_prediction(project, version.name, name)
        if cached is None or cached[1] is None:
            continue
        label, entropy = cached
        values = model_scores(entropy.array, label.array, label.spacing, num_classes, which=(strategy,))
        rescored[name] = values[strategy]
    if rescored:
        save_scores(project, version.id, strategy, rescored)
    return set(rescored)


def score_queue_from_cache(project_root: Path | str, strategy: str, *, progress: CaseProgress | None = None) -> int:
    """Give the queued cases the active teacher predicted the ``strategy`` score they lack; returns how many.

    A project ranked by an earlier version holds only that version's scores; the cached maps hold all
    that a newer map-derived score needs, so no network runs. Opens its own connection (for a worker
    thread). ``missing_volume`` is left to :func:`rank_project`, which keeps it fresh.
    """
    if strategy not in MODEL_STRATEGIES or strategy == "missing_volume":
        return 0
    with Project.open(project_root) as project:
        version = active_model(project)
        if version is None:
            return 0
        have = set(scores(project, version.id, strategy))
        lacking = [name for name in candidate_cases(project) if name not in have]
        scored = _score_from_maps(project, version, lacking, strategy, progress)
        if progress:
            progress(len(lacking), len(lacking), "done")
        return len(scored)


def rank_project(
    project: Project,
    *,
    model: Path | str | None = None,
    strategy: str = DEFAULT_STRATEGY,
    device: str = "auto",
    samples: int = 8,
    uncertainty: str | None = None,
    force: bool = False,
    progress: CaseProgress | None = None,
) -> RankResult:
    """Score every unlabeled case and return the queue for ``strategy``, most uncertain first."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    names = candidate_cases(project)
    result = RankResult(strategy=strategy, model=None, queue=[])
    if not names:
        return result
    _model_free(project, names)
    if strategy in MODEL_FREE_STRATEGIES and model is None and active_model(project) is None:
        stored = scores(project, None, strategy)
        result.queue = [(name, stored[name]) for name in stored if name in names]
        return result
    version = _resolve_model(project, model)
    result.model = version
    done = {name for name in scores(project, version.id, MODEL_STRATEGIES[0]) if name in names}
    if strategy in MODEL_STRATEGIES and strategy != "missing_volume" and not force:
        lacking = sorted(done - set(scores(project, version.id, strategy)))
        done -= set(lacking) - _score_from_maps(project, version, lacking, strategy)
    # Reading every labeled case is skipped when nothing needs it. The candidates are unlabeled,
    # so none of them is in the reference: one for all of them.
    needs_reference = strategy == "missing_volume" or force or not done.issuperset(names)
    reference = reference_volumes(project) if needs_reference else {}
    if strategy == "missing_volume" and not reference:
        raise InputError(
            "missing_volume compares each structure with its usual size in the labeled cases;"
            " this project has no labeled train or validation case yet"
        )
    if strategy == "missing_volume" and not force:
        done = _rescore_missing_volume(project, version, sorted(done), reference)
    predictor: Predictor | None = None
    for index, name in enumerate(names):
        if progress:
            progress(index, len(names), name)
        if name in done and not force:
            result.reused.append(name)
            continue
        if predictor is None:  # loaded only when a case needs the network: a fully scored queue does not
            predictor = Predictor.from_checkpoint(version.checkpoint(project), device=device)
        image = project.read_image(name)
        prediction = predictor.predict(image, uncertainty=uncertainty, samples=samples, name=name)
        if prediction.uncertainty is None:
            raise InputError("ranking needs an uncertainty map; this model and --uncertainty give none")
        store_case_prediction(project, version, name, prediction, reference=reference)
        result.predicted.append(name)
        result.seconds_per_case[name] = round(prediction.seconds, 3)
    if progress:
        progress(len(names), len(names), "done")
    model_id = None if strategy in MODEL_FREE_STRATEGIES else version.id
    stored = scores(project, model_id, strategy)
    result.queue = [(name, stored[name]) for name in stored if name in names]
    return result
