"""How much of a semi-supervised gain is BatchNorm seeing the unlabeled cases? A teacher's statistics re-estimated.

Run: .venv/bin/python benchmarks/bn_statistics.py PROJECT MODEL [--batches 100] [--out build/bn_statistics]
    [--amp on|off|both]

A supervised run on 2 labeled cases keeps BatchNorm running statistics of patches from those 2 cases; every
semi-supervised method here passes labeled and unlabeled patches through its student together, so its
statistics (and, through them, its EMA teacher's) cover the whole pool. This takes a trained MODEL and
re-estimates the statistics of every BatchNorm layer as the product's end-of-run step does
(``training/batchnorm.py``: cumulative average, no gradient, weights unchanged, plain random crops with the
card's spacing, orientation and normalisation) from ``--batches`` batches of 4 patches drawn from one of two
sets of the project's training cases: the labeled ones only, and all of them (labeled and unlabeled). Each
variant is saved with MODEL's card and scored on the validation split (what the product's step decides on)
and the test split (test Dice and HD95), beside MODEL's own. ``--amp`` sets the precision of the passes: ``on``
(the product's: bfloat16 and channels-last on a CPU that has bfloat16, float16 on CUDA), ``off`` (float32), or
``both``, side by side in this run with the seconds of each estimate and their ratio (variants named ``SET`` and
``SET_float32``).

``--product-step`` also runs the product's own step on a copy of MODEL's run folder (``train --resume`` of the
finished run with ``batchnorm_batches=--batches``: the loop re-estimates over all training cases, validates
and keeps the better export) and scores what it kept: the figure a user of the presets gets.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from label_gap import test_scores

from napari_ssl_seg.evaluation.validation import ValidationCase, validate_network
from napari_ssl_seg.networks.checkpoint import load_checkpoint, save_checkpoint
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.runtime.precision import execution_for
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.batchnorm import reestimate_over_cases, statistics_summary
from napari_ssl_seg.training.config import TrainConfig
from napari_ssl_seg.training.data import take_snapshot
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.runlog import read_log
from napari_ssl_seg.training.state import resume_paths


def product_step(project: Path, run: Path, out: Path, batches: int, device: str) -> dict:
    """The loop's end-of-run step on a copy of the finished ``run``: its log record, the kept export's test scores."""
    copy = out / f"{run.name}_product"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    saved = json.loads(resume_paths(copy)[1].read_text(encoding="utf-8"))["run"]["config"]
    config = dataclasses.replace(TrainConfig.from_dict(saved), batchnorm_batches=batches)
    train(project, config, copy, device=device, resume=True)
    record = [entry for entry in read_log(copy / "log.jsonl") if entry["kind"] == "batchnorm"][-1]
    scores = test_scores(project, copy / "model.safetensors", device)
    print(
        f"the product's step: {statistics_summary(record)} in {record['seconds']} s; kept export: test Dice "
        f"{scores['dice']:.3f}, HD95 {scores['hd95_mm']:.1f} mm",
        flush=True,
    )
    return {"record": record, "test": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("build/bn_statistics"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sets", default="labeled,all", help="which re-estimations to score ('' for none)")
    parser.add_argument("--product-step", action="store_true", help="also run the loop's step on a copy of the run")
    parser.add_argument("--amp", default="on", choices=("on", "off", "both"), help="precision of the passes")
    args = parser.parse_args()
    keep_freed_memory()
    device = torch.device(args.device)
    results = {"model": test_scores(args.project, args.model, args.device), "batches": args.batches}
    with Project.open(args.project) as project:
        snapshot = take_snapshot(project)
        validation = [
            ValidationCase(name, project.read_image(name), np.asarray(project.read_label(name, version).array))
            for name, version in snapshot.validation.items()
        ]

        def validation_dice(network: torch.nn.Module) -> float:
            return validate_network(network, validation, card, device=device, overlap=0.25).dice

        networks, card = load_checkpoint(args.model)
        results["model"]["validation_dice"] = validation_dice(networks["model"].to(device))
        print(
            f"model as trained: validation Dice {results['model']['validation_dice']:.3f}, "
            f"test Dice {results['model']['dice']:.3f}, HD95 {results['model']['hd95_mm']:.1f} mm",
            flush=True,
        )
        sets = {"labeled": list(snapshot.labeled), "all": [*snapshot.labeled, *snapshot.unlabeled]}
        sets = {name: cases for name, cases in sets.items() if name in args.sets.split(",")}
        modes = {"on": (True,), "off": (False,), "both": (True, False)}[args.amp]
        for (set_name, cases), mixed in itertools.product(sets.items(), modes):
            name = set_name if mixed else f"{set_name}_float32"
            networks, card = load_checkpoint(args.model)
            execution = execution_for(device, mixed_precision=mixed)
            started = time.perf_counter()
            reestimate_over_cases(
                networks["model"].to(device), project, cases, card, batches=args.batches, seed=0, execution=execution
            )
            seconds = time.perf_counter() - started
            out = args.out / f"{args.model.parent.name}_{name}" / "model.safetensors"
            out.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(out, {key: net.cpu() for key, net in networks.items()}, card, overwrite=True)
            results[name] = test_scores(args.project, out, args.device)
            results[name]["validation_dice"] = validation_dice(networks["model"].to(device))
            results[name]["seconds"] = round(seconds, 2)
            print(
                f"statistics of {len(cases)} {set_name} training cases ({execution.label}, {seconds:.1f} s): "
                f"validation Dice {results[name]['validation_dice']:.3f}, test Dice {results[name]['dice']:.3f}, "
                f"HD95 {results[name]['hd95_mm']:.1f} mm",
                flush=True,
            )
        for set_name in sets if len(modes) == 2 else ():
            mixed, plain = results[set_name], results[f"{set_name}_float32"]
            print(
                f"{set_name}: float32 / mixed precision seconds {plain['seconds'] / mixed['seconds']:.2f}; "
                f"test Dice {mixed['dice'] - plain['dice']:+.4f}, HD95 {mixed['hd95_mm'] - plain['hd95_mm']:+.2f} mm, "
                f"validation Dice {mixed['validation_dice'] - plain['validation_dice']:+.4f} (mixed minus float32)",
                flush=True,
            )
    if args.product_step:
        results["product_step"] = product_step(args.project, args.model.parent, args.out, args.batches, args.device)
    (args.out / f"{args.model.parent.name}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
