"""The docks' plots (entropy histogram, live training curves): matplotlib figures shown in a QLabel.

Drawing happens in the renderer child process (:mod:`napari_ssl_seg.runtime.plot_server`, figures in
:mod:`napari_ssl_seg.plotting`): on the GUI thread a draw stalled the event loop, and in a worker
thread it still held the interpreter the GUI thread needed (both measured with
``benchmarks/gui_latency.py --diagnose``). A worker thread here only waits on the pipe. Requests
made while a draw runs are merged into one.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtCore import QSize, Qt, QTimer
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy

from napari_ssl_seg.plotting import DPI, render
from napari_ssl_seg.runtime.plot_server import RendererUnavailable, shared_renderer
from napari_ssl_seg.widgets.background import start_worker

__all__ = ["EntropyHistogram", "TrainingCurves", "draw_in_child"]

# A label smaller than this is not laid out yet (or squeezed away): it gets the default size.
MIN_DRAWN_PIXELS = 40


def draw_in_child(kind: str, state: Any, size: tuple[float, float]) -> tuple[bytes, int, int]:
    """Draw in the shared renderer process; in this thread only if that process cannot run."""
    try:
        return shared_renderer().render(kind, state, size)
    except RendererUnavailable:
        return render(kind, state, size)


class ThreadedPlot(QLabel):
    """A QLabel showing the latest figure a worker thread drew for it, drawn at the label's own size.

    A figure of a fixed size was cropped by a dock that gave the label less height (the axis label and the
    top of the Dice axis were cut off); one drawn to the label's size shows whole at any dock size.
    """

    def __init__(self, kind: str, size: tuple[float, float], min_interval: float = 0.0) -> None:
        super().__init__()
        self._kind = kind
        self._size = size
        self._pending: tuple[Any] | None = None
        self._last_state: tuple[Any] | None = None
        self._drawn_size: tuple[int, int] | None = None
        self._worker: Any = None
        # Each draw costs the renderer 0.1-0.2 s of CPU that training and prediction also want: a
        # live plot redraws at most every ``min_interval`` seconds.
        self._min_interval = min_interval
        self._last_start = -float("inf")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._start)
        self._resize_timer = QTimer(self)
        self._resize_timer.setSingleShot(True)
        self._resize_timer.timeout.connect(self._redraw_at_new_size)
        self.setAlignment(Qt.AlignCenter)
        self.setMinimumSize(int(size[0] * DPI * 0.6), int(size[1] * DPI * 0.8))
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)

    def sizeHint(self) -> QSize:
        # The default size, not the shown pixmap's: a label that asked for its last figure's size would
        # never let a dock shrink it.
        return QSize(int(self._size[0] * DPI), int(self._size[1] * DPI))

    def minimumSizeHint(self) -> QSize:
        return self.minimumSize()

    def figure_size(self) -> tuple[float, float]:
        """The size in inches the next figure is drawn at: the label's, once it is laid out."""
        area = self.contentsRect()
        if not self.isVisible() or min(area.width(), area.height()) < MIN_DRAWN_PIXELS:
            return self._size
        return (area.width() / DPI, area.height() / DPI)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        # Redrawn once the resize settles: dragging a dock's edge sends many of these.
        self._resize_timer.start(150)

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self._resize_timer.start(150)  # drawn while hidden (another dock tab), at the default size

    def _redraw_at_new_size(self) -> None:
        area = self.contentsRect()
        if self._last_state is not None and self._drawn_size != (area.width(), area.height()):
            self.request(self._last_state[0])

    @property
    def drawing(self) -> bool:
        """Whether a requested figure has not been shown yet (drawing, queued, waiting its turn or a resize)."""
        waiting = self._timer.isActive() or self._resize_timer.isActive()
        return self._worker is not None or self._pending is not None or waiting

    def request(self, state: Any) -> None:
        self._pending = (state,)
        self._last_state = self._pending
        if self._worker is None and not self._timer.isActive():
            self._start()

    def _start(self) -> None:
        if self._pending is None or self._worker is not None:
            return
        wait = self._last_start + self._min_interval - time.monotonic()
        if wait > 0:
            self._timer.start(int(wait * 1000) + 1)
            return
        self._last_start = time.monotonic()
        (state,), self._pending = self._pending, None
        size = self.figure_size()
        self._drawn_size = (round(size[0] * DPI), round(size[1] * DPI))
        worker = create_worker(draw_in_child, self._kind, state, size, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._show)
        worker.finished.connect(self._finished)
        self._worker = worker
        start_worker(worker)

    def _show(self, result: tuple[bytes, int, int]) -> None:
        data, width, height = result
        image = QImage(data, width, height, 4 * width, QImage.Format_RGBA8888).copy()
        try:
            self.setPixmap(QPixmap.fromImage(image))
        except RuntimeError:  # the dock was closed while the figure was drawn
            return

    def _finished(self) -> None:
        self._worker = None
        if self._pending is not None:
            self._start()


class EntropyHistogram(ThreadedPlot):
    """Histogram of the voxel entropies above a floor, with the region threshold marked."""

    def __init__(self) -> None:
        super().__init__("histogram", (3.2, 1.6))
        self.request(None)

    def show_values(self, histogram: tuple[np.ndarray, np.ndarray] | None, threshold: float) -> None:
        """Draw precomputed ``(counts, edges)`` (see ``entropy_histogram``) and the threshold line."""
        if histogram is None:
            self.request(None)
            return
        counts, edges = histogram
        state = {"counts": np.asarray(counts).tolist(), "edges": np.asarray(edges).tolist(), "threshold": threshold}
        self.request(state)


class TrainingCurves(ThreadedPlot):
    """Loss per iteration and validation Dice, updated live while a retrain runs."""

    def __init__(self) -> None:
        super().__init__("training_curves", (3.2, 2.0), min_interval=2.0)
        self.clear()

    def clear(self) -> None:
        self.loss_x: list[int] = []
        self.loss_y: list[float] = []
        self.dice_x: list[int] = []
        self.dice_y: list[float] = []
        self.redraw()

    def add_loss(self, iteration: int, loss: float) -> None:
        self.loss_x.append(iteration)
        self.loss_y.append(loss)

    def add_dice(self, iteration: int, dice: float) -> None:
        self.dice_x.append(iteration)
        self.dice_y.append(dice)

    def redraw(self, baseline: float | None = None) -> None:
        # Copies: the worker draws while the GUI thread keeps appending.
        state = {
            "loss_x": list(self.loss_x),
            "loss_y": list(self.loss_y),
            "dice_x": list(self.dice_x),
            "dice_y": list(self.dice_y),
            "baseline": baseline,
        }
        self.request(state)

    @property
    def points(self) -> tuple[list[int], list[int]]:
        """The iterations with a plotted loss and a plotted Dice."""
        return self.loss_x, self.dice_x
