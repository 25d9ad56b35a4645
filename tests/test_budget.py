"""The Retrain dock's time estimate: from measured rates, said the way a person says it."""

from __future__ import annotations

import pytest

from napari_ssl_seg.training.budget import MEASURED_ITERATIONS_PER_SECOND, estimate_seconds, format_duration


def test_estimates_scale_with_iterations_and_say_when_a_method_was_never_measured() -> None:
    rate = MEASURED_ITERATIONS_PER_SECOND["supervised"]
    assert estimate_seconds("supervised", 4000) == pytest.approx(4000 / rate)
    assert estimate_seconds("ucmt", 300) > estimate_seconds("supervised", 300)  # ten times the work per iteration
    assert estimate_seconds("curecl", 100) is None


def test_durations_read_as_a_person_says_them() -> None:
    assert format_duration(0.2) == "1 s"
    assert format_duration(45) == "45 s"
    assert format_duration(381) == "6 min"
    assert format_duration(4800) == "1 h 20 min"


def test_the_dock_estimate_counts_what_the_click_waits_for_beyond_the_iterations() -> None:
    from napari_ssl_seg.training.budget import estimate_gui_run_seconds

    base = {"validate_every": 250, "validation_cases": 1, "ranked_cases": 4}
    plain = estimate_gui_run_seconds("supervised", 4000, **base)
    assert plain > estimate_seconds("supervised", 4000)  # the GUI's child is slower and validates, re-ranks
    assert estimate_gui_run_seconds("supervised", 4000, **{**base, "validation_cases": 3}) > plain
    assert estimate_gui_run_seconds("supervised", 4000, **{**base, "ranked_cases": 20}) > plain
    assert estimate_gui_run_seconds("supervised", 4000, **{**base, "validate_every": 50}) > plain
    assert estimate_gui_run_seconds("curecl", 4000, **base) is None
