"""How long a training run takes on the machine the project was measured on, before it starts.

The Retrain dock shows the estimate next to its iteration count, so a user picks a budget knowing
what it costs. The rates are medians of the ``it_per_s`` the loop logs, measured on the 2-core CPU
development machine (AMD EPYC, torch CPU build) with the ``quick`` network (V-Net width 8, depth
4, patch 16x64x64, batch 2 + 2): ``scripts/ship_teachers.sh`` and ``benchmarks/convergence.py``
runs, docs/convergence.md. On another machine the run's own ETA (from its logged progress) replaces
the estimate as soon as the first iterations are done.
"""

from __future__ import annotations

__all__ = [
    "GUI_RATE_FACTOR",
    "MEASURED_ITERATIONS_PER_SECOND",
    "estimate_gui_run_seconds",
    "estimate_seconds",
    "format_duration",
]

#: Iterations per second of the ``quick`` network on the 2-core CPU machine, per method.
MEASURED_ITERATIONS_PER_SECOND: dict[str, float] = {
    "supervised": 10.5,  # benchmarks/convergence.py, 6000 iterations: median 10.5 and 10.4 it/s
    "ucmt": 1.0,  # scripts/ship_teachers.sh: median 0.98, 90th percentile 1.14 it/s
    "ugcemt": 0.8,  # scripts/ship_teachers.sh: median 0.76, 90th percentile 0.82 it/s (beside other work)
}


def estimate_seconds(method: str, iterations: int) -> float | None:
    """Seconds of training for ``iterations`` of ``method`` (validation not counted); None if never measured."""
    rate = MEASURED_ITERATIONS_PER_SECOND.get(method)
    return None if rate is None else iterations / rate


#: The training child the Retrain dock starts runs niced beside the viewer and its plot renderer:
#: benchmarks/gui_cold_start.py measured 7.3 it/s for `supervised` there (545 s for 4000 iterations,
#: 2026-12-02) against 10.5 it/s on the command line.
GUI_RATE_FACTOR = 0.70
#: Around the iterations, measured in the same runs (627 s click to teacher, 545 s of iterations):
#: starting the child and loading the cases, each validation case predicted at each validation,
#: and each unlabeled case re-ranked with MC dropout (8 passes) once the teacher is promoted.
START_SECONDS = 15.0
VALIDATION_CASE_SECONDS = 1.2
RANKED_CASE_SECONDS = 10.0


def estimate_gui_run_seconds(
    method: str, iterations: int, *, validate_every: int, validation_cases: int, ranked_cases: int
) -> float | None:
    """Seconds from the click to a promoted, re-ranked teacher in the GUI; None if never measured."""
    training = estimate_seconds(method, iterations)
    if training is None:
        return None
    validations = iterations // max(validate_every, 1) + 1  # and the promotion's own scoring
    return (
        training / GUI_RATE_FACTOR
        + START_SECONDS
        + validations * max(validation_cases, 1) * VALIDATION_CASE_SECONDS
        + ranked_cases * RANKED_CASE_SECONDS
    )


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"6 min"``, ``"1 h 20 min"``: as a person says it."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
