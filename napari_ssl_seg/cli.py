"""The ``napari-ssl-seg`` command line: thin wrappers around the core.

Every command reports unusable input as one ``error:`` line on stderr and
exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from napari_ssl_seg import __version__
from napari_ssl_seg.allocator import keep_freed_memory
from napari_ssl_seg.cli_support import print_notes, progress_bar
from napari_ssl_seg.errors import InputError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _format_number(value: float) -> str:
    return f"{value:.6g}"


def command_info(args: argparse.Namespace) -> int:
    from napari_ssl_seg.io import read_volume

    volume = read_volume(args.path)
    print_notes(volume.notes)
    info = volume.geometry_dict()
    if args.json:
        print(json.dumps(info))
        return EXIT_OK
    direction = info["direction"]
    rows = [" ".join(_format_number(v) for v in direction[i : i + 3]) for i in (0, 3, 6)]
    lines = [
        ("file", f"{args.path} ({info['format']})"),
        ("shape", " x ".join(str(n) for n in info["shape"]) + "  (z, y, x)"),
        ("spacing", " x ".join(_format_number(s) for s in info["spacing"]) + " mm  (z, y, x)"),
        ("origin", ", ".join(_format_number(o) for o in info["origin"]) + " mm  (LPS x, y, z)"),
        ("direction", " | ".join(rows) + "  (ITK, row-major)"),
        ("dtype", info["dtype"]),
        ("range", f"{_format_number(info['min'])} .. {_format_number(info['max'])}"),
    ]
    if volume.modality:
        lines.append(("modality", volume.modality))
    if volume.label_names:
        lines.append(("labels", ", ".join(f"{value}={name}" for value, name in sorted(volume.label_names.items()))))
    for key, value in lines:
        print(f"{key:<10} {value}")
    return EXIT_OK


def command_init(args: argparse.Namespace) -> int:
    from napari_ssl_seg.store.importer import import_into_new_project

    project = import_into_new_project(
        args.project, args.images, args.labels, seed=args.seed, progress=progress_bar("importing")
    )
    with project:
        return _print_status(project, as_json=args.json)


def command_make_cohort(args: argparse.Namespace) -> int:
    from napari_ssl_seg.data.cohort_project import build_cohort_project
    from napari_ssl_seg.sample_data import sample_path

    base = args.base or sample_path("CTChest4.nrrd")
    base_label = args.base_label or (sample_path("Segmentation.seg.nrrd") if args.base is None else None)
    if base_label is None:
        raise InputError("--base needs --base-label: the cohort's labels are deformed from the base's")
    project = build_cohort_project(
        args.out,
        base,
        base_label,
        cases=args.cases,
        seed=args.seed,
        labeled=args.labeled,
        progress=progress_bar("generating"),
    )
    with project:
        return _print_status(project, as_json=args.json)


def command_status(args: argparse.Namespace) -> int:
    from napari_ssl_seg.store import Project

    with Project.open(args.project) as project:
        return _print_status(project, as_json=args.json)


def _print_status(project, *, as_json: bool) -> int:
    summary = project.summary()
    cases = project.cases()
    if as_json:
        summary["case_list"] = [
            {
                "name": case.name,
                "split": case.split,
                "shape": list(case.shape),
                "spacing": list(case.spacing),
                "label_version": case.latest_label_version,
                "label_author": case.latest_label_author,
            }
            for case in cases
        ]
        print(json.dumps(summary))
        return EXIT_OK
    splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
    print(f"project   {summary['project']}  (seed {summary['seed']})")
    print(f"cases     {summary['cases']} ({summary['labeled']} labeled; {splits})")
    print(f"{'case':<24} {'split':<11} {'shape (z,y,x)':<16} {'spacing mm':<20} label")
    for case in cases:
        shape = "x".join(str(n) for n in case.shape)
        spacing = "x".join(f"{s:.3g}" for s in case.spacing)
        label = f"v{case.latest_label_version} by {case.latest_label_author}" if case.is_labeled else "-"
        print(f"{case.name:<24} {case.split:<11} {shape:<16} {spacing:<20} {label}")
    return EXIT_OK


def command_demo(args: argparse.Namespace) -> int:
    from napari_ssl_seg.demo import run_demo

    return run_demo(args.out, gui=False if args.headless else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-ssl-seg",
        description="Uncertainty-guided semi-supervised labeling of 3D medical volumes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="print a volume's geometry, type and value range")
    info.add_argument("path", type=Path, help="NIfTI, NRRD, MHA/MHD file or DICOM folder")
    info.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    info.set_defaults(handler=command_info)

    init = commands.add_parser("init", help="create a project from an image folder (and labels) or a Decathlon folder")
    init.add_argument("project", type=Path, help="new project folder (must not exist or be empty)")
    init.add_argument("--images", type=Path, required=True, help="images folder, or a Decathlon dataset folder")
    init.add_argument("--labels", type=Path, help="labels folder (matched to images by case name)")
    init.add_argument("--seed", type=int, default=0, help="seed of the train/validation/test split")
    init.add_argument("--json", action="store_true")
    init.set_defaults(handler=command_init)

    cohort = commands.add_parser("make-cohort", help="generate a multi-case project from one labeled volume")
    cohort.add_argument("out", type=Path, help="new project folder")
    cohort.add_argument("--base", type=Path, help="base image (default: the bundled chest CT)")
    cohort.add_argument("--base-label", type=Path, help="base label map (default: the bundled chest segmentation)")
    cohort.add_argument("--cases", type=int, default=20)
    cohort.add_argument("--seed", type=int, default=0)
    cohort.add_argument(
        "--labeled",
        type=int,
        help="label only this many training cases; the others keep their ground truth as a withheld reference",
    )
    cohort.add_argument("--json", action="store_true")
    cohort.set_defaults(handler=command_make_cohort)

    status = commands.add_parser("status", help="summarise a project and list its cases")
    status.add_argument("project", type=Path)
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=command_status)

    from napari_ssl_seg.inference.command import add_inference_parsers

    add_inference_parsers(commands)
    from napari_ssl_seg.training.command import add_train_parser

    add_train_parser(commands)
    from napari_ssl_seg.training.retrain_command import add_retrain_parser

    add_retrain_parser(commands)
    from napari_ssl_seg.active.command import add_simulate_parser

    add_simulate_parser(commands)

    demo = commands.add_parser("demo", help="run the end-to-end loop on the bundled sample data")
    demo.add_argument("--out", type=Path, default=Path("demo_output"), help="folder for the demo's projects")
    demo.add_argument("--headless", action="store_true", help="never open napari, even with a display")
    demo.set_defaults(handler=command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        return args.handler(args)
    except InputError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        # The file system refused (a file where a folder should be, permissions, a full disk):
        # the user's environment, not a bug, so one line and the bad-input status.
        if args.debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        if args.debug:
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); rerun with --debug for details", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
