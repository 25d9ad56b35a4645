"""The labeling simulation's copy of a project: where each training case's ground truth is, the copy
in which every training case starts unlabeled, and the simulated annotator who reveals it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.names import inside
from napari_ssl_seg.store.new_project import build_project
from napari_ssl_seg.store.project import LABEL_SUFFIX
from napari_ssl_seg.store.records import LabelVersion

__all__ = ["AUTHOR", "GroundTruthSource", "copy_project", "read_source", "reveal"]

AUTHOR = "simulation"


@dataclass
class GroundTruthSource:
    """What the user's project provides: splits, ground truth per training case, labels elsewhere."""

    root: Path
    splits: dict[str, str]
    train: list[str]
    truth_kind: dict[str, str]  # "label" or "reference": where a training case's ground truth is


def read_source(project: Project) -> GroundTruthSource:
    cases = project.cases()
    splits = {case.name: case.split for case in cases}
    train = [case.name for case in cases if case.split == "train"]
    truth_kind: dict[str, str] = {}
    missing = []
    for case in cases:
        if case.split != "train":
            if not case.is_labeled:
                raise InputError(f"{case.split} case {case.name!r} has no label; a simulation evaluates on them")
            continue
        if case.is_labeled:
            truth_kind[case.name] = "label"
        elif inside(project.root, f"reference/{case.name}{LABEL_SUFFIX}").is_file():
            truth_kind[case.name] = "reference"
        else:
            missing.append(case.name)
    if missing:
        raise InputError(
            f"training case(s) {', '.join(missing[:5])} have neither a label nor a reference label; "
            "a simulation needs the ground truth of every training case"
        )
    if not any(split == "test" for split in splits.values()):
        raise InputError(f"project {project.root} has no test case to evaluate the simulated teachers on")
    if not any(split == "validation" for split in splits.values()):
        raise InputError(f"project {project.root} has no validation case to select the teachers on")
    return GroundTruthSource(project.root, splits, train, truth_kind)


def copy_project(source: Project, info: GroundTruthSource, target: Path, seed: int) -> Project:
    """A fresh project with the source's cases and splits; training labels become references."""

    def fill(copy: Project) -> None:
        names = source.setting("label_names")
        if names:
            copy.set_setting("label_names", names)
        for record in source.cases():
            image_path = inside(source.root, record.image_path)  # a tampered database path stays refused
            # A byte-for-byte copy keeps the image (and its header) exactly as the source holds it.
            copy.add_case(record.name, source.read_image(record.name), split=record.split, source_file=image_path)
            if record.split != "train":
                copy.save_label(record.name, source.read_label(record.name).array, author=AUTHOR, kind="import")
            elif info.truth_kind[record.name] == "label":
                copy.save_reference_label(record.name, source.read_label(record.name).array)
            else:
                copy.save_reference_label(record.name, source.read_reference_label(record.name).array)

    name = f"simulation of {source.setting('name') or source.root.name}"
    return build_project(target, fill, seed=seed, name=name)


def reveal(
    project: Project, names: Sequence[str], predictions: Mapping[str, tuple[str, np.ndarray]] | None = None
) -> list[LabelVersion]:
    """The simulated annotator: the case's ground truth becomes its label.

    ``predictions``: (teacher, predicted labels) per case the annotator corrected rather than
    drew: the saved version then records the voxels corrected, as a real annotator's save does.
    """
    predictions = predictions or {}
    return [
        project.save_label(
            name,
            project.read_reference_label(name).array,
            author=AUTHOR,
            kind="simulation",
            started_from=predictions.get(name),
        )
        for name in names
    ]
