"""The assistant's docks leave the canvas at least half of a 1600 x 1000 window."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QApplication

from napari_ssl_seg.widgets.assistant import dock_assistant

pytestmark = pytest.mark.gui


def test_all_docks_together_keep_half_the_window_for_the_canvas(make_napari_viewer, project_root, qtbot):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1600, 1000)
    dock_assistant(viewer, project_root)  # an open project fills the case table and the labels
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.waitUntil(lambda: canvas.width() > 0)
    QApplication.processEvents()
    assert window.width() == 1600
    assert canvas.width() >= 800, canvas.width()
