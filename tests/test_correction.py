"""Annotation effort in voxels: correcting a prediction against labeling from scratch (issue 23)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.evaluation.correction import case_correction_ratio, correction_effort
from napari_ssl_seg.io import Volume
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.schema import MIGRATIONS, SCHEMA_VERSION, migrate


def test_correction_counts_every_voxel_and_slice_that_differs_against_the_reference() -> None:
    reference = np.zeros((4, 6, 6), dtype=np.uint8)
    reference[0:3, 1:4, 1:4] = 1  # 27 voxels on slices 0-2
    reference[1, 5, 5] = 2
    prediction = reference.copy()
    prediction[0, 1:4, 1:4] = 2  # 9 relabeled on slice 0
    prediction[3, 0, 0] = 1  # 1 false voxel on slice 3 (no foreground there)
    prediction[1, 5, 5] = 0  # 1 missed on slice 1
    effort = correction_effort(prediction, reference)
    assert (effort.changed_voxels, effort.scratch_voxels) == (11, 28)
    assert (effort.changed_slices, effort.scratch_slices) == (3, 3)
    assert effort.voxel_ratio == pytest.approx(11 / 28)
    assert correction_effort(reference, reference).voxel_ratio == 0.0
    assert correction_effort(prediction, np.zeros_like(reference)).voxel_ratio is None
    with pytest.raises(ValueError, match="differ in shape"):
        correction_effort(prediction[:2], reference)


def test_the_store_counts_the_first_version_against_the_prediction_it_began_from(tmp_path: Path) -> None:
    project = Project.create(tmp_path / "p")
    project.add_case("a", Volume(array=np.zeros((3, 5, 5), np.float32), spacing=(2.0, 1.0, 1.0)))
    predicted = np.zeros((3, 5, 5), np.uint8)
    predicted[1, 1:4, 1:4] = 1
    label = predicted.copy()
    label[1, 1, 1] = 0
    label[2, 2, 2] = 1
    first = project.save_label("a", label, started_from=("teacher-v3", predicted))
    assert (first.started_from, first.changed_voxels, first.foreground_voxels) == ("teacher-v3", 2, 9)
    label[0, 0, 0] = 1
    second = project.save_label("a", label, started_from=("teacher-v3", predicted))  # a parent wins
    assert (second.started_from, second.changed_voxels, second.foreground_voxels) == (None, 1, 10)
    assert case_correction_ratio(project.label_versions("a")) == pytest.approx(3 / 10)
    project.add_case("b", Volume(array=np.zeros((3, 5, 5), np.float32), spacing=(2.0, 1.0, 1.0)))
    with pytest.raises(InputError, match="shape"):
        project.save_label("b", label, started_from=("t", predicted[:2]))
    assert project.label_versions("b") == []  # nothing half-saved
    drawn = project.save_label("b", label)  # from scratch: no correction to report
    assert drawn.changed_voxels is None and drawn.foreground_voxels == 10
    assert case_correction_ratio(project.label_versions("b")) is None
    project.close()


def test_a_project_of_the_first_schema_opens_with_its_label_history_intact(tmp_path: Path) -> None:
    root = tmp_path / "old"
    project = Project.create(root)
    project.add_case("a", Volume(array=np.zeros((3, 5, 5), np.float32), spacing=(2.0, 1.0, 1.0)))
    project.save_label("a", np.ones((3, 5, 5), np.uint8))
    project.close()
    # Rebuild the database as the first schema wrote it: same rows, no effort columns.
    database = root / "project.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute("ALTER TABLE label_versions DROP COLUMN started_from")
        connection.execute("ALTER TABLE label_versions DROP COLUMN foreground_voxels")
        connection.execute("PRAGMA user_version = 1")
    assert SCHEMA_VERSION == len(MIGRATIONS) == 2
    with Project.open(root) as reopened:
        (version,) = reopened.label_versions("a")
        assert version.started_from is None and version.foreground_voxels is None
        assert reopened.read_label("a").array.sum() == 75
        again = reopened.save_label("a", np.zeros((3, 5, 5), np.uint8))
        assert again.changed_voxels == 75 and again.foreground_voxels == 0
    with sqlite3.connect(database) as connection:
        assert migrate(connection) == 2
