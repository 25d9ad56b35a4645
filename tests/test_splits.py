"""Splits: a case's split can be changed, and a validation case is chosen once two cases are labeled."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_tiny_project

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.splits import assign_validation, set_split
from napari_ssl_seg.training.data import take_snapshot


def _splits(project: Project) -> dict[str, str]:
    return {case.name: case.split for case in project.cases()}


def test_set_split_moves_a_case_and_keeps_its_labels(tmp_path: Path) -> None:
    with Project.open(make_tiny_project(tmp_path / "p")) as project:
        versions = len(project.label_versions("case_00"))
        set_split(project, "case_00", "test")
        assert _splits(project)["case_00"] == "test"
        assert len(project.label_versions("case_00")) == versions
        with pytest.raises(InputError, match="unknown split"):
            set_split(project, "case_00", "holdout")
        with pytest.raises(InputError, match="no case"):
            set_split(project, "nobody", "train")


def test_two_labeled_cases_in_train_get_one_validation_case_and_training_can_start(tmp_path: Path) -> None:
    with Project.open(make_tiny_project(tmp_path / "p", labeled=2, unlabeled=1, validation=0)) as project:
        with pytest.raises(InputError, match="no labeled validation case"):
            take_snapshot(project)
        moved = assign_validation(project)
        assert len(moved) == 1 and moved[0] in ("case_00", "case_01")
        assert _splits(project)[moved[0]] == "validation"
        snapshot = take_snapshot(project)  # now it can train
        assert set(snapshot.validation) == set(moved) and len(snapshot.labeled) == 1
        assert assign_validation(project) == []  # a labeled validation case exists: nothing more moves


def test_nothing_moves_with_one_labeled_case_or_an_existing_validation_case(tmp_path: Path) -> None:
    with Project.open(make_tiny_project(tmp_path / "one", labeled=1, unlabeled=2, validation=0)) as project:
        before = _splits(project)
        assert assign_validation(project) == []
        assert _splits(project) == before
    with Project.open(make_tiny_project(tmp_path / "has", labeled=3, validation=1)) as project:
        before = _splits(project)
        assert assign_validation(project) == []
        assert _splits(project) == before


def test_about_one_in_five_labeled_cases_validates_and_the_choice_is_repeatable(tmp_path: Path) -> None:
    first = make_tiny_project(tmp_path / "a", labeled=10, unlabeled=0, validation=0)
    second = make_tiny_project(tmp_path / "b", labeled=10, unlabeled=0, validation=0)
    with Project.open(first) as a, Project.open(second) as b:
        moved = assign_validation(a)
        assert len(moved) == 2
        assert assign_validation(b) == moved
