"""How much of a semi-supervised gain is BatchNorm seeing the unlabeled cases? A teacher's statistics re-estimated.

Run: .venv/bin/python benchmarks/bn_statistics.py PROJECT MODEL [--batches 200] [--out build/bn_statistics]

A supervised run on 2 labeled cases keeps BatchNorm running statistics of patches from those 2 cases; every
semi-supervised method here passes labeled and unlabeled patches through its student together, so its
statistics (and, through them, its EMA teacher's) cover the whole pool. This takes a trained MODEL, resets the
running mean and variance of every BatchNorm layer and re-estimates them (cumulative average, no gradient, weights
unchanged) from ``--batches`` batches of 4 patches drawn from one of two sets of the project's training cases: the
labeled ones only, and all of them (labeled and unlabeled). Each variant is saved with MODEL's card and scored on
the test split: test Dice and HD95 against MODEL's own. The patches are drawn with the training sampler (the
card's spacing, orientation, normalisation, patch size; crops and flips), seed 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from label_gap import test_scores
from torch import nn

from napari_ssl_seg.networks.checkpoint import load_checkpoint, save_checkpoint
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.data import load_cases
from napari_ssl_seg.training.sampler import TwoStreamSampler


def reestimate(network: nn.Module, sampler: TwoStreamSampler, batches: int) -> None:
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over every batch
    network.train()
    with torch.no_grad():
        for iteration in range(batches):
            network(sampler.batch(iteration).labeled_image)
    network.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("build/bn_statistics"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    keep_freed_memory()
    results = {"model": test_scores(args.project, args.model, args.device)}
    print(f"model as trained: test Dice {results['model']['dice']:.3f}, HD95 {results['model']['hd95_mm']:.1f} mm")
    with Project.open(args.project) as project:
        training = [case for case in project.cases() if case.split == "train"]
        sets = {
            "labeled": {case.name: None for case in training if case.is_labeled},
            "all": {case.name: None for case in training},
        }
        networks, card = load_checkpoint(args.model)
        for name, versions in sets.items():
            cases = load_cases(
                project,
                versions,
                card.intensity,
                pad_to=card.patch_size,
                orientation=card.orientation,
                spacing=card.spacing,
            )
            sampler = TwoStreamSampler(
                cases, [], patch_size=card.patch_size, batch_labeled=4, batch_unlabeled=0, seed=0, lateral=False
            )
            networks, card = load_checkpoint(args.model)
            reestimate(networks["model"], sampler, args.batches)
            out = args.out / f"{args.model.parent.name}_{name}" / "model.safetensors"
            out.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(out, networks, card, overwrite=True)
            results[name] = test_scores(args.project, out, args.device)
            print(
                f"statistics of {len(cases)} {name} training cases: test Dice {results[name]['dice']:.3f}, "
                f"HD95 {results[name]['hd95_mm']:.1f} mm",
                flush=True,
            )
    (args.out / f"{args.model.parent.name}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
