"""The Retrain dock's time estimate follows this machine once the project has run a method on it (real keys)."""

from __future__ import annotations

import pytest
from gui_helpers import Notifications, open_docks, open_project_by_path
from helpers import make_tiny_project, tiny_config
from qtpy.QtWidgets import QApplication

from napari_ssl_seg.training.budget import BUDGETS, project_rates
from napari_ssl_seg.training.loop import train

pytestmark = pytest.mark.gui


def _choose(qtbot, combo, method: str) -> None:
    combo.setFocus()
    qtbot.wait(QApplication.keyboardInputInterval() + 100)  # a fresh search, not the end of the last one
    qtbot.keyClicks(combo, method)
    assert combo.currentData() == method


@pytest.mark.parametrize("opening", ["one by one", "all together"])
def test_the_estimate_uses_the_rate_a_command_line_run_measured_here(
    make_napari_viewer, qtbot, tmp_path, uncaught, opening
):
    root = make_tiny_project(tmp_path / "project")
    # The lab's engineer trained a supervised teacher from the command line; it is not registered yet.
    width = BUDGETS["cpu"].base_width  # the first teacher's network, as the plan makes it
    for run, run_width in (("supervised-cli", width), ("narrow", width // 2)):
        # The narrower network's run measures another rate: the dock does not take it for the first teacher's.
        train(root, tiny_config(iterations=12, log_every=1, base_width=run_width), root / "runs" / run, device="cpu")
    rate = project_rates(root, "cpu", base_width=width)["supervised"].it_per_s

    viewer = make_napari_viewer(show=True)
    notes = Notifications()
    project, _teacher, _regions, _label, retrain = open_docks(viewer, qtbot, opening)
    open_project_by_path(qtbot, project, root, retrain)

    measured = retrain.estimate.text()
    assert f"supervised ran at {rate:.1f} it/s on this machine (run supervised-cli)" in measured, measured
    # More iterations, a longer estimate, still from this machine.
    retrain.iterations.setFocus()
    retrain.iterations.selectAll()
    qtbot.keyClicks(retrain.iterations, "9000")
    assert retrain.estimate.text() != measured and "on this machine" in retrain.estimate.text()

    # A method this project never ran: the development machine's figure, said as such.
    _choose(qtbot, retrain.method, "ucmt")
    ucmt = retrain.estimate.text()
    assert "on a 2-core CPU" in ucmt and "this machine" not in ucmt
    # Every packaged method has the development machine's figure, the slowest one too (its own, not UCMT's).
    _choose(qtbot, retrain.method, "curecl")
    slowest = retrain.estimate.text()
    assert "on a 2-core CPU" in slowest and slowest != ucmt, slowest
    assert notes.new() == []
