"""The Retrain dock shows what the first teacher's planned spacing cannot resolve (real clicks and keys)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gui_helpers import Notifications, click, open_docks, open_project_by_path

from napari_ssl_seg.io import Volume
from napari_ssl_seg.store import Project

pytestmark = pytest.mark.gui


def _project_with_a_thin_class(root: Path) -> Path:
    """128 mm cubes at 1 mm, which the CPU plan coarsens; a 1 mm plate cannot survive that, a 16 mm block can."""
    project = Project.create(root, seed=2, name="thin and thick")
    project.set_setting("label_names", json.dumps({"1": "thin plate", "2": "thick block"}))
    label = np.zeros((128, 128, 128), dtype=np.uint8)
    label[:, :, 30] = 1
    label[:, :, 50:66] = 2
    image = np.where(label == 1, 300.0, np.where(label == 2, 60.0, -1000.0)).astype(np.float32)
    for index, split in enumerate(("train", "train", "train", "validation")):
        name = f"case_{index}"
        project.add_case(name, Volume(array=image, spacing=(1.0, 1.0, 1.0), modality="CT"), split=split)
        project.save_label(name, label, author="test")
    project.close()
    return root


@pytest.mark.parametrize("opening", ["one by one", "all together"])
def test_the_first_teacher_run_says_which_class_its_spacing_cannot_resolve(
    make_napari_viewer, qtbot, tmp_path, uncaught, opening
):
    root = _project_with_a_thin_class(tmp_path / "project")
    viewer = make_napari_viewer(show=True)
    notes = Notifications()
    project, _teacher, _regions, _label, retrain = open_docks(viewer, qtbot, opening)
    open_project_by_path(qtbot, project, root, retrain)
    assert retrain.limits.text() == ""

    retrain.iterations.setFocus()
    retrain.iterations.selectAll()
    qtbot.keyClicks(retrain.iterations, "2")
    click(qtbot, retrain.start_button)
    qtbot.waitUntil(lambda: not retrain.busy, timeout=300_000)
    assert retrain.outcome is not None, retrain.status.text()

    shown = retrain.limits.text().splitlines()
    assert shown[0] == "What this run's spacing cannot resolve:"
    assert len(shown) == 2 and shown[1].startswith("• thin plate, about 1.0 mm thick, at "), shown
    warnings = notes.new("warning")
    assert [w for w in warnings if "thin plate" in w] == [shown[1].removeprefix("• ")]
    assert not any("thick block" in w for w in warnings)
    assert notes.new() == []

    # The next run starts with a clean slate.
    click(qtbot, retrain.start_button)
    assert retrain.limits.text() == ""
    click(qtbot, retrain.cancel_button)
    qtbot.waitUntil(lambda: not retrain.busy, timeout=300_000)
