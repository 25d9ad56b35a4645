"""The ``napari-ssl-seg train`` command: argument parsing, a progress bar, a summary.

Wiring (in cli/__init__.py): ``from napari_ssl_seg.cli.train import add_train_parser`` and
``add_train_parser(commands)`` inside ``build_parser``; the sub-parser sets its own handler.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.method_names import method_choices

if TYPE_CHECKING:
    from napari_ssl_seg.training.config import TrainConfig

__all__ = [
    "add_train_parser",
    "add_training_arguments",
    "command_train",
    "default_out_dir",
    "stop_on_terminate",
    "timestamped_dir",
    "training_config",
]


def add_training_arguments(
    parser: argparse.ArgumentParser,
    *,
    set_help: str,
    config_help: str = (
        "plan (default: made from the project's data for the device, see `napari-ssl-seg plan`), or a preset: "
        "quick (CPU, minutes), paper (GPU, the papers') or finetune (from a teacher)"
    ),
    iterations_help: str = "override the preset's iteration count",
    default_config: str | None = "plan",
    budget_flag: str = "--budget",
) -> None:
    """Add ``--config``, ``--budget``, ``--iterations``, ``--set`` (in ``args.overrides``) and ``--device``.

    Shared by ``train``, ``retrain`` and ``simulate`` so the three pick a training config and a
    device alike; :func:`training_config` applies them.
    """
    parser.add_argument("--config", default=default_config, help=config_help)
    parser.add_argument(
        budget_flag,
        dest="plan_minutes",
        type=float,
        metavar="MINUTES",
        help="with --config plan: as many iterations as fit this many minutes",
    )
    parser.add_argument("--iterations", type=int, help=iterations_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def training_config(args: argparse.Namespace, project: Path | None = None) -> TrainConfig:
    """The ``--config`` preset (or ``project``'s plan) with ``--method``, each ``--set``, then ``--iterations``."""
    from napari_ssl_seg.training.config import apply_overrides, preset

    overrides = [f"method={args.method}", *args.overrides]
    if args.iterations is not None:
        overrides.append(f"iterations={args.iterations}")
    if args.config != "plan":
        if getattr(args, "plan_minutes", None) is not None:
            raise InputError("a training budget in minutes needs --config plan (a preset has its own iteration count)")
        return apply_overrides(preset(args.config), overrides)
    from napari_ssl_seg.training.budget import BUDGETS
    from napari_ssl_seg.training.plan import PLAN_WARNING, plan_project, planned_config

    if project is None:
        raise InputError("--config plan needs a project to plan from")
    plan, _ = plan_project(project, device=args.device, minutes=getattr(args, "plan_minutes", None), method=args.method)
    for warning in plan.warnings:
        print(PLAN_WARNING + warning, file=sys.stderr)
    return apply_overrides(planned_config(plan, preset(BUDGETS[plan.budget].preset)), overrides)


def add_train_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to an ``add_subparsers()`` object; return its parser."""
    parser = commands.add_parser("train", help="train or fine-tune a segmentation model on a project")
    parser.add_argument("project", type=Path, help="project folder")
    parser.add_argument("--method", required=True, help=method_choices())
    parser.add_argument("--init", type=Path, help="start from this model (.safetensors/.json): fine-tuning")
    parser.add_argument("--out", type=Path, help="run folder (default: PROJECT/runs/<time>-<method>)")
    add_training_arguments(
        parser, set_help="override a setting (e.g. lr=0.005, patch_size=16,64,64, settings.ema_decay=0.99); repeatable"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.set_defaults(handler=command_train)
    return parser


def timestamped_dir(parent: Path, suffix: str) -> Path:
    """``parent/<local time>-<suffix>``: a new folder name per run that sorts by start time."""
    return parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"


def default_out_dir(project: Path, method: str) -> Path:
    return timestamped_dir(project / "runs", method)


class _Bar:
    """tqdm on stderr: loss, it/s and ETA, created lazily at the first report."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, iteration: int, total: int, logs: Mapping[str, Any]) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, initial=iteration - 1, desc="training", unit="it", file=sys.stderr)
        self.bar.update(iteration - self.bar.n)
        loss = logs.get("loss", logs.get("step0/loss"))
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def stop_on_terminate() -> Iterator[Callable[[], bool]]:
    """Yield a ``should_stop`` for :func:`train` that turns true once SIGTERM (Windows: SIGBREAK) arrives.

    A background retrain (``training/job.py``) cancels by SIGTERM: the run then checkpoints at the
    next iteration and exits normally as "cancelled" instead of dying mid-write. Signal handlers
    can only be installed from the main thread; elsewhere (a test calling the handler in a worker)
    the default behaviour stays and ``should_stop`` is always false.
    """
    requested: list[int] = []
    names = [name for name in ("SIGTERM", "SIGBREAK") if hasattr(signal, name)]
    previous: dict[int, Any] = {}
    for name in names:
        number = getattr(signal, name)
        try:
            previous[number] = signal.signal(number, lambda signum, frame: requested.append(signum))
        except ValueError:  # not the main thread
            break
    try:
        yield lambda: bool(requested)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def command_train(args: argparse.Namespace) -> int:
    """Handler of ``train``: builds the config, runs :func:`train`, prints a summary; returns 0."""
    from napari_ssl_seg.methods.registry import method_class
    from napari_ssl_seg.training.batchnorm import run_statistics_summary
    from napari_ssl_seg.training.loop import train

    if not args.project.is_dir():
        raise InputError(f"project {args.project} does not exist")
    method_class(args.method)  # unknown or unavailable method: fail before anything is read
    config = training_config(args, args.project)
    if args.resume and args.out is None:
        raise InputError("--resume needs --out: the run folder to continue")
    out = args.out or default_out_dir(args.project, args.method)
    bar = _Bar()
    command = shlex.join(["napari-ssl-seg", *sys.argv[1:]]) if sys.argv else None
    try:
        with stop_on_terminate() as should_stop:
            result = train(
                args.project,
                config,
                out,
                init_model=args.init,
                device=args.device,
                progress=bar,
                should_stop=should_stop,
                command=command,
                resume=args.resume,
            )
    finally:
        bar.close()
    dice = "n/a" if result.best_validation_dice is None else f"{result.best_validation_dice:.4f}"
    print(f"status          {result.status} after {result.iterations} iterations")
    print(f"model           {result.model_path or 'none (no validation yet)'}")
    print(f"best validation Dice {dice} (iteration {result.best_iteration})")
    if note := run_statistics_summary(result.log_path, result.iterations):
        print(note)
    print(f"log             {result.log_path}")
    if result.status == "cancelled":
        print(f"resume with     napari-ssl-seg train {args.project} --method {args.method} --out {out} --resume")
    return 0
