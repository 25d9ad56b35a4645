"""How long a training run takes on the machine the project was measured on, before it starts.

The Retrain dock shows the estimate next to its iteration count, so a user picks a budget knowing
what it costs. The rates are medians of the ``it_per_s`` the loop logs, measured on the 2-core CPU
development machine (AMD EPYC, torch CPU build) with the ``quick`` network (V-Net width 8, depth
4, patch 16x64x64, batch 2 + 2): ``scripts/ship_teachers.sh`` and ``benchmarks/convergence.py``
runs, docs/convergence.md. On another machine the run's own ETA (from its logged progress) replaces
the estimate as soon as the first iterations are done.

**What a device affords.** :data:`BUDGETS` holds, per kind of device, the recipe a plan scales from
(:class:`ComputeBudget`: patch voxels, network, batch, iterations); the estimates above convert its
iterations into minutes.

**This machine's own rates.** Every run logs a ``start`` record (:func:`start_record`: method, patch,
device, threads, niceness), so once a project has trained a method, :func:`project_rates` reads the
median ``it_per_s`` of its newest run of that method on the same kind of device, and the estimate
uses it instead of the development machine's: a lab's GPU, or a busier CPU, gets its own figure.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BUDGETS",
    "GUI_RATE_FACTOR",
    "MEASURED_ITERATIONS_PER_SECOND",
    "WIDTH_COST",
    "ComputeBudget",
    "MeasuredRate",
    "estimate_gui_run_seconds",
    "estimate_seconds",
    "format_duration",
    "project_rates",
    "start_record",
]

#: Iterations per second of the ``quick`` network (width 8) on the quiet 2-core CPU machine, per method
#: (2026-12-05). Supervised: benchmarks/ssl_plateau.py's 27500-iteration control, median 20.9 it/s
#: (benchmarks/training_speed.py: 0.048 s per iteration). UCMT: training_speed.py, 0.400 s per iteration.
#: UG-CEMT: scripts/ship_teachers.sh at width 16, median 1.14 it/s, times WIDTH_COST[16].
#: The other six: supervised's rate times its iteration time over theirs, both from one run of
#: ``training_speed.py --iterations 10 --warmup 3`` (quiet, 2026-12-05; supervised 0.085 s, MT 0.174,
#: UA-MT 0.237, CPS 0.301, UG-MCL 0.355, CCE dual 0.535, CURE-CL 2.332): the development machines of
#: different sessions ran at different speeds, the ratios measured side by side do not.
MEASURED_ITERATIONS_PER_SECOND: dict[str, float] = {
    "supervised": 20.9,
    "mt": 10.2,
    "uamt": 7.5,
    "cps": 5.9,
    "ucmt": 2.5,
    "ugcemt": 1.7,
    "ugmcl": 5.0,
    "curecl": 0.76,
    "ccedual": 3.3,
}


#: An iteration's cost at each network width against width 8, at the quick patch and batch:
#: ``benchmarks/training_speed.py --methods supervised,ucmt --widths 8,16`` measured 0.070 / 0.048 s
#: (supervised) and 0.581 / 0.400 s (UCMT) side by side on the quiet 2-core machine (2026-12-05).
WIDTH_COST: dict[int, float] = {8: 1.0, 16: 1.46}


@dataclass(frozen=True)
class ComputeBudget:
    """What one device affords per iteration, from a recipe measured on it."""

    name: str
    preset: str
    patch_voxels: int
    depth: int
    base_width: int
    batch_labeled: int
    batch_unlabeled: int
    iterations: int
    #: The median image may hold at most this many patches' voxels before the spacing coarsens.
    context_ratio: float
    #: The patch voxels at which MEASURED_ITERATIONS_PER_SECOND were measured (None: not measured).
    measured_patch_voxels: int | None


BUDGETS: dict[str, ComputeBudget] = {
    # The quick preset's patch (16x64x64, depth 4, 4000 iterations: converged on the chest cohort, whose median
    # image is 4.4 patches) at width 16: on the chest, 3 labeled cases, 3 seeds, test Dice 0.798 against 0.769
    # and HD95 12.1 against 16.0 mm for 1.46x the iteration time; width 8 at three times the iterations reached
    # 0.779: the narrow network lacked capacity, not time (benchmarks/planning.py, docs/planning.md).
    "cpu": ComputeBudget("cpu", "quick", 16 * 64 * 64, 4, 16, 2, 2, 4000, 4.5, 16 * 64 * 64),
    # The papers' recipe (80x112x112, width 16, depth 5, 6000 iterations); nnU-Net's low-resolution
    # stage starts when the median image exceeds 4 patches.
    "gpu": ComputeBudget("gpu", "paper", 80 * 112 * 112, 5, 16, 2, 2, 6000, 4.0, None),
}


def estimate_seconds(method: str, iterations: int, base_width: int = 8) -> float | None:
    """Seconds of training for ``iterations`` of ``method`` (validation not counted); None if never measured."""
    rate = MEASURED_ITERATIONS_PER_SECOND.get(method)
    if rate is None or base_width not in WIDTH_COST:
        return None
    return iterations / rate * WIDTH_COST[base_width]


#: The training child the Retrain dock starts runs niced beside the viewer and its plot renderer:
#: benchmarks/gui_cold_start.py measured a median 13.8 it/s for `supervised` there at the width-16 plan
#: against 14.4 it/s for the same plan on the command line (scripts/ship_teachers.sh), both on the quiet
#: machine, 2026-12-05. (The 0.70 used before came from a run beside other work.)
GUI_RATE_FACTOR = 0.96
#: Around the iterations, measured in the width-8 GUI runs of 2026-12-02 (627 s click to teacher, 545 s of
#: iterations): starting the child and loading the cases, each validation case predicted at each validation,
#: and each unlabeled case re-ranked with MC dropout (8 passes) once the teacher is promoted. At the width-16
#: plan (coarser spacing, fewer voxels) the whole overhead measured 21 s where these give 75 s: kept, as an
#: upper bound, until each part is timed on its own.
START_SECONDS = 15.0
VALIDATION_CASE_SECONDS = 1.2
RANKED_CASE_SECONDS = 10.0


def estimate_gui_run_seconds(
    method: str,
    iterations: int,
    *,
    validate_every: int,
    validation_cases: int,
    ranked_cases: int,
    measured: MeasuredRate | None = None,
    base_width: int = 8,
) -> float | None:
    """Seconds from the click to a promoted, re-ranked teacher in the GUI; None if never measured.

    ``measured``: this project's own rate for ``method`` (:func:`project_rates`, at the same
    ``base_width``); else the development machine's.
    """
    if measured is not None:
        # A run the dock started was niced beside the viewer already; a command-line one was not.
        training = iterations / measured.it_per_s / (1.0 if measured.niced else GUI_RATE_FACTOR)
    else:
        plain = estimate_seconds(method, iterations, base_width)
        if plain is None:
            return None
        training = plain / GUI_RATE_FACTOR
    validations = iterations // max(validate_every, 1) + 1  # and the promotion's own scoring
    return (
        training
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


def start_record(
    method: str, patch_size: Sequence[int], base_width: int, batch: int, device_type: str, world_size: int
) -> dict[str, Any]:
    """What a run's ``start`` log record says about the work and the machine it runs on."""
    import torch

    return {
        "method": method,
        "patch_size": [int(size) for size in patch_size],
        "base_width": int(base_width),
        "batch": int(batch),
        "device": device_type,
        "world_size": int(world_size),
        "threads": torch.get_num_threads(),
        "niceness": os.nice(0) if hasattr(os, "nice") else 0,
    }


#: Fewer logged rates than this (5 iterations each by default) is a run stopped too early to trust.
MIN_RATE_RECORDS = 10
#: Only the newest runs are read: the estimate follows the machine as it is now.
NEWEST_RUNS = 30


@dataclass(frozen=True)
class MeasuredRate:
    """The median iterations per second of one finished (or stopped) run in the project."""

    method: str
    it_per_s: float
    patch_voxels: int
    niced: bool
    run: str

    def at_patch(self, patch_voxels: int | None) -> float:
        """The rate for another patch: an iteration's cost grows with the patch's voxels."""
        if not patch_voxels or not self.patch_voxels:
            return self.it_per_s
        return self.it_per_s * self.patch_voxels / patch_voxels


_IT_PER_S = re.compile(r'"it_per_s": ([0-9.eE+-]+)')
_THREADS = re.compile(r'"threads": ([0-9]+)')
# log path -> (mtime_ns, size, its start record, median rate, rate count): the dock asks on every change.
_RUN_RATES: dict[Path, tuple[int, int, dict[str, Any] | None, float, int]] = {}


def _run_rate(log: Path) -> tuple[dict[str, Any] | None, float, int]:
    """(start record, median it/s, how many rates) of one run, reading the log only when it changed."""
    stat = log.stat()
    cached = _RUN_RATES.get(log)
    if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
        return cached[2:]
    start, speeds = None, []
    with open(log, encoding="utf-8") as handle:
        for line in handle:
            # Only the rate of each train record: a 6000-iteration log is a megabyte of JSON.
            if start is None and line.startswith('{"kind": "start"'):
                with contextlib.suppress(json.JSONDecodeError):
                    start = json.loads(line)
            elif line.startswith('{"kind": "train"') and (found := _IT_PER_S.search(line)):
                with contextlib.suppress(ValueError):
                    threads = _THREADS.search(line)
                    speeds.append((float(found.group(1)), int(threads.group(1)) if threads else 0))
    # Records of stretches where the run gave a core to the GUI (fewer "threads", runtime/core_sharing.py) say what
    # the machine did beside other work, not what a run costs: they are left out (records before the count was
    # logged, 0 here, are kept).
    full = max((threads for _, threads in speeds), default=0)
    speeds = [speed for speed, threads in speeds if threads in (0, full) and math.isfinite(speed) and speed > 0]
    median = statistics.median(speeds) if speeds else 0.0
    _RUN_RATES[log] = (stat.st_mtime_ns, stat.st_size, start, median, len(speeds))
    return start, median, len(speeds)


def project_rates(
    project_root: Path | str, device_type: str, world_size: int = 1, base_width: int | None = None
) -> dict[str, MeasuredRate]:
    """Per method, the rate of the project's newest run of it on ``world_size`` ``device_type`` devices (``runs/*``).

    ``base_width``: only runs of a network that wide (None: any).
    """
    logs = [path for path in Path(project_root, "runs").glob("*/log.jsonl") if path.is_file()]
    logs.sort(key=lambda path: path.stat().st_mtime_ns, reverse=True)
    rates: dict[str, MeasuredRate] = {}
    for log in logs[:NEWEST_RUNS]:
        try:
            start, median, count = _run_rate(log)
        except OSError:  # a run folder removed while we looked
            continue
        if start is None or count < MIN_RATE_RECORDS:
            continue
        if start.get("device") != device_type or int(start.get("world_size", 1)) != world_size:
            continue
        if base_width is not None and start.get("base_width") != base_width:
            continue
        method = str(start.get("method"))
        if method in rates:
            continue
        rates[method] = MeasuredRate(
            method=method,
            it_per_s=median,
            patch_voxels=math.prod(int(size) for size in start.get("patch_size") or [0]),
            niced=int(start.get("niceness", 0)) > 0,
            run=log.parent.name,
        )
    return rates
