"""Validation curves of float32 against mixed precision, from ``convergence.py`` runs, as one plot.

    .venv/bin/python benchmarks/plot_precision.py --runs build/precision_supervised,build/precision_supervised_s1,...
        [--png benchmarks/results/precision_curves.png]

Each ``--runs`` folder holds a ``curves.json`` written by ``benchmarks/convergence.py`` with a recipe and its
``-float32`` twin (``paper-fg`` and ``paper-fg-float32``, or ``finetune-warm`` and ``finetune-float32-warm``). One panel
per method: validation Dice against iteration, float32 dashed, mixed precision solid, one colour per run folder
(a training seed), so the difference between precisions can be read against the difference between seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="comma-separated convergence.py output folders")
    parser.add_argument("--names", help="comma-separated legend names of the folders (default: folder names)")
    parser.add_argument("--png", type=Path, default=Path("benchmarks/results/precision_curves.png"))
    args = parser.parse_args()
    panels: dict[str, list[tuple[str, str, list[dict]]]] = {}
    folders = args.runs.split(",")
    names = args.names.split(",") if args.names else [Path(folder).name for folder in folders]
    for folder, name in zip(folders, names, strict=True):
        results = json.loads((Path(folder) / "curves.json").read_text(encoding="utf-8"))
        for method, recipes in results.items():
            for recipe, run in recipes.items():
                panels.setdefault(method, []).append((name, recipe, run["curve"]))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), dpi=120, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (method, runs) in zip(axes[0], panels.items(), strict=True):
        folders = list(dict.fromkeys(folder for folder, _, _ in runs))
        for folder, recipe, curve in runs:
            reference = "-float32" in recipe
            axis.plot(
                [point["iteration"] for point in curve],
                [point["dice"] for point in curve],
                linestyle="--" if reference else "-",
                color=colours[folders.index(folder) % len(colours)],
                label=f"{folder}: {'float32' if reference else 'bfloat16 + channels-last'}",
            )
        axis.set_title(method)
        axis.set_xlabel("iteration")
        axis.set_ylabel("validation Dice (mean of 7 structures)")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle("float32 (dashed) against mixed precision (solid), same seed, same batches", fontsize=9)
    figure.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.png)
    plt.close(figure)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
