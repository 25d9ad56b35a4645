"""How long does planning take for a project of full-size CTs? Cold (nothing cached) and warm, one run.

Run: .venv/bin/python benchmarks/plan_speed.py [--cases 50] [--labeled 10] [--shape 300,512,512]
     [--out build/plan_speed]

Builds (once, reused) a project of ``--cases`` CT cases of ``--shape`` voxels (z, y, x; int16, 0.7 x 0.7 x 1 mm,
stored as uncompressed NRRD the way a converted scan arrives), ``--labeled`` of them labeled training cases.
Then times ``plan_project`` twice in one process: cold (the files' cached pages dropped first, every sampled
case read: at most ``MAX_SAMPLED_CASES`` labeled cases, one at a time) and warm (the per-case samples cached
in the project), and prints both with the peak resident memory of the process, against the size of one case
and of all of them.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np

from napari_ssl_seg.io import Volume, write_volume
from napari_ssl_seg.store import Project
from napari_ssl_seg.training.fingerprint import CACHE_SETTING, MAX_SAMPLED_CASES
from napari_ssl_seg.training.plan import plan_project
from napari_ssl_seg.training.resolution import CEILING_CACHE_SETTING


def build(root: Path, cases: int, labeled: int, shape: tuple[int, int, int]) -> None:
    if (root / "project.sqlite").is_file():
        return
    rng = np.random.default_rng(0)
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = ((y - shape[1] / 2) / (shape[1] * 0.45)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.45)) ** 2 < 1
    label = np.zeros(shape, dtype=np.uint8)
    label[:] = body  # class 1: the body
    organ = ((y - shape[1] * 0.45) / (shape[1] * 0.15)) ** 2 + ((x - shape[2] * 0.4) / (shape[2] * 0.12)) ** 2 < 1
    label[:, organ[0]] = 2  # class 2: an organ through every slice
    image = np.where(body, 40, -1000).astype(np.int16) + rng.integers(-20, 20, size=shape, dtype=np.int16)
    spacing = (1.0, 0.7, 0.7)
    root.parent.mkdir(parents=True, exist_ok=True)
    source = write_volume(Volume(array=image, spacing=spacing, modality="CT"), root.parent / "ct.nrrd")
    volume = Volume(array=image, spacing=spacing, modality="CT")
    project = Project.create(root, seed=0, name="plan speed")
    for index in range(cases):
        name = f"case_{index:03d}"
        split = "validation" if index == cases - 1 else "train"
        project.add_case(name, volume, split=split, source_file=source)
        if index < labeled or split == "validation":
            project.save_label(name, label, author="benchmark")
    project.close()


def evict_page_cache(root: Path) -> int:
    """Ask the kernel to drop the cached pages of every file under ``root``; the bytes asked to drop.

    ``posix_fadvise(DONTNEED)`` needs no privileges (unlike ``drop_caches``) and drops clean pages,
    so the cold plan reads the cases from the disk, as on the first plan after a copy.
    """
    dropped = 0
    for path in root.rglob("*"):
        if path.is_file():
            os.sync()
            with path.open("rb") as handle:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            dropped += path.stat().st_size
    return dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--labeled", type=int, default=10)
    parser.add_argument("--shape", default="300,512,512")
    parser.add_argument("--out", type=Path, default=Path("build/plan_speed"))
    parser.add_argument(
        "--keep-page-cache", action="store_true", help="do not drop the files' cached pages before the cold plan"
    )
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    root = args.out / "project"
    start = time.perf_counter()
    build(root, args.cases, args.labeled, shape)  # type: ignore[arg-type]
    print(f"project of {args.cases} cases ({args.labeled} labeled) ready in {time.perf_counter() - start:.0f} s")
    with Project.open(root) as project:
        project.set_setting(CACHE_SETTING, "{}")  # cold: nothing sampled yet
        project.set_setting(CEILING_CACHE_SETTING, "{}")  # and no ceiling measured
    if not args.keep_page_cache:
        print(f"dropped the page cache of {evict_page_cache(args.out) / 2**30:.1f} GB of project files")
    timings = []
    for attempt in ("cold", "warm"):
        start = time.perf_counter()
        plan, fingerprint = plan_project(root, device="cpu")
        timings.append((attempt, time.perf_counter() - start, len(fingerprint.sampled_cases)))
    case_mb = np.prod(shape) * 2 / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for attempt, seconds, sampled in timings:
        print(f"{attempt:<5} plan in {seconds:6.2f} s ({sampled} of at most {MAX_SAMPLED_CASES} cases sampled)")
    print(
        f"peak resident memory {peak_mb:.0f} MB; one case {case_mb:.0f} MB, "
        f"all {args.cases} {case_mb * args.cases:.0f} MB"
    )
    print(f"plan: spacing {plan.target_spacing}, patch {plan.patch_size}, intensity {plan.intensity}")


if __name__ == "__main__":
    main()
