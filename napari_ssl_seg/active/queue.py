"""The annotator's case table: every case with its status, ranking score and last label.

Plain rows for the Project widget (and anything else that lists cases); no Qt. The order is the
work order: unlabeled training cases by the strategy's score, most uncertain first, then labeled
cases, then the validation and test cases nobody should label from the queue.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from napari_ssl_seg.active.strategies import MODEL_FREE_STRATEGIES
from napari_ssl_seg.evaluation.correction import case_correction_ratio
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import active_model
from napari_ssl_seg.store.ranking_cache import prediction_paths, scores

__all__ = ["CaseRow", "case_table", "next_case"]


@dataclass(frozen=True)
class CaseRow:
    """One case; ``status`` is "unlabeled", "predicted", "labeled" or "in training"."""

    name: str
    split: str
    status: str
    score: float | None
    author: str | None
    labeled_at: str | None
    #: Voxels corrected since the teacher's prediction per voxel labeling from scratch paints
    #: (evaluation/correction.py); None for a case not labeled from a prediction.
    correction: float | None = None

    @property
    def queued(self) -> bool:
        """Whether the case is in the labeling queue (an unlabeled training case)."""
        return self.split == "train" and self.status in ("unlabeled", "predicted")


def case_table(project: Project, strategy: str, *, in_training: Collection[str] = ()) -> list[CaseRow]:
    """All cases in work order; ``in_training`` names the cases a running retrain snapshotted."""
    model = active_model(project)
    if strategy in MODEL_FREE_STRATEGIES:
        stored = scores(project, None, strategy)
    else:
        stored = scores(project, model.id, strategy) if model is not None else {}
    versions: dict[str, list] = {}
    for version in project.label_versions():  # one query for the whole table
        versions.setdefault(version.case_name, []).append(version)
    rows = []
    for case in project.cases():
        if case.name in in_training:
            status = "in training"
        elif case.is_labeled:
            status = "labeled"
        elif model is not None and prediction_paths(project, model.name, case.name)[0].is_file():
            status = "predicted"
        else:
            status = "unlabeled"
        rows.append(
            CaseRow(
                name=case.name,
                split=case.split,
                status=status,
                score=stored.get(case.name),
                author=case.latest_label_author,
                labeled_at=case.latest_label_time,
                correction=case_correction_ratio(versions.get(case.name, [])),
            )
        )

    def work_order(row: CaseRow) -> tuple:
        group = 0 if row.queued else (1 if row.split == "train" else 2)
        return (group, row.score is None, -(row.score or 0.0), row.name)

    return sorted(rows, key=work_order)


def next_case(rows: list[CaseRow], current: str | None = None) -> str | None:
    """The most uncertain queued case other than ``current``, or None when the queue is empty."""
    for row in rows:
        if row.queued and row.name != current:
            return row.name
    return None
