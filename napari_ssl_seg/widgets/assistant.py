"""Dock every assistant widget on a viewer at once (the demo, and the "Annotation assistant" entry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_ssl_seg.widgets.label_widget import LabelWidget
from napari_ssl_seg.widgets.project_widget import ProjectWidget
from napari_ssl_seg.widgets.regions_widget import RegionsWidget
from napari_ssl_seg.widgets.retrain_widget import RetrainWidget
from napari_ssl_seg.widgets.teacher_widget import TeacherWidget

__all__ = ["DOCKS", "dock_assistant"]

#: (title, class, side): the order an annotator works in, top to bottom.
DOCKS = (
    ("Project", ProjectWidget, "right"),
    ("Teacher", TeacherWidget, "right"),
    ("Uncertain regions", RegionsWidget, "left"),
    ("Label", LabelWidget, "left"),
    ("Retrain", RetrainWidget, "left"),
)


def dock_assistant(viewer: Any, project: Path | str | None = None, case: str | None = None) -> dict[str, Any]:
    """Dock the five widgets; open ``project`` (and ``case``) if given. Returns the widgets by title."""
    widgets = {}
    for title, cls, area in DOCKS:
        widget = cls(viewer)
        viewer.window.add_dock_widget(widget, name=title, area=area)
        widgets[title] = widget
    if project is not None:
        widgets["Project"].open_project(project)
        if case is not None:
            widgets["Project"].session.open_case(case)
    return widgets
