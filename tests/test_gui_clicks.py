"""Every button, menu entry and shortcut of the plugin, used the way a person uses them.

The docks are opened from napari's Plugins menu, one by one (napari then hands each its own proxy of
the viewer) and all together through the assistant entry; every action is reached through a real
mouse click or key press. Any exception that reaches Qt's event loop, and any error notification
the step did not ask for, fails the test.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import SAMPLE_DIR
from gui_helpers import (
    COLD_START_BUTTONS,
    PLUGIN_MENU,
    Notifications,
    click,
    click_row,
    menu_actions,
    open_docks,
    press,
    row_of,
    unclicked_buttons,
)
from qtpy.QtCore import QPoint, Qt

from napari_ssl_seg.store import Project

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("opening", ["one by one", "all together"])
def test_the_docks_share_the_viewer_session_and_every_click_works(
    make_napari_viewer, qtbot, project_root, tmp_path, monkeypatch, uncaught, opening
):
    viewer = make_napari_viewer(show=True)
    notes = Notifications()
    project, teacher, regions, label, retrain = open_docks(viewer, qtbot, opening)

    # Before a project is open, a click says so in one line.
    click(qtbot, teacher.predict_button)
    shown = notes.new()
    assert len(shown) == 1 and "open or create a project first" in shown[0] and "\n" not in shown[0]

    # Typing the folder and Enter opens it; every other dock sees the same project.
    qtbot.keyClicks(project.path_edit, str(project_root))
    qtbot.keyClick(project.path_edit, Qt.Key_Return)
    with Project.open(project_root) as opened:
        cases = opened.cases()
        unlabeled = [case.name for case in cases if case.split == "train" and not case.is_labeled]
    assert project.table.rowCount() == len(cases)
    assert "active teacher" in teacher.model_label.text() and teacher.versions.count() == 1

    # Another ordering of the queue, chosen from the keyboard.
    before = project.strategy_box.currentText()
    project.strategy_box.setFocus()
    qtbot.keyClick(project.strategy_box, Qt.Key_Down)
    chosen = project.strategy_box.currentText()
    assert chosen != before and teacher.session.strategy == chosen

    # Double-click a case, predict it, walk its uncertain regions.
    click_row(qtbot, project.table, row_of(project.table, unlabeled[0]), double=True)
    session = teacher.session
    assert session.case == unlabeled[0] and label.state.text().startswith(unlabeled[0])
    with qtbot.waitSignal(session.prediction_shown, timeout=120_000):
        click(qtbot, teacher.predict_button)
    qtbot.waitUntil(lambda: teacher.predict_button.isEnabled(), timeout=30_000)
    assert session.uncertainty_layer is not None and regions.region_list.count() == len(session.regions) > 0
    click(qtbot, regions.next_button)
    assert regions.region_list.currentRow() == session.region_index
    click_row(qtbot, regions.region_list, len(session.regions) - 1)
    assert session.region_index == len(session.regions) - 1
    threshold = session.threshold
    teacher.threshold.setFocus()
    qtbot.keyClick(teacher.threshold, Qt.Key_Up)
    assert session.threshold == teacher.threshold.value() > threshold
    # On the box itself: a check box's centre lies past its text, where a click does nothing.
    qtbot.mouseClick(teacher.show_overlay, Qt.LeftButton, pos=QPoint(6, teacher.show_overlay.height() // 2))
    # The Label dock's outline check box, clicked on its box: the labels become borders only.
    qtbot.mouseClick(label.outline, Qt.LeftButton, pos=QPoint(6, label.outline.height() // 2))
    assert label.outline.isChecked() and session.label_layer.contour > 0
    qtbot.mouseClick(label.outline, Qt.LeftButton, pos=QPoint(6, label.outline.height() // 2))
    assert session.label_layer.contour == 0
    assert not session.uncertainty_layer.visible
    teacher.opacity.setFocus()
    qtbot.keyClick(teacher.opacity, Qt.Key_PageDown)
    assert teacher.opacity.value() < 70
    assert session.uncertainty_layer.opacity == pytest.approx(teacher.opacity.value() / 100)

    # Correct the label, save it, restore the first version: three versions, nothing overwritten.
    session.label_layer.paint((2, 10, 10), 1, refresh=True)
    click(qtbot, label.save_button)
    layer = session.label_layer
    layer.data = np.zeros_like(layer.data)
    layer.paint((3, 12, 12), 2, refresh=True)
    click(qtbot, label.save_button)
    assert label.table.rowCount() == 2
    click_row(qtbot, label.table, row_of(label.table, "1"))
    click(qtbot, label.restore_button)
    with Project.open(project_root) as opened:
        versions = opened.label_versions(unlabeled[0])
        assert [v.version for v in versions] == [1, 2, 3]
        restored = opened.read_label(unlabeled[0]).array
        assert np.array_equal(restored, opened.read_label(unlabeled[0], 1).array)
        # The first save corrected the teacher's prediction: its effort counts against that prediction.
        assert versions[0].started_from == teacher.session.active_model().name
        assert versions[0].changed_voxels >= 1 and versions[0].foreground_voxels >= 1
        assert versions[1].started_from is None
    assert project.table.item(row_of(project.table, unlabeled[0]), 2).text() == "labeled"
    corrected = [project.table.horizontalHeaderItem(c).text() for c in range(project.table.columnCount())]
    assert project.table.item(row_of(project.table, unlabeled[0]), corrected.index("corrected")).text().endswith("%")

    # Roll back to the (only) teacher, then the next case.
    click(qtbot, teacher.activate_button)
    assert any("is active" in message for message in notes.new("info"))
    # Adapt the teacher to the project's scans: a child process, then a second version and the outcome in the dock.
    click(qtbot, teacher.adapt_button)
    assert not teacher.adapt_button.isEnabled() and "adapting" in teacher.status.text()
    qtbot.waitUntil(lambda: teacher.adapting is None, timeout=300_000)
    assert teacher.versions.count() == 2 and "adapted to" in teacher.status.text(), teacher.status.text()
    assert teacher.adapt_button.isEnabled() and any("adapted to" in message for message in notes.new("info"))
    click(qtbot, teacher.next_button)
    assert session.case not in (None, unlabeled[0])

    # Shortcuts on the canvas: back on the labeled case, Shift-N opens the one left in the queue.
    next_case = session.case
    click_row(qtbot, project.table, row_of(project.table, unlabeled[0]), double=True)
    assert session.case == unlabeled[0]
    press(qtbot, viewer, Qt.Key_N)
    assert session.case == next_case
    session.label_layer.paint((2, 10, 10), 1, refresh=True)
    press(qtbot, viewer, Qt.Key_S)
    with Project.open(project_root) as opened:
        assert opened.case(session.case).is_labeled
    doubt = np.zeros(session.label_layer.data.shape, np.float32)
    doubt[1:4, 2:8, 2:8] = doubt[-4:-1, -8:-2, -8:-2] = 2.0  # two regions of high entropy
    image = session.project.read_image(session.case)
    session.show_prediction(session.case, session.project.read_label(session.case), image.with_array(doubt))
    assert len(session.regions) == 2 and session.region_index == 0
    shown_before = session.uncertainty_layer.visible  # as the dock's check box says
    assert shown_before == teacher.show_overlay.isChecked()
    press(qtbot, viewer, Qt.Key_U)
    assert session.uncertainty_layer.visible != shown_before
    press(qtbot, viewer, Qt.Key_R)
    assert session.region_index == 1
    centre = session.label_layer.data_to_world(session.regions[1].centre)
    assert np.allclose(viewer.dims.point[-3:], centre, atol=max(image.spacing))

    # Retrain, then cancel it from its button.
    click(qtbot, retrain.start_button)
    job = retrain.job
    assert job is not None and retrain.cancel_button.isEnabled()
    click(qtbot, retrain.cancel_button)
    qtbot.waitUntil(lambda: retrain.start_button.isEnabled(), timeout=120_000)
    assert job.state == "cancelled" and "cancelled" in retrain.status.text()

    # The three folder buttons, with the folder dialog answered as a person would.
    answers: list[str] = []
    monkeypatch.setattr(
        "napari_ssl_seg.widgets.project_widget.QFileDialog.getExistingDirectory", lambda *_a, **_k: answers.pop(0)
    )
    answers[:] = [str(project_root)]
    click(qtbot, project.open_button)
    assert session.root == project_root and project.table.rowCount() == len(cases)
    answers[:] = [str(tmp_path / "new project")]
    click(qtbot, project.create_button)
    assert session.root == tmp_path / "new project" and "no teacher yet" in teacher.model_label.text()
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name in ("brain1_image.nrrd", "brain1_label.nrrd", "breast1_image.nrrd"):
        shutil.copy(SAMPLE_DIR / name, incoming / name)
    answers[:] = [str(incoming), str(tmp_path / "imported")]
    click(qtbot, project.import_button)
    qtbot.waitUntil(lambda: session.root == tmp_path / "imported", timeout=120_000)
    # The label beside its image is paired by name: two cases, one labeled, not three images.
    statuses = {project.table.item(row, 0).text(): project.table.item(row, 2).text() for row in range(2)}
    assert project.table.rowCount() == 2 and statuses == {"brain1": "labeled", "breast1": "unlabeled"}
    assert notes.new() == []
    assert unclicked_buttons(project, teacher, regions, label, retrain, left_to_others=COLD_START_BUTTONS) == []


def test_the_sample_menu_entries_open_image_and_labels(make_napari_viewer, uncaught):
    viewer = make_napari_viewer(show=True)
    notes = Notifications()
    samples = menu_actions(viewer.window.file_menu, "Open Sample", PLUGIN_MENU)
    assert len(samples) == 4
    for text, action in samples.items():
        count = len(viewer.layers)
        action.trigger()
        assert len(viewer.layers) == count + 2, text  # the image and its labels
    assert notes.new() == []


@pytest.mark.parametrize("opening", ["one by one", "all together"])
def test_a_project_ranked_by_an_earlier_version_gets_each_strategys_scores_in_the_project_dock(
    make_napari_viewer, qtbot, project_root, uncaught, opening
):
    from napari_ssl_seg.active.ranking import rank_project
    from napari_ssl_seg.active.strategies import DEFAULT_STRATEGY, STRATEGIES
    from napari_ssl_seg.store.models import active_model
    from napari_ssl_seg.store.ranking_cache import scores

    following = STRATEGIES[STRATEGIES.index(DEFAULT_STRATEGY) + 1]  # one key press down the list
    with Project.open(project_root) as project:
        ranked = rank_project(project, strategy="boundary_entropy", samples=2)
        # As an earlier version left it: the maps cached, but neither of these two scores stored.
        with project.transaction() as connection:
            connection.executemany("DELETE FROM scores WHERE strategy = ?", [(DEFAULT_STRATEGY,), (following,)])
    assert ranked.predicted
    viewer = make_napari_viewer(show=True)
    notes = Notifications()
    project = open_docks(viewer, qtbot, opening)[0]
    table = project.table
    column = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())].index("score")

    def scored_on_screen() -> bool:
        shown = {table.item(r, 0).text(): table.item(r, column).text() for r in range(table.rowCount())}
        return all(shown.get(name) for name in ranked.predicted)

    def stored(strategy: str) -> dict[str, float]:
        with Project.open(project_root) as opened:
            return scores(opened, active_model(opened).id, strategy)

    qtbot.keyClicks(project.path_edit, str(project_root))
    qtbot.keyClick(project.path_edit, Qt.Key_Return)
    qtbot.waitUntil(scored_on_screen, timeout=60_000)  # the default's scores, from the cached maps
    assert set(stored(DEFAULT_STRATEGY)) == set(ranked.predicted)
    queued = [table.item(r, 0).text() for r in range(table.rowCount())][: len(ranked.predicted)]
    assert queued == list(stored(DEFAULT_STRATEGY))  # work order: most uncertain first

    project.strategy_box.setFocus()
    qtbot.keyClick(project.strategy_box, Qt.Key_Down)
    assert project.strategy_box.currentText() == following
    qtbot.waitUntil(lambda: set(stored(following)) == set(ranked.predicted), timeout=60_000)
    qtbot.waitUntil(scored_on_screen, timeout=30_000)
    assert notes.new() == []
