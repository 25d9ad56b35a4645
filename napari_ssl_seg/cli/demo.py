"""The end-to-end demo on the bundled sample data (what ``make demo`` runs).

The whole loop from the command line: geometry, import, a generated cohort, ranking with the
shipped teacher, prediction, evaluation, a short one-click-style retrain (its own process, promoted
only if it validates at least as well), the teacher adapted to the cohort's scans and a re-rank.
Then, with a display, napari opens on the cohort with the assistant docked at the most uncertain
case; without one, the same view is rendered under a virtual X server (``xvfb-run``) into
``<out>/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from napari_ssl_seg.sample_data import SAMPLES, sample_data_dir
from napari_ssl_seg.shipped_models import shipped_model_path

DEMO_CASES = 12
DEMO_LABELED = 4
#: Iterations of the demo's retrain: enough to see the curves move, a few minutes on a laptop CPU.
DEMO_RETRAIN_ITERATIONS = 20


#: Runs one ``napari-ssl-seg`` command line in this process and returns its exit status.
CommandRunner = Callable[[Sequence[str]], int]


def run_demo(out: Path, run_command: CommandRunner, *, gui: bool | None = None) -> int:
    """Run the demo's steps through ``run_command`` (the CLI's ``main``, handed in by the ``demo``
    command so this module needs nothing of the CLI package that imports it)."""

    def _step(title: str, argv: list[str]) -> None:
        print(f"\n== {title}\n$ napari-ssl-seg {' '.join(argv)}", flush=True)
        status = run_command(argv)
        if status != 0:
            raise SystemExit(status)

    samples = sample_data_dir()
    out.mkdir(parents=True, exist_ok=True)
    # The demo's own projects are regenerated each run; nothing else in `out` is touched.
    for own in ("sample_project", "cohort", "predictions", "screenshots"):
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
    _step(
        "retrain the teacher in its own process, fine-tuned from the active one (kept only if it validates as well)",
        ["retrain", str(out / "cohort"), "--iterations", str(DEMO_RETRAIN_ITERATIONS)],
    )
    _step(
        "adapt the active teacher's BatchNorm statistics to the cohort's training scans (no labels; a new version, "
        "kept only if it validates as well)",
        ["adapt", str(out / "cohort")],
    )
    _step("re-rank the queue with whichever teacher is now active", ["rank", str(out / "cohort")])
    if gui is None:
        gui = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and sys.platform != "win32"
    if gui:
        print("\n== opening napari with the assistant docked on the cohort's most uncertain case", flush=True)
        # In a process of its own: the command line imports no Qt and no napari (the import contract).
        command = [sys.executable, "-m", "napari_ssl_seg.widgets.assistant", str(out / "cohort")]
        return subprocess.run(command, check=False).returncode
    return _screenshots(out / "cohort", out / "screenshots")


def _screenshots(project: Path, folder: Path) -> int:
    """Render the assistant on ``project`` under xvfb-run (there is no display) into ``folder``."""
    command = [sys.executable, "-m", "napari_ssl_seg.widgets.screenshots", str(project), str(folder)]
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        print("\nno display and no xvfb-run: skipped the screenshots. Projects are in", project.parent, flush=True)
        return 0
    print(f"\n== no display: rendering the assistant under xvfb-run into {folder}/", flush=True)
    done = subprocess.run([xvfb, "-a", "-s", "-screen 0 1920x1200x24", *command], check=False)
    if done.returncode != 0:
        print(f"error: the screenshot step failed (exit {done.returncode})", file=sys.stderr)
        return 1
    print(f"\nran headless. Projects are in {project.parent}/, screenshots in {folder}/", flush=True)
    return 0
