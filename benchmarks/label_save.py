"""What crash safety costs: a versioned, atomic, fsynced project label save vs a plain NIfTI write.

Run: .venv/bin/python benchmarks/label_save.py [--shape Z Y X] [--repeats N]
Prints the median time of each and their ratio, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_ssl_seg.io import Volume
from napari_ssl_seg.store import Project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 256, 256))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    label = np.zeros(shape, np.uint8)
    label[shape[0] // 4 : shape[0] // 2, 50:150, 60:180] = 1
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        image = Volume(array=rng.normal(size=shape).astype(np.float32), spacing=(2.0, 0.8, 0.8))
        project = Project.create(root / "project")
        project.add_case("case", image)
        plain, safe = [], []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            nifti = nib.Nifti1Image(label.transpose(2, 1, 0), image.index_to_ras())
            nib.save(nifti, str(root / f"plain_{repeat}.nii.gz"))
            plain.append(time.perf_counter() - start)
            label[0, 0, repeat % shape[2]] ^= 1  # a one-voxel edit, as an annotator's save would be
            start = time.perf_counter()
            project.save_label("case", label)
            safe.append(time.perf_counter() - start)
        project.close()
    plain_median, safe_median = statistics.median(plain), statistics.median(safe)
    print(f"label map {shape[0]}x{shape[1]}x{shape[2]} uint8, {args.repeats} repeats, median seconds")
    print(f"{'plain nibabel .nii.gz write':<46} {plain_median:8.3f}")
    print(f"{'project save (atomic, fsync, checksum, diff)':<46} {safe_median:8.3f}")
    print(f"{'ratio safe / plain':<46} {safe_median / plain_median:8.2f}")


if __name__ == "__main__":
    main()
