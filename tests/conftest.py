from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_teacher

from napari_ssl_seg.io import Volume

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "sample_data"


def rotation_matrix(z: float, y: float, x: float) -> np.ndarray:
    """A proper rotation from three angles (radians)."""
    cz, sz, cy, sy, cx, sx = np.cos(z), np.sin(z), np.cos(y), np.sin(y), np.cos(x), np.sin(x)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def make_volume(
    shape: tuple[int, int, int] = (6, 9, 11),
    *,
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.7),
    origin: tuple[float, float, float] = (-12.5, 30.25, 101.0),
    direction: np.ndarray | None = None,
    dtype: str = "uint8",
    seed: int = 0,
) -> Volume:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "iu":
        array = rng.integers(0, 4, size=shape).astype(dtype)
    else:
        array = rng.normal(size=shape).astype(dtype)
    return Volume(
        array=array,
        spacing=spacing,
        origin=origin,
        direction=rotation_matrix(0.3, -0.2, 0.1) if direction is None else direction,
    )


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE_DIR


def pytest_addoption(parser: pytest.Parser) -> None:
    # Declared here, not in tests/reliability/conftest.py: pytest only reads options from the
    # conftest files it loads before parsing the command line, which a subfolder's is not.
    parser.addoption(
        "--reliability-full",
        action="store_true",
        default=False,
        help="run the reliability suite's slow repetitions (kills, fuzzed files) at their full count",
    )


@pytest.fixture(scope="session")
def cohort_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-case chest-CT cohort project (1 labeled) with a tiny active teacher; copy it before use."""
    from napari_ssl_seg.cohort.cohort_project import build_cohort_project
    from napari_ssl_seg.store.models import register_model

    root = tmp_path_factory.mktemp("widgets") / "cohort"
    with build_cohort_project(
        root, SAMPLE_DIR / "CTChest4.nrrd", SAMPLE_DIR / "Segmentation.seg.nrrd", cases=5, seed=1, labeled=1
    ) as project:
        register_model(project, tiny_teacher(root.parent / "model", len(project.label_names()) + 1))
    return root


@pytest.fixture
def project_root(cohort_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of :func:`cohort_template` for one test to change."""
    import shutil

    root = tmp_path / "project"
    shutil.copytree(cohort_template, root)
    return root


@pytest.fixture
def uncaught() -> Iterator[list[str]]:
    """Records every exception that reaches the event loop or a thread's top; the test fails on any."""
    caught: list[str] = []
    previous_hook, previous_thread_hook = sys.excepthook, threading.excepthook
    sys.excepthook = lambda kind, value, tb: caught.append("".join(traceback.format_exception(kind, value, tb)))
    threading.excepthook = lambda args: caught.append(
        "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    )
    try:
        yield caught
    finally:
        sys.excepthook, threading.excepthook = previous_hook, previous_thread_hook
    assert not caught, "\n".join(caught)
