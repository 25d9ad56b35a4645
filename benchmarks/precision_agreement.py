"""Does mixed precision change what a user sees? Shipped teachers in float32 against the device's mixed precision.

Run: .venv/bin/python benchmarks/precision_agreement.py [--models models/chest_ct_ucmt.safetensors,...]
     [--ct sample_data/CTChest4.nrrd,...] [--samples 8]

For every teacher and CT, one process predicts twice with the same MC-dropout masks (the generator
is reseeded before each run): ``amp=False`` (float32, standard layout: the reference) and the
predictor's default (bfloat16 autocast and channels-last on a CPU with native bfloat16, float16 on
CUDA; ``runtime/precision.py``). Printed per structure: the Dice of the two label maps; for the
entropy map: the largest and the 99.9th-percentile absolute difference (nats) and the share of
voxels on either side of the overlay's threshold that cross it; and the seconds of each run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from napari_ssl_seg.inference.predictor import Predictor
from napari_ssl_seg.io import read_volume

ROOT = Path(__file__).resolve().parents[1]
# The uncertainty layer's default display threshold is a fraction of ln C; 0.2 is used here as a
# fixed probe of whether the overlay a user sees would change.
THRESHOLD_SHARE = 0.2


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _predict(predictor: Predictor, volume, amp: bool, samples: int):
    predictor.amp = amp
    torch.manual_seed(0)
    start = time.perf_counter()
    prediction = predictor.predict(volume, uncertainty="mc_dropout", samples=samples)
    return prediction, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models/chest_ct_ucmt.safetensors,models/chest_ct_ugcemt.safetensors")
    parser.add_argument("--ct", default="sample_data/CTChest4.nrrd")
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    for model in args.models.split(","):
        predictor = Predictor.from_checkpoint(ROOT / model if not Path(model).is_absolute() else model)
        names = {int(k): v for k, v in predictor.card.classes.items() if int(k) != 0}
        print(f"\n{model} on {predictor.device}; mixed precision: {predictor.execution.label}")
        for ct in args.ct.split(","):
            volume = read_volume(ROOT / ct if not Path(ct).is_absolute() else ct)
            _predict(predictor, volume, True, 1)  # warm-up: kernel selection for both layouts
            reference, reference_seconds = _predict(predictor, volume, False, args.samples)
            lowered, lowered_seconds = _predict(predictor, volume, True, args.samples)
            a, b = np.asarray(reference.label.array), np.asarray(lowered.label.array)
            ua = np.asarray(reference.uncertainty.array, dtype=np.float32)
            ub = np.asarray(lowered.uncertainty.array, dtype=np.float32)
            difference = np.abs(ua - ub)
            threshold = THRESHOLD_SHARE * np.log(predictor.num_classes)
            crossed = float(np.mean((ua >= threshold) != (ub >= threshold)))
            print(
                f"  {Path(ct).name} {volume.shape}: float32 {reference_seconds:.1f} s, mixed {lowered_seconds:.1f} s "
                f"({reference_seconds / lowered_seconds:.2f}x), T={args.samples}"
            )
            for label_value, name in sorted(names.items()):
                print(f"    Dice float32 vs mixed, {name:<22} {_dice(a == label_value, b == label_value):.4f}")
            print(
                f"    entropy |difference|: max {difference.max():.3f}, 99.9th percentile "
                f"{np.percentile(difference, 99.9):.4f}, mean {difference.mean():.5f} nats; "
                f"voxels crossing {threshold:.2f} nats: {crossed:.4%}"
            )


if __name__ == "__main__":
    main()
