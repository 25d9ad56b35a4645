"""Where a structure's voxels go: for each teacher, the share of one reference class predicted as each class.

Run: .venv/bin/python benchmarks/class_confusion.py PROJECT --split test --class "cervical vertebral column"
     --model NAME=MODEL [--model NAME=MODEL ...] [--json FILE]

Each labeled case of the split is predicted once, as the product predicts it with the card's clean-up
(``Predictor.predict``), and compared voxel by voxel with its reference label (the confusion counts
``evaluate``'s Dice comes from, ``evaluation/dice.confusion_counts``). A low Dice says a structure is
missed; this says what it was taken for: a neighbouring structure of the same tissue (a vertebra of the
next region), another tissue, or background. Printed per case and teacher, then the mean over the cases.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from largest_component import labeled_cases

from napari_ssl_seg.evaluation.dice import confusion_counts
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.runtime.allocator import keep_freed_memory


def predicted_as(prediction: np.ndarray, reference: np.ndarray, target: int, num_labels: int) -> dict[int, float]:
    """Share of the reference's ``target`` voxels predicted as each label (labels with no voxel left out)."""
    counts = confusion_counts(prediction, reference, num_labels)[:, target]
    total = int(counts.sum())
    if total == 0:
        return {}
    return {label: float(count) / total for label, count in enumerate(counts) if count}


def class_id(names: dict[int, str], wanted: str) -> int:
    matches = [label for label, name in names.items() if name.lower() == wanted.lower()]
    if not matches:
        raise SystemExit(f"no class named {wanted!r} (classes: {', '.join(names.values())})")
    return matches[0]


def confusion(project_root: Path, split: str, target_name: str, models: dict[str, Path]) -> dict:
    cases = labeled_cases(project_root, split)
    if not cases:
        raise SystemExit(f"{project_root}: no labeled case in split {split!r}")
    result: dict = {"project": str(project_root), "split": split, "class": target_name, "teachers": {}}
    for teacher, model in models.items():
        predictor = Predictor.from_checkpoint(model)
        names = {int(label): name for label, name in predictor.card.classes.items()}
        target = class_id(names, target_name)
        num_labels = max(names) + 1
        per_case = {}
        for name, image, reference in cases:
            label = np.asarray(predictor.predict(image, uncertainty="none", name=name).label.array)
            shares = predicted_as(label, reference, target, num_labels)
            per_case[name] = {names.get(k, str(k)) if k else "background": v for k, v in shares.items()}
        result["teachers"][teacher] = {"model": str(model), "cases": per_case}
    return result


def print_table(result: dict) -> None:
    print(f"{result['project']} ({result['split']}): where the reference's {result['class']} voxels were predicted")
    for teacher, found in result["teachers"].items():
        cases = found["cases"]
        labels = sorted({label for shares in cases.values() for label in shares})
        print(f"\n{teacher}")
        print(f"{'case':<10}" + "".join(f"{label[:14]:>16}" for label in labels))
        for name, shares in cases.items():
            print(f"{name:<10}" + "".join(f"{shares.get(label, 0.0):>16.2f}" for label in labels))
        means = {label: float(np.mean([shares.get(label, 0.0) for shares in cases.values()])) for label in labels}
        print(f"{'mean':<10}" + "".join(f"{means[label]:>16.2f}" for label in labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--class", dest="target", required=True, help="the reference class, by its name")
    parser.add_argument("--model", action="append", required=True, help="NAME=MODEL.safetensors; repeatable")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = {}
    for item in args.model:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--model wants NAME=PATH, got {item!r}")
        models[name] = Path(path)
    keep_freed_memory()
    result = confusion(args.project, args.split, args.target, models)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
