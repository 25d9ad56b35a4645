"""Does unlabeled data help? Test Dice of each method at a labeled fraction, over seeds, vs fully supervised.

Run: .venv/bin/python benchmarks/accuracy.py [--methods supervised,ucmt,ugcemt] [--seeds 0,1,2]
     [--cases 20] [--labeled-fraction 0.1] [--config quick] [--iterations N] [--set key=value ...] [--out DIR]

For each seed: a cohort of ``--cases`` cases generated from the bundled chest CT with that seed, of which
``--labeled-fraction`` of the training cases keep their labels (at least one); every method trains on it
with the same config, budget and seed, then is evaluated on the cohort's test split. A fully supervised
run (every training case labeled) gives the upper bound. Prints per-seed test Dice, mean and standard
deviation per method, and the share of the supervised-to-full gap each method closes. Model selection
uses the validation split only (the loop's rule); the test split is only ever evaluated.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from napari_ssl_seg.data.cohort_project import build_cohort_project
from napari_ssl_seg.sample_data import sample_path
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.importer import assign_splits
from napari_ssl_seg.training.config import apply_overrides, preset
from napari_ssl_seg.training.evaluate import evaluate_project
from napari_ssl_seg.training.loop import train

FULL = "full"


def _cohort(out: Path, cases: int, seed: int, labeled: int | None) -> Path:
    if not out.exists():  # reruns reuse cohorts and finished runs, so an interrupted study resumes
        build_cohort_project(
            out,
            sample_path("CTChest4.nrrd"),
            sample_path("Segmentation.seg.nrrd"),
            cases=cases,
            seed=seed,
            labeled=labeled,
        ).close()
    return out


def _run(project: Path, method: str, seed: int, args: argparse.Namespace, out: Path) -> float:
    config = apply_overrides(preset(args.config), [f"method={method}", f"seed={seed}", *args.set])
    if args.iterations:
        config = apply_overrides(config, [f"iterations={args.iterations}"])
    if not (out / "model.json").exists():
        train(project, config, out, device=args.device)
    with Project.open(project) as opened:
        evaluation = evaluate_project(opened, out / "model.safetensors", split="test", device=args.device)
    return float(evaluation.summary["overall"]["dice_mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="supervised,ucmt,ugcemt")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--labeled-fraction", type=float, default=0.1)
    parser.add_argument("--config", default="quick")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--set", action="append", default=[], help="training override, as for `train --set`")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("build/accuracy"))
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    results: dict[str, dict[int, float]] = {name: {} for name in [*methods, FULL]}
    for seed in seeds:
        names = [f"case_{index:03d}" for index in range(args.cases)]
        train_count = sum(split == "train" for split in assign_splits(names, seed).values())
        labeled = max(1, round(args.labeled_fraction * train_count))
        partial = _cohort(args.out / f"seed{seed}" / "cohort", args.cases, seed, labeled)
        full = _cohort(args.out / f"seed{seed}" / "cohort_full", args.cases, seed, None)
        for method in methods:
            results[method][seed] = _run(partial, method, seed, args, args.out / f"seed{seed}" / method)
            print(f"seed {seed} {method:<12} test Dice {results[method][seed]:.4f} ({labeled} labeled)", flush=True)
        results[FULL][seed] = _run(full, "supervised", seed, args, args.out / f"seed{seed}" / FULL)
        print(f"seed {seed} {FULL:<12} test Dice {results[FULL][seed]:.4f} ({train_count} labeled)", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'method':<12} {'mean':>7} {'std':>7}  per seed {seeds}   gap closed vs supervised -> full")
    base = statistics.mean(results["supervised"].values()) if "supervised" in results else None
    top = statistics.mean(results[FULL].values())
    for method, values in results.items():
        scores = [values[s] for s in seeds]
        mean = statistics.mean(scores)
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        closed = "" if base is None or top == base else f"{(mean - base) / (top - base):6.0%}"
        print(f"{method:<12} {mean:7.4f} {spread:7.4f}  {' '.join(f'{v:.4f}' for v in scores)}   {closed}")


if __name__ == "__main__":
    main()
