"""The ``napari-ssl-seg`` command line: thin wrappers around the core, one module per command group.

``volume`` (info), ``project`` (init, make-cohort, status), ``inference`` (predict, rank, evaluate),
``plan``, ``train``, ``retrain``, ``adapt``, ``simulate`` and ``demo``; ``support`` holds what they share.

Every command reports unusable input as one ``error:`` line on stderr and
exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from napari_ssl_seg import __version__
from napari_ssl_seg.cli.project import command_init, command_make_cohort, command_status
from napari_ssl_seg.cli.support import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED
from napari_ssl_seg.cli.volume import command_info
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.runtime.allocator import keep_freed_memory


def command_demo(args: argparse.Namespace) -> int:
    from napari_ssl_seg.cli.demo import run_demo

    return run_demo(args.out, main, gui=False if args.headless else None)


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
    cohort.add_argument(
        "--image-interpolation",
        choices=("linear", "cubic"),
        default="linear",
        help="how the deformation samples the image: cubic keeps thin bright structures (ribs) sharper",
    )
    cohort.add_argument(
        "--label-interpolation",
        choices=("nearest", "linear"),
        default="nearest",
        help="how the label follows the image: linear keeps, per voxel, the class that covers most of it, "
        "as the image shows it; nearest aliases structures one voxel thin (ribs)",
    )
    cohort.add_argument("--json", action="store_true")
    cohort.set_defaults(handler=command_make_cohort)

    status = commands.add_parser("status", help="summarise a project and list its cases")
    status.add_argument("project", type=Path)
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=command_status)

    from napari_ssl_seg.cli.inference import add_inference_parsers

    add_inference_parsers(commands)
    from napari_ssl_seg.cli.plan import add_plan_parser

    add_plan_parser(commands)
    from napari_ssl_seg.cli.train import add_train_parser

    add_train_parser(commands)
    from napari_ssl_seg.cli.retrain import add_retrain_parser

    add_retrain_parser(commands)
    from napari_ssl_seg.cli.adapt import add_adapt_parser

    add_adapt_parser(commands)
    from napari_ssl_seg.cli.simulate import add_simulate_parser

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
