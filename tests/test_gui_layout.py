"""The assistant's docks leave the canvas at least half of a 1600 x 1000 window."""

from __future__ import annotations

import pytest
from gui_helpers import PLUGIN_MENU, SINGLE_DOCKS, dock_of, menu_actions
from qtpy.QtWidgets import QApplication

from napari_ssl_seg.widgets.assistant import dock_assistant

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("docked_by", ["dock_assistant", "plugins menu"])
def test_all_docks_together_keep_half_the_window_for_the_canvas(make_napari_viewer, project_root, qtbot, docked_by):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1600, 1000)
    if docked_by == "dock_assistant":
        dock_assistant(viewer, project_root)  # an open project fills the case table and the labels
    else:
        menu_actions(viewer.window.plugins_menu, PLUGIN_MENU)["Annotation assistant (all docks)"].trigger()
        dock_of(viewer, SINGLE_DOCKS["Project and case queue"]).open_project(project_root)
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.wait(200)  # the menu's launcher arranges its docks once the event loop has run
    QApplication.processEvents()
    assert window.width() == 1600
    assert canvas.width() >= 800, canvas.width()
