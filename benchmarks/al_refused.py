"""What the retrain's promotion rule refused: each refused fine-tune of a simulated session, on the test split.

Run: .venv/bin/python benchmarks/al_refused.py build/al_conv/sessions/random [build/al_conv/sessions/missing_volume ...]

For every round of the given ``active_learning.py`` sessions whose fine-tune was not promoted, the fine-tune is
evaluated on the session's test split and set beside the teacher the rule kept (its test Dice and HD95 are in
the session's ``result.json``). Prints one line per refused fine-tune, then per session how many would have
scored higher in Dice or lower in HD95 and the mean differences; writes every number to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from napari_ssl_seg.evaluation.evaluate import evaluate_project
from napari_ssl_seg.store import Project


def refused(session: Path, device: str) -> list[dict[str, Any]]:
    result = json.loads((session / "result.json").read_text(encoding="utf-8"))
    rows = []
    for record in result["rounds"]:
        if record["promoted"]:
            continue
        model = Path(record["model"])
        with Project.open(session / f"seed{record['seed']}" / "project") as project:
            overall = evaluate_project(project, model, split="test", device=device).summary["overall"]
        rows.append(
            {
                "strategy": result["strategy"],
                "seed": record["seed"],
                "round": record["round"],
                "labeled": record["labeled"],
                "kept_test_dice": record["test_dice"],
                "kept_test_hd95_mm": record.get("test_hd95_mm"),
                "refused_test_dice": overall["dice_mean"],
                "refused_test_hd95_mm": overall["hd95_mm_mean"],
                "refused_validation_dice": record["validation_dice"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sessions", nargs="+", type=Path, help="active_learning.py work folders (one per strategy)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=Path("build/al_conv/refused.json"))
    args = parser.parse_args()
    rows = [row for session in args.sessions for row in refused(session, args.device)]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    for strategy in dict.fromkeys(row["strategy"] for row in rows):
        mine = [row for row in rows if row["strategy"] == strategy]
        dice = [row["refused_test_dice"] - row["kept_test_dice"] for row in mine]
        distances = [
            row["refused_test_hd95_mm"] - row["kept_test_hd95_mm"]
            for row in mine
            if row["refused_test_hd95_mm"] is not None and row["kept_test_hd95_mm"] is not None
        ]
        print(
            f"{strategy}: {len(mine)} refused; Dice higher in {sum(d > 0 for d in dice)} "
            f"(mean {statistics.fmean(dice):+.4f}); HD95 lower in {sum(d < 0 for d in distances)} of {len(distances)} "
            f"(mean {statistics.fmean(distances) if distances else float('nan'):+.1f} mm)"
        )
    print(f"json {args.json}")


if __name__ == "__main__":
    main()
