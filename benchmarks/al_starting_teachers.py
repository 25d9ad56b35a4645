"""Converged starting teachers for ``active_learning.py``: one per seed, trained on that session's initial cases.

Run: .venv/bin/python benchmarks/al_starting_teachers.py --cohort build/label_gap/cohort_2 --initial 2
     --seeds 0,1,2 [--iterations 6000] [--set lr_step=4800] [--out build/al_conv/drawn]

For each seed the initial cases are the ones the simulation labels first (``initial_cases``: named, or drawn
with the seed), so ``active_learning.py --initial`` with the same value and ``--init
'OUT/init_seed{seed}/model.safetensors'`` starts every session from a teacher that has learnt exactly those
cases. A copy of the cohort with only them labeled (``OUT/project_seed<k>``, made as the simulation makes its
copies) is trained on with the project's plan (``--config plan``), ``supervised``, to the given iterations; the
exported model is the best validation's. Prints, per seed, the cases, the best validation Dice and whether the
plateau rule holds (the last 4 validations raised the best by less than 0.01, as docs/label_gap.md states it).
A seed whose model already exists is not trained again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from label_gap import plateaued

from napari_ssl_seg.active.simulated_project import copy_project, read_source, reveal
from napari_ssl_seg.active.simulation import SimulationSettings, initial_cases, parse_initial
from napari_ssl_seg.cli.train import training_config
from napari_ssl_seg.runtime.allocator import keep_freed_memory
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.loop import train
from napari_ssl_seg.training.runlog import read_log

PLATEAU_WINDOW = 4
PLATEAU_DELTA = 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, required=True, help="the cohort project the sessions will copy")
    parser.add_argument("--initial", default="2", help="as active_learning.py's: a count, or case names")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="as for `train --set`")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("build/al_conv/drawn"))
    args = parser.parse_args()
    keep_freed_memory()
    settings = SimulationSettings(initial=parse_initial(args.initial))
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        model_dir = args.out / f"init_seed{seed}"
        target = args.out / f"project_seed{seed}"
        with Project.open(args.cohort) as source:
            info = read_source(source)
            cases = initial_cases(info, settings, seed)
            if not target.exists():
                with copy_project(source, info, target, seed) as copy:
                    reveal(copy, cases)
        if not (model_dir / "model.safetensors").is_file():
            config_args = argparse.Namespace(
                config="plan",
                method="supervised",
                iterations=args.iterations,
                overrides=[*args.overrides, f"seed={seed}"],
                device=args.device,
            )
            train(target, training_config(config_args, target), model_dir, device=args.device)
        curve = [
            (r["iteration"], float(r["dice"])) for r in read_log(model_dir / "log.jsonl") if r["kind"] == "validation"
        ]
        best_iteration, best = max(curve, key=lambda point: point[1])
        plateau = plateaued(curve, PLATEAU_WINDOW, PLATEAU_DELTA)
        print(
            f"seed {seed}: initial {', '.join(cases)}; best validation {best:.4f} at {best_iteration}; "
            f"plateau rule (last {PLATEAU_WINDOW} validations raised the best by < {PLATEAU_DELTA}) "
            f"{'met' if plateau else 'not met'}",
            flush=True,
        )


if __name__ == "__main__":
    main()
