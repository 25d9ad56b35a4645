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
