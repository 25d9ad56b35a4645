"""What the unlabeled pool can teach: a teacher's predictions on the unlabeled training cases, scored per structure.

Run: .venv/bin/python benchmarks/pseudo_labels.py PROJECT NAME=MODEL [NAME=MODEL ...] [--json OUT]

A semi-supervised method learns, on the unlabeled cases, from its teacher's argmax (pseudo-labels) or from
agreement with it. A generated cohort keeps each unlabeled case's true label under ``reference/``, so this
measures the pseudo-labels a teacher gives, per structure (Dice and HD95 against the reference), on exactly the
cases the method trains on without labels. Each model predicts as ``evaluate`` does (its card's spacing,
normalisation and clean-up; the runs of ``ssl_plateau.py --set postprocessing=false`` have no clean-up, so their
predictions are the networks' argmax). Printed: one row per model, mean Dice and HD95 over the cases, then each
structure's Dice.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from napari_ssl_seg.evaluation.metrics import case_metrics
from napari_ssl_seg.evaluation.validation import scored_classes
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.store import Project


def score(project: Project, model: Path, device: str) -> dict[str, object]:
    cases = [c.name for c in project.cases() if c.split == "train" and not c.is_labeled]
    if not cases:
        raise SystemExit(f"{project.root}: no unlabeled training case")
    predictor = Predictor.from_checkpoint(model, device=device)
    classes = scored_classes(predictor.card)
    names = project.label_names()
    per_class: dict[str, list[float]] = {names.get(c, str(c)): [] for c in classes}
    dice, hd95 = [], []
    for name in cases:
        image = project.read_image(name)
        reference = project.read_reference_label(name).array
        predicted = predictor.predict(image, uncertainty="none", name=name).label.array
        metrics = case_metrics(predicted, reference, image.spacing, classes)
        for value, entry in metrics.items():
            per_class[names.get(value, str(value))].append(entry.dice)
        dice.append(statistics.fmean(entry.dice for entry in metrics.values()))
        finite = [entry.hd95_mm for entry in metrics.values() if entry.hd95_mm != float("inf")]
        hd95.append(statistics.fmean(finite) if finite else float("inf"))
    return {
        "cases": len(cases),
        "dice": statistics.fmean(dice),
        "hd95_mm": statistics.fmean(hd95),
        "per_class": {name: round(statistics.fmean(values), 4) for name, values in per_class.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path)
    parser.add_argument("models", nargs="+", help="NAME=MODEL.safetensors")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    keep_freed_memory()
    results: dict[str, dict[str, object]] = {}
    with Project.open(args.project) as project:
        for item in args.models:
            name, _, model = item.partition("=")
            if not model:
                raise SystemExit(f"{item!r}: give NAME=MODEL")
            results[name] = score(project, Path(model), args.device)
            print(f"{name}: {results[name]['cases']} cases, Dice {results[name]['dice']:.3f}", flush=True)
    structures = list(next(iter(results.values()))["per_class"])  # type: ignore[call-overload]
    print("\n| teacher | Dice | HD95 mm | " + " | ".join(structures) + " |")
    print("|---|---|---|" + "---|" * len(structures))
    for name, result in results.items():
        per_class = result["per_class"]
        cells = " | ".join(f"{per_class[s]:.2f}" for s in structures)  # type: ignore[index]
        print(f"| {name} | {result['dice']:.3f} | {result['hd95_mm']:.1f} | {cells} |")
    if args.json:
        args.json.write_text(json.dumps({"project": str(args.project), "models": args.models, "results": results}))


if __name__ == "__main__":
    main()
