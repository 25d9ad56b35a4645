"""``init``, ``make-cohort`` and ``status``: making a project and looking at it."""

from __future__ import annotations

import argparse
import json

from napari_ssl_seg.cli.support import EXIT_OK, progress_bar
from napari_ssl_seg.errors import InputError


def command_init(args: argparse.Namespace) -> int:
    from napari_ssl_seg.store.importer import import_into_new_project

    project = import_into_new_project(
        args.project, args.images, args.labels, seed=args.seed, progress=progress_bar("importing")
    )
    with project:
        return _print_status(project, as_json=args.json)


def command_make_cohort(args: argparse.Namespace) -> int:
    from napari_ssl_seg.cohort.cohort_project import build_cohort_project
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
        image_interpolation=args.image_interpolation,
        label_interpolation=args.label_interpolation,
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
