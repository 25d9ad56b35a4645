"""The label gap at convergence: supervised teachers trained on 1, 2, 10, 20 and 100% of the training cases.

Run: .venv/bin/python benchmarks/label_gap.py [--cases 40] [--cohort-seed 3] [--percent 1,2,10,20,100]
     [--seeds 0,1,2] [--iterations 6000] [--validate-every 500] [--out build/label_gap]
     [--png benchmarks/results/label_gap.png] [--json benchmarks/results/label_gap.json]
     [--label-interpolation nearest|linear]

One cohort per labeled count (``make-cohort`` from the bundled chest CT, ``--cases`` cases, the same images for
every count since the generator is seeded; 20% validation and 20% test cases, always labeled): a percentage
``p`` of the N training cases labels ``max(1, round(p * N / 100))`` of them, so small percentages can share a
count (the table says which). Each count trains the ``quick`` preset (``paper-fg``: SGD with the lr x 0.1 at 80%
of the run, a third of the labeled patches centred on foreground) with every ``--seeds`` training seed. Model
selection uses the validation split only; the test split is only evaluated: Dice per structure, mean Dice,
HD95 and ASD in mm. ``--label-interpolation linear`` generates the cohorts with labels that follow the image
(``make-cohort --label-interpolation``); the recorded studies used the default, ``nearest``.

**Convergence rule (stated, checked, not assumed).** A run counts as converged when its last
``--plateau-window`` validations (the final ``window x validate-every`` iterations) raised its best validation
Dice by less than ``--plateau-delta``. Runs that fail the rule are flagged in the table and the JSON, never
silently reported as converged. Finished runs in ``--out`` are reused and interrupted ones resumed, so an
interrupted study continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from ssl_accuracy import cohort_project

from napari_ssl_seg.cohort.label_sampling import LABEL_INTERPOLATIONS
from napari_ssl_seg.evaluation.evaluate import evaluate_project
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.config import apply_overrides, preset
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.runlog import read_log
from napari_ssl_seg.training.state import resume_paths

METRICS = ("dice", "hd95_mm", "asd_mm")


def labeled_count(percent: float, training_cases: int) -> int:
    return max(1, min(training_cases, round(percent * training_cases / 100)))


def plateaued(curve: list[tuple[int, float]], window: int, delta: float) -> bool:
    """Whether the last ``window`` validations raised the best Dice by less than ``delta``."""
    if len(curve) <= window:
        return False
    before = max(dice for _, dice in curve[:-window])
    return max(dice for _, dice in curve) - before < delta


def test_scores(project: Path, model: Path, device: str) -> dict[str, Any]:
    """``model`` on the project's test split: mean Dice, HD95, ASD, failures and each structure's Dice."""
    with Project.open(project) as opened:
        evaluation = evaluate_project(opened, model, split="test", device=device)
        names = opened.label_names()
    return summary_scores(evaluation.summary, names)


def summary_scores(summary: dict[str, Any], names: dict[int, str]) -> dict[str, Any]:
    """An evaluation summary (``evaluation.metrics.summarise``) as the studies record it."""
    overall = summary["overall"]
    return {
        "dice": float(overall["dice_mean"]),
        "hd95_mm": overall["hd95_mm_mean"],
        "asd_mm": overall["asd_mm_mean"],
        "failures": int(overall["n_failures"]),
        "per_class": {
            names.get(int(value), str(value)): round(float(entry["dice_mean"]), 4)
            for value, entry in summary["classes"].items()
        },
    }


def _last_checkpoint(run: Path) -> int:
    try:
        return int(json.loads(resume_paths(run)[1].read_text(encoding="utf-8")).get("iteration", 0))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def run_one(project: Path, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    overrides = [
        "method=supervised",
        f"seed={seed}",
        f"iterations={args.iterations}",
        f"lr_step={max(1, int(args.iterations * 0.8))}",
        f"validate_every={args.validate_every}",
        f"checkpoint_every={args.validate_every}",
        *args.set,
    ]
    config = apply_overrides(preset("quick"), overrides)
    if not resume_paths(out)[1].exists():
        train(project, config, out, device=args.device)
    elif _last_checkpoint(out) < config.iterations:
        print(f"{out}: resuming at iteration {_last_checkpoint(out)}", flush=True)
        train(project, config, out, device=args.device, resume=True)
    records = read_log(out / "log.jsonl")
    curve = [(int(r["iteration"]), float(r["dice"])) for r in records if r.get("kind") == "validation"]
    seconds = max((float(r.get("train_seconds", 0.0)) for r in records if r.get("kind") == "validation"), default=0)
    return {
        **test_scores(project, out / "model.safetensors", args.device),
        "validation": curve,
        "best_iteration": max(curve, key=lambda point: point[1])[0],
        "converged": plateaued(curve, args.plateau_window, args.plateau_delta),
        "train_minutes": round(seconds / 60, 2),
    }


def _mean_spread(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), (statistics.stdev(present) if len(present) > 1 else 0.0)


def summarise(runs: dict[int, dict[int, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """Per labeled count: mean and standard deviation over seeds of every metric and structure."""
    summary: dict[int, dict[str, Any]] = {}
    for count, by_seed in runs.items():
        seeds = list(by_seed.values())
        entry: dict[str, Any] = {metric: _mean_spread([run[metric] for run in seeds]) for metric in METRICS}
        entry["per_class"] = {
            name: _mean_spread([run["per_class"][name] for run in seeds]) for name in seeds[0]["per_class"]
        }
        entry["converged"] = sum(run["converged"] for run in seeds)
        entry["seeds"] = len(seeds)
        summary[count] = entry
    return summary


def table(summary: dict[int, dict[str, Any]], percents: dict[int, list[float]], training_cases: int) -> str:
    names = list(next(iter(summary.values()))["per_class"])
    header = [f"labeled (of {training_cases})", "Dice", "HD95 mm", "ASD mm", *names, "converged"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(pair: tuple[float | None, float | None], digits: int) -> str:
        mean, spread = pair
        return "n/a" if mean is None else f"{mean:.{digits}f} ± {spread:.{digits}f}"

    for count, entry in summary.items():
        label = f"{count} ({', '.join(f'{p:g}%' for p in percents[count])})"
        row = [label, cell(entry["dice"], 3), cell(entry["hd95_mm"], 1), cell(entry["asd_mm"], 2)]
        row += [cell(entry["per_class"][name], 2) for name in names]
        row.append(f"{entry['converged']} of {entry['seeds']}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(summary: dict[int, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = list(summary)
    figure, axes = plt.subplots(1, 2, figsize=(10.0, 4.0), dpi=120)
    for axis, metric, label in ((axes[0], "dice", "test Dice (mean of structures)"), (axes[1], "hd95_mm", "HD95 (mm)")):
        means = [summary[c][metric][0] for c in counts]
        spreads = [summary[c][metric][1] for c in counts]
        axis.errorbar(counts, means, yerr=spreads, marker="o", capsize=4, label="mean ± sd over seeds")
        axis.set_xscale("log")
        axis.set_xticks(counts, [str(c) for c in counts])
        axis.set_xlabel("labeled training cases")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylim(0, 1)
    names = list(summary[counts[0]]["per_class"])
    for name in names:
        axes[0].plot(counts, [summary[c]["per_class"][name][0] for c in counts], lw=0.8, alpha=0.6, label=name)
    axes[0].legend(fontsize=6)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--cohort-seed", type=int, default=3)
    parser.add_argument("--percent", default="1,2,10,20,100")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--validate-every", type=int, default=500)
    parser.add_argument("--plateau-window", type=int, default=4)
    parser.add_argument("--plateau-delta", type=float, default=0.01)
    parser.add_argument("--set", action="append", default=[], help="key=value for every run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("build/label_gap"))
    parser.add_argument("--png", type=Path, default=Path("benchmarks/results/label_gap.png"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/label_gap.json"))
    parser.add_argument("--label-interpolation", choices=LABEL_INTERPOLATIONS, default="nearest")
    args = parser.parse_args()
    keep_freed_memory()
    # The split is the generator's; build the largest project once to learn how many training cases it has.
    cohort = {"label_interpolation": args.label_interpolation}
    probe = cohort_project(args.out / "cohort_all", args.cases, args.cohort_seed, None, **cohort)
    with Project.open(probe) as opened:
        training_cases = sum(case.split == "train" for case in opened.cases())
    percents: dict[int, list[float]] = {}
    for percent in (float(p) for p in args.percent.split(",")):
        percents.setdefault(labeled_count(percent, training_cases), []).append(percent)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[int, dict[int, dict[str, Any]]] = {}
    for count in sorted(percents):
        name = "cohort_all" if count == training_cases else f"cohort_{count}"
        project = cohort_project(args.out / name, args.cases, args.cohort_seed, count, **cohort)
        for seed in seeds:
            result = run_one(project, seed, args, args.out / f"labeled{count}_seed{seed}")
            runs.setdefault(count, {})[seed] = result
            print(
                f"labeled {count:3d} seed {seed}: test Dice {result['dice']:.3f}, HD95 {result['hd95_mm']:.1f} mm, "
                f"best at {result['best_iteration']}, converged {result['converged']}",
                flush=True,
            )
            args.json.parent.mkdir(parents=True, exist_ok=True)
            partial = {"training_cases": training_cases, "runs": runs, **cohort}
            args.json.write_text(json.dumps(partial, indent=1))
    summary = summarise(runs)
    print(table(summary, percents, training_cases))
    title = (
        f"supervised, quick, {args.iterations} iterations; cohort of {args.cases} (seed {args.cohort_seed}, "
        f"{args.label_interpolation} labels), "
        f"{training_cases} training cases; seeds {args.seeds}"
    )
    plot(summary, args.png, title)
    document = {"training_cases": training_cases, "percents": percents, "runs": runs, "summary": summary, **cohort}
    args.json.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
