"""What the GUI tests share: the plugin's dock titles, real clicks and key presses, notifications seen."""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import notification_manager
from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import QAbstractItemView, QMenu, QPushButton

from napari_ssl_seg.widgets.label_widget import LabelWidget
from napari_ssl_seg.widgets.project_widget import ProjectWidget
from napari_ssl_seg.widgets.regions_widget import RegionsWidget
from napari_ssl_seg.widgets.retrain_widget import RetrainWidget
from napari_ssl_seg.widgets.teacher_widget import TeacherWidget

PLUGIN_MENU = "napari SSL Seg"
SINGLE_DOCKS = {
    "Project and case queue": ProjectWidget,
    "Teacher and uncertainty overlay": TeacherWidget,
    "Uncertain regions": RegionsWidget,
    "Label versions": LabelWidget,
    "Retrain teacher": RetrainWidget,
}


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


def open_docks(viewer: Any, qtbot: Any, opening: str) -> tuple[Any, ...]:
    """Open the plugin's docks from its Plugins menu, ``"all together"`` or ``"one by one"``, as a person does.

    Returns the Project, Teacher, Regions, Label and Retrain docks once they show.
    """
    docks_menu = menu_actions(viewer.window.plugins_menu, PLUGIN_MENU)
    if opening == "all together":
        docks_menu["Annotation assistant (all docks)"].trigger()
    else:
        for title, cls in SINGLE_DOCKS.items():
            docks_menu[title].trigger()
            dock_of(viewer, cls)  # each one opens at its own click
    docks = tuple(dock_of(viewer, cls) for cls in SINGLE_DOCKS.values())
    qtbot.waitUntil(lambda: docks[0].isVisible() and docks[-1].isVisible())
    return docks


def open_project_by_path(qtbot: Any, project_dock: Any, root: Any, retrain_dock: Any) -> None:
    """Type a project's path in the Project dock, press Return, wait until the Retrain dock offers a first teacher."""
    qtbot.keyClicks(project_dock.path_edit, str(root))
    qtbot.keyClick(project_dock.path_edit, Qt.Key_Return)
    qtbot.waitUntil(lambda: retrain_dock.start_button.text() == "Train first teacher", timeout=30_000)


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
