"""A lab's first hour, in the GUI only: a folder of its own scans to a first teacher and a prediction.

Real clicks and key presses on the docks (opened together from the Plugins menu); the file dialogs
are answered the way a person would; every exception reaching Qt and every unasked-for error
notification fails the test (the fixtures of test_gui_clicks).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE_DIR
from gui_helpers import (
    CLICKED,
    COLD_START_BUTTONS,
    Notifications,
    click,
    click_row,
    open_docks,
    row_of,
)

from napari_ssl_seg.store import Project

pytestmark = pytest.mark.gui

REPO = Path(__file__).resolve().parents[1]


def _splits(root: Path) -> dict[str, str]:
    with Project.open(root) as project:
        return {case.name: case.split for case in project.cases()}


@pytest.mark.parametrize("opening", ["one by one", "all together"])
def test_from_a_folder_of_scans_to_a_first_teacher_without_the_command_line(
    make_napari_viewer,
    qtbot,
    tmp_path,
    monkeypatch,
    uncaught,
    opening,
):
    viewer = make_napari_viewer(show=True)
    notes = Notifications()
    project, teacher, _regions, label, retrain = open_docks(viewer, qtbot, opening)
    session = project.session

    # Import a folder of images with no labels beside them.
    incoming = tmp_path / "scans"
    incoming.mkdir()
    for name in ("brain1_image.nrrd", "brain2_image.nrrd", "breast1_image.nrrd"):
        shutil.copy(SAMPLE_DIR / name, incoming / name.replace("_image", ""))
    root = tmp_path / "lab project"
    answers: list[str] = [str(incoming), str(root)]
    monkeypatch.setattr(
        "napari_ssl_seg.widgets.project_widget.QFileDialog.getExistingDirectory", lambda *_a, **_k: answers.pop(0)
    )
    click(qtbot, project.import_button)
    qtbot.waitUntil(lambda: session.root == root and project.table.rowCount() == 3, timeout=120_000)
    assert retrain.start_button.text() == "Train first teacher" and "supervised" in retrain.method.currentText()
    assert "min" in retrain.estimate.text() or " s " in retrain.estimate.text()
    assert "no teacher yet" in teacher.model_label.text()

    # brain1: its label map from a file. The file dialog is answered with the lab's label file.
    click_row(qtbot, project.table, row_of(project.table, "brain1"), double=True)
    monkeypatch.setattr(
        "napari_ssl_seg.widgets.label_widget.QFileDialog.getOpenFileName",
        lambda *_a, **_k: (str(SAMPLE_DIR / "brain1_label.nrrd"), ""),
    )
    click(qtbot, label.attach_file_button)
    with Project.open(root) as opened:
        (version,) = opened.label_versions("brain1")
        assert version.kind == "import" and opened.read_label("brain1").array.max() == 1
    assert session.label_layer.data.max() == 1

    # brain2: the label map was opened in the viewer first (as File > Open does), then used.
    click_row(qtbot, project.table, row_of(project.table, "brain2"), double=True)
    opened_layer = viewer.open(str(SAMPLE_DIR / "brain2_label.nrrd"), plugin="napari-ssl-seg")[0]
    viewer.layers.selection.active = opened_layer
    click(qtbot, label.attach_layer_button)
    with Project.open(root) as opened:
        assert opened.case("brain2").is_labeled
    # A label map of another grid is refused in one line, and nothing is saved.
    viewer.layers.selection.active = viewer.open(str(SAMPLE_DIR / "breast1_label.nrrd"), plugin="napari-ssl-seg")[0]
    click(qtbot, label.attach_layer_button)
    (refusal,) = notes.new()
    assert "does not match" in refusal and "\n" not in refusal
    with Project.open(root) as opened:
        assert len(opened.label_versions("brain2")) == 1

    # An empty label is not saved unless the user says so.
    click_row(qtbot, project.table, row_of(project.table, "breast1"), double=True)
    asked: list[str] = []
    label.confirm_empty = lambda case: asked.append(case) or False
    click(qtbot, label.save_button)
    assert asked == ["breast1"]
    with Project.open(root) as opened:
        assert not opened.case("breast1").is_labeled

    # A split can be changed by hand, and back.
    click_row(qtbot, project.table, row_of(project.table, "brain2"))
    assert project.split_button.text() == "Move to validation"
    click(qtbot, project.split_button)
    assert _splits(root)["brain2"] == "validation"
    click_row(qtbot, project.table, row_of(project.table, "brain2"))
    assert project.split_button.text() == "Move to training"
    click(qtbot, project.split_button)
    assert _splits(root)["brain2"] == "train"

    # Train the first teacher: a few iterations here. One labeled case moves to validation, and says so.
    retrain.iterations.setFocus()
    retrain.iterations.selectAll()
    qtbot.keyClicks(retrain.iterations, "3")
    assert retrain.iterations.value() == 3
    click(qtbot, retrain.start_button)
    splits = _splits(root)
    assert sorted(splits[name] for name in ("brain1", "brain2")) == ["train", "validation"]
    assert any("moved to the validation split" in message for message in notes.new("info"))
    qtbot.waitUntil(lambda: not retrain.busy, timeout=300_000)
    assert retrain.outcome is not None and retrain.outcome.promoted, retrain.status.text()
    assert session.active_model() is not None and session.active_model().method == "supervised"
    assert retrain.start_button.text() == "Retrain teacher"
    assert "first teacher" in retrain.status.text() and "re-ranking" not in retrain.status.text()
    assert "active teacher" in teacher.model_label.text()

    # The first teacher predicts the unlabeled case.
    click_row(qtbot, project.table, row_of(project.table, "breast1"), double=True)
    with qtbot.waitSignal(session.prediction_shown, timeout=120_000):
        click(qtbot, teacher.predict_button)
    qtbot.waitUntil(lambda: teacher.predict_button.isEnabled(), timeout=30_000)
    assert session.label_layer.data.shape == session.project.read_image("breast1").shape

    # A colleague's teacher (the shipped chest-CT one) loads, and says it does not fit these MRI scans.
    monkeypatch.setattr(
        "napari_ssl_seg.widgets.teacher_widget.QFileDialog.getOpenFileName",
        lambda *_a, **_k: (str(REPO / "models" / "chest_ct_ucmt.safetensors"), ""),
    )
    click(qtbot, teacher.load_button)
    assert session.active_model().method == "ucmt"
    warnings = notes.new("warning")
    assert any("trained on CT" in message and "not CT" in message for message in warnings), warnings
    assert notes.new() == []
    # The buttons test_gui_clicks leaves to this test were all pressed here.
    for dock in (project, teacher, label):
        for name in COLD_START_BUTTONS:
            if hasattr(dock, name):
                assert id(getattr(dock, name)) in CLICKED, name
