"""The same teachers scored against two references of the same test images: nearest labels and labels that follow
the image.

Run: .venv/bin/python benchmarks/reference_labels.py --nearest build/label_gap/cohort_2
     --linear build/label_gap_lin/cohort_2 --model NAME=PATH [--model NAME=PATH ...] [--split test] [--json OUT]
     [--gap START:FULL[,OTHER]] [--from-json OUT] [--uncertainty] [--png STRUCTURES.png]

Two cohort projects generated with the same seed and ``--label-interpolation nearest`` and ``linear`` hold the
same draws; where a case's crop or redraw came out differently (the crop looks at the label) its images differ and
it is skipped and counted. Each teacher predicts each shared case once (the product's predictor, as
``evaluate`` runs it) and the prediction is scored against both labels (``evaluation.metrics.case_metrics``, the
evaluation's rule): mean Dice, HD95, ASD and each structure's Dice. What the two columns separate: how much of a
teacher's measured error is the reference's own aliasing (it moves with the reference), and how much is the
teacher's (it stays).

``--gap START:FULL`` (model names ``<group>_s<seed>``): for every other group, the share of the gap from the START
teacher to the FULL teacher of the same seed that it closes, in Dice and in HD95, under each reference; mean ±
sd over seeds; ``START:FULL,OTHER`` takes, for a seed without a FULL teacher, its OTHER one (an all-labeled
reference trained on the other labels). ``--from-json`` prints the tables of an earlier run's JSON without
predicting again. ``--png`` draws each group's Dice per structure under both references (mean and spread over
seeds): where a gap lies.

``--uncertainty`` scores instead what ``evaluate --uncertainty`` reports (MC dropout, 8 samples, masks from the
fixed seed), on the shared cases of each project in turn: the voxel AUROC of entropy for the teacher's errors and
each case score's Spearman correlation with 1 - Dice. An error is a voxel where the prediction and the reference
differ, so an aliased reference adds errors that no uncertainty can foresee.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from label_gap import summary_scores
from ssl_summary import Pair

from napari_ssl_seg.evaluation.evaluate import evaluate_project
from napari_ssl_seg.evaluation.metrics import case_metrics, summarise
from napari_ssl_seg.evaluation.validation import scored_classes
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.store import Project

REFERENCES = ("nearest", "linear")
SPEARMAN_SHOWN = ("structure_entropy", "missing_volume")


def shared_cases(nearest: Project, linear: Project, split: str) -> tuple[list[str], list[str]]:
    """The labeled ``split`` cases whose images are identical in both projects, and those whose images differ."""
    same, different = [], []
    for case in nearest.cases():
        if case.split != split or not case.is_labeled:
            continue
        first, second = nearest.read_image(case.name), linear.read_image(case.name)
        same_grid = np.allclose(first.spacing, second.spacing) and np.allclose(first.origin, second.origin)
        identical = same_grid and np.array_equal(first.array, second.array)  # False for other shapes too
        (same if identical else different).append(case.name)
    return same, different


def score(model: Path, projects: dict[str, Project], cases: list[str], device: str) -> dict[str, Any]:
    predictor = Predictor.from_checkpoint(model, device=device)
    classes = scored_classes(predictor.card)
    names = {int(k): v for k, v in predictor.card.classes.items()}
    per_case: dict[str, dict[str, Any]] = {reference: {} for reference in REFERENCES}
    for name in cases:
        image = projects["nearest"].read_image(name)
        predicted = predictor.predict(image, uncertainty="none", name=name).label.array
        for reference in REFERENCES:
            label = projects[reference].read_label(name).array
            per_case[reference][name] = case_metrics(predicted, label, image.spacing, classes)
    return {reference: summary_scores(summarise(per_case[reference]), names) for reference in REFERENCES}


def uncertainty_quality(
    model: Path, projects: dict[str, Project], cases: list[str], split: str, device: str
) -> dict[str, Any]:
    """``evaluate --uncertainty`` of ``model`` on ``cases``, once against each reference."""
    quality = {}
    for reference, project in projects.items():
        evaluation = evaluate_project(project, model, split=split, device=device, with_uncertainty=True, only=cases)
        report = evaluation.uncertainty or {}
        quality[reference] = {
            "dice": round(float(evaluation.summary["overall"]["dice_mean"]), 4),
            "auroc": report.get("auroc_entropy_vs_error"),
            "ece": report.get("ece"),
            "spearman": report.get("spearman_score_vs_1_minus_dice", {}),
        }
    return quality


def by_seed(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"<group>_s<seed>": result}`` regrouped as ``{group: {seed: result}}``."""
    groups: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        group, _, seed = name.rpartition("_s")
        groups.setdefault(group, {})[seed] = result
    return groups


def parse_gap(gap: str) -> tuple[str, tuple[str, ...]]:
    """``START:FULL[,OTHER...]`` as (START, (FULL, OTHER, ...)), the way ``gap_closed`` takes it."""
    start, _, full = gap.partition(":")
    return start, tuple(full.split(","))


def gap_closed(
    results: dict[str, Any], start: str, full: str | tuple[str, ...], references: tuple[str, ...] = REFERENCES
) -> dict[str, dict[str, Any]]:
    """Per group and reference: the share of the START-to-FULL gap closed per seed (Dice, HD95), its mean and sd.

    The share is ``ssl_summary.Pair``'s, the rule of the semi-supervision tables. FULL may name several groups: a
    seed takes the first that has a teacher of it (where the all-labeled reference of a seed was trained one way
    and of another seed the other). Only the seeds that have both a START and a FULL teacher count; a group with
    none of them is left out.
    """
    groups = by_seed(results)
    fulls = (full,) if isinstance(full, str) else full
    full_of_seed: dict[str, Any] = {}
    for name in reversed(fulls):
        full_of_seed.update(groups.get(name, {}))
    shares: dict[str, dict[str, Any]] = {}
    for group, all_seeds in groups.items():
        if group == start or group in fulls:
            continue
        seeds = {seed: result for seed, result in all_seeds.items() if seed in groups[start] and seed in full_of_seed}
        if not seeds:
            continue
        for reference in references:
            pairs = {
                seed: Pair(
                    labeled=0,
                    seed=int(seed),
                    method=group,
                    run=result[reference],
                    start=groups[start][seed][reference],
                    full=full_of_seed[seed][reference],
                    control=None,
                    equal_time_control=None,
                    source="",
                )
                for seed, result in seeds.items()
            }
            per_seed = {
                seed: {"dice": pair.dice_gap_closed(), "hd95": pair.hd95_gap_closed()} for seed, pair in pairs.items()
            }
            values = {key: [share[key] for share in per_seed.values()] for key in ("dice", "hd95")}
            shares.setdefault(group, {})[reference] = {
                "per_seed": per_seed,
                "mean": {key: statistics.fmean(v) for key, v in values.items()},
                "sd": {key: statistics.stdev(v) if len(v) > 1 else 0.0 for key, v in values.items()},
            }
    return shares


def print_shares(shares: dict[str, dict[str, Any]], title: str, column: str = "reference") -> None:
    print(f"\n{title} (per seed; mean ± sd)")
    print(f"| teacher | {column} | Dice gap closed | HD95 gap closed |")
    print("|---|---|---|---|")
    for group, by_reference in shares.items():
        for reference, share in by_reference.items():
            cells = []
            for key in ("dice", "hd95"):
                seeds = ", ".join(f"{100 * value[key]:.0f}" for value in share["per_seed"].values())
                cells.append(f"{100 * share['mean'][key]:.0f}% ± {100 * share['sd'][key]:.0f}% ({seeds})")
            print(f"| {group} | {reference} | {cells[0]} | {cells[1]} |")


def print_tables(results: dict[str, Any], gap: str | None) -> dict[str, Any] | None:
    print("| teacher | Dice, nearest reference | Dice, linear reference | HD95 mm, nearest / linear |")
    print("|---|---|---|---|")
    for name, result in results.items():
        near, lin = result["nearest"], result["linear"]
        print(f"| {name} | {near['dice']:.3f} | {lin['dice']:.3f} | {near['hd95_mm']:.1f} / {lin['hd95_mm']:.1f} |")
        for structure in near["per_class"]:
            print(f"|   {structure} | {near['per_class'][structure]:.3f} | {lin['per_class'][structure]:.3f} | |")
    if gap is None:
        return None
    start, fulls = parse_gap(gap)
    shares = gap_closed(results, start, fulls)
    print_shares(shares, f"Share of the gap from {start} to {' or '.join(fulls)} closed")
    return shares


def print_uncertainty(results: dict[str, Any]) -> None:
    print("| teacher | reference | Dice | entropy AUROC | ECE | Spearman structure_entropy / missing_volume |")
    print("|---|---|---|---|---|---|")
    for name, by_reference in results.items():
        for reference, row in by_reference.items():
            rho = row["spearman"]
            cells = [f"{rho[key]:.2f}" if rho.get(key) is not None else "-" for key in SPEARMAN_SHOWN]
            print(
                f"| {name} | {reference} | {row['dice']:.3f} | {row['auroc']:.3f} | {row['ece']:.3f} | "
                f"{' / '.join(cells)} |"
            )


def plot_structures(results: dict[str, Any], path: Path) -> None:
    """Per structure, each group's Dice (mean over seeds, bar; its range, line), one panel per reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_seed(results)
    structures = list(next(iter(results.values()))["nearest"]["per_class"])
    figure, panels = plt.subplots(1, len(REFERENCES), figsize=(12, 4.2), dpi=120, sharey=True)
    width = 0.8 / len(groups)
    for axes, reference in zip(panels, REFERENCES, strict=True):
        for index, (group, seeds) in enumerate(groups.items()):
            values = np.array([[seed[reference]["per_class"][s] for s in structures] for seed in seeds.values()])
            positions = np.arange(len(structures)) + (index - (len(groups) - 1) / 2) * width
            axes.bar(positions, values.mean(axis=0), width, label=f"{group} ({len(seeds)} seeds)")
            axes.vlines(positions, values.min(axis=0), values.max(axis=0), color="black", linewidth=0.8)
        axes.set_xticks(np.arange(len(structures)), [s.replace(" vertebral column", " spine") for s in structures])
        axes.tick_params(axis="x", labelrotation=30)
        axes.set_title(f"{reference} reference", fontsize=10)
        axes.set_ylim(0.3, 1.0)
        axes.grid(axis="y", alpha=0.3)
    panels[0].set_ylabel("test Dice")
    panels[0].legend(fontsize=8, loc="upper left")  # above the ribs and the cervical spine, the lowest bars
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nearest", type=Path, help="the cohort project with nearest labels")
    parser.add_argument("--linear", type=Path, help="the same cohort with labels that follow the image")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument(
        "--gap", metavar="START:FULL[,OTHER]", help="share of the gap from START to FULL closed by the others"
    )
    parser.add_argument("--from-json", type=Path, help="print the tables of an earlier run")
    parser.add_argument("--uncertainty", action="store_true", help="entropy AUROC and case-score Spearman instead")
    parser.add_argument("--split", default="test")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--png", type=Path, help="each group's Dice per structure under both references")
    args = parser.parse_args()
    if args.from_json:
        recorded = json.loads(args.from_json.read_text())["results"]
        uncertainty = "auroc" in next(iter(recorded.values()))["nearest"]
        print_uncertainty(recorded) if uncertainty else print_tables(recorded, args.gap)
        if args.png and not uncertainty:
            plot_structures(recorded, args.png)
        return
    if not (args.nearest and args.linear and args.model):
        parser.error("--nearest, --linear and at least one --model are needed (or --from-json)")
    models = dict(item.split("=", 1) for item in args.model)
    with Project.open(args.nearest) as nearest, Project.open(args.linear) as linear:
        cases, skipped = shared_cases(nearest, linear, args.split)
        if not cases:
            raise SystemExit(f"no {args.split} case has the same image in both projects")
        print(f"{len(cases)} {args.split} cases with identical images; skipped (images differ): {skipped or 'none'}")
        projects = {"nearest": nearest, "linear": linear}
        if args.uncertainty:
            results = {}
            for name, path in models.items():
                results[name] = uncertainty_quality(Path(path), projects, cases, args.split, args.device)
                print(f"{name}: done", flush=True)
        else:
            results = {name: score(Path(path), projects, cases, args.device) for name, path in models.items()}
    if args.uncertainty:
        print_uncertainty(results)
        shares = None
    else:
        shares = print_tables(results, args.gap)
        if args.png:
            plot_structures(results, args.png)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"cases": cases, "skipped": skipped, "split": args.split, "models": models, "results": results}
        if shares is not None:
            document["gap_closed"] = shares
        args.json.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
