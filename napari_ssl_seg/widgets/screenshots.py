"""Screenshots of the assistant on a project: what the headless demo shows instead of a window.

``python -m napari_ssl_seg.widgets.screenshots PROJECT OUT [--case NAME]`` opens a napari viewer
(an X server is needed: the demo runs this under ``xvfb-run``), docks the assistant, opens the
most uncertain case (its cached prediction, so no network runs here) at its most uncertain region
and writes ``OUT/assistant.png`` (the whole window) and ``OUT/overlay.png`` (the canvas alone).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["take_screenshots"]

# The docks' plots are drawn by a renderer process; a screenshot taken before they arrive shows empty axes.
PLOT_WAIT_SECONDS = 30.0


def take_screenshots(project: Path, out: Path, case: str | None = None) -> list[Path]:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_ssl_seg.active.queue import next_case
    from napari_ssl_seg.widgets.assistant import dock_assistant
    from napari_ssl_seg.widgets.plots import ThreadedPlot

    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-ssl-seg", show=True)
    try:
        viewer.window.resize(1600, 1000)
        docks = dock_assistant(viewer, project)
        session = docks["Project"].session
        name = case or next_case(session.rows())
        if name is None:
            raise SystemExit("error: the project has no case to show")
        session.open_case(name)
        plots = [plot for dock in docks.values() for plot in dock.findChildren(ThreadedPlot)]
        for _ in range(5):  # lay the docks out first: a plot is drawn again at the size it is given
            QApplication.processEvents()
        deadline = time.monotonic() + PLOT_WAIT_SECONDS
        while any(plot.drawing for plot in plots) and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
        # Let Qt lay out the docks and the canvas draw before grabbing the window.
        for _ in range(5):
            QApplication.processEvents()
        paths = [out / "assistant.png", out / "overlay.png"]
        viewer.window.screenshot(str(paths[0]), canvas_only=False, flash=False)
        viewer.screenshot(str(paths[1]), canvas_only=True, flash=False)
        return paths
    finally:
        viewer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--case")
    args = parser.parse_args(argv)
    for path in take_screenshots(args.project, args.out, args.case):
        print(f"screenshot      {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
