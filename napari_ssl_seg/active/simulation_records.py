"""What a simulated labeling session measured: one record per round, and the curves over seeds.

Kept apart from :mod:`napari_ssl_seg.active.simulation` (which runs the sessions) so the benchmark
and the tests can read and aggregate results without the training machinery.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RoundRecord", "SimulationResult"]


@dataclass
class RoundRecord:
    """One round: after ``round`` rounds of labeling, with ``labeled`` training cases.

    ``model`` is the round's fine-tuned model and ``validation_dice`` its training run's best;
    ``teacher`` is the teacher after the promotion rule (``model`` when ``promoted``), and
    ``test_dice`` and ``test_hd95_mm`` are the teacher's on the test split (HD95: mean over the
    (case, class) pairs with a measured distance; None when no pair has one)."""

    seed: int
    round: int
    labeled: int
    labeled_cases: list[str]
    picked: list[str]
    picked_scores: list[float | None]
    test_dice: float
    validation_dice: float | None
    model: str
    train_seconds: float
    rank_seconds: float
    promoted: bool
    teacher: str
    #: Per picked case: the voxels the annotator corrected in the ranking teacher's prediction,
    #: and the foreground voxels labeling it from scratch paints (evaluation/correction.py).
    corrected_voxels: list[int] = field(default_factory=list)
    scratch_voxels: list[int] = field(default_factory=list)
    test_hd95_mm: float | None = None

    @property
    def correction_ratio(self) -> float | None:
        """The round's corrected voxels per voxel labeling the picked cases from scratch paints."""
        scratch = sum(self.scratch_voxels)
        return sum(self.corrected_voxels) / scratch if scratch else None

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "correction_ratio": self.correction_ratio}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


@dataclass
class SimulationResult:
    strategy: str
    method: str
    work_dir: Path
    settings: dict[str, Any]
    records: list[RoundRecord] = field(default_factory=list)

    def curve(self) -> list[dict[str, Any]]:
        """Per number of labeled cases, over seeds: test Dice and HD95 (mean, standard deviation,
        count) and the mean correction ratio of the cases labeled to get there (None for the
        initial round)."""
        by_count: dict[int, list[RoundRecord]] = {}
        for record in self.records:
            by_count.setdefault(record.labeled, []).append(record)
        points = []
        for count, records in sorted(by_count.items()):
            dice_mean, dice_std = _mean_std([record.test_dice for record in records])
            hd95_mean, hd95_std = _mean_std([r.test_hd95_mm for r in records if r.test_hd95_mm is not None])
            ratios = [r.correction_ratio for r in records if r.correction_ratio is not None]
            points.append(
                {
                    "labeled": count,
                    "dice_mean": dice_mean,
                    "dice_std": dice_std,
                    "hd95_mean": hd95_mean,
                    "hd95_std": hd95_std,
                    "seeds": len(records),
                    "correction_mean": statistics.fmean(ratios) if ratios else None,
                }
            )
        return points

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationResult:
        """A result as :meth:`as_dict` wrote it (a session's ``result.json``); the curve follows from the rounds."""
        names = {f.name for f in dataclasses.fields(RoundRecord)}
        records = [RoundRecord(**{key: value for key, value in r.items() if key in names}) for r in data["rounds"]]
        return cls(data["strategy"], data["method"], Path(data["work_dir"]), dict(data["settings"]), records)

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "method": self.method,
            "work_dir": str(self.work_dir),
            "settings": self.settings,
            "rounds": [record.as_dict() for record in self.records],
            "curve": self.curve(),
        }
