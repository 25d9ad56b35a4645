"""Labeling sessions already run, scored again against labels that follow the image.

Run: .venv/bin/python benchmarks/active_learning_rescore.py --sessions benchmarks/results/active_learning_X.json
     [--sessions ...] --nearest build/label_gap/cohort_2 --linear build/label_gap_lin/cohort_2
     [--scores build/al_rescore/scores.json] [--out-dir benchmarks/results]

``benchmarks/active_learning.py`` scores each round's teacher on the test split of the cohort it ran on, whose
labels (``make-cohort`` nearest-point sampling) alias the ribs and the vertebrae. A cohort made with the same seed
and ``--label-interpolation linear`` holds the same test images (checked array by array, as
``reference_labels.py`` does) with labels that follow them. Every distinct teacher of the sessions predicts each
shared test case once and is scored against both labels (``reference_labels.score``). The nearest scores must
repeat the sessions' recorded ones (the largest difference is printed); the linear ones replace them, and the
curves, the labeling saving and the paired gains are computed again by ``active_learning.py``'s own functions.
Each input's rescored summary goes to ``--out-dir`` as ``<name>_linear_labels.json`` with its plot beside it.
Scores are kept in ``--scores`` as each teacher finishes, so a stopped run goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from active_learning import BASELINE, plot_curves, print_results, summarise_sessions
from reference_labels import score, shared_cases

from napari_ssl_seg.active.simulation_records import SimulationResult
from napari_ssl_seg.store import Project


def teachers(sessions: list[dict[str, Any]]) -> list[str]:
    """Every distinct teacher the sessions scored, in the order first met."""
    ordered: dict[str, None] = {}
    for summary in sessions:
        for result in summary["strategies"].values():
            for record in result["rounds"]:
                ordered.setdefault(record["teacher"], None)
    return list(ordered)


def rescored(summary: dict[str, Any], scores: dict[str, Any], reference: str) -> dict[str, Any]:
    """``summary``'s strategies with each round's test Dice and HD95 taken from ``scores`` under ``reference``."""
    strategies = {}
    for name, result in summary["strategies"].items():
        rounds = []
        for record in result["rounds"]:
            scored = scores[record["teacher"]][reference]
            rounds.append({**record, "test_dice": scored["dice"], "test_hd95_mm": scored["hd95_mm"]})
        strategies[name] = SimulationResult.from_dict({**result, "rounds": rounds}).as_dict()
    return strategies


def largest_difference(summary: dict[str, Any], scores: dict[str, Any]) -> tuple[float, float]:
    """The largest |recorded - rescored| test Dice and HD95 under the reference the sessions ran on."""
    dice = hd95 = 0.0
    for result in summary["strategies"].values():
        for record in result["rounds"]:
            again = scores[record["teacher"]]["nearest"]
            dice = max(dice, abs(record["test_dice"] - again["dice"]))
            if record.get("test_hd95_mm") is not None:
                hd95 = max(hd95, abs(record["test_hd95_mm"] - again["hd95_mm"]))
    return dice, hd95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=Path, action="append", required=True, help="active_learning.py JSON")
    parser.add_argument("--nearest", type=Path, required=True, help="the cohort the sessions ran on")
    parser.add_argument("--linear", type=Path, required=True, help="the same cohort with labels that follow the image")
    parser.add_argument("--scores", type=Path, default=Path("build/al_rescore/scores.json"))
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    sessions = [json.loads(path.read_text(encoding="utf-8")) for path in args.sessions]
    scores: dict[str, Any] = json.loads(args.scores.read_text()) if args.scores.is_file() else {}
    with Project.open(args.nearest) as nearest, Project.open(args.linear) as linear:
        cases, skipped = shared_cases(nearest, linear, "test")
        if skipped:
            raise SystemExit(f"test images differ between the two cohorts: {', '.join(skipped)}")
        todo = [teacher for teacher in teachers(sessions) if teacher not in scores]
        print(f"{len(cases)} test cases with identical images; {len(todo)} teachers to score", flush=True)
        projects = {"nearest": nearest, "linear": linear}
        args.scores.parent.mkdir(parents=True, exist_ok=True)
        for done, teacher in enumerate(todo, 1):
            scores[teacher] = score(Path(teacher), projects, cases, args.device)
            args.scores.write_text(json.dumps(scores, indent=1))
            print(f"  {done}/{len(todo)} {teacher}: linear Dice {scores[teacher]['linear']['dice']:.4f}", flush=True)
    command = shlex.join([sys.executable, *sys.argv])
    for path, summary in zip(args.sessions, sessions, strict=True):
        dice, hd95 = largest_difference(summary, scores)
        print(f"\n== {path.name}: on the nearest labels again, largest difference Dice {dice:.4f}, HD95 {hd95:.2f} mm")
        results = rescored(summary, scores, "linear")
        initial = min(record["labeled"] for record in results[BASELINE]["rounds"])
        savings, paired = summarise_sessions(results, initial)
        seeds = sorted({record["seed"] for record in results[BASELINE]["rounds"]})
        print_results(results, seeds, savings, paired)
        out = args.out_dir / f"{path.stem}_linear_labels.json"
        plot_curves(results, out.with_suffix(".png"), f"{path.stem}, scored against labels that follow the image")
        document = {"command": command, "sessions": str(path), "reference": str(args.linear), "cases": cases}
        out.write_text(json.dumps(document | {"strategies": results, "savings": savings, "paired": paired}, indent=1))
        print(f"json {out}")


if __name__ == "__main__":
    main()
