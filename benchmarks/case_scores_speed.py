"""How long the case scores take on a CT-sized prediction, side by side in one run.

Run: .venv/bin/python benchmarks/case_scores_speed.py [--shape 300,512,512]

The bundled chest segmentation is resampled (nearest neighbour) to ``--shape`` as the label map, with a random
entropy map beside it. Timed: ``boundary_entropy``'s region (one ellipsoid dilation of all the foreground),
``structure_entropy``'s bands (box-shaped, three 1D maximum filters per structure), the same bands made by
ellipsoid dilation per structure (its first form, kept here only to compare), and ``model_scores`` with every
score. Ratios are to ``structure_entropy``'s bands.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from napari_ssl_seg.inference import case_scores
from napari_ssl_seg.io import read_volume
from napari_ssl_seg.sample_data import sample_path


def _ellipsoid_means(values: np.ndarray, label: np.ndarray, spacing: list[float]) -> list[float]:
    structure = case_scores._band_structure(spacing, case_scores.BOUNDARY_BAND_MM)
    pad = [s // 2 for s in structure.shape]
    means = []
    for index, box in enumerate(ndimage.find_objects(label), start=1):
        if box is not None:
            box = case_scores._grown_box(box, pad, label.shape)
            band = ndimage.binary_dilation(label[box] == index, structure=structure)
            means.append(float(values[box][band].mean()))
    return means


def _seconds(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="300,512,512")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    segmentation = read_volume(sample_path("Segmentation.seg.nrrd"))
    zoom = [n / s for n, s in zip(shape, segmentation.shape, strict=True)]
    label = ndimage.zoom(segmentation.array.astype(np.uint8), zoom, order=0)
    spacing = [s / z for s, z in zip(segmentation.spacing, zoom, strict=True)]
    entropy = (np.random.default_rng(0).random(label.shape, dtype=np.float32) * 0.5).astype(np.float16)
    values = entropy.astype(np.float32)
    band = case_scores.BOUNDARY_BAND_MM
    timings = {
        "structure_entropy's bands (box, 1D maximum filters)": _seconds(
            lambda: case_scores._structure_means(values, label, spacing, band)
        ),
        "the same bands by ellipsoid dilation": _seconds(lambda: _ellipsoid_means(values, label, spacing)),
        "boundary_entropy's region (one ellipsoid dilation)": _seconds(
            lambda: case_scores._region(label, spacing, band)
        ),
        "model_scores, every score": _seconds(lambda: case_scores.model_scores(entropy, label, spacing, 8)),
    }
    print(f"label map {label.shape}, spacing {', '.join(f'{s:.2f}' for s in spacing)} mm")
    reference = next(iter(timings.values()))
    print("| what | seconds | ratio |\n|---|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.2f} | {seconds / reference:.1f} |")


if __name__ == "__main__":
    main()
