"""What one full garbage collection costs in napari's process with the plugin's docks open.

    xvfb-run -a .venv/bin/python benchmarks/gc_full_collection.py [--repeats 3]

A full (generation 2) collection stops every Python thread, the GUI thread included, for as long
as it walks the heap. Python starts one whenever enough new objects survived, from whichever
thread allocates, so its cost is a GUI stall that can come at any moment. This times
``gc.collect()`` with the docks open on a generated cohort, first with nothing frozen, then with
the start-up heap frozen as the docks do (``napari_ssl_seg/runtime/gc_pauses.py``), side by side
against the 200 ms stall target of ``benchmarks/gui_latency.py``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

TARGET_MS = 200.0


def _full_collection_ms() -> float:
    start = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="folder for the cohort (default: a temporary folder)")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    import napari_ssl_seg.widgets.viewer_sessions as viewer_sessions
    from napari_ssl_seg.cohort.cohort_project import build_cohort_project
    from napari_ssl_seg.runtime.gc_pauses import freeze_startup_objects, release_startup_objects
    from napari_ssl_seg.sample_data import sample_path
    from napari_ssl_seg.shipped_models import shipped_model_path
    from napari_ssl_seg.store.models import register_model
    from napari_ssl_seg.widgets.assistant import dock_assistant

    root = (args.work or Path(tempfile.mkdtemp(prefix="gc_full_"))) / "cohort"
    if not root.exists():
        with build_cohort_project(
            root, sample_path("CTChest4.nrrd"), sample_path("Segmentation.seg.nrrd"), cases=12, seed=0, labeled=4
        ) as project:
            register_model(project, shipped_model_path("ucmt"))
    viewer_sessions.freeze_startup_objects = lambda: False  # this benchmark freezes by hand, below
    viewer = napari.Viewer(title="gc full collection", show=True)
    docks = dock_assistant(viewer, root)
    docks["Teacher"].next_case()
    app = QApplication.instance()
    settle = time.perf_counter()
    while time.perf_counter() - settle < 3:
        app.processEvents()

    tracked = len(gc.get_objects())
    unfrozen = [_full_collection_ms() for _ in range(args.repeats)]
    freeze_startup_objects()
    frozen_count = gc.get_freeze_count()
    frozen = [_full_collection_ms() for _ in range(args.repeats)]
    release_startup_objects()
    viewer.close()

    print(f"objects tracked by the collector with the docks open: {tracked}; frozen by the docks: {frozen_count}")
    print(f"{'heap':<12} {'median ms':>10} {'max ms':>8}  vs {TARGET_MS:.0f} ms target")
    for name, times in (("not frozen", unfrozen), ("frozen", frozen)):
        print(f"{name:<12} {statistics.median(times):10.2f} {max(times):8.2f}  {max(times) / TARGET_MS:8.3f}x")
    saved = statistics.median(unfrozen) - statistics.median(frozen)
    print(f"freezing the start-up heap takes {saved:.0f} ms off every full collection while the docks are open")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
