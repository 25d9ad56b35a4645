"""Every malformed input gets one ``error:`` line and exit 2 from the CLI, a clear refusal from the reader.

Checks run in-process (fast, with file-descriptor capture so that C++ libraries printing straight
to stderr are caught too); a few true subprocess runs prove the exit status and the absence of
tracebacks end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from napari.utils.notifications import notification_manager

from napari_ssl_seg._reader import NO_LAYERS, napari_get_reader, read_layers
from napari_ssl_seg.cli import main
from napari_ssl_seg.errors import InputError
from reliability.bad_models import broken_checkpoints
from reliability.init_corpus import init_cases
from reliability.tally import REJECTED, TALLY

REPO = Path(__file__).resolve().parents[2]


def refusal_problem(status: int, out: str, err: str) -> str | None:
    """Why a CLI result is not a clean refusal, or ``None`` when it is one."""
    lines = err.strip().splitlines()
    if "Traceback" in err or "Traceback" in out:
        return f"traceback: {err[-300:]!r}"
    if status != 2:
        return f"exit {status}, stderr {err[-300:]!r}"
    if len(lines) != 1 or not lines[0].startswith("error: ") or len(lines[0]) < 12:
        return f"stderr is not one error line: {err[-300:]!r}"
    return None


def run_cli(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capfd.readouterr()
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse; must not happen for these inputs
        status = -1 if exc.code is None else int(exc.code)
    out, err = capfd.readouterr()
    return status, out, err


def check_all(label: str, cases: dict[str, list[str]], capfd: pytest.CaptureFixture[str], after=None) -> None:
    problems = []
    for name, argv in cases.items():
        status, out, err = run_cli(argv, capfd)
        problem = refusal_problem(status, out, err) or (after(name) if after else None)
        TALLY["checks"] += 1
        if problem:
            problems.append(f"{label} {name}: {problem}")
        else:
            REJECTED.add(name)
    assert not problems, "\n".join(problems)


def test_corpus_has_at_least_30_distinct_malformed_inputs(corpus: dict[str, Path]) -> None:
    assert len(corpus) >= 30
    formats = {"nifti", "nrrd", "mha", "DICOM", "symlink"}
    assert all(any(key in name for name in corpus) for key in formats)


def test_info_refuses_every_malformed_input(corpus: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    check_all("info", {name: ["info", str(path)] for name, path in corpus.items()}, capfd)
    check_all("info --json", {name: ["info", "--json", str(path)] for name, path in corpus.items()}, capfd)


def test_init_refuses_every_malformed_image_and_creates_nothing(
    corpus: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cases = {}
    for index, (name, path) in enumerate(corpus.items()):
        images = tmp_path / f"images{index}"
        images.mkdir()
        os.symlink(path, images / path.name)  # the bad entry under its own name, beside nothing else
        cases[name] = ["init", str(tmp_path / f"project{index}"), "--images", str(images)]

    def nothing_created(name: str) -> str | None:
        leftovers = sorted(p.name for p in tmp_path.glob("project*"))
        return f"left {leftovers}" if leftovers else None

    check_all("init", cases, capfd, after=nothing_created)


def test_init_refuses_bad_pairs_and_datasets(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pairs = init_cases(tmp_path / "inputs")
    assert len(pairs) >= 20
    project = tmp_path / "project"
    cases = {}
    for name, (images, labels) in pairs.items():
        cases[name] = ["init", str(project), "--images", str(images)] + (["--labels", str(labels)] if labels else [])

    def nothing_created(name: str) -> str | None:
        return "a project folder was left behind" if project.exists() else None

    check_all("init", cases, capfd, after=nothing_created)


def test_init_into_an_existing_file_or_project_is_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from conftest import SAMPLE_DIR

    occupied = tmp_path / "occupied"
    occupied.write_text("someone's notes")
    check_all("init", {"project path is a file": ["init", str(occupied), "--images", str(SAMPLE_DIR)]}, capfd)
    assert occupied.read_text() == "someone's notes"


def test_predict_refuses_every_malformed_image(
    corpus: dict[str, Path], tiny_model: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    cases = {
        name: ["predict", str(path), "--model", str(tiny_model), "--out", str(out), "--uncertainty", "none"]
        for name, path in corpus.items()
    }
    check_all("predict", cases, capfd, after=lambda name: "wrote output" if out.exists() else None)


def test_predict_refuses_every_broken_model(
    corpus: dict[str, Path], tiny_model: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from conftest import make_volume

    from napari_ssl_seg.io import write_volume

    image = write_volume(make_volume((8, 8, 8), dtype="float32"), tmp_path / "image.nii.gz")
    out = tmp_path / "out"
    models = broken_checkpoints(tiny_model, tmp_path / "models")
    assert len(models) >= 20
    cases = {
        name: ["predict", str(image), "--model", str(path), "--out", str(out), "--uncertainty", "none"]
        for name, path in models.items()
    }
    check_all("predict --model", cases, capfd, after=lambda name: "wrote output" if out.exists() else None)
    # The same image and the intact model do predict: the refusals above were about the damage.
    status, _, err = run_cli(["predict", str(image), "--model", str(tiny_model), "--out", str(out), "--json"], capfd)
    assert status == 0, err


def test_predict_refuses_bad_options(tiny_model: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from conftest import make_volume

    from napari_ssl_seg.io import write_volume

    image = write_volume(make_volume((8, 8, 8), dtype="float32"), tmp_path / "image.nii.gz")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should go")
    base = ["predict", str(image), "--model", str(tiny_model)]
    cases = {
        "unknown output format": [*base, "--out", str(tmp_path / "o1"), "--format", ".png"],
        # --json: no progress bar, so stderr holds only the refusal (the folder is checked after predicting)
        "output folder is a file": [*base, "--out", str(blocker), "--uncertainty", "none", "--json"],
        "zero MC samples": [*base, "--out", str(tmp_path / "o2"), "--samples", "0"],
        "unknown device": [*base, "--out", str(tmp_path / "o3"), "--device", "quantum:7"],
    }
    check_all("predict", cases, capfd)
    assert blocker.read_text().startswith("a file")


def test_napari_reader_declines_or_raises_a_clear_input_error(corpus: dict[str, Path]) -> None:
    problems = []
    for name, path in corpus.items():
        TALLY["checks"] += 1
        for given in (str(path), [str(path)]):
            reader = napari_get_reader(given)
            if reader is None:
                continue  # declined: napari tries another reader or says it has none
            shown = len(notification_manager.records)
            # What napari gets: no layer, and the refusal as one error notification.
            if reader(given) != NO_LAYERS or len(notification_manager.records) != shown + 1:
                problems.append(f"{name}: napari got layers or no single notification")
            elif "\n" in str(notification_manager.records[-1].message):
                problems.append(f"{name}: multi-line notification")
            try:
                layers = read_layers(given)
            except InputError as exc:
                message = str(exc)
                if not message or "\n" in message or "Traceback" in message:
                    problems.append(f"{name}: unclear message {message!r}")
            except Exception as exc:
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
            else:
                problems.append(f"{name}: accepted as {len(layers)} layer(s)")
    assert not problems, "\n".join(problems)


def test_repairable_nifti_header_is_read_with_one_warning(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """nibabel repairs a wrong ``sizeof_hdr``; that must read as a warning line, not library noise."""
    import struct

    from reliability.corpus import _nifti_bytes, _volume_xyz

    data = _nifti_bytes(_volume_xyz())
    path = tmp_path / "repairable.nii"
    path.write_bytes(struct.pack("<i", 348 ^ 0x40) + data[4:])
    status, out, err = run_cli(["info", str(path)], capfd)
    assert status == 0 and "shape" in out
    assert err.strip().splitlines() == [err.strip()] and err.startswith("warning: ") and "sizeof_hdr" in err


SUBPROCESS_CASES = (
    ("info", "mha truncated data"),
    ("info", "DICOM folder of random bytes"),
    ("info", "nifti absurd dims .nii.gz"),
    ("info", "symlink loop"),
    ("predict", "nrrd truncated gzip"),
    ("init", "DICOM series with a truncated slice"),
)


@pytest.mark.parametrize(("command", "name"), SUBPROCESS_CASES)
def test_real_process_exits_2_with_one_line_and_no_traceback(
    command: str, name: str, corpus: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    path = str(corpus[name])
    argv = {
        "info": ["info", path],
        "predict": ["predict", path, "--model", str(tiny_model), "--out", str(tmp_path / "out")],
        "init": ["init", str(tmp_path / "project"), "--images", str(Path(path).parent)],
    }[command]
    if command == "init":  # a folder holding only this DICOM series
        images = tmp_path / "images"
        images.mkdir()
        os.symlink(path, images / "series")
        argv = ["init", str(tmp_path / "project"), "--images", str(images)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "napari_ssl_seg.cli", *argv], capture_output=True, text=True, timeout=180, env=env
    )
    assert refusal_problem(result.returncode, result.stdout, result.stderr) is None, result.stderr
    assert not (tmp_path / "project").exists() and not (tmp_path / "out").exists()


@pytest.fixture
def project_with_class_9(tmp_path: Path) -> Path:
    """Labels use class 9; the tiny model knows classes 0-2."""
    import numpy as np
    from conftest import make_volume

    from napari_ssl_seg.store import Project

    root = tmp_path / "project"
    with Project.create(root) as project:
        for name, split in (("c1", "train"), ("c2", "validation"), ("c3", "test")):
            project.add_case(name, make_volume((8, 8, 8), dtype="float32"), split=split)
            project.save_label(name, np.full((8, 8, 8), 9, np.uint8))
    return root


def test_training_from_a_model_without_the_label_classes_is_refused(
    project_with_class_9: Path, tiny_model: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", str(project_with_class_9), "--method", "supervised", "--init", str(tiny_model)]
    check_all("train --init", {"label values outside the model's classes (train)": argv}, capfd)
    assert not any((project_with_class_9 / "runs").iterdir())


def test_evaluating_labels_outside_the_model_classes_is_refused(
    project_with_class_9: Path, tiny_model: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", str(project_with_class_9), "--model", str(tiny_model), "--split", "test", "--json"]
    status, out, err = run_cli(argv, capfd)
    assert refusal_problem(status, out, err) is None
