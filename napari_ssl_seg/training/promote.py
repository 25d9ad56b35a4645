"""Compare a finished run's teacher with the active one on the validation split; promote it if not worse.

Both :meth:`RetrainJob.finish` (in-process, as ``napari-ssl-seg retrain`` does) and the Retrain dock use
this. The dock runs it as ``python -m napari_ssl_seg.training.promote PROJECT RUN [--parent V]
[--device D]`` (prints the outcome as JSON): run in a GUI thread, the two validations competed with
napari for the interpreter, and moving them to a child process took the worst stall of
benchmarks/gui_latency.py's combined phase from 229.8 ms to 192.4 ms (one run each).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from napari_ssl_seg.evaluation.evaluate import evaluate_project
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.store.models import activate_model, active_model, register_model
from napari_ssl_seg.store.project import Project

__all__ = ["RetrainOutcome", "is_better", "main", "promote_if_better", "validation_dice"]


@dataclass(frozen=True)
class RetrainOutcome:
    """What a finished retrain changed in the registry (nothing unless ``state`` is "completed")."""

    state: str
    out_dir: Path
    old_version: str | None
    new_version: str | None
    old_dice: float | None
    new_dice: float | None
    promoted: bool
    active_version: str | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out_dir": str(self.out_dir)}


def validation_dice(
    project: Project, checkpoint: Path | str, *, device: str = "auto", progress: Callable | None = None
) -> float:
    """Mean Dice of a model over every (validation case, class): the promotion criterion."""
    evaluation = evaluate_project(project, checkpoint, split="validation", device=device, progress=progress)
    value = evaluation.summary["overall"]["dice_mean"]
    return 0.0 if value is None else float(value)


def is_better(new_dice: float, old_dice: float | None) -> bool:
    """The promotion rule on validation Dice; ties promote (the new teacher has seen the newer labels
    at no cost on validation). The labeling simulation applies the same rule."""
    return old_dice is None or new_dice >= old_dice


def promote_if_better(
    project: Project,
    out_dir: Path,
    *,
    parent: str | None,
    device: str = "auto",
    progress: Callable[[str, int, int], None] | None = None,
) -> RetrainOutcome:
    """Register ``out_dir``'s model (parent ``parent``) and activate it if its Dice >= the active one's."""
    old = active_model(project)
    old_name = old.name if old is not None else None

    def stage(name: str) -> Callable[[int, int, str], None] | None:
        return None if progress is None else (lambda done, total, _case: progress(name, done, total))

    checkpoint = out_dir / "model.safetensors"
    old_dice = None
    # Looked up on the module at call time, so tests can replace the criterion.
    if old is not None:
        old_dice = validation_dice(project, old.checkpoint(project), device=device, progress=stage("old"))
    new_dice = validation_dice(project, checkpoint, device=device, progress=stage("new"))
    version = register_model(project, checkpoint, parent=parent, activate=False)
    promoted = is_better(new_dice, old_dice)
    if promoted and not version.is_active:  # with no old teacher, registering activated it already
        version = activate_model(project, version.id)
    now = active_model(project)
    now_name = now.name if now is not None else None
    return RetrainOutcome("completed", out_dir, old_name, version.name, old_dice, new_dice, promoted, now_name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("run", type=Path, help="the finished run folder (holds model.safetensors)")
    parser.add_argument("--parent", help="the model version the run started from")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        with Project.open(args.project) as project:
            outcome = promote_if_better(project, args.run, parent=args.parent, device=args.device)
    except Exception as exc:  # the parent shows this line in a notification
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(outcome.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
