"""Plot the runs of scripts/ship_teachers.sh: the supervised warm start, then each method trained from it.

Run: .venv/bin/python benchmarks/plot_warm_start.py [RUNS] [PNG]   (default: build/ship/teachers and
     benchmarks/results/convergence_warm_start.png)

Validation Dice against training minutes (validation left out), read from each run's ``log.jsonl``; the runs
that start from the warm start are drawn from where it ended.
"""

from __future__ import annotations

import sys
from pathlib import Path

from napari_ssl_seg.training.runlog import read_log

RUNS = (
    ("supervised_continued", "supervised control, finetune"),
    ("ucmt", "UCMT, finetune"),
    ("ugcemt", "UG-CEMT, finetune"),
)


def validations(run: Path) -> list[dict]:
    return [record for record in read_log(run / "log.jsonl") if record.get("kind") == "validation"]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = Path(sys.argv[1] if len(sys.argv) > 1 else "build/ship/teachers")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "benchmarks/results/convergence_warm_start.png")
    figure, axis = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    warm = validations(base / "supervised")
    start = max(float(r["train_seconds"]) for r in warm) / 60
    axis.plot(
        [float(r["train_seconds"]) / 60 for r in warm],
        [r["dice"] for r in warm],
        marker=".",
        label="supervised warm start (plan, V-Net width 16)",
    )
    for name, label in RUNS:
        if not (base / name / "log.jsonl").is_file():
            continue
        run = validations(base / name)
        minutes = [start] + [start + float(r["train_seconds"]) / 60 for r in run]
        # Each run starts from the warm start's best validation checkpoint, the weights --init loads.
        axis.plot(minutes, [max(r["dice"] for r in warm)] + [r["dice"] for r in run], marker=".", label=label)
    axis.set_xlabel("training minutes (2-core CPU)")
    axis.set_ylabel("validation Dice (mean of 7 structures)")
    axis.set_ylim(0.3, 0.9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title("demo cohort (12 cases, 4 labeled): warm-started semi-supervision", fontsize=9)
    figure.tight_layout()
    figure.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
