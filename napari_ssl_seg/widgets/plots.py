"""Small matplotlib canvases for the docks: the entropy histogram and the live training curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

__all__ = ["EntropyHistogram", "TrainingCurves"]


def _styled_figure(height: float) -> Figure:
    figure = Figure(figsize=(3.2, height), dpi=100, layout="constrained")
    figure.patch.set_facecolor("#262930")  # napari's dark theme background
    return figure


def _style(axes) -> None:
    axes.set_facecolor("#262930")
    axes.tick_params(colors="#d0d0d0", labelsize=7)
    for spine in axes.spines.values():
        spine.set_color("#808080")
    axes.xaxis.label.set_color("#d0d0d0")
    axes.yaxis.label.set_color("#d0d0d0")


class EntropyHistogram(FigureCanvasQTAgg):
    """Histogram of the voxel entropies above a floor, with the region threshold marked."""

    def __init__(self) -> None:
        super().__init__(_styled_figure(1.6))
        self.axes = self.figure.add_subplot()
        _style(self.axes)
        self.setMinimumHeight(120)

    def show_values(self, entropy: np.ndarray | None, threshold: float, top: float) -> None:
        self.axes.clear()
        _style(self.axes)
        if entropy is not None:
            values = np.asarray(entropy, dtype=np.float32)
            # Most voxels are certain background; the floor keeps their spike from hiding the rest.
            values = values[values > 0.01 * max(top, 1e-6)]
            if values.size:
                self.axes.hist(values, bins=50, range=(0.0, top), color="#f08030", log=True)
            self.axes.axvline(threshold, color="#60c0ff", linewidth=1)
        self.axes.set_xlabel("entropy (nats)", fontsize=7)
        self.axes.set_ylabel("voxels", fontsize=7)
        self.draw_idle()


class TrainingCurves(FigureCanvasQTAgg):
    """Loss per iteration and validation Dice, updated live while a retrain runs."""

    def __init__(self) -> None:
        super().__init__(_styled_figure(2.0))
        self.loss_axes = self.figure.add_subplot()
        self.dice_axes = self.loss_axes.twinx()
        self.setMinimumHeight(150)
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
        for axes in (self.loss_axes, self.dice_axes):
            axes.clear()
            _style(axes)
        self.loss_axes.plot(self.loss_x, self.loss_y, color="#f08030", linewidth=1, label="loss")
        self.dice_axes.plot(self.dice_x, self.dice_y, "o-", color="#60c0ff", markersize=3, label="validation Dice")
        if baseline is not None:
            self.dice_axes.axhline(baseline, color="#60c0ff", linestyle=":", linewidth=1)
        self.dice_axes.set_ylim(0.0, 1.0)
        self.loss_axes.set_xlabel("iteration", fontsize=7)
        self.loss_axes.set_ylabel("loss", fontsize=7, color="#f08030")
        self.dice_axes.set_ylabel("Dice (dotted: current teacher)", fontsize=7, color="#60c0ff")
        self.draw_idle()

    @property
    def points(self) -> tuple[Sequence[int], Sequence[int]]:
        """How many loss and Dice points are plotted (for tests and the status line)."""
        return self.loss_x, self.dice_x
