"""A lab's cold start, in the GUI, timed: a folder of scans to a first teacher, then its test Dice.

    .venv/bin/python benchmarks/gui_cold_start.py --out build/gui_cold_start \
        [--screenshots docs/screenshots/cold_start] [--iterations N]

Runs a real napari viewer (under ``xvfb-run`` when there is no display; the script starts it
itself) and presses the docks' buttons as a user would; only the file dialogs are answered by
the script. The lab's folder is the bundled chest-CT cohort (12 cases, seed 0, as the shipped
teachers' ``make-cohort``): its training and validation scans, with the labels of the labeled ones
beside them (one of them kept elsewhere and attached from the Label dock). The cohort's test cases
never enter the lab's project: the first teacher is scored on them afterwards, from the command line.

Writes ``OUT/result.json`` (the wall-clock seconds from the click to the promoted teacher, the
estimate the dock showed, the test Dice per structure) and, with ``--screenshots``, one picture
of the window per step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COHORT_CASES = 12
COHORT_SEED = 0
COHORT_LABELED = 4


def build_lab_folder(out: Path) -> tuple[Path, Path, Path, str]:
    """The cohort (for its test split) and the lab's folder of scans; the case whose label is elsewhere."""
    from napari_ssl_seg.cohort.cohort_project import build_cohort_project
    from napari_ssl_seg.io import write_volume
    from napari_ssl_seg.sample_data import sample_data_dir
    from napari_ssl_seg.store import Project

    cohort = out / "cohort"
    if not (cohort / "project.sqlite").exists():
        shutil.rmtree(cohort, ignore_errors=True)
        samples = sample_data_dir()
        build_cohort_project(
            cohort,
            samples / "CTChest4.nrrd",
            samples / "Segmentation.seg.nrrd",
            cases=COHORT_CASES,
            seed=COHORT_SEED,
            labeled=COHORT_LABELED,
        ).close()
    scans, elsewhere = out / "scans", out / "labels_from_a_colleague"
    for folder in (scans, elsewhere):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    attached = ""
    with Project.open(cohort) as project:
        for case in project.cases():
            if case.split == "test":
                continue
            write_volume(project.read_image(case.name), scans / f"{case.name}.nii.gz")
            if case.is_labeled:
                label = project.read_label(case.name)
                if not attached:
                    attached = case.name
                    write_volume(label, elsewhere / f"{case.name}.nii.gz")
                else:
                    write_volume(label, scans / f"{case.name}_label.nii.gz")
    return cohort, scans, elsewhere, attached


def _dock_of(widget: Any) -> Any:
    from qtpy.QtWidgets import QDockWidget

    parent = widget
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


def run_gui(out: Path, iterations: int | None, screenshots: Path | None) -> dict[str, Any]:
    import napari
    from qtpy.QtWidgets import QApplication, QFileDialog

    from napari_ssl_seg.widgets.assistant import dock_assistant

    cohort, scans, elsewhere, attached = build_lab_folder(out)
    root = out / "lab_project"
    shutil.rmtree(root, ignore_errors=True)
    shots: list[str] = []

    def settle(seconds: float = 0.5) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.02)

    def wait_until(condition: Any, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > end:
                raise SystemExit(f"error: timed out waiting for {what}")
            QApplication.processEvents()
            time.sleep(0.05)

    def shoot(name: str, *show: Any) -> None:
        if screenshots is None:
            return
        for widget in show:
            dock = _dock_of(widget)
            if dock is not None:
                dock.raise_()
        settle()
        path = screenshots / f"{name}.png"
        viewer.window.screenshot(str(path), canvas_only=False, flash=False)
        shots.append(str(path))

    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-ssl-seg: a lab's first teacher", show=True)
    try:
        viewer.window.resize(1600, 1000)
        docks = dock_assistant(viewer)
        project, teacher, label, retrain = (docks[t] for t in ("Project", "Teacher", "Label", "Retrain"))
        session = project.session
        answers = [str(scans), str(root)]
        QFileDialog.getExistingDirectory = staticmethod(lambda *_a, **_k: answers.pop(0))
        QFileDialog.getOpenFileName = staticmethod(lambda *_a, **_k: (str(elsewhere / f"{attached}.nii.gz"), ""))
        project.import_button.click()
        wait_until(lambda: session.root == root, 600, "the import")
        settle(1.0)
        shoot("1_imported", project, retrain)

        row = next(r for r in range(project.table.rowCount()) if project.table.item(r, 0).text() == attached)
        project.open_row(row)
        label.attach_file_button.click()
        settle(1.0)
        shoot("2_label_attached", label)

        if iterations is not None:
            retrain.iterations.setValue(iterations)
        planned = retrain.iterations.value()
        estimate = retrain.estimate.text()
        clicked = time.monotonic()
        retrain.start_button.click()
        halfway = False
        while retrain.busy:
            QApplication.processEvents()
            time.sleep(0.05)
            if not halfway and retrain.bar.value() >= planned // 2:
                halfway = True
                shoot("3_training", retrain)
        trained_seconds = time.monotonic() - clicked
        outcome = retrain.outcome
        if outcome is None or not getattr(outcome, "promoted", False):
            raise SystemExit(f"error: no first teacher: {retrain.status.text()}")
        status = retrain.status.text()

        teacher.next_button.click()
        wait_until(lambda: session.case is not None, 120, "the next case")
        worker = teacher.predict()
        wait_until(lambda: not worker.is_running and teacher.predict_button.isEnabled(), 600, "the prediction")
        settle(2.0)
        session.goto_region(0)
        shoot("4_predicted", teacher)
        model = session.active_model()
        weights = str(model.checkpoint(session.project))
        case = session.case
    finally:
        viewer.close()
    return {
        "cohort": str(cohort),
        "lab_project": str(root),
        "attached_label": attached,
        "iterations": planned,
        "estimate_shown": estimate,
        "seconds_click_to_teacher": round(trained_seconds, 1),
        "status": status,
        "predicted_case": case,
        "model": weights,
        "screenshots": shots,
    }


def score(result: dict[str, Any]) -> dict[str, Any]:
    cli = str(Path(sys.executable).with_name("napari-ssl-seg"))
    done = subprocess.run(
        [cli, "evaluate", result["cohort"], "--model", result["model"], "--split", "test", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "gui_cold_start")
    parser.add_argument("--screenshots", type=Path)
    parser.add_argument("--iterations", type=int, help="default: what the dock proposes")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run") and not os.environ.get("GUI_COLD_START_CHILD"):
        env = dict(os.environ, GUI_COLD_START_CHILD="1")
        command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, __file__, *(argv or sys.argv[1:])]
        return subprocess.run(command, env=env, check=False).returncode
    args.out.mkdir(parents=True, exist_ok=True)
    result = run_gui(args.out.resolve(), args.iterations, args.screenshots)
    evaluation = score(result)
    result["test"] = evaluation
    (args.out / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    mean = evaluation["summary"]["overall"]["dice_mean"]
    print(
        f"first teacher in {result['seconds_click_to_teacher']:.0f} s ({result['iterations']} iterations; "
        f"the dock estimated: {result['estimate_shown']}); test Dice {mean:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
