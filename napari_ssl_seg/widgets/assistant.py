"""Dock every assistant widget on a viewer at once (the demo, and the "Annotation assistant" entry).

All five go on the right in two tabbed groups, so the canvas keeps most of the window (five docks side
by side on both edges left it about 300 of 1600 pixels): the queue with the label versions above, the
teacher with the regions and the retrain below. Project and Teacher are the tabs shown first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt

from napari_ssl_seg.widgets.label_widget import LabelWidget
from napari_ssl_seg.widgets.project_widget import ProjectWidget
from napari_ssl_seg.widgets.regions_widget import RegionsWidget
from napari_ssl_seg.widgets.retrain_widget import RetrainWidget
from napari_ssl_seg.widgets.teacher_widget import TeacherWidget

__all__ = ["DOCKS", "DOCK_WIDTH", "arrange_docks", "dock_assistant"]

DOCK_WIDTH = 460

#: (title, class, tab group): the order an annotator works in; the first of each group is shown first.
DOCKS = (
    ("Project", ProjectWidget, 0),
    ("Teacher", TeacherWidget, 1),
    ("Uncertain regions", RegionsWidget, 1),
    ("Label", LabelWidget, 0),
    ("Retrain", RetrainWidget, 1),
)


def dock_assistant(viewer: Any, project: Path | str | None = None, case: str | None = None) -> dict[str, Any]:
    """Dock the five widgets; open ``project`` (and ``case``) if given. Returns the widgets by title."""
    widgets = {}
    placed = []
    for title, cls, group in DOCKS:
        widget = cls(viewer)
        placed.append((group, viewer.window.add_dock_widget(widget, name=title, area="right")))
        widgets[title] = widget
    arrange_docks(viewer.window._qt_window, placed)
    if project is not None:
        widgets["Project"].open_project(project)
        if case is not None:
            widgets["Project"].session.open_case(case)
    return widgets


def arrange_docks(window: Any, placed: list[tuple[int, Any]]) -> None:
    """Tab the dock widgets of each group together (the first of a group shown) and narrow the dock area.

    Tabbing has no public napari API; the viewer's QMainWindow does it.
    """
    groups: dict[int, list[Any]] = {}
    for group, dock in placed:
        groups.setdefault(group, []).append(dock)
    for docks in groups.values():
        for dock in docks[1:]:
            window.tabifyDockWidget(docks[0], dock)
        docks[0].raise_()
    # Narrower than the case table would like (it scrolls): the canvas keeps half of a 1600-pixel window.
    firsts = [docks[0] for docks in groups.values()]
    window.resizeDocks(firsts, [DOCK_WIDTH] * len(firsts), Qt.Horizontal)


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_ssl_seg.widgets.assistant PROJECT``: napari with the docks on the most uncertain case."""
    import argparse

    import napari

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("project", type=Path)
    args = parser.parse_args(argv)
    viewer = napari.Viewer(title="napari-ssl-seg demo")
    docks = dock_assistant(viewer, args.project)
    docks["Teacher"].next_case()
    napari.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
