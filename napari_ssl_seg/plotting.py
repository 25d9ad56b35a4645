"""The docks' small matplotlib figures (entropy histogram, training curves), drawn to RGBA bytes.

Qt-free, so that :mod:`napari_ssl_seg.runtime.plot_server` can draw them in a child process: a draw holds
the interpreter in bursts of pure Python for 0.1-0.2 s, which in a thread of the napari process
kept its GUI thread from the interpreter (see ``plot_server``'s docstring for the measurement).
States are plain JSON values so that they cross a pipe without pickling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "BACKGROUND",
    "DPI",
    "DRAWINGS",
    "EMPTY_CURVES",
    "EMPTY_HISTOGRAM",
    "TEXT",
    "draw_histogram",
    "draw_training_curves",
    "render",
]

BACKGROUND = "#262930"  # napari's dark theme
TEXT = "#d0d0d0"
ORANGE = "#f08030"
BLUE = "#60c0ff"
DPI = 100
# What an empty plot says instead of axes with meaningless ticks (a dock's first look, before any run or prediction).
EMPTY_CURVES = "loss and validation Dice\nappear here while a run trains"
EMPTY_HISTOGRAM = "the entropy histogram\nappears after a prediction"


def _style(axes: Any) -> None:
    axes.set_facecolor(BACKGROUND)
    axes.tick_params(colors=TEXT, labelsize=7)
    for spine in axes.spines.values():
        spine.set_color("#808080")


def _say_empty(axes: Any, message: str) -> None:
    axes.set_xticks([])
    axes.set_yticks([])
    axes.text(0.5, 0.5, message, transform=axes.transAxes, ha="center", va="center", fontsize=8, color=TEXT)


def draw_histogram(figure: Figure, state: Mapping[str, Any] | None) -> None:
    """``state``: ``counts`` per bin, the bin ``edges`` and the region ``threshold`` (or None: nothing yet)."""
    axes = figure.add_subplot()
    _style(axes)
    if state is None:
        _say_empty(axes, EMPTY_HISTOGRAM)
        return
    counts, edges = list(state["counts"]), list(state["edges"])
    if any(counts):
        axes.stairs(counts, edges, fill=True, color=ORANGE)
        axes.set_yscale("log")
    axes.axvline(float(state["threshold"]), color=BLUE, linewidth=1)
    axes.set_xlabel("entropy (nats)", fontsize=7, color=TEXT)
    axes.set_ylabel("voxels", fontsize=7, color=TEXT)


def draw_training_curves(figure: Figure, state: Mapping[str, Any]) -> None:
    """Loss per iteration (left axis), validation Dice (right axis) and the current teacher's Dice, dotted.

    A legend above the axes names the lines, the teacher's only when there is one: axis labels long enough
    to say it were cut off at the dock's width.
    """
    loss_axes = figure.add_subplot()
    _style(loss_axes)
    if not state["loss_x"] and not state["dice_x"] and state.get("baseline") is None:
        _say_empty(loss_axes, EMPTY_CURVES)
        return
    dice_axes = loss_axes.twinx()
    _style(dice_axes)
    lines = loss_axes.plot(state["loss_x"], state["loss_y"], color=ORANGE, linewidth=1, label="loss")
    lines += dice_axes.plot(state["dice_x"], state["dice_y"], "o-", color=BLUE, markersize=3, label="validation Dice")
    if state.get("baseline") is not None:
        lines.append(
            dice_axes.axhline(state["baseline"], color=BLUE, linestyle=":", linewidth=1, label="current teacher")
        )
    dice_axes.set_ylim(0.0, 1.0)
    loss_axes.set_xlabel("iteration", fontsize=7, color=TEXT)
    loss_axes.set_ylabel("loss", fontsize=7, color=ORANGE)
    dice_axes.set_ylabel("Dice", fontsize=7, color=BLUE)
    legend = figure.legend(
        handles=lines, loc="outside upper center", ncols=len(lines), fontsize=6, frameon=False, handlelength=1.5
    )
    for text in legend.get_texts():
        text.set_color(TEXT)


DRAWINGS: dict[str, Callable[[Figure, Any], None]] = {
    "histogram": draw_histogram,
    "training_curves": draw_training_curves,
}


def render(kind: str, state: Any, size: tuple[float, float]) -> tuple[bytes, int, int]:
    """Draw ``state`` with the drawing ``kind`` into a ``size``-inch Agg figure: RGBA bytes, width, height."""
    if kind not in DRAWINGS:
        raise ValueError(f"unknown drawing {kind!r} (known: {', '.join(DRAWINGS)})")
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    figure.patch.set_facecolor(BACKGROUND)
    canvas = FigureCanvasAgg(figure)
    DRAWINGS[kind](figure, state)
    canvas.draw()
    width, height = canvas.get_width_height()
    return bytes(canvas.buffer_rgba()), width, height
