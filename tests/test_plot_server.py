"""The renderer child that draws the docks' figures, and the dock plots that use it."""

from __future__ import annotations

import io
import json
import os
import signal

import numpy as np
import pytest

from napari_ssl_seg.plotting import DPI
from napari_ssl_seg.runtime.plot_server import PlotRenderer, PlotRendererError, serve

CURVES = {"loss_x": [10, 20, 30], "loss_y": [1.2, 0.9, 0.7], "dice_x": [30], "dice_y": [0.4], "baseline": 0.3}


def _image(data: bytes, width: int, height: int) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 4)


def test_serve_answers_each_request_and_survives_a_bad_one() -> None:
    requests = b"".join(
        (json.dumps(request) + "\n").encode()
        for request in (
            {"kind": "training_curves", "state": CURVES, "size": [3.2, 2.0]},
            {"kind": "no_such_plot", "state": None, "size": [1, 1]},
            {
                "kind": "histogram",
                "state": {"counts": [5, 0, 2], "edges": [0, 0.1, 0.2, 0.3], "threshold": 0.15},
                "size": [2, 1],
            },
        )
    )
    answers = io.BytesIO()
    serve(io.BytesIO(requests), answers)
    stream = io.BytesIO(answers.getvalue())
    first = json.loads(stream.readline())
    assert (first["width"], first["height"]) == (int(3.2 * DPI), int(2.0 * DPI))
    pixels = _image(stream.read(first["nbytes"]), first["width"], first["height"])
    assert len(np.unique(pixels.reshape(-1, 4), axis=0)) > 10  # something was drawn, not a blank fill
    assert "no_such_plot" in json.loads(stream.readline())["error"]
    third = json.loads(stream.readline())
    assert len(stream.read()) == third["nbytes"] == 2 * DPI * 1 * DPI * 4


def test_renderer_draws_in_a_child_and_comes_back_after_it_is_killed() -> None:
    renderer = PlotRenderer()
    try:
        data, width, height = renderer.render("training_curves", CURVES, (3.2, 2.0))
        assert len(data) == width * height * 4
        first_pid = renderer.pid
        assert first_pid is not None and first_pid != os.getpid()
        with pytest.raises(PlotRendererError, match="unknown drawing"):
            renderer.render("no_such_plot", {}, (1.0, 1.0))
        assert renderer.pid == first_pid  # a bad drawing does not cost the process
        os.kill(first_pid, signal.SIGKILL)
        data, width, height = renderer.render("training_curves", CURVES, (3.2, 2.0))
        assert len(data) == width * height * 4
        assert renderer.pid not in (None, first_pid)
    finally:
        renderer.close()
    assert renderer.pid is None


@pytest.mark.gui
def test_training_curves_dock_plot_shows_the_drawn_figure(qtbot) -> None:
    from napari_ssl_seg.widgets.plots import TrainingCurves

    curves = TrainingCurves()
    qtbot.addWidget(curves)
    qtbot.waitUntil(lambda: curves.pixmap() is not None and not curves.pixmap().isNull(), timeout=30000)
    blank = curves.pixmap().toImage()
    for iteration, loss in ((10, 1.0), (20, 0.8), (30, 0.6)):
        curves.add_loss(iteration, loss)
    curves.add_dice(30, 0.5)
    curves.redraw(baseline=0.4)
    qtbot.waitUntil(lambda: curves.pixmap().toImage() != blank, timeout=30000)
    assert curves.pixmap().width() == int(3.2 * DPI)


@pytest.mark.gui
def test_entropy_histogram_says_it_is_drawing_until_the_figure_is_shown(qtbot, uncaught) -> None:
    import numpy as np

    from napari_ssl_seg.active.regions import entropy_histogram
    from napari_ssl_seg.widgets.plots import EntropyHistogram

    histogram = EntropyHistogram()
    qtbot.addWidget(histogram)
    qtbot.waitUntil(lambda: not histogram.drawing, timeout=30000)
    empty = histogram.pixmap().toImage()
    entropy = np.random.default_rng(0).uniform(0.0, 2.0, size=(4, 16, 16))
    histogram.show_values(entropy_histogram(entropy, top=2.0), threshold=1.0)
    assert histogram.drawing  # the screenshots wait on this before grabbing the dock
    qtbot.waitUntil(lambda: not histogram.drawing, timeout=30000)
    assert histogram.pixmap().toImage() != empty


def _shown_text(axes) -> list[str]:
    return [text.get_text() for text in axes.texts]


def test_an_empty_plot_says_what_will_appear_instead_of_showing_bare_axes() -> None:
    from matplotlib.figure import Figure

    from napari_ssl_seg.plotting import EMPTY_CURVES, EMPTY_HISTOGRAM, draw_histogram, draw_training_curves

    nothing = {"loss_x": [], "loss_y": [], "dice_x": [], "dice_y": [], "baseline": None}
    figure = Figure()
    draw_training_curves(figure, nothing)
    (axes,) = figure.axes  # no twin Dice axis for a run that has not started
    assert _shown_text(axes) == [EMPTY_CURVES] and len(axes.get_xticks()) == len(axes.get_yticks()) == 0

    # The current teacher's Dice is worth showing before the run's first point; a running plot has no message.
    for state in ({**nothing, "baseline": 0.8}, CURVES):
        figure = Figure()
        draw_training_curves(figure, state)
        assert len(figure.axes) == 2 and not any(_shown_text(a) for a in figure.axes)
        assert len(figure.axes[0].get_xticks()) > 0

    figure = Figure()
    draw_histogram(figure, None)
    assert _shown_text(figure.axes[0]) == [EMPTY_HISTOGRAM]
    figure = Figure()
    draw_histogram(figure, {"counts": [5, 0, 2], "edges": [0, 0.1, 0.2, 0.3], "threshold": 0.15})
    assert not _shown_text(figure.axes[0]) and figure.axes[0].get_xlabel() == "entropy (nats)"


def test_the_curves_legend_names_the_current_teacher_only_when_there_is_one() -> None:
    from matplotlib.figure import Figure

    from napari_ssl_seg.plotting import draw_training_curves

    for baseline, names in ((None, ["loss", "validation Dice"]), (0.3, ["loss", "validation Dice", "current teacher"])):
        figure = Figure()
        draw_training_curves(figure, {**CURVES, "baseline": baseline})
        (legend,) = figure.legends
        assert [text.get_text() for text in legend.get_texts()] == names
        assert figure.axes[1].get_ylabel() == "Dice"


@pytest.mark.gui
def test_a_dock_plot_is_drawn_at_the_size_the_dock_gives_it_not_cropped(qtbot) -> None:
    from napari_ssl_seg.widgets.plots import TrainingCurves

    curves = TrainingCurves()
    qtbot.addWidget(curves)
    curves.add_loss(10, 1.0)
    curves.add_dice(10, 0.5)

    def fits() -> bool:
        shown, area = curves.pixmap(), curves.contentsRect()
        return shown is not None and (shown.width(), shown.height()) == (area.width(), area.height())

    curves.resize(420, 170)
    curves.show()
    qtbot.waitExposed(curves)
    curves.redraw()
    qtbot.waitUntil(fits, timeout=30000)
    assert (curves.pixmap().width(), curves.pixmap().height()) == (420, 170)
    curves.resize(300, 260)  # the user drags the dock's edge: the figure is drawn again at the new size
    qtbot.waitUntil(fits, timeout=30000)
    assert (curves.pixmap().width(), curves.pixmap().height()) == (300, 260)
