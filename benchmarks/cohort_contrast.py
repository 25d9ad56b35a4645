"""Does the cohort generator keep each structure visible? Its contrast to its surroundings, base against cases.

Run: .venv/bin/python benchmarks/cohort_contrast.py [--base sample_data/CTChest4.nrrd]
     [--base-label sample_data/Segmentation.seg.nrrd] [--cases 8] [--seed 3] [--json build/cohort_contrast.json]

A label the image does not support cannot be learnt, however long a network trains. Per class, the contrast is
the median intensity inside it minus the median of the one-voxel shell around it (the voxels just outside it,
whatever class they are). It is measured on the base and, averaged over ``--cases`` generated cases, for each of
the generator's image interpolations (``linear``, ``cubic``) and for each step alone: the deformation alone, then
the whole pipeline. A class whose contrast falls much more than the others' is blurred into its neighbours by
the generator: in real scans its label would follow what is visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_ssl_seg.cohort import generator
from napari_ssl_seg.io import read_volume

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def class_contrast(image: np.ndarray, label: np.ndarray, value: int) -> float | None:
    """Median inside class ``value`` minus the median of the one-voxel shell around it; None if absent."""
    inside = label == value
    if not inside.any():
        return None
    shell = ndimage.binary_dilation(inside) & ~inside
    if not shell.any():
        return None
    return float(np.median(image[inside]) - np.median(image[shell]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=SAMPLE / "CTChest4.nrrd")
    parser.add_argument("--base-label", type=Path, default=SAMPLE / "Segmentation.seg.nrrd")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("build/cohort_contrast.json"))
    args = parser.parse_args()
    image, label = read_volume(args.base), read_volume(args.base_label)
    base = generator._prepare_base(image, label)
    names = label.label_names or {}
    classes = sorted(base.classes)
    only_anatomy = {
        "crop_fraction": (1.0, 1.0),
        "in_plane_factor": (1.0, 1.0),
        "through_plane_factor": (1.0, 1.0),
        "gamma": (1.0, 1.0),
        "bias_coeff": 0.0,
        "noise_std": 0.0,
    }
    table: dict[str, dict[str, float | None]] = {
        "base": {str(v): class_contrast(base.intensities, base.labels.astype(np.uint8), v) for v in classes}
    }
    for interpolation in generator.IMAGE_INTERPOLATIONS:
        for step, changes in (("deformation only", only_anatomy), ("whole generator", {})):
            ranges = dataclasses.replace(generator.DEFAULT_RANGES, image_interpolation=interpolation, **changes)
            per_class: dict[int, list[float]] = {v: [] for v in classes}
            for index in range(args.cases):
                case = generator._generate_case(base, seed=args.seed, index=index, ranges=ranges)
                for value in classes:
                    contrast = class_contrast(case.image.array.astype(np.float32), case.label.array, value)
                    if contrast is not None:
                        per_class[value].append(contrast)
            table[f"{interpolation}, {step}"] = {
                str(v): statistics.fmean(c) if c else None for v, c in per_class.items()
            }
            print(f"measured {interpolation}, {step}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"classes": {str(v): names.get(v, str(v)) for v in classes}, **table}, indent=1))
    header = " | ".join(names.get(v, str(v)) for v in classes)
    print(f"\ncontrast to the one-voxel shell around each class, {args.cases} cases of seed {args.seed}\n")
    print(f"| | {header} |")
    print("|---" * (len(classes) + 1) + "|")
    for row, values in table.items():
        cells = " | ".join("n/a" if values[str(v)] is None else f"{values[str(v)]:.0f}" for v in classes)
        print(f"| {row} | {cells} |")


if __name__ == "__main__":
    main()
