"""How much Dice can a network trained at a coarser spacing reach at most? The resampling ceiling per class.

Run: .venv/bin/python benchmarks/spacing_ceiling.py [--label sample_data/Segmentation.seg.nrrd] [--base-mm 1.0]
     [--spacings 1,2,3,3.41,4,4.81] [--anisotropic 10.34,3.41,3.41] [--out build/spacing_ceiling.json]

A network trained at a target spacing predicts at that spacing; the predictor resamples its
probabilities back to the scan's voxels (trilinear) and takes the most probable class. Even a
perfect network is then wrong where a structure is thinner than a voxel of the target spacing.
This measures that bound from the reference label alone, two ways, per class:

- ``taught``: the label resampled to the target spacing the way training sees it (nearest), as a
  one-hot map, brought back trilinearly and argmaxed: a network that learned its training labels exactly;
- ``soft``: each class's share of every target voxel (area averaging of the one-hot map), brought
  back the same way: the best any network at that spacing could output;
- ``sampled``: ``taught`` at a million random voxels (``training/resolution.sampled_ceiling``), what the
  plan reports, to check it against the full measure.

``--base-mm`` first resamples the label to that isotropic spacing (nearest, as ``benchmarks/planning.py``
builds the ``chest1mm`` cohort); the Dice is measured against that.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_ssl_seg.evaluation.dice import class_dice
from napari_ssl_seg.io import read_volume
from napari_ssl_seg.io.orientation import reorientation
from napari_ssl_seg.training.data import resample_case, resampled_shape
from napari_ssl_seg.training.resolution import class_surfaces_mm2, resampling_ceiling, sampled_ceiling

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def soft_ceiling(label: np.ndarray, target_shape: tuple[int, ...], classes: int) -> dict[int, float]:
    """Each class's Dice when a network outputs its exact share of every target voxel."""
    one_hot = F.one_hot(torch.from_numpy(label.astype(np.int64)), classes).permute(3, 0, 1, 2).float()
    shares = F.interpolate(one_hot[None], size=target_shape, mode="area")[0]
    del one_hot
    back = F.interpolate(shares[None], size=label.shape, mode="trilinear", align_corners=False)[0]
    return class_dice(back.argmax(0).numpy().astype(label.dtype), label, range(1, classes))


def ceiling(label: np.ndarray, spacing: tuple[float, ...], target: tuple[float, ...], classes: int) -> dict:
    shape = resampled_shape(label.shape, spacing, target)
    return {
        "target_mm": [round(float(v), 3) for v in target],
        "shape": list(shape),
        "taught": resampling_ceiling(label, spacing, target, classes),
        "soft": soft_ceiling(label, shape, classes),
        "sampled": sampled_ceiling(label, spacing, target, classes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", type=Path, default=SAMPLE / "Segmentation.seg.nrrd")
    parser.add_argument("--base-mm", type=float, default=1.0, help="0: keep the label's own spacing")
    parser.add_argument("--spacings", default="1,2,3,3.41,4,4.81", help="isotropic target spacings, mm")
    parser.add_argument("--anisotropic", action="append", default=[], metavar="Z,Y,X")
    parser.add_argument("--out", type=Path, default=Path("build/spacing_ceiling.json"))
    args = parser.parse_args()
    volume = read_volume(args.label)
    turn = reorientation(volume.direction, volume.shape, "LPS")
    label = turn.to_target(np.asarray(volume.array)).astype(np.uint8)
    spacing = tuple(float(v) for v in turn.target_spacing(volume.spacing))
    if args.base_mm > 0:
        base = (args.base_mm,) * 3
        _, label = resample_case(np.zeros(label.shape, np.float32), label, spacing, base)
        spacing = base
    classes = int(label.max()) + 1
    names = volume.label_names or {}
    counts = np.bincount(label.ravel(), minlength=classes)
    fractions = counts / label.size
    # The fingerprint's mean thickness, 2 V / A.
    thickness = 2 * counts * np.prod(spacing) / np.maximum(class_surfaces_mm2(label, spacing, classes), 1e-9)
    targets = [(float(s),) * 3 for s in args.spacings.split(",") if s]
    targets += [tuple(float(v) for v in text.split(",")) for text in args.anisotropic]
    results = []
    print(f"label {args.label.name} at {spacing} mm, shape {label.shape}")
    header = "  ".join(f"{names.get(c, c)!s:>10.10}" for c in range(1, classes))
    print(f"{'target mm':<18} {'way':<7} {header}")
    print(f"{'voxel share %':<26} " + "  ".join(f"{100 * fractions[c]:>10.2f}" for c in range(1, classes)))
    print(f"{'thickness 2V/A mm':<26} " + "  ".join(f"{thickness[c]:>10.1f}" for c in range(1, classes)))
    for target in targets:
        result = ceiling(label, spacing, target, classes)
        results.append(result)
        for way in ("taught", "soft", "sampled"):
            values = "  ".join(f"{result[way].get(c, float('nan')):>10.3f}" for c in range(1, classes))
            print(f"{'x'.join(f'{v:g}' for v in target):<18} {way:<7} {values}", flush=True)
    record = {
        "label": args.label.name,
        "base_spacing_mm": list(spacing),
        "classes": {str(c): names.get(c, f"class {c}") for c in range(1, classes)},
        "voxel_fraction": {str(c): float(fractions[c]) for c in range(1, classes)},
        "thickness_mm": {str(c): float(thickness[c]) for c in range(1, classes)},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
