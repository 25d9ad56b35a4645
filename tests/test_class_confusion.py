"""benchmarks/class_confusion.py: where a reference structure's voxels were predicted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import load_benchmark, tiny_trained_project

from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import active_model


def test_shares_follow_the_reference_class(monkeypatch: pytest.MonkeyPatch) -> None:
    benchmark = load_benchmark("class_confusion", monkeypatch)
    reference = np.array([[2, 2, 2, 2, 1, 0]])
    prediction = np.array([[2, 3, 3, 0, 1, 2]])
    # Four voxels of class 2: one kept, two taken for class 3, one for background; class 2 predicted elsewhere
    # (the last voxel) does not count, since it is not a reference voxel of class 2.
    assert benchmark.predicted_as(prediction, reference, 2, 4) == {0: 0.25, 2: 0.25, 3: 0.5}
    assert benchmark.predicted_as(prediction, reference, 3, 4) == {}


def test_every_case_of_the_split_is_scored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    benchmark = load_benchmark("class_confusion", monkeypatch)
    root = tiny_trained_project(tmp_path)
    with Project.open(root) as project:
        active = active_model(project)
        assert active is not None
        model = active.checkpoint(project)
        cases = [case.name for case in project.cases() if case.split == "validation" and case.is_labeled]
    result = benchmark.confusion(root, "validation", "ball", {"tiny": model})
    found = result["teachers"]["tiny"]["cases"]
    assert sorted(found) == sorted(cases)
    for shares in found.values():
        assert sum(shares.values()) == pytest.approx(1.0)
    with pytest.raises(SystemExit, match="no class named"):
        benchmark.confusion(root, "validation", "kidney", {"tiny": model})
