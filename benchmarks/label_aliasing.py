"""How far a generated case's label is from one its image could predict: nearest against one-hot sampling.

Run: .venv/bin/python benchmarks/label_aliasing.py [--base chest] [--seed 3] [--cases 12] [--json OUT]

The cohort generator moves each case's label with the image through a deformation and a change of voxel size.
Sampled at the nearest point (``label_interpolation="nearest"``, the default until 2026-12-06), a structure about
one voxel thin appears, doubles or vanishes wherever a sample point falls, while the image beside it is averaged
over the new voxel. Sampled as the image is (``"linear"``: each class's one-hot map deformed and averaged like
the image, the most covered class kept; nnU-Net resamples segmentations this way), the label says which class
fills most of each voxel: what the image shows.

For every case of the same draw (same deformation, crop and voxel size) this prints the per-class Dice between
the two labels. Where it is low, the nearest label differs from what the image shows by that much: a network
fitting the image cannot score above about that on the nearest labels, however long it trains. Cases whose crop
came out different (the crop keeps every class in view, and the two labels can differ at the edge) are skipped
and counted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_ssl_seg.cohort.generator import generate_case
from napari_ssl_seg.evaluation.dice import class_dice
from napari_ssl_seg.io import read_volume

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
BASES = {
    "chest": ("CTChest4.nrrd", "Segmentation.seg.nrrd"),
    "brain": ("brain1_image.nrrd", "brain1_label.nrrd"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", choices=sorted(BASES), default="chest")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    image, label = (read_volume(SAMPLE / name) for name in BASES[args.base])
    names = label.label_names or {}
    classes = [int(v) for v in np.unique(label.array) if v != 0]
    per_class: dict[int, list[float]] = {value: [] for value in classes}
    skipped = 0
    for index in range(args.cases):
        nearest = generate_case(image, label, seed=args.seed, index=index)
        linear = generate_case(image, label, seed=args.seed, index=index, label_interpolation="linear")
        if nearest.label.shape != linear.label.shape or nearest.label.origin != linear.label.origin:
            skipped += 1
            continue
        for value, score in class_dice(linear.label.array, nearest.label.array, classes).items():
            per_class[value].append(score)
    rows = {}
    print(f"{args.base}, seed {args.seed}, {args.cases - skipped} cases compared ({skipped} skipped: other crop)")
    print(f"{'class':<28} {'Dice nearest vs linear: mean':>30} {'min':>6} {'max':>6}")
    for value in classes:
        scores = np.array(per_class[value])
        name = names.get(value, f"class {value}")
        rows[name] = {
            "mean": round(float(scores.mean()), 3),
            "min": round(float(scores.min()), 3),
            "max": round(float(scores.max()), 3),
        }
        print(f"{name:<28} {scores.mean():>30.3f} {scores.min():>6.3f} {scores.max():>6.3f}")
    if args.json:
        args.json.write_text(
            json.dumps({"base": args.base, "seed": args.seed, "skipped": skipped, "classes": rows}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
