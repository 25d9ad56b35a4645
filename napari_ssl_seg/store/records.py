"""Plain records the store hands out: a case with its latest label, one label version."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class CaseRecord:
    id: int
    name: str
    image_path: str
    split: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    modality: str | None
    latest_label_version: int | None
    latest_label_author: str | None
    latest_label_time: str | None

    @property
    def is_labeled(self) -> bool:
        return self.latest_label_version is not None


@dataclass(frozen=True)
class LabelVersion:
    id: int
    case_name: str
    version: int
    path: str
    sha256: str
    author: str
    kind: str
    parent_id: int | None
    created_at: str
    edit_seconds: float | None
    changed_voxels: int | None
    #: The teacher (model version name) whose prediction the annotator began from, else None.
    started_from: str | None = None
    #: The version's non-background voxels: what labeling it from scratch would paint.
    foreground_voxels: int | None = None


def case_from_row(row: tuple) -> CaseRecord:
    return CaseRecord(
        id=row[0],
        name=row[1],
        image_path=row[2],
        split=row[3],
        shape=tuple(json.loads(row[4])),
        spacing=tuple(json.loads(row[5])),
        origin=tuple(json.loads(row[6])),
        direction=tuple(json.loads(row[7])),
        modality=row[8],
        latest_label_version=row[9],
        latest_label_author=row[10],
        latest_label_time=row[11],
    )
