"""The ``napari-ssl-seg adapt`` command: the active teacher's BatchNorm statistics re-estimated over the scans.

No labels needed, nothing trained (training/adapt.py says why and what it measured); the adapted teacher
is a new model version, activated when it validates at least as well, or when there is no labeled
validation case to decide on. The Teacher dock runs it as a child process with ``--json``.

Wiring (in cli/__init__.py): ``add_adapt_parser(commands)`` inside ``build_parser``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_ssl_seg.errors import InputError

__all__ = ["add_adapt_parser", "command_adapt"]


def add_adapt_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``adapt`` sub-command to an ``add_subparsers()`` object; return its parser."""
    parser = commands.add_parser(
        "adapt", help="adapt the active teacher to the project's own scans (BatchNorm statistics; no labels needed)"
    )
    parser.add_argument("project", type=Path, help="project folder (must have an active model)")
    parser.add_argument(
        "--model", type=Path, help="a model file to register and make active first (a shipped teacher, a colleague's)"
    )
    parser.add_argument("--batches", type=int, default=100, help="batches of 4 patches to estimate from (100)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    parser.set_defaults(handler=command_adapt)
    return parser


def command_adapt(args: argparse.Namespace) -> int:
    """Handler of ``adapt``: prints what changed in the registry; returns 0."""
    from napari_ssl_seg.store import Project
    from napari_ssl_seg.store.models import register_model
    from napari_ssl_seg.training.adapt import adapt_active_teacher

    if not args.project.is_dir():
        raise InputError(f"project {args.project} does not exist")
    with Project.open(args.project) as project:
        if args.model is not None:
            registered = register_model(project, args.model, activate=True)
            print(f"registered      {registered.name} from {args.model}, now the active teacher", file=sys.stderr)
        outcome = adapt_active_teacher(project, batches=args.batches, device=args.device)
    if args.json:
        print(json.dumps(outcome.as_dict()))
        return 0
    print(f"adapted         {outcome.old_version} -> {outcome.new_version} ({outcome.cases} training cases)")
    if outcome.validated:
        print(f"validation Dice {outcome.old_dice:.4f} -> {outcome.new_dice:.4f}")
    else:
        print("validation Dice not measured: the project has no labeled validation case")
    verdict = "yes" if outcome.promoted else f"no: {outcome.old_version} validates better and stays active"
    print(f"activated       {verdict}")
    print(f"active model    {outcome.active_version} (the other stays registered: roll back in the Teacher dock)")
    return 0
