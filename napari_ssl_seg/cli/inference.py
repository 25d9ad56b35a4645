"""The ``predict`` and ``rank`` commands: thin wrappers around the predictor and the ranking."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_ssl_seg.cli.support import print_notes, progress_bar
from napari_ssl_seg.errors import InputError

__all__ = ["add_inference_parsers"]

OUTPUT_FORMATS = (".nii.gz", ".nrrd", ".mha")


def _window_progress(description: str):
    bar = progress_bar(description, unit="window")
    return lambda done, total: bar(done, total, "")


def command_predict(args: argparse.Namespace) -> int:
    from napari_ssl_seg.inference.case_scores import model_scores
    from napari_ssl_seg.inference.predictor import Predictor
    from napari_ssl_seg.io import read_volume, write_volume
    from napari_ssl_seg.io.read import case_stem

    if args.format not in OUTPUT_FORMATS:
        raise InputError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}")
    volume = read_volume(args.image)
    print_notes(volume.notes)
    predictor = Predictor.from_checkpoint(args.model, device=args.device, amp=not args.float32)
    prediction = predictor.predict(
        volume,
        uncertainty=args.uncertainty,
        samples=args.samples,
        bald=args.bald,
        progress=None if args.json else _window_progress("predicting"),
        name=str(args.image),
    )
    print_notes(prediction.notes)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = case_stem(args.image)
    written = {"label": write_volume(prediction.label, args.out / f"{stem}_label{args.format}")}
    if prediction.uncertainty is not None:
        written["entropy"] = write_volume(prediction.uncertainty, args.out / f"{stem}_entropy{args.format}")
    if prediction.mutual_information is not None:
        written["mutual_information"] = write_volume(
            prediction.mutual_information, args.out / f"{stem}_mutual_information{args.format}"
        )
    summary = prediction.summary()
    if prediction.uncertainty is not None:
        summary["scores"] = model_scores(
            prediction.uncertainty.array, prediction.label.array, volume.spacing, prediction.num_classes
        )
    summary["files"] = {key: str(path) for key, path in written.items()}
    summary["model"] = {"method": predictor.card.method, "path": str(args.model)}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"model        {predictor.card.method} ({args.model})")
    print(f"uncertainty  {summary['uncertainty']} (T={summary['samples']}) on {summary['device']}")
    print(f"time         {summary['seconds']:.2f} s for {' x '.join(map(str, volume.shape))} voxels")
    if prediction.largest_component:
        names = ", ".join(predictor.card.classes.get(c, str(c)) for c in prediction.largest_component)
        print(f"islands      removed from {names} (the card keeps each one's largest component)")
    for key, value in summary.get("scores", {}).items():
        print(f"{key:<20} {value:.4f}")
    for key, path in written.items():
        print(f"wrote        {path}  ({key})")
    return 0


def command_rank(args: argparse.Namespace) -> int:
    from napari_ssl_seg.active.ranking import rank_project
    from napari_ssl_seg.store import Project

    with Project.open(args.project) as project:
        result = rank_project(
            project,
            model=args.model,
            strategy=args.strategy,
            device=args.device,
            samples=args.samples,
            uncertainty=args.uncertainty,
            force=args.force,
            progress=progress_bar("ranking"),
        )
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    model = result.model.name if result.model else "none"
    print(f"strategy  {result.strategy}   model {model}")
    print(f"predicted {len(result.predicted)} case(s), reused {len(result.reused)} earlier score(s)")
    if not result.queue:
        print("no unlabeled training cases: nothing to rank", file=sys.stderr)
        return 0
    print(f"{'rank':<5} {'case':<24} score")
    for index, (name, score) in enumerate(result.queue, start=1):
        print(f"{index:<5} {name:<24} {score:.6g}")
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from napari_ssl_seg.evaluation.evaluate import evaluate_project
    from napari_ssl_seg.evaluation.metrics import format_table
    from napari_ssl_seg.store import Project

    with Project.open(args.project) as project:
        evaluation = evaluate_project(
            project,
            args.model,
            split=args.split,
            device=args.device,
            with_uncertainty=args.uncertainty_report,
            samples=args.samples,
            progress=progress_bar("evaluating"),
        )
    if args.json:
        print(json.dumps(evaluation.as_dict(), allow_nan=False))
        return 0
    print(format_table(evaluation.per_case, evaluation.summary, evaluation.class_names))
    if evaluation.uncertainty is not None:
        report = evaluation.uncertainty
        auroc = report["auroc_entropy_vs_error"]
        print(f"\nuncertainty on {report['voxels']} sampled voxels (error rate {report['error_rate']:.4f})")
        print(f"AUROC of entropy for misclassified voxels  {'n/a' if auroc is None else f'{auroc:.4f}'}")
        print(f"expected calibration error                 {report['ece']:.4f}")
        for key, value in report["spearman_score_vs_1_minus_dice"].items():
            print(
                f"Spearman({key}, 1 - Dice){'':<{max(0, 20 - len(key))}} {'n/a' if value is None else f'{value:.3f}'}"
            )
    return 0


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    from napari_ssl_seg.inference import UNCERTAINTY_KINDS

    parser.add_argument("--samples", type=int, default=8, help="MC-dropout passes T (default 8)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY_KINDS,
        help="mc_dropout (default when the model has dropout), fast (last-layer MC dropout), "
        "disagreement (teacher vs student), none",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")


def add_inference_parsers(commands: argparse._SubParsersAction) -> None:
    from napari_ssl_seg.active.strategies import DEFAULT_STRATEGY, STRATEGIES

    predict = commands.add_parser("predict", help="segment a volume and write its label and uncertainty maps")
    predict.add_argument("image", type=Path, help="NIfTI, NRRD, MHA file or DICOM folder")
    predict.add_argument("--model", type=Path, required=True, help="model .safetensors (its .json card beside it)")
    predict.add_argument("--out", type=Path, required=True, help="output folder")
    predict.add_argument("--bald", action="store_true", help="also write the mutual-information (BALD) map")
    predict.add_argument("--format", default=".nii.gz", help="output format: .nii.gz (default), .nrrd or .mha")
    predict.add_argument(
        "--float32",
        action="store_true",
        help="run the network in float32 (default: the device's mixed precision, bfloat16 on CPUs that have it)",
    )
    _add_model_options(predict)
    predict.set_defaults(handler=command_predict)

    rank = commands.add_parser("rank", help="score a project's unlabeled cases and print the labeling queue")
    rank.add_argument("project", type=Path)
    rank.add_argument("--model", type=Path, help="model to rank with (registered in the project); default: active")
    rank.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY)
    rank.add_argument("--force", action="store_true", help="re-predict cases this model already scored")
    _add_model_options(rank)
    rank.set_defaults(handler=command_rank)

    evaluate = commands.add_parser("evaluate", help="Dice, Jaccard, HD95 and ASD (mm) of a model on a project split")
    evaluate.add_argument("project", type=Path)
    evaluate.add_argument("--model", type=Path, required=True)
    evaluate.add_argument("--split", choices=("train", "validation", "test"), default="test")
    evaluate.add_argument(
        "--uncertainty",
        dest="uncertainty_report",
        action="store_true",
        help="also report AUROC of entropy for errors, calibration (ECE) and Spearman of case scores vs 1 - Dice",
    )
    evaluate.add_argument("--samples", type=int, default=8, help="MC-dropout passes T for --uncertainty")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(handler=command_evaluate)
