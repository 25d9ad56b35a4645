"""Copy a trained teacher into models/ as float16, with its test-split metrics added to the card.

Run: .venv/bin/python scripts/ship_teacher.py RUN/model.safetensors models/NAME --project COHORT
     --cohort-command "napari-ssl-seg make-cohort ..."
(scripts/ship_teachers.sh runs the whole recipe.) The card keeps the training command, seed, label
versions and validation metrics the loop wrote; this adds how the cohort was made and the test Dice. A run
from before training chose the card's post-processing gets it chosen here, by the same rule on the same
validation cases (``evaluation/validation.py``), and the test Dice is measured with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from napari_ssl_seg.evaluation.evaluate import evaluate_project
from napari_ssl_seg.evaluation.validation import ValidationCase, validate_network
from napari_ssl_seg.networks import ModelCard, load_checkpoint, save_checkpoint
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.runlog import read_log


def training_seconds(run: Path) -> float | None:
    """Training seconds (validation left out) of the run in folder ``run``, from its log (None: no log, as an
    adapted teacher's folder has: ``napari-ssl-seg adapt`` trains nothing and its card keeps its parent's time)."""
    if not (run / "log.jsonl").is_file():
        return None
    seconds = [float(r["train_seconds"]) for r in read_log(run / "log.jsonl") if "train_seconds" in r]
    return max(seconds) if seconds else None


def chosen_postprocessing(project: Project, network: torch.nn.Module, card: ModelCard) -> dict:
    """The clean-up training would have recorded: chosen on the project's validation split."""
    cases = [
        ValidationCase(case.name, project.read_image(case.name), np.asarray(project.read_label(case.name).array))
        for case in project.cases()
        if case.split == "validation" and case.is_labeled
    ]
    return validate_network(network, cases, card, device=torch.device("cpu"), overlap=0.25).postprocessing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path, help="destination stem, e.g. models/chest_ct_ucmt")
    parser.add_argument("--project", type=Path, required=True, help="the cohort project it was trained on")
    parser.add_argument("--cohort-command", required=True)
    parser.add_argument("--warm-start-run", type=Path, help="the run folder of the --init model, for its time")
    args = parser.parse_args()
    networks, card = load_checkpoint(args.model)
    with Project.open(args.project) as project, tempfile.TemporaryDirectory() as work:
        if "postprocessing" not in json.loads(args.model.with_suffix(".json").read_text()):
            card.postprocessing = chosen_postprocessing(project, networks["model"], card)
        save_checkpoint(Path(work) / "model", networks, card)  # the run's weights, the card as shipped
        evaluation = evaluate_project(project, Path(work) / "model.safetensors", split="test", device="cpu")
    overall = evaluation.summary["overall"]
    training = {**card.training, "cohort_command": args.cohort_command, "shipped_from": str(args.model)}
    metrics = {
        **card.metrics,
        "test_dice": overall["dice_mean"],
        "test_hd95_mm": overall["hd95_mm_mean"],
        "test_failures": evaluation.summary["n_failures"],
        "test_cases": sorted(evaluation.per_case),
    }
    if (seconds := training_seconds(args.model.parent)) is not None:
        metrics["train_seconds"] = seconds
    if args.warm_start_run is not None:
        metrics["warm_start_train_seconds"] = training_seconds(args.warm_start_run)
    shipped = dataclasses.replace(card, training=training, metrics=metrics)
    weights, card_path = save_checkpoint(args.out, networks, shipped, half=True, overwrite=True)
    print(
        f"wrote {weights} and {card_path}: validation Dice {card.metrics['validation_dice']:.4f}, "
        f"test Dice {overall['dice_mean']:.4f}, largest component only: {card.postprocessing or 'none'}"
    )


if __name__ == "__main__":
    main()
