"""What rescoring ``missing_volume`` costs per rank: reading cached label maps vs their recorded volumes.

Every label saved moves the reference volumes, so each ``rank --strategy missing_volume`` rescores
every cached prediction. This compares the two ways of getting a prediction's structure volumes.

Run: .venv/bin/python benchmarks/rescoring.py [--shape Z Y X] [--cases N] [--repeats N]
Prints the median time of each for all cases and their ratio, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_ssl_seg.inference.case_scores import structure_volumes
from napari_ssl_seg.io import Volume
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.ranking_cache import prediction_paths, read_cached, read_cached_volumes, save_prediction


def predicted_label(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Seven blocky structures at random places: compresses like a real prediction, not like noise."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for value in range(1, 8):
        start = [int(rng.integers(0, s // 2)) for s in shape]
        size = [int(rng.integers(s // 8, s // 3)) for s in shape]
        label[tuple(slice(a, a + b) for a, b in zip(start, size, strict=True))] = value
    return label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 256, 256))
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(args.shape)
    spacing = (2.0, 0.8, 0.8)
    with tempfile.TemporaryDirectory() as folder, Project.create(Path(folder) / "project") as project:
        names = [f"case_{index:03d}" for index in range(args.cases)]
        for index, name in enumerate(names):
            image = Volume(array=np.zeros(shape, np.int16), spacing=spacing)
            project.add_case(name, image)
            label = image.with_array(predicted_label(shape, index), label_names=None)
            save_prediction(project, "model", name, label, None, volumes=structure_volumes(label.array, spacing))

        def from_maps() -> list[dict[int, float]]:
            maps = [read_cached(prediction_paths(project, "model", name)[0]) for name in names]
            return [structure_volumes(m.array, m.spacing) for m in maps]

        def from_records() -> list[dict[int, float] | None]:
            return [read_cached_volumes(project, "model", name) for name in names]

        # NIfTI stores spacing as float32: the maps' volumes differ from the records' in the 8th digit.
        for mapped, recorded in zip(from_maps(), from_records(), strict=True):
            same = recorded is not None and mapped.keys() == recorded.keys()
            if not (same and all(math.isclose(mapped[k], recorded[k], rel_tol=1e-6) for k in mapped)):
                raise SystemExit("the recorded volumes differ from the label maps'")
        timings: dict[str, list[float]] = {"maps": [], "records": []}
        for _ in range(args.repeats):
            for key, run in (("maps", from_maps), ("records", from_records)):
                start = time.perf_counter()
                run()
                timings[key].append(time.perf_counter() - start)
    maps, records = (statistics.median(timings[key]) for key in ("maps", "records"))
    print(f"{args.cases} cached predictions of {shape[0]}x{shape[1]}x{shape[2]}, {args.repeats} repeats, median s")
    print(f"{'read label maps, count structure volumes':<44} {maps:9.4f}")
    print(f"{'read the recorded volumes':<44} {records:9.4f}")
    print(f"{'ratio maps / records':<44} {maps / records:9.1f}")


if __name__ == "__main__":
    main()
