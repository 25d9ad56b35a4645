"""The same teachers scored against two references of the same test images: nearest labels and labels that follow
the image.

Run: .venv/bin/python benchmarks/reference_labels.py --nearest build/label_gap/cohort_2
     --linear build/label_gap_lin/cohort_2 --model NAME=PATH [--model NAME=PATH ...] [--split test] [--json OUT]

Two cohort projects generated with the same seed and ``--label-interpolation nearest`` and ``linear`` hold the
same draws; where a case's crop or redraw came out differently (the crop looks at the label) its images differ and
it is skipped and counted. Each teacher predicts each shared case once (the product's predictor, as
``evaluate`` runs it) and the prediction is scored against both labels (``evaluation.metrics.case_metrics``, the
evaluation's rule): mean Dice, HD95, ASD and each structure's Dice. What the two columns separate: how much of a
teacher's measured error is the reference's own aliasing (it moves with the reference), and how much is the
teacher's (it stays).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl_seg.evaluation.metrics import case_metrics, summarise
from napari_ssl_seg.evaluation.validation import scored_classes
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.store import Project

REFERENCES = ("nearest", "linear")


def shared_cases(nearest: Project, linear: Project, split: str) -> tuple[list[str], list[str]]:
    """The labeled ``split`` cases whose images are identical in both projects, and those whose images differ."""
    same, different = [], []
    for case in nearest.cases():
        if case.split != split or not case.is_labeled:
            continue
        first, second = nearest.read_image(case.name), linear.read_image(case.name)
        identical = first.array.shape == second.array.shape and np.array_equal(first.array, second.array)
        same_grid = np.allclose(first.spacing, second.spacing) and np.allclose(first.origin, second.origin)
        identical = identical and same_grid
        (same if identical else different).append(case.name)
    return same, different


def _summary(per_case: dict[str, Any], names: dict[int, str]) -> dict[str, Any]:
    summary = summarise(per_case)
    overall = summary["overall"]
    return {
        "dice": round(float(overall["dice_mean"]), 4),
        "hd95_mm": overall["hd95_mm_mean"],
        "asd_mm": overall["asd_mm_mean"],
        "per_class": {
            names.get(int(value), str(value)): round(float(entry["dice_mean"]), 4)
            for value, entry in summary["classes"].items()
        },
    }


def score(model: Path, projects: dict[str, Project], cases: list[str], device: str) -> dict[str, Any]:
    predictor = Predictor.from_checkpoint(model, device=device)
    classes = scored_classes(predictor.card)
    names = {int(k): v for k, v in predictor.card.classes.items()}
    per_case: dict[str, dict[str, Any]] = {reference: {} for reference in REFERENCES}
    for name in cases:
        image = projects["nearest"].read_image(name)
        predicted = predictor.predict(image, uncertainty="none", name=name).label.array
        for reference in REFERENCES:
            label = projects[reference].read_label(name).array
            per_case[reference][name] = case_metrics(predicted, label, image.spacing, classes)
    return {reference: _summary(per_case[reference], names) for reference in REFERENCES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nearest", type=Path, required=True, help="the cohort project with nearest labels")
    parser.add_argument("--linear", type=Path, required=True, help="the same cohort with labels that follow the image")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--split", default="test")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = dict(item.split("=", 1) for item in args.model)
    with Project.open(args.nearest) as nearest, Project.open(args.linear) as linear:
        cases, skipped = shared_cases(nearest, linear, args.split)
        if not cases:
            raise SystemExit(f"no {args.split} case has the same image in both projects")
        print(f"{len(cases)} {args.split} cases with identical images; skipped (images differ): {skipped or 'none'}")
        results = {}
        print("| teacher | Dice, nearest reference | Dice, linear reference | HD95 mm, nearest / linear |")
        print("|---|---|---|---|")
        for name, path in models.items():
            results[name] = score(Path(path), {"nearest": nearest, "linear": linear}, cases, args.device)
            near, lin = results[name]["nearest"], results[name]["linear"]
            print(f"| {name} | {near['dice']:.3f} | {lin['dice']:.3f} | {near['hd95_mm']:.1f} / {lin['hd95_mm']:.1f} |")
            for structure in near["per_class"]:
                print(f"|   {structure} | {near['per_class'][structure]:.3f} | {lin['per_class'][structure]:.3f} | |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"cases": cases, "skipped": skipped, "split": args.split, "models": models, "results": results}
        args.json.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
