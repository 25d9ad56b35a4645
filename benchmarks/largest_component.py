"""What keeping each class's largest component does to a teacher's test Dice and HD95, per class.

Run: .venv/bin/python benchmarks/largest_component.py --model M --choose PROJECT [--test PROJECT:SPLIT ...]
     [--shipped] [--json FILE]
     .venv/bin/python benchmarks/largest_component.py --from-json DIR --gap START:FULL[,OTHER] [--test PROJECT:SPLIT]
     [--json FILE] [--png FILE] [--name GROUP=LABEL ...] [--title TEXT]

The clean-up is chosen as training chooses it (``evaluation/validation.py``): on the validation split of
``--choose`` (the project the teacher validated on), from the network's own argmax. Then every test set
is predicted once without it and scored three ways with ``evaluate``'s metrics: as predicted, with the
chosen classes cleaned (what the card now asks for) and with every class cleaned (why the choice is per
class). ``--shipped`` adds the shipped teachers' test sets: the demo cohort's test cases and the 8
labeled cases of the unseen cohorts of seeds 1 and 2 (``benchmarks/correction_effort.py``'s sets).
``--real DIR`` adds the lungs of the two real chest CTs of ``benchmarks/real_ct.py`` (its Hounsfield
reference): pieces per lung and lung Dice as predicted, with the chosen classes and with both lungs cleaned.
Distances of an empty class are listed failures and kept out of the means, as ``evaluate`` does.

``--from-json DIR --gap START:FULL`` reads the JSONs of earlier runs, one per teacher, named
``<group>_s<seed>.json``, and prints each teacher's mean Dice and HD95 on one test set and, for every group
other than START and FULL, the share of the START-to-FULL gap of its seed that it closes, as predicted and with
the clean-up (``reference_labels.gap_closed``'s rule; OTHER stands in for a seed without a FULL teacher);
``--png`` plots those shares, each group under its ``--name`` label where one is given, headed by ``--title``
(default: the test set's path).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from correction_effort import SETS, cohort_cases
from real_ct import class_of, dice, lps_array, lung_reference, predict_lps
from reference_labels import gap_closed, parse_gap, print_shares
from scipy import ndimage

from napari_ssl_seg.evaluation.metrics import case_metrics
from napari_ssl_seg.evaluation.validation import ValidationCase, scored_classes, validate_network
from napari_ssl_seg.inference.components import keep_largest_components
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.store import Project

VARIANTS = ("as predicted", "chosen classes", "every class")
SHARE_VARIANTS = VARIANTS[:2]  # what a user gets without and with the card's clean-up; "every class" is a probe


def labeled_cases(root: Path, split: str) -> list[tuple[str, Any, np.ndarray]]:
    with Project.open(root) as project:
        return [
            (case.name, project.read_image(case.name), np.asarray(project.read_label(case.name).array))
            for case in project.cases()
            if case.split == split and case.is_labeled
        ]


def score_set(predictor: Predictor, cases: list, chosen: list[int]) -> dict[str, dict[str, dict[int, float]]]:
    """Per variant: {"dice"|"hd95": {class: mean over cases}} (HD95 over the cases where it is finite)."""
    classes = scored_classes(predictor.card)
    collected: dict[str, dict[str, dict[int, list[float]]]] = {
        variant: {"dice": {c: [] for c in classes}, "hd95": {c: [] for c in classes}} for variant in VARIANTS
    }
    for name, image, reference in cases:
        raw = np.asarray(predictor.predict(image, uncertainty="none", name=name, postprocess=False).label.array)
        maps = {
            "as predicted": raw,
            "chosen classes": keep_largest_components(raw, chosen),
            "every class": keep_largest_components(raw, classes),
        }
        for variant, label in maps.items():
            for c, metric in case_metrics(label, reference, image.spacing, classes).items():
                collected[variant]["dice"][c].append(metric.dice)
                if np.isfinite(metric.hd95_mm):
                    collected[variant]["hd95"][c].append(metric.hd95_mm)
    return {
        variant: {
            key: {c: (statistics.fmean(v) if v else float("nan")) for c, v in per_class.items()}
            for key, per_class in metrics.items()
        }
        for variant, metrics in collected.items()
    }


def real_lungs(predictor: Predictor, data: Path, chosen: list[int]) -> dict[str, dict[str, float]]:
    """Per real CT and lung: its pieces as predicted, and its Dice as predicted, chosen and with both lungs cleaned."""
    sides = {side: class_of(predictor.card.classes, f"{side} lung") for side in ("right", "left")}
    results: dict[str, dict[str, float]] = {}
    for name in ("lung1_image.nrrd", "lung2_image.nrrd"):
        with tempfile.TemporaryDirectory() as work:
            raw = predict_lps(predictor, data / name, Path(work), postprocess=False)
        maps = {
            "as predicted": raw,
            "chosen classes": keep_largest_components(raw, chosen),
            "both lungs": keep_largest_components(raw, list(sides.values())),
        }
        for side, reference in zip(sides, lung_reference(lps_array(data / name)), strict=True):
            mask = raw == sides[side]
            pieces = ndimage.label(mask, structure=np.ones((3, 3, 3)))[1]
            scores = {variant: dice(label == sides[side], reference) for variant, label in maps.items()}
            results[f"{name} {side} lung"] = {"pieces": pieces, **scores}
    return results


def class_means(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean Dice and HD95 over the classes; an HD95 of NaN (a class empty in every case) is left out."""
    return {
        "dice": float(np.mean(list(scores["dice"].values()))),
        "hd95_mm": float(np.nanmean(list(scores["hd95"].values()))),
    }


def cleaned_gap(folder: Path, gap: str, test_set: str | None) -> dict[str, Any]:
    """Each teacher's means per variant on one test set, and the share of the gap each group closes per variant."""
    runs = {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*_s*.json"))}
    if not runs:
        raise SystemExit(f"{folder}: no <group>_s<seed>.json files")
    sets = {
        key
        for run in runs.values()
        for key, scored in run.items()
        if isinstance(scored, dict) and VARIANTS[0] in scored
    }
    if test_set is None and len(sets) != 1:
        raise SystemExit(f"{folder}: the runs score {sorted(sets)}; name one with --test")
    test_set = test_set or sets.pop()
    missing = [name for name, run in runs.items() if test_set not in run]
    if missing:
        raise SystemExit(f"{folder}: {', '.join(missing)} did not score {test_set}")
    means = {name: {v: class_means(run[test_set][v]) for v in SHARE_VARIANTS} for name, run in runs.items()}
    start, fulls = parse_gap(gap)
    shares = gap_closed(means, start, fulls, references=SHARE_VARIANTS)
    return {"test set": test_set, "means": means, "shares": shares}


def print_cleaned_gap(result: dict[str, Any]) -> None:
    print(f"{result['test set']}: mean Dice / HD95 mm of the classes")
    print("| teacher | " + " | ".join(SHARE_VARIANTS) + " |")
    print("|---|---|---|")
    for name, by_variant in result["means"].items():
        cells = [f"{by_variant[v]['dice']:.3f} / {by_variant[v]['hd95_mm']:.1f}" for v in SHARE_VARIANTS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print_shares(result["shares"], "Share of the gap closed", column="clean-up")


def plot_cleaned_gap(
    result: dict[str, Any], path: Path, names: dict[str, str] | None = None, title: str | None = None
) -> None:
    """Per group, the share of the Dice and of the HD95 gap closed as predicted and cleaned: mean bar, seed dots.

    ``names`` gives a group (a file-name stem) the label a reader should see under its bars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = result["shares"]
    variants = SHARE_VARIANTS
    figure, panels = plt.subplots(1, 2, figsize=(max(9, 1.1 * len(shares)), 4.4), dpi=120, sharey=True)
    width = 0.8 / len(variants)
    for axes, key, panel_title in zip(panels, ("dice", "hd95"), ("Dice gap closed", "HD95 gap closed"), strict=True):
        for index, variant in enumerate(variants):
            positions = np.arange(len(shares)) + (index - (len(variants) - 1) / 2) * width
            per_seed = [[value[key] for value in by[variant]["per_seed"].values()] for by in shares.values()]
            label = "with the clean-up the card chose" if variant == "chosen classes" else variant
            axes.bar(positions, [np.mean(seeds) for seeds in per_seed], width, label=label)
            for position, seeds in zip(positions, per_seed, strict=True):
                axes.plot([position] * len(seeds), seeds, "k.", markersize=5)
        axes.axhline(0.5, color="grey", linestyle="--", linewidth=0.8, label="half the gap (the target)")
        labels = [(names or {}).get(group, group) for group in shares]
        axes.set_xticks(np.arange(len(shares)), labels, rotation=35, ha="right", fontsize=8)
        axes.set_title(panel_title, fontsize=10)
        axes.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    seeds = sorted({seed for by in shares.values() for seed in by[variants[0]]["per_seed"]})
    panels[0].legend(fontsize=8)
    heading = title or f"{result['test set']}: share of the gap to all labels closed"
    figure.suptitle(f"{heading} (seeds {', '.join(seeds)}; dots)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--choose", type=Path, help="project whose validation split chooses")
    parser.add_argument("--from-json", type=Path, metavar="DIR", help="earlier runs' JSONs, <group>_s<seed>.json")
    parser.add_argument("--gap", metavar="START:FULL[,OTHER]", help="with --from-json: the share of the gap closed")
    parser.add_argument("--test", action="append", default=[], help="PROJECT:SPLIT to score (repeatable)")
    parser.add_argument("--shipped", action="store_true", help="add the shipped teachers' test sets")
    parser.add_argument("--out", type=Path, default=Path("build/correction_effort"), help="--shipped cohorts")
    parser.add_argument("--real", type=Path, help="folder with lung1_image.nrrd and lung2_image.nrrd")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--png", type=Path, help="with --from-json: a plot of the shares")
    parser.add_argument("--title", help="with --png: the plot's heading")
    parser.add_argument(
        "--name", action="append", default=[], metavar="GROUP=LABEL", help="with --png: a group's label (repeatable)"
    )
    args = parser.parse_args()
    names = dict(entry.partition("=")[::2] for entry in args.name)
    if any(not group or not label for group, label in names.items()):
        parser.error("--name takes GROUP=LABEL")
    if args.from_json is not None:
        if args.gap is None:
            parser.error("--from-json needs --gap START:FULL")
        result = cleaned_gap(args.from_json, args.gap, args.test[0] if args.test else None)
        print_cleaned_gap(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        if args.png:
            plot_cleaned_gap(result, args.png, names, args.title)
        return
    if args.model is None or args.choose is None:
        parser.error("--model and --choose are needed to score a teacher")
    keep_freed_memory()
    predictor = Predictor.from_checkpoint(args.model, device=args.device)
    validation = [ValidationCase(n, i, r) for n, i, r in labeled_cases(args.choose, "validation")]
    network = predictor.networks["model"]
    score = validate_network(network, validation, predictor.card, device=torch.device(predictor.device), overlap=0.25)
    chosen = list(score.largest_component)
    names = {int(k): v for k, v in predictor.card.classes.items()}
    print(f"chosen on {len(validation)} validation cases: {[names.get(c, c) for c in chosen]}", flush=True)
    print(f"validation Dice {score.raw_dice:.4f} as predicted, {score.dice:.4f} cleaned", flush=True)
    sets: dict[str, list] = {}
    for entry in args.test:
        root, _, split = entry.rpartition(":")
        sets[entry] = labeled_cases(Path(root), split)
    if args.shipped:
        for label, (seed, labeled, split) in SETS.items():
            sets[label] = cohort_cases(args.out, seed, labeled, split)
    results: dict[str, Any] = {"model": str(args.model), "chosen": chosen, "validation": [score.raw_dice, score.dice]}
    for label, cases in sets.items():
        scores = score_set(predictor, cases, chosen)
        results[label] = scores
        print(f"\n{label} ({len(cases)} cases): Dice / HD95 mm per class")
        print("| class | " + " | ".join(VARIANTS) + " |")
        print("|---|" + "---|" * len(VARIANTS))
        for c in scored_classes(predictor.card):
            cells = [f"{scores[v]['dice'][c]:.3f} / {scores[v]['hd95'][c]:.1f}" for v in VARIANTS]
            print(f"| {names.get(c, c)} | " + " | ".join(cells) + " |")
        means = [
            f"{np.mean(list(scores[v]['dice'].values())):.3f} / {np.nanmean(list(scores[v]['hd95'].values())):.1f}"
            for v in VARIANTS
        ]
        print("| mean of the classes | " + " | ".join(means) + " |", flush=True)
    if args.real is not None:
        results["real lungs"] = real_lungs(predictor, args.real, chosen)
        print("\nreal CTs, lungs against the Hounsfield reference: pieces; Dice as predicted / chosen / both lungs")
        for key, row in results["real lungs"].items():
            scores = " / ".join(f"{row[variant]:.3f}" for variant in ("as predicted", "chosen classes", "both lungs"))
            print(f"{key:<32} {row['pieces']:>4}  {scores}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
