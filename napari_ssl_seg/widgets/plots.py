"""Matplotlib plots for the docks, rendered off the GUI thread: the entropy histogram, training curves.

A matplotlib draw of one of these small figures took 0.08-0.19 s on the quiet development CPU, and
matplotlib drawing on the GUI thread was where `benchmarks/gui_latency.py --diagnose` found most
of the stalls while a retrain ran. So each plot is drawn by
a worker thread with the Agg canvas (the object-oriented API only, one figure per thread) and the
finished image is shown in a QLabel; requests made while a draw runs are merged into one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from napari.qt.threading import create_worker
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy

from napari_ssl_seg.widgets.background import in_background_priority

__all__ = ["EntropyHistogram", "TrainingCurves", "draw_histogram", "draw_training_curves", "render"]

BACKGROUND = "#262930"  # napari's dark theme
TEXT = "#d0d0d0"
DPI = 100


def _style(axes: Any) -> None:
    axes.set_facecolor(BACKGROUND)
    axes.tick_params(colors=TEXT, labelsize=7)
    for spine in axes.spines.values():
        spine.set_color("#808080")


def render(draw: Callable[[Figure, Any], None], state: Any, size: tuple[float, float]) -> tuple[bytes, int, int]:
    """Draw ``state`` into a new Agg figure of ``size`` inches; RGBA bytes, width, height."""
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    figure.patch.set_facecolor(BACKGROUND)
    canvas = FigureCanvasAgg(figure)
    draw(figure, state)
    canvas.draw()
    width, height = canvas.get_width_height()
    return bytes(canvas.buffer_rgba()), width, height


def draw_histogram(figure: Figure, state: tuple[np.ndarray, np.ndarray, float] | None) -> None:
    axes = figure.add_subplot()
    _style(axes)
    if state is not None:
        counts, edges, threshold = state
        if counts.any():
            axes.stairs(counts, edges, fill=True, color="#f08030")
            axes.set_yscale("log")
        axes.axvline(threshold, color="#60c0ff", linewidth=1)
    axes.set_xlabel("entropy (nats)", fontsize=7, color=TEXT)
    axes.set_ylabel("voxels", fontsize=7, color=TEXT)


def draw_training_curves(figure: Figure, state: dict[str, Any]) -> None:
    loss_axes = figure.add_subplot()
    dice_axes = loss_axes.twinx()
    for axes in (loss_axes, dice_axes):
        _style(axes)
    loss_axes.plot(state["loss_x"], state["loss_y"], color="#f08030", linewidth=1)
    dice_axes.plot(state["dice_x"], state["dice_y"], "o-", color="#60c0ff", markersize=3)
    if state.get("baseline") is not None:
        dice_axes.axhline(state["baseline"], color="#60c0ff", linestyle=":", linewidth=1)
    dice_axes.set_ylim(0.0, 1.0)
    loss_axes.set_xlabel("iteration", fontsize=7, color=TEXT)
    loss_axes.set_ylabel("loss", fontsize=7, color="#f08030")
    dice_axes.set_ylabel("Dice (dotted: current teacher)", fontsize=7, color="#60c0ff")


class ThreadedPlot(QLabel):
    """A QLabel showing the latest figure a worker thread drew for it."""

    def __init__(
        self, draw: Callable[[Figure, Any], None], size: tuple[float, float], min_interval: float = 0.0
    ) -> None:
        super().__init__()
        self._draw = draw
        self._size = size
        self._pending: tuple[Any] | None = None
        self._worker: Any = None
        # Drawing holds the GIL in bursts and napari's canvas paints in Python: a live plot redrawn
        # at most every ``min_interval`` seconds leaves the GUI thread the interpreter meanwhile.
        self._min_interval = min_interval
        self._last_start = -float("inf")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._start)
        self.setAlignment(Qt.AlignCenter)
        self.setMinimumHeight(int(size[1] * DPI * 0.8))
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)

    def request(self, state: Any) -> None:
        self._pending = (state,)
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
        worker = create_worker(
            in_background_priority(render), self._draw, state, self._size, _start_thread=False, _ignore_errors=True
        )
        worker.returned.connect(self._show)
        worker.finished.connect(self._finished)
        self._worker = worker
        worker.start()

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
        super().__init__(draw_histogram, (3.2, 1.6))
        self.request(None)

    def show_values(self, histogram: tuple[np.ndarray, np.ndarray] | None, threshold: float) -> None:
        """Draw precomputed ``(counts, edges)`` (see ``entropy_histogram``) and the threshold line."""
        self.request(None if histogram is None else (histogram[0], histogram[1], threshold))


class TrainingCurves(ThreadedPlot):
    """Loss per iteration and validation Dice, updated live while a retrain runs."""

    def __init__(self) -> None:
        super().__init__(draw_training_curves, (3.2, 2.0), min_interval=2.0)
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
