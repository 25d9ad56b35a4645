"""The ``napari-ssl-seg retrain`` command: the GUI's one-click retrain, from a terminal.

It runs a :class:`~napari_ssl_seg.training.job.RetrainJob` (training in a child process), follows
it with a progress bar on stderr, then scores the old and the new teacher on the validation split
and promotes the new one only if its Dice did not drop. Ctrl-C cancels gracefully (the run
checkpoints and nothing is registered); a second Ctrl-C kills the child.

Wiring (in cli/__init__.py): ``add_retrain_parser(commands)`` inside ``build_parser``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from napari_ssl_seg.cli.train import add_training_arguments
from napari_ssl_seg.errors import InputError

__all__ = ["add_retrain_parser", "command_retrain"]

POLL_SECONDS = 0.2
EXIT_INTERRUPTED = 130


def add_retrain_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``retrain`` sub-command to an ``add_subparsers()`` object; return its parser."""
    parser = commands.add_parser(
        "retrain",
        help="fine-tune the active model on the current labels; activate it only if validation Dice does not drop",
    )
    parser.add_argument("project", type=Path, help="project folder (must have an active model)")
    parser.add_argument("--method", help="method to train (default: the active model's)")
    add_training_arguments(
        parser,
        set_help="override a training setting (as for `train`); repeatable",
        config_help="preset (default: finetune, the fine-tuning schedule for a trained teacher)",
        default_config="finetune",
    )
    parser.add_argument("--out", type=Path, help="run folder (default: PROJECT/runs/retrain-<UTC time>)")
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    parser.set_defaults(handler=command_retrain)
    return parser


def _follow(job: Any, bar: Any) -> None:
    """Poll until the process ends, moving the bar to each logged iteration."""
    while True:
        for event in job.poll():
            if event.kind == "state":
                return
            bar.update(max(0, event.iteration - bar.n))
            if event.loss is not None:
                bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)
            elif event.dice is not None:
                bar.set_postfix(val_dice=f"{event.dice:.4f}", refresh=False)
        time.sleep(POLL_SECONDS)


def _dice(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def command_retrain(args: argparse.Namespace) -> int:
    """Handler of ``retrain``: 0 when the run completed (promoted or not), 130 cancelled, else failed."""
    from tqdm import tqdm

    from napari_ssl_seg.training.batchnorm import run_statistics_summary
    from napari_ssl_seg.training.job import RetrainJob

    if not args.project.is_dir():
        raise InputError(f"project {args.project} does not exist")
    job = RetrainJob.start(
        args.project,
        method=args.method,
        config=args.config,
        iterations=args.iterations,
        overrides=args.overrides,
        out_dir=args.out,
        device=args.device,
        niceness=0,  # the user is waiting for this one
    )
    print(f"retraining {job.method} in {job.out_dir} (process {job.pid})", file=sys.stderr)
    bar = tqdm(total=job.total, desc="retraining", unit="it", file=sys.stderr)
    try:
        while True:
            try:
                _follow(job, bar)
                break
            except KeyboardInterrupt:
                if job.cancel_requested:
                    job.kill()
                else:
                    job.cancel()
                    print("\ncancelling: the run stops at its next iteration (Ctrl-C again kills it)", file=sys.stderr)
    finally:
        bar.close()
        job.kill()  # no-op once it has ended; never leave a run behind after an unexpected error
    if job.state == "completed":
        print("scoring the old and the new model on the validation split", file=sys.stderr)
    outcome = job.finish(args.project)
    if args.json:
        print(json.dumps(outcome.as_dict()))
    elif outcome.state == "completed":
        print(f"run             {outcome.out_dir}")
        print(f"old model       {outcome.old_version or 'none'} (validation Dice {_dice(outcome.old_dice)})")
        print(f"new model       {outcome.new_version} (validation Dice {_dice(outcome.new_dice)})")
        if note := run_statistics_summary(outcome.out_dir / "log.jsonl", job.total):
            print(note)
        if outcome.promoted:
            print(f"promoted        yes: {outcome.new_version} is now the active model")
        else:
            print(f"promoted        no: validation Dice dropped, {outcome.active_version} stays active")
    else:
        iteration, total = job.progress
        print(f"retrain {outcome.state} at iteration {iteration}/{total}; nothing registered", file=sys.stderr)
        print(f"active model    {outcome.active_version or 'none'} (unchanged)")
    if outcome.state == "completed":
        return 0
    if outcome.state == "cancelled":
        return EXIT_INTERRUPTED
    print(f"error: retrain failed: {outcome.error} (see {job.stderr_path})", file=sys.stderr)
    return 1
