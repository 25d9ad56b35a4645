"""Every button, menu entry and shortcut of the plugin, used the way a person uses them.

The docks are opened from napari's Plugins menu, one by one (napari then hands each its own proxy of
the viewer) and all together through the assistant entry; every action is reached through a real
mouse click or key press. Any exception that reaches Qt's event loop, and any error notification
the step did not ask for, fails the test.
"""

from __future__ import annotations

import shutil
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import SAMPLE_DIR
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import QAbstractItemView, QMenu, QPushButton

from napari_ssl_seg.store import Project
from napari_ssl_seg.widgets.label_widget import LabelWidget
from napari_ssl_seg.widgets.project_widget import ProjectWidget
from napari_ssl_seg.widgets.regions_widget import RegionsWidget
from napari_ssl_seg.widgets.retrain_widget import RetrainWidget
from napari_ssl_seg.widgets.teacher_widget import TeacherWidget

pytestmark = pytest.mark.gui

PLUGIN_MENU = "napari SSL Seg"
SINGLE_DOCKS = {
    "Project and case queue": ProjectWidget,
    "Teacher and uncertainty overlay": TeacherWidget,
    "Uncertain regions": RegionsWidget,
    "Label versions": LabelWidget,
    "Retrain teacher": RetrainWidget,
}


@pytest.fixture
def uncaught() -> Iterator[list[str]]:
    """Records every exception that reaches the event loop or a thread's top; the test fails on any."""
    caught: list[str] = []
    previous_hook, previous_thread_hook = sys.excepthook, threading.excepthook
    sys.excepthook = lambda kind, value, tb: caught.append("".join(traceback.format_exception(kind, value, tb)))
    threading.excepthook = lambda args: caught.append(
        "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    )
    try:
        yield caught
    finally:
        sys.excepthook, threading.excepthook = previous_hook, previous_thread_hook
    assert not caught, "\n".join(caught)


class Notifications:
    """Error notifications since the last look."""

    def __init__(self) -> None:
        self.seen = len(notification_manager.records)

    def new(self, severity: str = "error") -> list[str]:
        records = notification_manager.records[self.seen :]
        self.seen = len(notification_manager.records)
        return [str(record.message) for record in records if record.severity == severity]


def menu_actions(menu: QMenu, *path: str) -> dict[str, Any]:
    """The actions of the submenu at ``path`` (by title) of ``menu``, by text, as a person sees them."""
    menu.aboutToShow.emit()  # napari fills and enables some menus when they open
    for title in path:
        submenu = next(action.menu() for action in menu.actions() if action.menu() and action.text() == title)
        submenu.aboutToShow.emit()
        menu = submenu
    return {action.text(): action for action in menu.actions() if action.text() and action.menu() is None}


def dock_of(viewer: Any, cls: type) -> Any:
    found = viewer.window._qt_window.findChildren(cls)
    assert len(found) == 1, f"{cls.__name__}: {len(found)} docks"
    return found[0]


#: Every button :func:`click` pressed, so a test can check that none of a dock's buttons was left out.
CLICKED: set[int] = set()
#: Buttons (dock attribute names) that test_gui_cold_start presses in a project with no teacher.
COLD_START_BUTTONS = ("attach_file_button", "attach_layer_button", "split_button", "load_button")


def click(qtbot: Any, button: QPushButton) -> None:
    assert button.isVisible() and button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.LeftButton)
    CLICKED.add(id(button))


def unclicked_buttons(*docks: Any, left_to_others: tuple[str, ...] = ()) -> list[str]:
    """Texts of the docks' buttons :func:`click` never pressed, but for those named in ``left_to_others``."""
    skipped = {id(getattr(dock, name)) for dock in docks for name in left_to_others if hasattr(dock, name)}
    buttons = [button for dock in docks for button in dock.findChildren(QPushButton) if id(button) not in skipped]
    return [button.text() for button in buttons if id(button) not in CLICKED]


def click_row(qtbot: Any, view: QAbstractItemView, row: int, *, double: bool = False) -> None:
    index = view.model().index(row, 0)
    view.scrollTo(index)
    centre: QPoint = view.visualRect(index).center()
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=centre)
    if double:
        qtbot.mouseDClick(view.viewport(), Qt.LeftButton, pos=centre)


def row_of(table: Any, text: str) -> int:
    return next(row for row in range(table.rowCount()) if table.item(row, 0).text() == text)


def press(qtbot: Any, viewer: Any, key: Qt.Key) -> None:
    """Shift + ``key`` on the canvas, where napari's key bindings listen."""
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, key, Qt.ShiftModifier)


@pytest.mark.parametrize("opening", ["one by one", "all together"])
def test_the_docks_share_the_viewer_session_and_every_click_works(
    make_napari_viewer, qtbot, project_root, tmp_path, monkeypatch, uncaught, opening
):
    viewer = make_napari_viewer(show=True)
    notes = Notifications()
    docks_menu = menu_actions(viewer.window.plugins_menu, PLUGIN_MENU)
    if opening == "all together":
        docks_menu["Annotation assistant (all docks)"].trigger()
    else:
        for title, cls in SINGLE_DOCKS.items():
            docks_menu[title].trigger()
            dock_of(viewer, cls)
    project, teacher, regions, label, retrain = (dock_of(viewer, cls) for cls in SINGLE_DOCKS.values())
    qtbot.waitUntil(lambda: project.isVisible() and retrain.isVisible())

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
    assert project.table.item(row_of(project.table, unlabeled[0]), 2).text() == "labeled"

    # Roll back to the (only) teacher, then the next case.
    click(qtbot, teacher.activate_button)
    assert any("is active" in message for message in notes.new("info"))
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
