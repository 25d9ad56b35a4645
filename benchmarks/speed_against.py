"""Training iterations per second of this tree against an older commit, side by side in one run.

    .venv/bin/python benchmarks/speed_against.py --baseline b18fcba [--methods supervised,ucmt,ugcemt]
        [--iterations 40] [--warmup 5] [--rounds 2] [--config quick]

The baseline is checked out as a git worktree (``<work>/baseline``, kept for the next run). Each
measurement is a child process that imports ``napari_ssl_seg`` from one tree (``PYTHONPATH``
comes before the editable install) and calls that tree's public ``training.loop.train`` on a
cohort that tree generated itself (12 cases from the bundled chest CT, seed 0, 4 labeled), with
the named preset. The time of every iteration is read from the loop's own progress callback, so
the figure is the loop as users run it (data, forward, backward, optimiser, teacher update) and
never includes the final validation; the median after ``--warmup`` iterations is reported.
Trees alternate within each round (baseline, this, baseline, this, ...) so drift of a shared,
noisy machine falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _child(tree: Path, work: Path, method: str, config_name: str, iterations: int, warmup: int) -> dict:
    import napari_ssl_seg
    from napari_ssl_seg.cohort.cohort_project import build_cohort_project
    from napari_ssl_seg.sample_data import sample_path
    from napari_ssl_seg.training.config import apply_overrides, preset
    from napari_ssl_seg.training.loop import train

    imported = Path(napari_ssl_seg.__file__).resolve()
    if tree.resolve() not in imported.parents:
        raise SystemExit(f"error: imported napari_ssl_seg from {imported}, not from {tree}")
    work.mkdir(parents=True, exist_ok=True)
    project = work / "cohort"
    if not project.exists():
        base, label = sample_path("CTChest4.nrrd"), sample_path("Segmentation.seg.nrrd")
        with build_cohort_project(project, base, label, cases=12, seed=0, labeled=4):
            pass
    config = apply_overrides(
        preset(config_name),
        [f"method={method}", f"iterations={iterations}", "validate_every=100000", "checkpoint_every=100000"],
    )
    stamps: list[float] = []
    out = Path(tempfile.mkdtemp(prefix=f"run_{method}_", dir=work))
    train(project, config, out, device="cpu", progress=lambda *_: stamps.append(time.perf_counter()))
    steps = [later - earlier for earlier, later in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False)]
    return {"seconds_per_iteration": statistics.median(steps), "iterations": len(steps)}


def _measure(tree: Path, work: Path, method: str, args: argparse.Namespace) -> float:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--child", str(tree), "--work", str(work), "--methods", method]
    command += ["--config", args.config, "--iterations", str(args.iterations), "--warmup", str(args.warmup)]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child for {tree} failed:\n{done.stderr[-3000:]}")
    return 1.0 / json.loads(done.stdout.strip().splitlines()[-1])["seconds_per_iteration"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="b18fcba", help="the commit to compare with (main before issue 24)")
    parser.add_argument("--methods", default="supervised,ucmt,ugcemt")
    parser.add_argument("--config", default="quick")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "speed_against")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        result = _child(args.child, args.work, args.methods, args.config, args.iterations, args.warmup)
        print(json.dumps(result))
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    baseline = args.work / "baseline"
    if not baseline.exists():
        subprocess.run(
            ["git", "-C", str(HERE), "worktree", "add", "--detach", str(baseline), args.baseline], check=True
        )
    else:  # a worktree kept from a run against another commit must not be measured as this baseline
        subprocess.run(["git", "-C", str(baseline), "checkout", "--quiet", "--detach", args.baseline], check=True)
    revision = subprocess.run(
        ["git", "-C", str(baseline), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    trees = {"baseline": baseline, "this": HERE}
    # Each tree generates its cohort with its own code, kept per baseline commit: an older tree cannot
    # open a project database that a newer one wrote (its schema version is newer).
    work_of = {"baseline": args.work / "runs" / f"baseline-{revision}", "this": args.work / "runs" / "this"}
    print(f"baseline {revision} against this tree; config {args.config}; median of iterations after {args.warmup}")
    print(f"{'method':<11} {'round':>5} {'baseline it/s':>14} {'this it/s':>10} {'ratio':>6}", flush=True)
    for method in args.methods.split(","):
        for round_index in range(args.rounds):
            rates = {name: _measure(tree, work_of[name], method, args) for name, tree in trees.items()}
            ratio = rates["this"] / rates["baseline"]
            print(
                f"{method:<11} {round_index + 1:>5} {rates['baseline']:14.2f} {rates['this']:10.2f} {ratio:6.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
