"""Ranking scores and cached predictions of a project's cases.

Scores are rows keyed by (case, model, strategy), the model NULL for model-free strategies.
Predictions (label map and entropy map per case and model) are files under
``predictions/<model>/``, so the annotator's viewer opens a ranked case without waiting for the
network again; they are caches, never labels, and are rewritten freely (atomically). Beside each
label map, a small JSON file keeps the volume of every predicted structure: ``missing_volume`` is
rescored against a moving reference on every rank, and reading a few numbers instead of a whole
label map keeps that fast on full-size CTs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from napari_ssl_seg.errors import InputError, ProjectError
from napari_ssl_seg.io import Volume, read_volume, write_volume
from napari_ssl_seg.io.atomic import atomic_write_bytes
from napari_ssl_seg.store.names import inside
from napari_ssl_seg.store.project import LABEL_SUFFIX, Project, utc_now

__all__ = [
    "prediction_paths",
    "read_cached",
    "read_cached_volumes",
    "read_prediction",
    "save_cached_volumes",
    "save_prediction",
    "save_scores",
    "scores",
]


def save_scores(project: Project, model_id: int | None, strategy: str, values: Mapping[str, float]) -> None:
    """Insert or replace the scores of the named cases for (model, strategy)."""
    now = utc_now()
    with project.transaction() as connection:
        ids = dict(connection.execute("SELECT name, id FROM cases").fetchall())
        missing = sorted(set(values) - set(ids))
        if missing:
            raise ProjectError(f"no case(s) named {', '.join(missing)} in {project.root}")
        connection.execute(
            "DELETE FROM scores WHERE strategy = ? AND COALESCE(model_id, 0) = COALESCE(?, 0)"
            f" AND case_id IN ({','.join('?' * len(values))})",
            (strategy, model_id, *(ids[name] for name in values)),
        )
        connection.executemany(
            "INSERT INTO scores (case_id, model_id, strategy, score, computed_at) VALUES (?, ?, ?, ?, ?)",
            [(ids[name], model_id, strategy, float(score), now) for name, score in values.items()],
        )


def scores(project: Project, model_id: int | None, strategy: str) -> dict[str, float]:
    """{case: score} for (model, strategy), highest (most uncertain) first."""
    rows = project.read(
        "SELECT c.name, s.score FROM scores s JOIN cases c ON c.id = s.case_id"
        " WHERE s.strategy = ? AND COALESCE(s.model_id, 0) = COALESCE(?, 0) ORDER BY s.score DESC, c.name",
        (strategy, model_id),
    )
    return {name: float(score) for name, score in rows}


def prediction_paths(project: Project, model_name: str, case: str) -> tuple[Path, Path]:
    """(label map, entropy map) file paths of a case's cached prediction by a model."""
    project.case(case)
    return (
        inside(project.root, f"predictions/{model_name}/{case}_label{LABEL_SUFFIX}"),
        inside(project.root, f"predictions/{model_name}/{case}_entropy{LABEL_SUFFIX}"),
    )


def _volumes_path(label_path: Path) -> Path:
    return label_path.with_name(label_path.name.replace(f"_label{LABEL_SUFFIX}", "_volumes.json"))


def _file_stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def save_prediction(
    project: Project,
    model_name: str,
    case: str,
    label: Volume,
    entropy: Volume | None,
    *,
    volumes: Mapping[int, float] | None = None,
) -> None:
    """Cache a case's maps, and ``volumes`` ({class: mm^3} of the label map) beside them when given."""
    label_path, entropy_path = prediction_paths(project, model_name, case)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(label, label_path, overwrite=True)
    if entropy is not None:
        write_volume(entropy, entropy_path, overwrite=True)
    if volumes is not None:
        save_cached_volumes(project, model_name, case, volumes)


def save_cached_volumes(project: Project, model_name: str, case: str, volumes: Mapping[int, float]) -> None:
    """Record the structure volumes of the cached label map, stamped with that file's size and time."""
    label_path = prediction_paths(project, model_name, case)[0]
    record = {"label_file": _file_stamp(label_path), "volumes_mm3": {str(k): float(v) for k, v in volumes.items()}}
    atomic_write_bytes(_volumes_path(label_path), json.dumps(record).encode())


def read_cached_volumes(project: Project, model_name: str, case: str) -> dict[int, float] | None:
    """The recorded structure volumes of the cached label map; None when absent, unreadable or stale.

    Stale: the stamp no longer matches the label map (rewritten since), so the numbers may
    describe another prediction.
    """
    label_path = prediction_paths(project, model_name, case)[0]
    try:
        record = json.loads(_volumes_path(label_path).read_bytes())
        if record["label_file"] != _file_stamp(label_path):
            return None
        return {int(k): float(v) for k, v in record["volumes_mm3"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def read_cached(path: Path) -> Volume | None:
    """A cached map, or None when it is absent or unreadable (truncated by a crash, say).

    A cache is rebuilt, never trusted: an unreadable one reads as absent, so the case is
    predicted again instead of the ranking or the viewer stopping on it.
    """
    if not path.is_file():
        return None
    try:
        return read_volume(path)
    except InputError:
        return None


def read_prediction(project: Project, model_name: str, case: str) -> tuple[Volume, Volume | None] | None:
    """The cached (label, entropy) of a case, or None when that model has no readable prediction of it."""
    label_path, entropy_path = prediction_paths(project, model_name, case)
    label = read_cached(label_path)
    return None if label is None else (label, read_cached(entropy_path))
