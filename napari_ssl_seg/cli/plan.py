"""``plan``: the training recipe a project's own data calls for, with the reason for each choice."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_ssl_seg.cli.support import EXIT_OK
from napari_ssl_seg.errors import InputError

__all__ = ["add_plan_parser", "command_plan"]


def add_plan_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "plan", help="fingerprint a project's data and print the training plan (spacing, patch, network, intensity)"
    )
    parser.add_argument("project", type=Path, help="project folder")
    parser.add_argument("--device", default="auto", help="plan for this device: auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--budget", type=float, metavar="MINUTES", help="as many iterations as fit this many minutes")
    parser.add_argument("--method", default="supervised", help="the method whose measured rate sets --budget's count")
    parser.add_argument("--json", action="store_true", help="the plan and the fingerprint as one JSON object")
    parser.set_defaults(handler=command_plan)
    return parser


def _classes_line(fingerprint: Any, plan: Any) -> list[str]:
    lines = []
    for size in fingerprint.classes:
        key = str(size.label)
        thickness = "" if size.thickness_mm is None else f", {size.thickness_mm:5.1f} mm thick"
        ceiling = plan.class_ceilings.get(key)
        reach = "" if ceiling is None else f", Dice ceiling at the plan's spacing {ceiling:.2f}"
        lines.append(
            f"  {size.label:>3} {size.name:<28} {plan.class_sizes.get(key, '?'):<6} "
            f"{size.voxel_fraction:8.3%} of voxels, median {size.median_volume_ml:9.1f} ml, "
            f"in {size.cases_present} cases{thickness}{reach}"
        )
    return lines


def command_plan(args: argparse.Namespace) -> int:
    from napari_ssl_seg.training.plan import plan_project

    if not args.project.is_dir():
        raise InputError(f"project {args.project} does not exist")
    plan, fingerprint = plan_project(args.project, device=args.device, minutes=args.budget, method=args.method)
    if args.json:
        print(json.dumps({"plan": plan.to_dict(), "fingerprint": fingerprint.to_dict()}, allow_nan=False))
        return EXIT_OK
    summary = fingerprint.to_dict()["summary"]
    spacing = " x ".join(f"{v:.3g}" for v in plan.target_spacing)
    lines = [
        ("cases", f"{summary['cases']} ({summary['labeled']} labeled), {fingerprint.modality}"),
        (
            "median",
            f"{' x '.join(map(str, summary['median_shape']))} voxels at "
            f"{' x '.join(f'{v:.3g}' for v in summary['median_spacing'])} mm (z, y, x)",
        ),
        ("budget", plan.budget),
        ("spacing", f"{spacing} mm (z, y, x)"),
        ("patch", " x ".join(map(str, plan.patch_size)) + " voxels"),
        ("network", f"V-Net width {plan.base_width}, depth {plan.depth}"),
        (
            "batch",
            f"{plan.batch_labeled} labeled + {plan.batch_unlabeled} unlabeled, "
            f"{plan.foreground_oversampling:.0%} foreground-centred",
        ),
        ("intensity", json.dumps(plan.intensity)),
        ("flips", "left-right kept (no x flips, no rot90)" if plan.lateral_augmentation == "off" else "all"),
        ("brightness", "brightness, contrast and gamma changes" if plan.intensity_augmentation else "unchanged"),
        ("iterations", str(plan.iterations)),
    ]
    for key, value in lines:
        print(f"{key:<11} {value}")
    print("classes")
    print("\n".join(_classes_line(fingerprint, plan)))
    print("why")
    print("\n".join(f"  - {reason}" for reason in plan.reasons))
    return EXIT_OK
