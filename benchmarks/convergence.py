"""When does a teacher converge on this machine? Validation Dice against training minutes, per recipe.

Run: .venv/bin/python benchmarks/convergence.py [--methods supervised,ucmt,ugcemt] [--recipes paper,nnunet,adamw]
     [--iterations 1500] [--validate-every 100] [--cases 12] [--cohort-seed 0] [--labeled 4] [--init MODEL] [--out DIR]

One cohort (``make-cohort`` from the bundled chest CT: ``--cases`` cases, ``--labeled`` of the training
cases labeled, 2 validation and 2 test cases), then every method with every recipe, each from scratch on the
``quick`` network (V-Net width 8, depth 4, patch 16x64x64) for ``--iterations`` iterations, one after the
other on this machine's cores. The recipes (``--set`` overrides on the ``quick`` preset):

- ``paper``: SGD lr 0.01, momentum 0.9, lr x 0.1 at 80% of the run (the papers' step decay, as ``quick`` does);
- ``nnunet``: nnU-Net v2's SGD lr 0.01, momentum 0.99, Nesterov, poly decay (exponent 0.9), grad norm clipped at 12;
- ``adamw``: AdamW lr 0.001 with the poly decay;
- ``paper-fg``: ``paper`` with a third of the labeled patches centred on a foreground class (nnU-Net's oversampling);
- ``paper-fg-float32``: ``paper-fg`` in float32 and the standard layout (``amp=false``), the reference for the
  mixed precision every other recipe runs in where the device has it (``runtime/precision.py``);
- ``finetune``: lr 0.001 with 30 warm-up iterations, the poly decay and no consistency ramp-up, for runs
  warm-started by ``--init MODEL`` (a supervised teacher), whose folders and curves are named ``METHOD-RECIPE-warm``;
  ``finetune-float32`` is the same in float32.

Written to ``--out``: ``curves.json`` (every validation: iteration, training seconds, Dice) and
``convergence.png`` (validation Dice against training minutes, one panel per method). Printed: per run the best
validation Dice and when it was reached, the Dice of the last validation, training minutes and iterations per
second, and the test Dice of the exported (best-validation) network. Model selection uses the validation split
only; the test split is only ever evaluated. Runs already in ``--out`` are reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ssl_accuracy import cohort_project

from napari_ssl_seg.evaluation.evaluate import evaluate_project
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.config import apply_overrides, preset
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.runlog import read_log

RECIPES: dict[str, list[str]] = {
    "paper": [],  # lr_step is set from the budget below
    "nnunet": ["momentum=0.99", "nesterov=true", "schedule=poly", "grad_clip=12"],
    "adamw": ["optimizer=adamw", "lr=0.001", "schedule=poly"],
    "paper-fg": ["foreground_oversampling=0.33"],
    "paper-fg-float32": ["foreground_oversampling=0.33", "amp=false"],
    # From a trained teacher (--init): the retrain's fine-tuning schedule, over the whole budget.
    "finetune": ["lr=0.001", "schedule=poly", "warmup_iterations=30", "rampup_iterations=0"],
    "finetune-float32": ["lr=0.001", "schedule=poly", "warmup_iterations=30", "rampup_iterations=0", "amp=false"],
}


def run_one(project: Path, method: str, recipe: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    overrides = [f"method={method}", f"iterations={args.iterations}", f"validate_every={args.validate_every}"]
    overrides += [f"checkpoint_every={args.iterations}", f"rampup_iterations={args.iterations}"]
    overrides += [f"lr_step={max(1, int(args.iterations * 0.8))}", *RECIPES[recipe], *args.set]
    config = apply_overrides(preset("quick"), overrides)
    if not (out / "state").is_dir() or not any(read_log(out / "log.jsonl")):
        train(project, config, out, init_model=args.init, device=args.device)
    records = read_log(out / "log.jsonl")
    curve = [
        {"iteration": int(r["iteration"]), "seconds": float(r.get("train_seconds", 0.0)), "dice": float(r["dice"])}
        for r in records
        if r.get("kind") == "validation"
    ]
    rates = [float(r["it_per_s"]) for r in records if r.get("kind") == "train" and "it_per_s" in r]
    with Project.open(project) as opened:
        test = evaluate_project(opened, out / "model.safetensors", split="test", device=args.device)
        names = opened.label_names()
    per_class = {
        names.get(int(value), value): round(float(entry["dice_mean"]), 3)
        for value, entry in test.summary["classes"].items()
    }
    best = max(curve, key=lambda point: point["dice"])
    return {
        "curve": curve,
        "best": best,
        "last": curve[-1],
        "it_per_s": sorted(rates)[len(rates) // 2] if rates else None,
        "test_dice": float(test.summary["overall"]["dice_mean"]),
        "test_per_class": per_class,
    }


def plot(results: dict[str, dict[str, dict[str, Any]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 4.0), dpi=120, squeeze=False)
    for axis, (method, by_recipe) in zip(axes[0], results.items(), strict=True):
        for recipe, run in by_recipe.items():
            minutes = [point["seconds"] / 60 for point in run["curve"]]
            axis.plot(minutes, [point["dice"] for point in run["curve"]], marker=".", label=recipe)
        axis.set_title(method)
        axis.set_xlabel("training minutes (2-core CPU)")
        axis.set_ylabel("validation Dice (mean of 7 structures)")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="supervised,ucmt,ugcemt")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--cohort-seed", type=int, default=0)
    parser.add_argument("--labeled", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], help="key=value for every run")
    parser.add_argument("--init", type=Path, help="warm start: every run starts from this model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("build/convergence"))
    parser.add_argument("--png", type=Path, help="where the plot goes (default: OUT/convergence.png)")
    args = parser.parse_args()
    keep_freed_memory()  # as the command line runs
    recipes = args.recipes.split(",")
    unknown = set(recipes) - set(RECIPES)
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(sorted(unknown))} (known: {', '.join(RECIPES)})")
    args.out.mkdir(parents=True, exist_ok=True)
    cohort = cohort_project(args.out / "cohort", args.cases, args.cohort_seed, args.labeled)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    columns = {"best val": 9, "at min": 7, "last val": 9, "minutes": 8, "it/s": 6, "test": 6}
    header = f"{'method':<11} {'recipe':<16} " + " ".join(f"{name:>{width}}" for name, width in columns.items())
    print(header)
    print("-" * len(header))
    for method in args.methods.split(","):
        for recipe in recipes:
            name = f"{recipe}-warm" if args.init else recipe
            run = run_one(cohort, method, recipe, args, args.out / f"{method}-{name}")
            results.setdefault(method, {})[name] = run
            best, last = run["best"], run["last"]
            rate = "n/a" if run["it_per_s"] is None else f"{run['it_per_s']:.2f}"
            print(
                f"{method:<11} {name:<16} {best['dice']:9.3f} {best['seconds'] / 60:7.1f} {last['dice']:9.3f} "
                f"{last['seconds'] / 60:8.1f} {rate:>6} {run['test_dice']:6.3f}",
                flush=True,
            )
            print("    test per structure: " + ", ".join(f"{k} {v:.2f}" for k, v in run["test_per_class"].items()))
            (args.out / "curves.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    title = (
        f"cohort: {args.cases} cases from CTChest4, seed {args.cohort_seed}, {args.labeled} labeled\n"
        f"quick network, {args.iterations} iterations"
    )
    plot(results, args.png or args.out / "convergence.png", title)


if __name__ == "__main__":
    main()
