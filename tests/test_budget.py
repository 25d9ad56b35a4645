"""The Retrain dock's time estimate: from measured rates, said the way a person says it."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import pytest
from helpers import make_tiny_project, tiny_config

from napari_ssl_seg.training.budget import (
    MEASURED_ITERATIONS_PER_SECOND,
    WIDTH_COST,
    MeasuredRate,
    estimate_gui_run_seconds,
    estimate_seconds,
    format_duration,
    project_rates,
)
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.runlog import read_log


def test_estimates_scale_with_iterations_and_say_when_a_method_was_never_measured() -> None:
    rate = MEASURED_ITERATIONS_PER_SECOND["supervised"]
    assert estimate_seconds("supervised", 4000) == pytest.approx(4000 / rate)
    assert estimate_seconds("ucmt", 300) > estimate_seconds("supervised", 300)  # ten times the work per iteration
    assert estimate_seconds("lab_methods.fixmatch:FixMatch", 100) is None


def test_every_packaged_method_has_a_measured_rate_so_the_dock_can_say_what_a_run_costs() -> None:
    from napari_ssl_seg.methods.registry import available_methods

    for method in available_methods():
        seconds = estimate_seconds(method, 1000)
        assert seconds is not None, method
        # No semi-supervised method is cheaper than supervised training: each runs at least its networks.
        assert seconds >= estimate_seconds("supervised", 1000), method


def test_a_wider_network_costs_its_measured_factor_and_an_unmeasured_width_has_no_estimate() -> None:
    assert estimate_seconds("ucmt", 1000, base_width=16) == pytest.approx(
        estimate_seconds("ucmt", 1000) * WIDTH_COST[16]
    )
    assert estimate_seconds("ucmt", 1000, base_width=12) is None
    base = {"validate_every": 250, "validation_cases": 1, "ranked_cases": 0}
    assert estimate_gui_run_seconds("supervised", 4000, **base, base_width=16) > estimate_gui_run_seconds(
        "supervised", 4000, **base
    )


def test_durations_read_as_a_person_says_them() -> None:
    assert format_duration(0.2) == "1 s"
    assert format_duration(45) == "45 s"
    assert format_duration(381) == "6 min"
    assert format_duration(4800) == "1 h 20 min"


def test_the_dock_estimate_counts_what_the_click_waits_for_beyond_the_iterations() -> None:
    base = {"validate_every": 250, "validation_cases": 1, "ranked_cases": 4}
    plain = estimate_gui_run_seconds("supervised", 4000, **base)
    assert plain > estimate_seconds("supervised", 4000)  # the GUI's child is slower and validates, re-ranks
    assert estimate_gui_run_seconds("supervised", 4000, **{**base, "validation_cases": 3}) > plain
    assert estimate_gui_run_seconds("supervised", 4000, **{**base, "ranked_cases": 20}) > plain
    assert estimate_gui_run_seconds("supervised", 4000, **{**base, "validate_every": 50}) > plain
    assert estimate_gui_run_seconds("lab_methods.fixmatch:FixMatch", 4000, **base) is None


def test_a_rate_measured_in_the_project_replaces_the_development_machines() -> None:
    base = {"validate_every": 250, "validation_cases": 1, "ranked_cases": 0}
    slow_here = MeasuredRate("curecl", 0.5, 16 * 64 * 64, niced=True, run="r")
    # A method never measured on the development machine gets an estimate once it ran here.
    assert estimate_gui_run_seconds("curecl", 1000, **base, measured=slow_here) == pytest.approx(
        2000 + 15 + 5 * 1.2, rel=1e-6
    )
    # A command-line run was not niced beside a viewer: the dock's run will be slower than it.
    from_cli = MeasuredRate("curecl", 0.5, 16 * 64 * 64, niced=False, run="r")
    assert estimate_gui_run_seconds("curecl", 1000, **base, measured=from_cli) > estimate_gui_run_seconds(
        "curecl", 1000, **base, measured=slow_here
    )
    # Twice the patch's voxels, half the rate.
    assert slow_here.at_patch(2 * 16 * 64 * 64) == pytest.approx(0.25)
    assert slow_here.at_patch(None) == 0.5


def _logged_rates(run: Path) -> list[float]:
    return [r["it_per_s"] for r in read_log(run / "log.jsonl") if r["kind"] == "train"]


def test_project_rates_read_the_newest_long_enough_run_per_method_and_device(tmp_path: Path) -> None:
    tiny_project = make_tiny_project(tmp_path / "project")
    runs = tiny_project / "runs"
    assert project_rates(tiny_project, "cpu") == {}  # no run yet
    train(tiny_project, tiny_config(iterations=12, log_every=1), runs / "first", device="cpu")
    first = project_rates(tiny_project, "cpu")["supervised"]
    assert first.run == "first" and first.patch_voxels == 8 * 16 * 16 and not first.niced
    assert first.it_per_s == pytest.approx(statistics.median(_logged_rates(runs / "first")))
    assert project_rates(tiny_project, "cuda") == {}  # measured on another kind of device
    assert project_rates(tiny_project, "cpu", world_size=2) == {}  # a torchrun of two ranks is another machine
    assert project_rates(tiny_project, "cpu", base_width=4)["supervised"].run == "first"  # tiny_config's width
    assert project_rates(tiny_project, "cpu", base_width=16) == {}  # a wider network is another rate
    # A run stopped after a few log records is too short to trust; the older, longer one stays.
    train(tiny_project, tiny_config(iterations=4, log_every=1), runs / "short", device="cpu")
    assert project_rates(tiny_project, "cpu")["supervised"].run == "first"
    # A newer run of the method is the machine as it is now; its log is read again as it grows.
    shutil.copytree(runs / "first", runs / "second")
    log = runs / "second" / "log.jsonl"
    with open(log, "a", encoding="utf-8") as handle:
        for iteration in range(13, 33):
            handle.write(f'{{"kind": "train", "iteration": {iteration}, "loss": 0.5, "it_per_s": 1000.0}}\n')
    second = project_rates(tiny_project, "cpu")["supervised"]
    assert second.run == "second" and second.it_per_s == 1000.0
    # Stretches where the run gave a core to the GUI (fewer threads) do not count, however many.
    with open(log, "a", encoding="utf-8") as handle:
        for iteration in range(33, 83):
            handle.write(f'{{"kind": "train", "iteration": {iteration}, "it_per_s": 1.0, "threads": 1}}\n')
        for iteration in range(83, 123):
            handle.write(f'{{"kind": "train", "iteration": {iteration}, "it_per_s": 2000.0, "threads": 2}}\n')
    assert project_rates(tiny_project, "cpu")["supervised"].it_per_s == 2000.0
    # A run folder without a start record (made before runs logged one) is skipped.
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(line for line in lines if '"kind": "start"' not in line))
    assert project_rates(tiny_project, "cpu")["supervised"].run == "first"
