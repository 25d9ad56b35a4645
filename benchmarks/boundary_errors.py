"""Are a class's errors on its boundary or far from it? Errors by distance, and what they look like in the image.

Run: .venv/bin/python benchmarks/boundary_errors.py PROJECT --model MODEL.safetensors --cases case_000,case_002
     [--label 1] [--json OUT]

For each case the model is run as ``napari-ssl-seg predict`` runs it (card's spacing and clean-up, no uncertainty)
and compared with the case's newest label. For class ``--label`` it prints the reference and predicted voxel
counts, the Dice, how many wrongly added voxels touch the reference structure and how many missed voxels touch
the predicted one (26-neighbourhood: within one voxel, diagonals included), the median image value of right,
missed and wrongly added voxels, and the Dice of the reference against itself moved by one voxel in-plane.
When nearly every error touches the structure and the missed and added voxels look alike, the class's Dice is
set by how a band of ambiguous edge voxels is split, not by structures found or lost.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_ssl_seg.evaluation.dice import class_dice
from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.store import Project


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks, by the evaluation's own rule."""
    return class_dice(a.astype(np.uint8), b.astype(np.uint8), [1])[1]


def case_errors(image: np.ndarray, reference: np.ndarray, predicted: np.ndarray, label: int) -> dict[str, float]:
    ref, pred = reference == label, predicted == label
    added, missed = pred & ~ref, ref & ~pred
    # Touching: one of the 26 voxels around (diagonals included).
    cube = np.ones((3, 3, 3), dtype=bool)
    near_ref = ndimage.binary_dilation(ref, structure=cube)
    near_pred = ndimage.binary_dilation(pred, structure=cube)
    moved = [dice(ref, np.roll(ref, step, axis=axis)) for axis in (1, 2) for step in (1, -1)]
    return {
        "reference_voxels": int(ref.sum()),
        "predicted_voxels": int(pred.sum()),
        "dice": round(dice(ref, pred), 3),
        "added": int(added.sum()),
        "added_within_one_voxel": int((added & near_ref).sum()),
        "missed": int(missed.sum()),
        "missed_within_one_voxel": int((missed & near_pred).sum()),
        "median_right": float(np.median(image[ref & pred])) if (ref & pred).any() else float("nan"),
        "median_missed": float(np.median(image[missed])) if missed.any() else float("nan"),
        "median_added": float(np.median(image[added])) if added.any() else float("nan"),
        "reference_moved_one_voxel_dice": round(float(np.mean(moved)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--cases", required=True, help="comma-separated labeled case names")
    parser.add_argument("--label", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.model, device=args.device)
    rows = {}
    with Project.open(args.project) as project:
        for name in args.cases.split(","):
            volume = project.read_image(name)
            reference = np.asarray(project.read_label(name, None).array)
            predicted = predictor.predict(volume, uncertainty="none").label.array
            rows[name] = case_errors(np.asarray(volume.array), reference, np.asarray(predicted), args.label)
            row = rows[name]
            print(
                f"{name}: reference {row['reference_voxels']}, predicted {row['predicted_voxels']}, "
                f"Dice {row['dice']}; "
                f"added {row['added_within_one_voxel']}/{row['added']} within one voxel, "
                f"missed {row['missed_within_one_voxel']}/{row['missed']} within one voxel; median image value "
                f"right {row['median_right']:.0f}, missed {row['median_missed']:.0f}, added {row['median_added']:.0f}; "
                f"reference moved one voxel in-plane: Dice {row['reference_moved_one_voxel_dice']}"
            )
    if args.json:
        summary = {"model": str(args.model), "label": args.label, "cases": rows}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
