"""Copy a trained teacher into models/ as float16, with its test-split metrics added to the card.

Run: .venv/bin/python scripts/ship_teacher.py RUN/model.safetensors models/NAME --project COHORT
     --cohort-command "napari-ssl-seg make-cohort ..."
(scripts/ship_teachers.sh runs the whole recipe.) The card keeps the training command, seed, label
versions and validation metrics the loop wrote; this adds how the cohort was made and the test Dice.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from napari_ssl_seg.evaluation.evaluate import evaluate_project
from napari_ssl_seg.networks import load_checkpoint, save_checkpoint
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.runlog import read_log


def training_seconds(run: Path) -> float | None:
    """Training seconds (validation left out) of the run in folder ``run``, from its log."""
    seconds = [float(r["train_seconds"]) for r in read_log(run / "log.jsonl") if "train_seconds" in r]
    return max(seconds) if seconds else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path, help="destination stem, e.g. models/chest_ct_ucmt")
    parser.add_argument("--project", type=Path, required=True, help="the cohort project it was trained on")
    parser.add_argument("--cohort-command", required=True)
    parser.add_argument("--warm-start-run", type=Path, help="the run folder of the --init model, for its time")
    args = parser.parse_args()
    networks, card = load_checkpoint(args.model)
    with Project.open(args.project) as project:
        evaluation = evaluate_project(project, args.model, split="test", device="cpu")
    overall = evaluation.summary["overall"]
    training = {**card.training, "cohort_command": args.cohort_command, "shipped_from": str(args.model)}
    metrics = {
        **card.metrics,
        "test_dice": overall["dice_mean"],
        "test_hd95_mm": overall["hd95_mm_mean"],
        "test_failures": evaluation.summary["n_failures"],
        "test_cases": sorted(evaluation.per_case),
        "train_seconds": training_seconds(args.model.parent),
    }
    if args.warm_start_run is not None:
        metrics["warm_start_train_seconds"] = training_seconds(args.warm_start_run)
    shipped = dataclasses.replace(card, training=training, metrics=metrics)
    weights, card_path = save_checkpoint(args.out, networks, shipped, half=True, overwrite=True)
    print(
        f"wrote {weights} and {card_path}: validation Dice {card.metrics['validation_dice']:.4f}, "
        f"test Dice {overall['dice_mean']:.4f}"
    )


if __name__ == "__main__":
    main()
