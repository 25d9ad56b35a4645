"""Does the unlabeled pool add anything once the supervised teacher has plateaued? Warm-started, seeded, paired.

Run: .venv/bin/python benchmarks/ssl_plateau.py [--labeled 5] [--methods supervised,ucmt] [--seeds 0,1,2]
     [--iterations 1500] [--validate-every 250] [--gap build/label_gap] [--json benchmarks/results/ssl_plateau.json]
     [--equal-time ucmt [--rate-ratio R]] [--tag TAG --set settings.NAME=VALUE]

Starts from the supervised teachers ``benchmarks/label_gap.py`` trained to its plateau rule on its cohort of 40
cases with ``--labeled`` labeled training cases (``build/label_gap/labeled{N}_seed{S}/model.safetensors``; run
that first). From each seed's teacher, every method in ``--methods`` fine-tunes on the same cohort (the labeled
cases and the unlabeled pool) for ``--iterations`` with that seed and the ``finetune`` schedule (lr 0.001,
poly), validating every ``--validate-every``. ``supervised`` is the control: the same extra iterations from the
same start without the unlabeled cases, so that a gain of a semi-supervised method is not just more training.
``--equal-time METHOD`` adds the user's comparison: the control again, for as many iterations as it runs in
METHOD's training time (METHOD's iterations x the ratio of the two runs' median logged rates), validating as
often in time; ``--rate-ratio R`` gives that ratio instead (the control's iterations per second over METHOD's,
e.g. from ``benchmarks/training_speed.py`` on the same machine) where METHOD's run folder is not at hand.
``--tag TAG`` names the runs ``METHOD-TAG``, so a variant of a method (its settings changed with
``--set settings.NAME=VALUE``) keeps its own folders and results beside the method's own runs.

Printed per method: test Dice and HD95 (mean ± sd over seeds), the paired difference to the control and to the
starting teacher per seed, and whether the run met the plateau rule (its last ``--plateau-window`` validations
raised its best validation Dice by less than ``--plateau-delta``). Model selection uses the validation split;
the test split is only evaluated. Finished runs in ``--out`` are reused, interrupted ones resumed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from label_gap import plateaued, test_scores

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.training.config import TrainConfig, apply_overrides, preset
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.run_start import resume_info
from napari_ssl_seg.training.runlog import read_log


def run_one(
    project: Path,
    init: Path,
    method: str,
    seed: int,
    args: argparse.Namespace,
    out: Path,
    *,
    iterations: int | None = None,
    validate_every: int | None = None,
) -> dict[str, Any]:
    iterations = iterations or args.iterations
    validate_every = validate_every or args.validate_every
    overrides = [
        f"method={method}",
        f"seed={seed}",
        f"iterations={iterations}",
        f"validate_every={validate_every}",
        f"checkpoint_every={validate_every}",
        *args.set,
    ]
    config = apply_overrides(preset("finetune"), overrides)
    result_path = out / "result.json"
    if result_path.is_file():
        return finished_result(out, config, iterations)
    # A run stopped with the session continues from its checkpoint rather than from the start.
    interrupted = (out / "state" / "resume.json").is_file()
    train(project, config, out, device=args.device, init_model=init, resume=interrupted)
    records = read_log(out / "log.jsonl")
    curve = [(int(r["iteration"]), float(r["dice"])) for r in records if r.get("kind") == "validation"]
    seconds = max((float(r.get("train_seconds", 0.0)) for r in records if r.get("kind") == "validation"), default=0)
    result = {
        **test_scores(project, out / "model.safetensors", args.device),
        "iterations": iterations,
        "median_it_per_s": median_rate(out),
        "validation": curve,
        "converged": plateaued(curve, args.plateau_window, args.plateau_delta),
        "train_minutes": round(seconds / 60, 2),
    }
    result_path.write_text(json.dumps(result, indent=1))
    return result


def finished_result(out: Path, config: TrainConfig, iterations: int) -> dict[str, Any]:
    """A finished run's result, reused only if it was trained with ``config`` and ``iterations``: a run folder is
    named by method and tag, so a ``--set`` changed under the same tag would otherwise pass an old run off as the
    new one. The settings are compared by the loop's own resume check against the run's saved state."""
    result = json.loads((out / "result.json").read_text())
    try:
        resume_info(out, config)
    except InputError as exc:
        raise SystemExit(f"{out}: finished, but {exc}; give the variant its own --tag or --out") from None
    if result["iterations"] != iterations:
        raise SystemExit(f"{out}: finished at {result['iterations']} iterations, not {iterations}")
    return result


def _mean_sd(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def median_rate(run: Path) -> float:
    """Median logged iterations per second of a finished run (its log, so results from before this field work)."""
    rates = [
        float(r["it_per_s"]) for r in read_log(run / "log.jsonl") if r.get("kind") == "train" and r.get("it_per_s")
    ]
    if not rates:
        raise SystemExit(f"{run}: no logged training rates to time the control by; give them with --rate-ratio")
    return statistics.median(rates)


def run_name(method: str, tag: str | None) -> str:
    """A run's name: the method, or ``METHOD-TAG`` for a variant (its folders and its results' key)."""
    return f"{method}-{tag}" if tag else method


def equal_time_iterations(args: argparse.Namespace, method: str, seed: int) -> tuple[int, float]:
    """(iterations the control runs in ``method``'s training time, the rate ratio used) for one seed.

    From ``--rate-ratio`` where given, else from the two runs' own median rates, not their wall-clock: both ran
    on the same machine under the same load, and the ratio of their rates is what a user's budget converts at.
    With ``--tag`` both are the tagged runs, the control of a variant being the supervised run of the same settings.
    """
    ratio = args.rate_ratio
    if ratio is None:
        method_run = args.out / f"labeled{args.labeled}_{run_name(method, args.tag)}_seed{seed}"
        control_run = args.out / f"labeled{args.labeled}_{run_name('supervised', args.tag)}_seed{seed}"
        ratio = median_rate(control_run) / median_rate(method_run)
    return int(round(args.iterations * ratio, -2)), ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labeled", type=int, default=5)
    parser.add_argument("--methods", default="supervised,ucmt")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--validate-every", type=int, default=250)
    parser.add_argument("--plateau-window", type=int, default=4)
    parser.add_argument("--plateau-delta", type=float, default=0.01)
    parser.add_argument("--set", action="append", default=[], help="key=value for every run")
    parser.add_argument(
        "--tag", help="name the runs METHOD-TAG (folders and results), for a variant made with --set settings.NAME=V"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gap", type=Path, default=Path("build/label_gap"))
    parser.add_argument("--out", type=Path, default=Path("build/ssl_plateau"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/ssl_plateau.json"))
    parser.add_argument(
        "--equal-time",
        metavar="METHOD",
        help="also run the supervised control for as long as METHOD trained (its iterations x the rate ratio)",
    )
    parser.add_argument(
        "--rate-ratio",
        type=float,
        help="with --equal-time: the control's rate over METHOD's, instead of the two runs' logged rates",
    )
    args = parser.parse_args()
    if args.rate_ratio is not None and (not args.equal_time or args.rate_ratio <= 0):
        parser.error("--rate-ratio needs --equal-time and a positive ratio")
    keep_freed_memory()
    project = args.gap / f"cohort_{args.labeled}"
    if not (project / "project.sqlite").is_file():
        raise SystemExit(f"{project}: no label-gap cohort; run benchmarks/label_gap.py first")
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    starts: dict[int, dict[str, Any]] = {}
    names = {method: run_name(method, args.tag) for method in methods}
    runs: dict[str, dict[int, dict[str, Any]]] = {names[method]: {} for method in methods}
    for seed in seeds:
        init = args.gap / f"labeled{args.labeled}_seed{seed}" / "model.safetensors"
        if not init.is_file():
            raise SystemExit(f"{init}: no supervised teacher for seed {seed}; run benchmarks/label_gap.py first")
        starts[seed] = test_scores(project, init, args.device)
        for method in methods:
            name = names[method]
            out = args.out / f"labeled{args.labeled}_{name}_seed{seed}"
            runs[name][seed] = run_one(project, init, method, seed, args, out)
            print(
                f"seed {seed} {name:<10} test Dice {runs[name][seed]['dice']:.3f} (start "
                f"{starts[seed]['dice']:.3f}), converged {runs[name][seed]['converged']}",
                flush=True,
            )
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps(
                    {"command": " ".join(sys.argv), "labeled": args.labeled, "starts": starts, "runs": runs}, indent=1
                )
            )
        if args.equal_time:
            timed_method = run_name(args.equal_time, args.tag)
            timed = f"supervised, {timed_method}'s time"  # the key ssl_summary.py pairs with the method's run
            iterations, ratio = equal_time_iterations(args, args.equal_time, seed)
            out = args.out / f"labeled{args.labeled}_supervised_time-{timed_method}_seed{seed}"
            every = int(round(args.validate_every * ratio, -1))
            result = run_one(project, init, "supervised", seed, args, out, iterations=iterations, validate_every=every)
            runs.setdefault(timed, {})[seed] = {**result, "rate_ratio": round(ratio, 2)}
            print(f"seed {seed} {timed}: {iterations} iterations (rates {ratio:.2f}x), test Dice {result['dice']:.3f}")
            args.json.write_text(
                json.dumps(
                    {"command": " ".join(sys.argv), "labeled": args.labeled, "starts": starts, "runs": runs}, indent=1
                )
            )
    methods = list(runs)
    control = "supervised" if "supervised" in methods else None
    print(
        f"\nfrom the supervised teachers at {args.labeled} labeled cases, +{args.iterations} iterations, seeds {seeds}"
    )
    print("| method | test Dice | HD95 mm | minus control, per seed | minus start, per seed | converged |")
    print("|---|---|---|---|---|---|")
    start_dice = [starts[s]["dice"] for s in seeds]
    print(
        f"| start (supervised plateau) | {_mean_sd(start_dice)} | "
        f"{_mean_sd([starts[s]['hd95_mm'] for s in seeds])} | | | |"
    )
    for method in methods:
        dice = [runs[method][s]["dice"] for s in seeds]
        versus_control = (
            ", ".join(f"{runs[method][s]['dice'] - runs[control][s]['dice']:+.3f}" for s in seeds) if control else ""
        )
        versus_start = ", ".join(f"{runs[method][s]['dice'] - starts[s]['dice']:+.3f}" for s in seeds)
        converged = f"{sum(runs[method][s]['converged'] for s in seeds)} of {len(seeds)}"
        hd95 = _mean_sd([runs[method][s]["hd95_mm"] for s in seeds])
        print(f"| {method} | {_mean_sd(dice)} | {hd95} | {versus_control} | {versus_start} | {converged} |")


if __name__ == "__main__":
    main()
