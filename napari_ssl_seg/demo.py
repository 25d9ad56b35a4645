"""The end-to-end demo on the bundled sample data (what ``make demo`` runs).

Headless it runs the whole loop from the command line; with a display it then
opens napari on the result. The retrain stage and the widgets join the loop with
the GUI issue.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from napari_ssl_seg.cli import main as cli_main
from napari_ssl_seg.sample_data import SAMPLES, sample_data_dir
from napari_ssl_seg.shipped_models import shipped_model_path

DEMO_CASES = 12
DEMO_LABELED = 4


def _step(title: str, argv: list[str]) -> None:
    print(f"\n== {title}\n$ napari-ssl-seg {' '.join(argv)}", flush=True)
    status = cli_main(argv)
    if status != 0:
        raise SystemExit(status)


def run_demo(out: Path, *, gui: bool | None = None) -> int:
    samples = sample_data_dir()
    out.mkdir(parents=True, exist_ok=True)
    # The demo's own projects are regenerated each run; nothing else in `out` is touched.
    for own in ("sample_project", "cohort", "predictions"):
        shutil.rmtree(out / own, ignore_errors=True)
    for image_file, label_file, description in SAMPLES.values():
        _step(f"geometry of {description}", ["info", str(samples / image_file)])
        _step("its label map", ["info", str(samples / label_file)])
    _step(
        "import the sample folder as a project (images paired with labels by name)",
        ["init", str(out / "sample_project"), "--images", str(samples), "--labels", str(samples)],
    )
    _step(
        f"generate a {DEMO_CASES}-case cohort from the chest CT, {DEMO_LABELED} training cases labeled",
        ["make-cohort", str(out / "cohort"), "--cases", str(DEMO_CASES), "--seed", "0", "--labeled", str(DEMO_LABELED)],
    )
    _step("the cohort project", ["status", str(out / "cohort")])
    ucmt, ugcemt = shipped_model_path("ucmt"), shipped_model_path("ugcemt")
    _step(
        "rank the unlabeled cases with the shipped UCMT teacher (MC-dropout entropy), most uncertain first",
        ["rank", str(out / "cohort"), "--model", str(ucmt)],
    )
    _step(
        "segment the chest CT with the shipped UG-CEMT teacher: label map + entropy map in the source geometry",
        ["predict", str(samples / "CTChest4.nrrd"), "--model", str(ugcemt), "--out", str(out / "predictions")],
    )
    _step(
        "evaluate the UCMT teacher on the cohort's test split (Dice, HD95 and ASD in mm)",
        ["evaluate", str(out / "cohort"), "--model", str(ucmt), "--split", "test"],
    )
    if gui is None:
        gui = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and sys.platform != "win32"
    if gui:
        from napari_ssl_seg.widgets.demo_viewer import show_case

        print("\n== opening napari on the first cohort case", flush=True)
        show_case(out / "cohort", "case_000")
    else:
        print(f"\nno display: ran headless. Projects are in {out}/", flush=True)
    return 0
