"""napari widget contributions (see napari.yaml): the assistant's dock widgets, each a thin view.

The widgets live in :mod:`napari_ssl_seg.widgets`; they share one session per viewer, so opening
them one by one from the Plugins menu gives the same result as the "all docks" entry.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QDockWidget, QLabel, QVBoxLayout, QWidget

from napari_ssl_seg.widgets.label_widget import LabelWidget
from napari_ssl_seg.widgets.project_widget import ProjectWidget
from napari_ssl_seg.widgets.regions_widget import RegionsWidget
from napari_ssl_seg.widgets.retrain_widget import RetrainWidget
from napari_ssl_seg.widgets.shortcuts import SHORTCUTS
from napari_ssl_seg.widgets.teacher_widget import TeacherWidget

__all__ = ["AssistantLauncher", "LabelWidget", "ProjectWidget", "RegionsWidget", "RetrainWidget", "TeacherWidget"]


class AssistantLauncher(QWidget):
    """Docks the other four widgets next to a Project dock: the whole assistant in one click."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        from napari_ssl_seg.widgets.assistant import DOCKS, arrange_docks

        placed = []
        for title, cls, group in DOCKS[1:]:
            placed.append((group, napari_viewer.window.add_dock_widget(cls(napari_viewer), name=title, area="right")))
        self.project = ProjectWidget(napari_viewer)
        keys = "<br>".join(f"<b>{key}</b>: {action}" for key, action in SHORTCUTS.items())
        help_text = QLabel(keys)
        layout = QVBoxLayout(self)
        layout.addWidget(self.project, 1)
        layout.addWidget(help_text)
        window = napari_viewer.window._qt_window

        def arrange() -> None:
            # napari docks this launcher only after it is built: arrange once the event loop has run.
            own = self.parentWidget()
            while own is not None and not isinstance(own, QDockWidget):
                own = own.parentWidget()
            arrange_docks(window, ([(DOCKS[0][2], own)] if own is not None else []) + placed)

        QTimer.singleShot(0, arrange)
