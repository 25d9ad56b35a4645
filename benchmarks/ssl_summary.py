"""Semi-supervision at equal budgets, in one table and one plot (issue 23, item 2), from ssl_plateau.py's results.

Run: .venv/bin/python benchmarks/ssl_summary.py [RESULTS.json ...] [--label-gap benchmarks/results/label_gap.json ...]
     [--png benchmarks/results/ssl_budgets.png]

Default RESULTS: the kept ``benchmarks/results/ssl_plateau_3000.json`` (5 of 24 training cases labeled, 20%) and
``ssl_plateau_10pct*.json`` (2 labeled, 10%). Each file holds runs fine-tuned from one supervised start per seed.
A method's run is paired with the control (``supervised``: the same iterations without the unlabeled cases; for a
tagged run, ``supervised-TAG`` where it was run) and the start of its own file and seed, so runs from different
starts of one seed never mix. Equal time is the control run again for the method's training time (``supervised, M's
time``, ``ssl_plateau.py --equal-time M``).

"Gap closed" is the run's gain over its start divided by the gap from that start to the supervised teacher of the
same seed trained on every training case (``label_gap.json``): in Dice, and in HD95 (where lower is better). The
issue's target is half of it, by more than the seed spread. Printed: a markdown table (mean ± sd over the pairs);
drawn: each pair's gap closed, with the target's line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTROL = "supervised"
NAMES = {
    "supervised": "supervised (control)",
    "ucmt": "UCMT",
    "ugcemt": "UG-CEMT",
    "mt": "MT",
    "uamt": "UA-MT",
    "cps": "CPS",
    "ugmcl": "UG-MCL",
    "ccedual": "CCE dual",
    "curecl": "CURE-CL",
}
#: Variants run with ``ssl_plateau.py --tag`` that are controls rather than methods: what each isolates.
VARIANTS = {
    "mt-ema": "BatchNorm over unlabeled patches + EMA teacher (MT, consistency 0)",
    "mt-emaonly": "EMA teacher alone (MT, consistency 0, no unlabeled patches)",
}
#: Variants that are a method's own runs with something added: shown beside the method, named for what was added.
NAMED_TAGS = {"bn": "+ end-of-run BatchNorm step"}
VARIANT_LABELS = {
    "mt-ema": "BatchNorm over unlabeled + EMA",
    "mt-emaonly": "EMA alone",
    "ucmt-bn": "UCMT + BatchNorm step",
    "supervised-bn": "control + BatchNorm step",
}
RESULTS = Path("benchmarks/results")


@dataclass(frozen=True)
class Pair:
    """One run with what it is measured against: its start, its control, the all-labeled teacher of its seed."""

    labeled: int
    seed: int
    method: str
    run: dict[str, Any]
    start: dict[str, Any]
    full: dict[str, Any]
    control: dict[str, Any] | None
    equal_time_control: dict[str, Any] | None
    source: str

    def dice_gap_closed(self) -> float:
        return (self.run["dice"] - self.start["dice"]) / (self.full["dice"] - self.start["dice"])

    def hd95_gap_closed(self) -> float:
        return (self.start["hd95_mm"] - self.run["hd95_mm"]) / (self.start["hd95_mm"] - self.full["hd95_mm"])


def read_pairs(paths: list[Path], label_gap: dict[str, Any]) -> list[Pair]:
    full_runs = label_gap["runs"][str(label_gap["training_cases"])]
    results = [(path, json.loads(path.read_text())) for path in paths]
    for path, result in results:
        if "labeled" not in result:
            raise SystemExit(f"{path}: no 'labeled' count; written by an ssl_plateau.py older than this script")
    # A start is one (labeled count, seed, starting teacher): its control may sit in another file than a method's run.
    controls: dict[tuple[int, str, float], dict[str, Any]] = {}
    for _, result in results:
        for seed_key, start in result["starts"].items():
            for method, runs in result["runs"].items():
                if seed_key in runs and method.partition("-")[0].partition(",")[0] == CONTROL:
                    controls[int(result["labeled"]), method + "@" + seed_key, start["dice"]] = runs[seed_key]
    # A later file may hold runs of an earlier one again (reused from the same run folder) beside new controls.
    pairs: dict[tuple[int, int, str, float, float], Pair] = {}
    for path, result in results:
        labeled = int(result["labeled"])
        for seed_key, start in result["starts"].items():
            for method, runs in result["runs"].items():
                if seed_key not in runs or method.startswith(f"{CONTROL},"):
                    continue
                if method in result.get("superseded", {}):
                    print(f"left out: {method} seed {seed_key} of {path.name}: {result['superseded'][method]}")
                    continue
                pair = Pair(
                    labeled=labeled,
                    seed=int(seed_key),
                    method=method,
                    run=runs[seed_key],
                    start=start,
                    full=full_runs[seed_key],
                    control=matching_control(controls, labeled, method, seed_key, start["dice"]),
                    equal_time_control=controls.get((labeled, f"{CONTROL}, {method}'s time@{seed_key}", start["dice"])),
                    source=path.name,
                )
                pairs[labeled, pair.seed, method, start["dice"], pair.run["dice"]] = pair
    return list(pairs.values())


def matching_control(
    controls: dict[tuple[int, str, float], dict[str, Any]], labeled: int, method: str, seed: str, start: float
) -> dict[str, Any] | None:
    """The control of a tagged run is the control with the same tag where there is one (UCMT + the BatchNorm step
    against the supervised run + the step), so the column isolates the method; else the plain control."""
    base, _, tag = method.partition("-")
    if tag and base != CONTROL and (tagged := controls.get((labeled, f"{CONTROL}-{tag}@{seed}", start))):
        return tagged
    return controls.get((labeled, f"{CONTROL}@{seed}", start))


def mean_sd(values: list[float], digits: int = 3, percent: bool = False) -> str:
    scale, unit = (100, "%") if percent else (1, "")
    if len(values) == 1:
        return f"{values[0] * scale:.{digits}f}{unit}"
    spread = statistics.stdev(values)
    return f"{statistics.fmean(values) * scale:.{digits}f} ± {spread * scale:.{digits}f}{unit}"


def difference(pairs: list[Pair], other: str, key: str) -> list[float]:
    return [p.run[key] - getattr(p, other)[key] for p in pairs if getattr(p, other) not in (None, p.run)]


def table(pairs: list[Pair], percents: dict[int, str]) -> str:
    rows = [
        "| labeled | method | pairs (seeds) | test Dice | HD95 mm | Dice gap closed | HD95 gap closed | "
        "minus control, equal iterations (Dice, HD95 mm) | minus control, equal time (Dice, HD95 mm) | converged |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for labeled, method, group in columns(pairs):
        name = display_name(method)
        if method.startswith(f"{CONTROL},"):
            name += f" ({', '.join(str(p.run.get('iterations', '?')) for p in group)} iterations)"
        cells = [
            f"{labeled} ({percents.get(labeled, '?')})",
            name,
            f"{len(group)} ({', '.join(str(p.seed) for p in group)})",
            mean_sd([p.run["dice"] for p in group]),
            mean_sd([p.run["hd95_mm"] for p in group], 1),
            mean_sd([p.dice_gap_closed() for p in group], 0, percent=True),
            mean_sd([p.hd95_gap_closed() for p in group], 0, percent=True),
        ]
        for other in ("control", "equal_time_control"):
            dice = difference(group, other, "dice")
            hd95 = difference(group, other, "hd95_mm")
            cells.append(f"{mean_sd(dice)}, {mean_sd(hd95, 1)} (n = {len(dice)})" if dice else "")
        cells.append(f"{sum(bool(p.run.get('converged')) for p in group)} of {len(group)}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def equal_time_pairs(pairs: list[Pair]) -> list[Pair]:
    """The equal-time controls as pairs of their own (same start and all-labeled teacher as their method's run)."""
    return [
        dataclasses.replace(p, method=f"{CONTROL}, {p.method}'s time", run=p.equal_time_control, control=None)
        for p in pairs
        if p.equal_time_control is not None
    ]


def display_name(method: str) -> str:
    """``ucmt`` UCMT, ``mt-ema`` MT (ema): a tag names a variant (``ssl_plateau.py --tag``)."""
    if method.startswith(f"{CONTROL}, "):
        timed = method.removeprefix(f"{CONTROL}, ").removesuffix("'s time")
        return f"supervised, {display_name(timed)}'s time"
    if method in VARIANTS:
        return VARIANTS[method]
    base, _, tag = method.partition("-")
    if tag in NAMED_TAGS:
        return f"{NAMES.get(base, base)} {NAMED_TAGS[tag]}"
    return NAMES.get(base, base) + (f" ({tag})" if tag else "")


def columns(pairs: list[Pair]) -> list[tuple[int, str, list[Pair]]]:
    """(labeled, method, its pairs), by labeled count, then methods in NAMES order, equal-time controls last."""
    order = list(NAMES)
    groups: dict[tuple[int, str], list[Pair]] = {}
    for pair in pairs + equal_time_pairs(pairs):
        groups.setdefault((pair.labeled, pair.method), []).append(pair)
    base = [method.partition("-")[0] for _, method in groups]
    rank = {
        m: len(order) if m in VARIANTS else order.index(b) if b in order else len(order)
        for (_, m), b in zip(groups, base, strict=True)
    }
    ranked = sorted(groups, key=lambda c: (c[0], c[1].startswith(f"{CONTROL},"), rank[c[1]], c[1]))
    return [(labeled, method, groups[labeled, method]) for labeled, method in ranked]


def plot(pairs: list[Pair], percents: dict[int, str], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = columns(pairs)
    names = [VARIANT_LABELS.get(m) or display_name(m) for _, m, _ in shown]
    # One line each: rotated labels of several lines run into their neighbours.
    labels = [f"{name}, {n} labeled ({percents.get(n, '?')})" for name, (n, _, _) in zip(names, shown, strict=True)]
    low, high = -0.6, 1.3
    figure, axes = plt.subplots(1, 2, figsize=(12, 6.5), dpi=110, sharey=True)
    for axis, measure, title in (
        (axes[0], Pair.dice_gap_closed, "Dice: share of the gap to all labels closed"),
        (axes[1], Pair.hd95_gap_closed, "HD95: share of the gap to all labels closed"),
    ):
        for index, (labeled, method, group) in enumerate(shown):
            values = [measure(p) for p in group]
            if method.partition("-")[0] == CONTROL:  # the control, with or without a tag
                colour = "tab:grey"
            elif method.startswith(f"{CONTROL},"):
                colour = "tab:orange"
            else:
                colour = "tab:blue" if labeled == min(n for n, _, _ in shown) else "tab:green"
            inside = [v for v in values if low <= v <= high]
            outside = [min(max(v, low), high) for v in values if not low <= v <= high]
            axis.scatter([index] * len(inside), inside, color=colour, alpha=0.7, s=22)
            # Off the scale (a small HD95 gap makes its ratio large): drawn at the edge as a triangle.
            axis.scatter([index] * len(outside), outside, color=colour, marker="v", s=30)
            axis.hlines(statistics.fmean(values), index - 0.3, index + 0.3, color=colour, linewidth=2)
        axis.axhline(0.5, color="tab:red", linestyle="--", linewidth=1, label="target: half the gap")
        axis.axhline(0.0, color="black", linewidth=0.5)
        axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        axis.set_title(title, fontsize=9)
        axis.set_ylim(low - 0.05, high + 0.05)
    axes[0].set_ylabel("gap closed (dot: a seed; bar: mean)")
    axes[0].legend(fontsize=7, loc="upper left")
    figure.suptitle(
        "Fine-tuned from the supervised plateau on the 40-case generated chest cohort: semi-supervised (blue, green),\n"
        "the same iterations without unlabeled cases (grey), supervised for UCMT's time (orange)",
        fontsize=8,
    )
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png)


def merged_label_gap(paths: list[Path]) -> dict[str, Any]:
    """One label_gap.py result from several: the first file's, with each later file's runs of a seed replacing it
    (the all-labeled teachers retrained with today's code against the older ones)."""
    merged = json.loads(paths[0].read_text())
    for path in paths[1:]:
        later = json.loads(path.read_text())
        if later["training_cases"] != merged["training_cases"]:
            raise SystemExit(
                f"{path}: {later['training_cases']} training cases, {paths[0]} has {merged['training_cases']}"
            )
        for labeled, seeds in later["runs"].items():
            merged["runs"].setdefault(labeled, {}).update(seeds)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="*", type=Path)
    parser.add_argument(
        "--label-gap",
        type=Path,
        nargs="+",
        default=[RESULTS / "label_gap.json"],
        help="label_gap.py results; a later file's all-labeled teacher of a seed replaces an earlier one's",
    )
    parser.add_argument("--png", type=Path, default=RESULTS / "ssl_budgets.png")
    args = parser.parse_args()
    paths = args.results or [RESULTS / "ssl_plateau_3000.json", *sorted(RESULTS.glob("ssl_plateau_10pct*.json"))]
    label_gap = merged_label_gap(args.label_gap)
    pairs = read_pairs(paths, label_gap)
    if not pairs:
        raise SystemExit("no runs in " + ", ".join(map(str, paths)))
    percents = {int(n): "/".join(f"{p:g}%" for p in ps) for n, ps in label_gap["percents"].items()}
    print(table(pairs, percents))
    plot(pairs, percents, args.png)
    print(f"\nplot: {args.png}")


if __name__ == "__main__":
    main()
