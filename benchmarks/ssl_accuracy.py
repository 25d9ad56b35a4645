"""Does unlabeled data help? Test Dice of each method at a labeled fraction, over seeds, vs fully supervised.

Run: .venv/bin/python benchmarks/ssl_accuracy.py [--methods supervised,ucmt,ugcemt] [--seeds 0,1,2]
     [--cases 20] [--labeled-fraction 0.1] [--config quick] [--iterations N] [--set key=value ...] [--out DIR]

For each seed: a cohort of ``--cases`` cases generated from the bundled chest CT with that seed, of which
``--labeled-fraction`` of the training cases keep their labels (at least one); every method trains on it
with the same config, budget and seed, then is evaluated on the cohort's test split. A fully supervised
run (every training case labeled) gives the upper bound. Prints per-seed test Dice, mean and standard
deviation per method, the share of the supervised-to-full gap each method closes, and test HD95 (mm, over the
structures with a predicted surface; failed pairs counted beside it). Model selection
uses the validation split only (the loop's rule); the test split is only ever evaluated.

Also written to ``--out``: ``results.json`` (test Dice per seed, per-class test Dice, the validation
curve of every run) and ``accuracy.png``, validation Dice against iteration per method (mean over
seeds), which shows whether a budget was long enough for the curves to settle.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from napari_ssl_seg.cohort.cohort_project import build_cohort_project
from napari_ssl_seg.evaluation.evaluate import evaluate_project
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.sample_data import sample_path
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.importer import assign_splits
from napari_ssl_seg.training.config import apply_overrides, preset
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.runlog import read_log
from napari_ssl_seg.training.state import resume_paths

FULL = "full"


def cohort_project(
    out: Path, cases: int, seed: int, labeled: int | None, *, label_interpolation: str = "nearest"
) -> Path:
    """A cohort project from the bundled chest CT at ``out`` (reused when it exists).

    ``label_interpolation`` is ``make-cohort --label-interpolation``; the recorded studies used ``nearest``.
    """
    if not out.exists():  # reruns reuse cohorts and finished runs, so an interrupted study resumes
        build_cohort_project(
            out,
            sample_path("CTChest4.nrrd"),
            sample_path("Segmentation.seg.nrrd"),
            cases=cases,
            seed=seed,
            labeled=labeled,
            label_interpolation=label_interpolation,
        ).close()
    return out


def _checkpoint_iteration(run: Path) -> int:
    """The iteration of the run's last resume checkpoint (0 if it has none)."""
    try:
        document = json.loads(resume_paths(run)[1].read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return int(document.get("iteration", 0))


def _validation_curve(run: Path) -> list[tuple[int, float]]:
    records = read_log(run / "log.jsonl")
    return [(int(r["iteration"]), float(r["dice"])) for r in records if r.get("kind") == "validation"]


def _run(project: Path, method: str, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    config = apply_overrides(preset(args.config), [f"method={method}", f"seed={seed}", *args.set])
    if args.iterations:
        config = apply_overrides(config, [f"iterations={args.iterations}"])
    if not (out / "model.json").exists():
        train(project, config, out, device=args.device)
    elif (reached := _checkpoint_iteration(out)) < config.iterations:
        # model.json appears at the first validation, so an interrupted run has one too: finish it,
        # never score it as if it had trained the whole budget.
        print(f"{out}: interrupted at iteration {reached}, resuming", flush=True)
        train(project, config, out, device=args.device, resume=True)
    with Project.open(project) as opened:
        evaluation = evaluate_project(opened, out / "model.safetensors", split="test", device=args.device)
        names = opened.label_names()
    per_class = {
        names.get(int(value), value): round(float(entry["dice_mean"]), 4)
        for value, entry in evaluation.summary["classes"].items()
    }
    overall = evaluation.summary["overall"]
    return {
        "dice": float(overall["dice_mean"]),
        # over the (case, class) pairs with a measured surface; failures are counted beside it, never as 0 mm
        "hd95_mm": overall["hd95_mm_mean"],
        "failures": int(overall["n_failures"]),
        "per_class": per_class,
        "validation": _validation_curve(out),
    }


def _format_mm(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _plot(runs: dict[str, dict[int, dict[str, Any]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for method, by_seed in runs.items():
        curves = [dict(run["validation"]) for run in by_seed.values()]
        iterations = sorted(set.intersection(*(set(curve) for curve in curves)))
        means = [statistics.mean(curve[i] for curve in curves) for i in iterations]
        axes.plot(iterations, means, marker="o", label=method)
    axes.set_xlabel("iteration")
    axes.set_ylabel("validation Dice (mean over classes and seeds)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


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
    keep_freed_memory()  # as the command line runs
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    runs: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in [*methods, FULL]}
    results: dict[str, dict[int, float]] = {name: {} for name in [*methods, FULL]}
    distances: dict[str, dict[int, float | None]] = {name: {} for name in [*methods, FULL]}
    for seed in seeds:
        names = [f"case_{index:03d}" for index in range(args.cases)]
        train_count = sum(split == "train" for split in assign_splits(names, seed).values())
        labeled = max(1, round(args.labeled_fraction * train_count))
        partial = cohort_project(args.out / f"seed{seed}" / "cohort", args.cases, seed, labeled)
        full = cohort_project(args.out / f"seed{seed}" / "cohort_full", args.cases, seed, None)
        for method in [*methods, FULL]:
            project, trained = (full, "supervised") if method == FULL else (partial, method)
            runs[method][seed] = _run(project, trained, seed, args, args.out / f"seed{seed}" / method)
            results[method][seed] = runs[method][seed]["dice"]
            distances[method][seed] = runs[method][seed]["hd95_mm"]
            count = train_count if method == FULL else labeled
            classes = " ".join(f"{name}={dice:.2f}" for name, dice in runs[method][seed]["per_class"].items())
            dice = results[method][seed]
            hd95 = _format_mm(distances[method][seed])
            failures = runs[method][seed]["failures"]
            print(
                f"seed {seed} {method:<12} test Dice {dice:.4f} HD95 {hd95} mm, {failures} failed pairs"
                f" ({count} labeled)  {classes}",
                flush=True,
            )
    report = {"test_dice": results, "test_hd95_mm": distances, "runs": runs}
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    budget = args.iterations or preset(args.config).iterations
    title = f"{args.cases} cases, {args.labeled_fraction:.0%} labeled, {args.config} config, {budget} iterations"
    _plot(runs, args.out / "accuracy.png", title)
    print(
        f"\n{'method':<12} {'Dice':>7} {'std':>7}  per seed {seeds}   gap closed vs supervised -> full"
        f"   HD95 mm mean, std"
    )
    base = statistics.mean(results["supervised"].values()) if "supervised" in results else None
    top = statistics.mean(results[FULL].values())
    for method, values in results.items():
        scores = [values[s] for s in seeds]
        mean = statistics.mean(scores)
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        # With no supervised-to-full gap (full supervision not better) a share of it means nothing.
        closed = "no gap" if base is None or top <= base else f"{(mean - base) / (top - base):6.0%}"
        measured = [d for d in (distances[method][s] for s in seeds) if d is not None]
        hd95_mean = _format_mm(statistics.mean(measured) if measured else None)
        hd95_std = _format_mm(statistics.stdev(measured) if len(measured) > 1 else None)
        print(
            f"{method:<12} {mean:7.4f} {spread:7.4f}  {' '.join(f'{v:.4f}' for v in scores)}   {closed}"
            f"   {hd95_mean} {hd95_std}"
        )


if __name__ == "__main__":
    main()
