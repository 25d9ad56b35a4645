"""The project's model registry: every teacher the project used, which one is active, rollback.

A model file given on the command line (or produced by a retrain) is copied into
``models/<name>/`` with its card, so the project keeps working when the original moves and a
rollback always has the old weights at hand. The same weights registered twice are one version
(matched by the weights' SHA-256). Copies are atomic, the row is committed after the files exist.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from napari_ssl_seg.errors import ProjectError
from napari_ssl_seg.io.atomic import atomic_output, sha256_file
from napari_ssl_seg.networks import ModelCard, checkpoint_paths, load_checkpoint
from napari_ssl_seg.store.names import inside, safe_case_name
from napari_ssl_seg.store.project import Project, utc_now

__all__ = ["ModelVersion", "activate_model", "active_model", "model_version", "model_versions", "register_model"]

_COLUMNS = "SELECT id, name, method, weights_path, card_path, parent_id, validation_dice, created_at, is_active"


@dataclass(frozen=True)
class ModelVersion:
    id: int
    name: str
    method: str
    weights_path: str
    card_path: str
    parent_id: int | None
    validation_dice: float | None
    created_at: str
    is_active: bool

    def checkpoint(self, project: Project) -> Path:
        """The weights file inside ``project`` (what :func:`load_checkpoint` takes)."""
        return inside(project.root, self.weights_path)


def _record(row: tuple) -> ModelVersion:
    model_id, name, method, weights_path, card_path, parent_id, validation_dice, created_at, active = row[:9]
    return ModelVersion(
        model_id, name, method, weights_path, card_path, parent_id, validation_dice, created_at, bool(active)
    )


def model_versions(project: Project) -> list[ModelVersion]:
    """Every registered model, oldest first."""
    return [_record(row) for row in project.read(_COLUMNS + " FROM model_versions ORDER BY id")]


def model_version(project: Project, name_or_id: str | int) -> ModelVersion:
    column = "id" if isinstance(name_or_id, int) else "name"
    rows = project.read(_COLUMNS + f" FROM model_versions WHERE {column} = ?", (name_or_id,))
    if not rows:
        raise ProjectError(f"no model version {name_or_id!r} in {project.root}")
    return _record(rows[0])


def active_model(project: Project) -> ModelVersion | None:
    rows = project.read(_COLUMNS + " FROM model_versions WHERE is_active = 1")
    return _record(rows[0]) if rows else None


def version_card(project: Project, version: ModelVersion) -> ModelCard:
    """The stored model card of ``version`` (read from the project; the weights are not loaded)."""
    path = inside(project.root, version.card_path)
    return ModelCard.from_json(path.read_text(encoding="utf-8"), source=str(path))


def _weights_digest(project: Project, version: ModelVersion) -> str:
    """The stored card's weights hash (the weights were checked against it on registration)."""
    return version_card(project, version).weights_sha256 or sha256_file(version.checkpoint(project))


def _validation_dice(card: ModelCard) -> float | None:
    value = card.metrics.get("validation_dice")
    return float(value) if isinstance(value, int | float) else None


def register_model(
    project: Project,
    checkpoint: Path | str,
    *,
    name: str | None = None,
    parent: str | int | None = None,
    activate: bool = False,
) -> ModelVersion:
    """Copy a checkpoint into the project and record it; return the (new or existing) version.

    The checkpoint is loaded first, so an unusable file (pickle, broken card, wrong weights)
    is refused before anything is copied.
    """
    _, card = load_checkpoint(checkpoint)
    weights, card_file = checkpoint_paths(checkpoint)
    # load_checkpoint has just verified the weights against the card's hash: no second pass over them.
    digest = card.weights_sha256 or sha256_file(weights)
    for existing in model_versions(project):
        if _weights_digest(project, existing) == digest:
            if activate:
                activate_model(project, existing.id)
                return model_version(project, existing.id)
            return existing
    stamp = card.created_at.replace("-", "").replace(":", "").replace("Z", "")
    name = safe_case_name(name or f"{card.method}-{stamp}-{digest[:8]}")
    if any(version.name == name for version in model_versions(project)):
        raise ProjectError(f"a different model named {name!r} is already registered")
    parent_id = model_version(project, parent).id if parent is not None else None
    folder = inside(project.root, f"models/{name}")
    folder.mkdir(parents=True, exist_ok=True)
    stored_weights, stored_card = checkpoint_paths(folder / "model")
    # Weights first, card last (as save_checkpoint does): a crash leaves no card, so no half model.
    for source, target in ((weights, stored_weights), (card_file, stored_card)):
        with atomic_output(target, overwrite=True) as temporary:
            shutil.copyfile(source, temporary)
    relative_weights = stored_weights.relative_to(project.root.resolve()).as_posix()
    relative_card = stored_card.relative_to(project.root.resolve()).as_posix()
    with project.transaction() as connection:
        cursor = connection.execute(
            "INSERT INTO model_versions (name, method, weights_path, card_path, parent_id, validation_dice,"
            " created_at, is_active) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            (name, card.method, relative_weights, relative_card, parent_id, _validation_dice(card), utc_now()),
        )
        if cursor.lastrowid is None:
            raise RuntimeError("SQLite returned no row id for the registered model")
        model_id = int(cursor.lastrowid)
    if activate or active_model(project) is None:
        activate_model(project, model_id)
    return model_version(project, model_id)


def activate_model(project: Project, name_or_id: str | int) -> ModelVersion:
    """Make one model the active teacher (the others stay registered: rollback is this call)."""
    chosen = model_version(project, name_or_id)
    with project.transaction() as connection:
        connection.execute("UPDATE model_versions SET is_active = 0 WHERE is_active = 1")
        connection.execute("UPDATE model_versions SET is_active = 1 WHERE id = ?", (chosen.id,))
    project.set_setting("active_model_history", _append_history(project, chosen.name))
    return model_version(project, chosen.id)


def _append_history(project: Project, name: str) -> str:
    stored = project.setting("active_model_history")
    history = json.loads(stored) if stored else []
    history.append({"model": name, "at": utc_now()})
    return json.dumps(history[-100:])
