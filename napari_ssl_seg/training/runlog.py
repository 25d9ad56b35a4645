"""The run's log: one JSON line per log step and per validation, plus TensorBoard scalars.

``log.jsonl`` is append-only (a line per record, flushed), so a crash loses at most the line being
written; on resume the lines after the resumed iteration are dropped (an atomic rewrite) because
those iterations are about to be run again. TensorBoard gets ``purge_step`` for the same reason.
Only rank 0 of a distributed run creates a :class:`RunLog`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from napari_ssl_seg.io.atomic import atomic_output

__all__ = ["RunLog", "read_log"]


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; a diverging loss is logged as null rather than breaking the file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every record of a ``log.jsonl`` (a torn last line from a crash is skipped)."""
    records = []
    if not Path(path).is_file():
        return records
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class RunLog:
    """Writes ``<out>/log.jsonl`` and ``<out>/tensorboard``; ``resume_from`` trims later records."""

    def __init__(self, out_dir: Path, *, resume_from: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(out_dir) / "log.jsonl"
        if resume_from is not None and self.path.is_file():
            kept = [r for r in read_log(self.path) if int(r.get("iteration", 0)) <= resume_from]
            with atomic_output(self.path) as temporary:
                temporary.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        purge = None if resume_from is None else resume_from + 1
        self.writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"), purge_step=purge)

    def write(self, kind: str, iteration: int, values: Mapping[str, Any]) -> None:
        record = {"kind": kind, "iteration": iteration, **{key: _clean(value) for key, value in values.items()}}
        self.handle.write(json.dumps(record, allow_nan=False) + "\n")
        self.handle.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{kind}/{key}", value, iteration)
        self.writer.flush()

    def close(self) -> None:
        self.handle.close()
        self.writer.close()
