"""The ``napari-ssl-seg simulate`` command: a simulated labeling session, one table or JSON.

Wiring (in cli/__init__.py): ``from napari_ssl_seg.cli.simulate import add_simulate_parser`` and
``add_simulate_parser(commands)`` inside ``build_parser``; the sub-parser sets its own handler.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_ssl_seg.cli.train import add_training_arguments, timestamped_dir, training_config
from napari_ssl_seg.errors import InputError

__all__ = ["add_simulate_parser", "command_simulate", "default_work_dir"]


def add_simulate_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``simulate`` sub-command to an ``add_subparsers()`` object; return its parser."""
    from napari_ssl_seg.active.simulation import PROMOTIONS
    from napari_ssl_seg.active.strategies import DEFAULT_STRATEGY, STRATEGIES
    from napari_ssl_seg.inference import UNCERTAINTY_KINDS

    parser = commands.add_parser(
        "simulate",
        help="simulate labeling sessions on a fully labeled project: test Dice per labeled case, per strategy",
        description="Label a copy of PROJECT round by round: each round reveals the ground truth of the case(s) "
        "the strategy picks, fine-tunes the previous teacher and evaluates it on the test split. "
        "The project itself is never changed.",
    )
    parser.add_argument("project", type=Path, help="project whose training cases all have a label or reference label")
    parser.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY, help="which case is labeled next")
    parser.add_argument("--budget", type=int, default=1, help="cases labeled per round (default 1)")
    parser.add_argument("--rounds", type=int, help="labeling rounds (default: until the unlabeled pool is used up)")
    parser.add_argument("--initial", type=int, default=2, help="training cases labeled before round 1 (default 2)")
    parser.add_argument("--seeds", type=int, default=1, help="repeat with seeds 0..K-1 (default 1)")
    parser.add_argument("--method", default="supervised", help="training method of every round (default supervised)")
    add_training_arguments(
        parser,
        set_help="override a training setting, as for `train --set`; repeatable",
        config_help=(
            "plan (default: from the project's data), or a training preset: quick (CPU, from scratch), "
            "finetune (from a teacher, with --init), paper (GPU)"
        ),
        iterations_help="training iterations per round (default: the plan's or the preset's)",
        budget_flag="--train-minutes",
    )
    parser.add_argument("--init", type=Path, help="teacher that round 0 fine-tunes from (default: train from scratch)")
    parser.add_argument(
        "--promotion",
        choices=PROMOTIONS,
        default=PROMOTIONS[0],
        help="validation (default): a fine-tuned teacher replaces the previous one only if it validates at least as "
        "well, as the one-click retrain does; always: every fine-tuned teacher goes on",
    )
    parser.add_argument(
        "--work", type=Path, help="new folder for the copies and runs (default PROJECT/simulations/<time>-<strategy>)"
    )
    parser.add_argument("--samples", type=int, default=8, help="MC-dropout passes T when ranking (default 8)")
    parser.add_argument("--uncertainty", choices=UNCERTAINTY_KINDS, help="uncertainty kind used for ranking")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.set_defaults(handler=command_simulate)
    return parser


def default_work_dir(project: Path, strategy: str) -> Path:
    # Beside the project's runs/: the database and label files are never touched, only this folder is new.
    return timestamped_dir(project / "simulations", strategy)


def command_simulate(args: argparse.Namespace) -> int:
    """Handler of ``simulate``: checks the input, runs the sessions, prints a table or JSON; returns 0."""
    from napari_ssl_seg.active.simulation import SimulationSettings, simulate
    from napari_ssl_seg.cli.support import progress_bar

    if not args.project.is_dir():
        raise InputError(f"project {args.project} does not exist")
    if args.seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {args.seeds}")
    if args.init is not None and not args.init.is_file():
        raise InputError(f"--init model {args.init} does not exist")
    config = training_config(args, args.project)
    settings = SimulationSettings(
        strategy=args.strategy,
        budget=args.budget,
        rounds=args.rounds,
        initial=args.initial,
        seeds=tuple(range(args.seeds)),
        samples=args.samples,
        uncertainty=args.uncertainty,
        init_model=args.init,
        device=args.device,
        promotion=args.promotion,
    )
    work = args.work or default_work_dir(args.project, args.strategy)
    result = simulate(args.project, work, config, settings, progress=progress_bar("simulating", unit="round"))
    if args.json:
        print(json.dumps(result.as_dict(), allow_nan=False))
        return 0
    print(f"strategy  {result.strategy}   method {result.method}   work {result.work_dir}")
    print(f"{'seed':<5} {'round':<6} {'labeled':<8} {'test Dice':<10} {'HD95 mm':<8} {'teacher':<9} picked")
    for record in result.records:
        picked = ", ".join(record.picked) or "(initial: " + ", ".join(record.labeled_cases) + ")"
        teacher = "new" if record.promoted else "kept"
        hd95 = "-" if record.test_hd95_mm is None else f"{record.test_hd95_mm:.1f}"
        print(
            f"{record.seed:<5} {record.round:<6} {record.labeled:<8} {record.test_dice:<10.4f} {hd95:<8} "
            f"{teacher:<9} {picked}"
        )
    print(
        f"\n{'labeled':<8} {'mean Dice':<10} {'std':<8} {'HD95 mm':<8} {'std':<6} {'seeds':<6} "
        "corrected (voxels changed / from scratch)"
    )
    for point in result.curve():
        ratio = point["correction_mean"]
        corrected = "-" if ratio is None else f"{100 * ratio:.1f}%"
        dice = f"{point['dice_mean']:<10.4f} {point['dice_std']:<8.4f}"
        hd95 = "-" if point["hd95_mean"] is None else f"{point['hd95_mean']:.1f}"
        hd95_std = "-" if point["hd95_std"] is None else f"{point['hd95_std']:.1f}"
        print(f"{point['labeled']:<8} {dice} {hd95:<8} {hd95_std:<6} {point['seeds']:<6} {corrected}")
    return 0
