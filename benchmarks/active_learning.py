"""Does uncertainty-guided labeling pay? Test Dice against labeled cases, uncertainty-first vs random.

Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/active_learning.py [--cases 12] [--cohort-seed 0]
     [--strategies structure_entropy,random] [--seeds 0,1] [--initial 2] [--rounds 5] [--budget 1]
     [--method supervised] [--config quick] [--iterations 120] [--set key=value ...] [--samples 8]
     [--init models/chest_ct_ucmt.safetensors] [--promotion validation|always]
     [--out build/active_learning] [--png benchmarks/results/active_learning.png]
     [--cohort PROJECT] [--initial case_000,case_001] [--init 'teachers/seed{seed}/model.safetensors']

A cohort of ``--cases`` cases is generated from the bundled chest CT (every training case with ground
truth), or ``--cohort`` names an existing one (only read: every session works on a copy). ``--initial``
is a count (drawn per seed) or the names of the cases labeled at the start; ``--init`` may hold
``{seed}``, one starting teacher per seed (e.g. converged on those initial cases).
For each strategy, ``napari_ssl_seg.active.simulation.simulate`` runs one labeling session per
seed on a copy of it: ``--initial`` cases labeled, then ``--rounds`` rounds of labeling ``--budget``
case(s) the strategy picks, fine-tuning the previous teacher for ``--iterations`` and evaluating it on
the test split; ``--promotion`` says whether a fine-tuned teacher must validate at least as well as
the previous one to replace it (the one-click retrain's rule, the default) or always does. Writes the
plot of test Dice against labeled cases (mean and spread over seeds) to ``--png`` and every number to
the JSON beside it, and prints a table and the labeling saving: how many
cases each uncertainty strategy needs (linear interpolation between rounds) to reach the mean Dice that
random labeling reaches with N cases, as a ratio to N (the issue's target: at most 0.7), and the same
for the mean HD95 (reaching it means coming down to it).
Each strategy's session of each seed has its own folder under ``--out``; a finished one is not run again, so
a run stopped part-way goes on where it stopped, and more seeds can be added later.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from napari_ssl_seg.active.simulation import (
    PROMOTIONS,
    SimulationResult,
    SimulationSettings,
    parse_initial,
    simulate,
)
from napari_ssl_seg.active.strategies import DEFAULT_STRATEGY
from napari_ssl_seg.cli.train import training_config
from napari_ssl_seg.cohort.cohort_project import build_cohort_project
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.sample_data import sample_path
from napari_ssl_seg.training.config import TrainConfig

BASELINE = "random"
Rows = list[dict[str, Any]]


def _cohort(out: Path, cases: int, seed: int) -> Path:
    if not out.exists():
        build_cohort_project(
            out, sample_path("CTChest4.nrrd"), sample_path("Segmentation.seg.nrrd"), cases=cases, seed=seed
        ).close()
    return out


def _stored_session(done: Path, config: TrainConfig, args: argparse.Namespace, seed: int) -> dict[str, Any] | None:
    """The finished session of ``seed`` stored at ``done``; None when there is none (or it was cut short)."""
    if not done.is_file():
        return None
    stored = json.loads(done.read_text(encoding="utf-8"))
    # Rebuilt through from_dict, a setting added since that run counts at its default (the
    # behaviour the run had), so a finished session survives new config keys.
    ran_with = TrainConfig.from_dict(stored["settings"]["config"]).to_dict()
    same = ran_with == config.to_dict() and stored["settings"]["seeds"] == [seed]
    # Sessions from before the rule was simulated took every fine-tuned teacher.
    same = same and stored["settings"].get("promotion", "always") == args.promotion
    same = same and all(stored["settings"][key] == getattr(args, key) for key in ("initial", "budget", "rounds"))
    same = same and stored["settings"].get("init_model") == _stored_init(args, [seed])
    if not same:
        sys.exit(f"error: {done.parent} holds a session with other settings; choose another --out")
    return stored if len(stored["rounds"]) == args.rounds + 1 else None


def _run(strategy: str, cohort: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every seed's session of ``strategy``, each in its own folder: a run stopped part-way keeps the seeds it
    finished, and the next run with the same settings (any seeds) reuses them."""
    config = training_config(args)
    merged: SimulationResult | None = None
    for seed in args.seeds:
        work = args.out / strategy / f"seed{seed}"
        stored = _stored_session(work / "result.json", config, args, seed)
        if stored is not None:
            print(f"{strategy}: reusing the finished session of seed {seed} in {work}", flush=True)
            session = SimulationResult.from_dict(stored)
        else:
            if work.exists():
                shutil.rmtree(work)  # cut short: its rounds say nothing without the rest
            settings = SimulationSettings(
                strategy=strategy,
                budget=args.budget,
                rounds=args.rounds,
                initial=args.initial,
                seeds=(seed,),
                samples=args.samples,
                init_model=_starting_teachers(args, [seed]),
                device=args.device,
                promotion=args.promotion,
            )

            def report(done: int, total: int, item: str) -> None:
                print(f"  {strategy}: {done}/{total} teachers trained ({item})", flush=True)

            session = simulate(cohort, work, config, settings, progress=report)
        if merged is None:
            merged = SimulationResult(session.strategy, session.method, args.out / strategy, dict(session.settings))
        merged.records.extend(session.records)
    assert merged is not None  # main refuses an empty --seeds
    merged.settings["seeds"] = list(args.seeds)
    merged.settings["init_model"] = _stored_init(args, args.seeds)
    return merged.as_dict()


def _starting_teachers(args: argparse.Namespace, seeds: list[int]) -> Path | dict[int, Path] | None:
    if args.init is None:
        return None
    if "{seed}" in args.init:
        return {seed: Path(args.init.format(seed=seed)) for seed in seeds}
    return Path(args.init)


def _stored_init(args: argparse.Namespace, seeds: list[int]) -> str | dict[str, str] | None:
    """``--init`` as the session's summary stores it."""
    teachers = _starting_teachers(args, seeds)
    if isinstance(teachers, dict):
        return {str(seed): str(path) for seed, path in teachers.items()}
    return None if teachers is None else str(teachers)


def _interpolate_reach(curve: list[tuple[int, float]], target: float, lower_is_better: bool = False) -> float | None:
    """The (interpolated) number of labeled cases at which ``curve`` first reaches ``target``."""
    sign = -1.0 if lower_is_better else 1.0
    points = [(count, sign * value) for count, value in curve]
    goal = sign * target
    first_count, first_value = points[0]
    if first_value >= goal:
        return float(first_count)
    for (a, value_a), (b, value_b) in itertools.pairwise(points):
        if value_a < goal <= value_b:
            return a + (goal - value_a) / (value_b - value_a) * (b - a)
    return None


def labeling_savings(results: dict[str, dict[str, Any]], initial: int, metric: str = "dice") -> Rows:
    """Cases each strategy needs for random's mean ``metric`` ("dice", or "hd95": lower is better)."""
    key = f"{metric}_mean"
    baseline = {p["labeled"]: p[key] for p in results[BASELINE]["curve"] if p.get(key) is not None}
    rows = []
    for strategy, result in results.items():
        if strategy == BASELINE:
            continue
        curve = [(p["labeled"], p[key]) for p in result["curve"] if p.get(key) is not None]
        if not curve:
            continue
        for count, value in sorted(baseline.items()):
            if count <= initial:
                continue  # both start from the same labeled cases: nothing to save there
            reach = _interpolate_reach(curve, value, lower_is_better=metric == "hd95")
            rows.append(
                {
                    "strategy": strategy,
                    "metric": metric,
                    "random_cases": count,
                    "random_value": value,
                    "cases_needed": reach,
                    "ratio": None if reach is None else reach / count,
                    # The same, counting only the cases the strategy chose (the initial ones are shared).
                    "ratio_chosen": None if reach is None else (reach - initial) / (count - initial),
                }
            )
    return rows


def paired_gains(results: dict[str, dict[str, Any]], initial: int, metric: str = "dice") -> Rows:
    """Each strategy against random seed by seed: the difference of the test ``metric`` at each labeled count.

    A session and its random twin share the seed, the initial cases and the starting teacher, so the
    per-seed difference removes what the start contributes; its mean over seeds, against its spread,
    says whether the order itself helps where the two curves' spreads overlap. ``labeled`` None is the
    mean over every count after the initial one (one number per seed: the area between the curves).
    A positive ``gain`` is better for the strategy (for HD95, random's minus the strategy's).
    """
    key = {"dice": "test_dice", "hd95": "test_hd95_mm"}[metric]
    sign = -1.0 if metric == "hd95" else 1.0

    def by_seed(result: dict[str, Any]) -> dict[int, dict[int, float]]:
        table: dict[int, dict[int, float]] = {}
        for record in result.get("rounds", []):
            if record.get(key) is not None and record["labeled"] > initial:
                table.setdefault(record["seed"], {})[record["labeled"]] = float(record[key])
        return table

    baseline = by_seed(results[BASELINE])
    rows = []
    for strategy, result in results.items():
        if strategy == BASELINE:
            continue
        mine = by_seed(result)
        seeds = sorted(set(mine) & set(baseline))
        counts = sorted({n for seed in seeds for n in mine[seed] if n in baseline[seed]})
        gains: dict[int | None, list[float]] = {n: [] for n in counts}
        gains[None] = []
        for seed in seeds:
            shared = [n for n in counts if n in mine[seed] and n in baseline[seed]]
            per_count = [sign * (mine[seed][n] - baseline[seed][n]) for n in shared]
            for n, gain in zip(shared, per_count, strict=True):
                gains[n].append(gain)
            if per_count:
                gains[None].append(statistics.fmean(per_count))
        for labeled, values in gains.items():
            if values:
                rows.append(
                    {
                        "strategy": strategy,
                        "metric": metric,
                        "labeled": labeled,
                        "gain_mean": statistics.fmean(values),
                        "gain_std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "better": sum(value > 0 for value in values),
                        "seeds": len(values),
                    }
                )
    return rows


def summarise_sessions(results: dict[str, dict[str, Any]], initial: int) -> tuple[Rows, Rows]:
    """The labeling savings and the seed-by-seed gains over random, in Dice and in HD95."""
    savings = [*labeling_savings(results, initial, "dice"), *labeling_savings(results, initial, "hd95")]
    paired = [*paired_gains(results, initial, "dice"), *paired_gains(results, initial, "hd95")]
    return savings, paired


def print_results(results: dict[str, dict[str, Any]], seeds: list[int], savings: Rows, paired: Rows) -> None:
    """The curves' tables, the labeling saving, the paired gains and the annotation effort."""
    counts = sorted({p["labeled"] for r in results.values() for p in r["curve"]})
    for metric, digits in (("dice", 4), ("hd95", 1)):
        print(f"\ntest {metric} (mean ± std over seeds {seeds}) by labeled training cases")
        print(f"{'labeled':<8} " + " ".join(f"{s:>22}" for s in results))
        for count in counts:
            cells = []
            for strategy in results:
                point = next((p for p in results[strategy]["curve"] if p["labeled"] == count), None)
                mean = None if point is None else point.get(f"{metric}_mean")
                cells.append("-" if mean is None else f"{mean:.{digits}f} ± {point[f'{metric}_std']:.{digits}f}")
            print(f"{count:<8} " + " ".join(f"{c:>22}" for c in cells))
    print("\nlabeling saving: cases needed to reach random's mean at N cases (target ratio <= 0.7)")
    print(f"{'strategy':<20} {'metric':>6} {'N':>3} {'random':>9} {'needed':>8} {'ratio':>7} {'chosen-only':>12}")
    for row in savings:
        needed = "not reached" if row["cases_needed"] is None else f"{row['cases_needed']:.2f}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        chosen = "-" if row["ratio_chosen"] is None else f"{row['ratio_chosen']:.2f}"
        print(
            f"{row['strategy']:<20} {row['metric']:>6} {row['random_cases']:>3} {row['random_value']:>9.4f} "
            f"{needed:>8} {ratio:>7} {chosen:>12}"
        )
    print("\nseed by seed against random (same start): gain in test Dice, or HD95 mm saved; 'all': mean over rounds")
    print(f"{'strategy':<20} {'metric':>6} {'N':>4} {'gain':>18} {'better in':>10}")
    for row in paired:
        digits = 4 if row["metric"] == "dice" else 1
        count = "all" if row["labeled"] is None else str(row["labeled"])
        gain = f"{row['gain_mean']:+.{digits}f} ± {row['gain_std']:.{digits}f}"
        print(f"{row['strategy']:<20} {row['metric']:>6} {count:>4} {gain:>18} {row['better']:>4} of {row['seeds']}")
    print("\nannotation effort: voxels corrected in the ranking teacher's prediction / voxels painted from scratch")
    print(f"{'labeled':<8} " + " ".join(f"{s:>22}" for s in results))
    for count in counts:
        cells = []
        for strategy in results:
            point = next((p for p in results[strategy]["curve"] if p["labeled"] == count), None)
            ratio = None if point is None else point.get("correction_mean")
            cells.append("-" if ratio is None else f"{100 * ratio:.1f}%")
        print(f"{count:<8} " + " ".join(f"{c:>22}" for c in cells))


def plot_curves(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, panels = plt.subplots(1, 2, figsize=(10.4, 4.4), dpi=120)
    for axes, metric, label in zip(
        panels, ("dice", "hd95"), ("test Dice (mean over classes)", "test HD95 mm (lower is better)"), strict=True
    ):
        for strategy, result in results.items():
            points = [p for p in result["curve"] if p.get(f"{metric}_mean") is not None]
            counts = [p["labeled"] for p in points]
            means = [p[f"{metric}_mean"] for p in points]
            spread = [p[f"{metric}_std"] for p in points]
            line = axes.plot(counts, means, marker="o", label=strategy)[0]
            lower = [m - s for m, s in zip(means, spread, strict=True)]
            upper = [m + s for m, s in zip(means, spread, strict=True)]
            axes.fill_between(counts, lower, upper, color=line.get_color(), alpha=0.2)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # cases come whole
        axes.set_xlabel("labeled training cases")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
    panels[0].legend(title="mean ± std over seeds")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=12, help="cohort size")
    parser.add_argument("--cohort-seed", type=int, default=0)
    parser.add_argument("--cohort", type=Path, help="an existing cohort project instead of a generated one")
    parser.add_argument("--strategies", default=f"{DEFAULT_STRATEGY},{BASELINE}")
    parser.add_argument("--seeds", default="0,1", help="comma-separated simulation seeds")
    parser.add_argument(
        "--initial",
        type=parse_initial,
        default=2,
        help="training cases labeled before round 1: a count, or their names",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=1, help="cases labeled per round")
    parser.add_argument("--method", default="supervised")
    parser.add_argument("--config", default="quick")
    parser.add_argument("--iterations", type=int, default=120, help="training iterations per round")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="training override, as for `train --set`"
    )
    parser.add_argument("--samples", type=int, default=8, help="MC-dropout passes when ranking")
    parser.add_argument(
        "--init", help="teacher that round 0 fine-tunes from, '{seed}' for one per seed (default: from scratch)"
    )
    parser.add_argument("--promotion", choices=PROMOTIONS, default=PROMOTIONS[0], help="which teacher goes on")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("build/active_learning"), help="cohort and sessions")
    parser.add_argument("--png", type=Path, default=Path("benchmarks/results/active_learning.png"))
    args = parser.parse_args()
    keep_freed_memory()  # as the command line runs
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    if not args.seeds:
        parser.error("--seeds needs at least one seed")
    strategies = [s for s in args.strategies.split(",") if s]
    if BASELINE not in strategies:
        parser.error(f"--strategies must include {BASELINE}, the baseline the saving is measured against")
    cohort = args.cohort or _cohort(args.out / "cohort", args.cases, args.cohort_seed)
    results = {strategy: _run(strategy, cohort, args) for strategy in strategies}
    initial_count = args.initial if isinstance(args.initial, int) else len(args.initial)
    savings, paired = summarise_sessions(results, initial_count)
    start = "scratch" if args.init is None else "/".join(Path(args.init).parts[-2:])
    title = (
        f"{cohort.name}, {args.method}, {args.iterations} it/round, {args.budget} case/round, "
        f"seeds {','.join(map(str, args.seeds))}, round 0 from {start}, promotion: {args.promotion}"
    )
    plot_curves(results, args.png, title)
    command = shlex.join([sys.executable, *sys.argv])
    summary = {"command": command, "strategies": results, "savings": savings, "paired": paired}
    json_path = args.png.with_suffix(".json")
    json_path.write_text(json.dumps(summary, indent=1), encoding="utf-8")

    print_results(results, args.seeds, savings, paired)
    print(f"\nplot {args.png}\njson {json_path}")


if __name__ == "__main__":
    main()
