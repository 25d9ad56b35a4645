from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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


def tiny_teacher(
    folder: Path,
    num_classes: int,
    *,
    method: str = "supervised",
    seed: int = 0,
    name: str = "tiny",
    dropout: float = 0.5,
    validation_dice: float = 0.1,
) -> Path:
    """An untrained 3-level V-Net, saved like any teacher (weights path returned): cheap to run."""
    import torch

    from napari_ssl_seg.networks import ModelCard, VNet, save_checkpoint

    torch.manual_seed(seed)
    network = VNet(base_width=4, depth=3, num_classes=num_classes, dropout=dropout)
    card = ModelCard(
        method=method,
        network=network.config,
        patch_size=(16, 32, 32),
        intensity={"kind": "ct_window", "window": [-1000, 1000]},
        classes={i: f"class{i}" for i in range(num_classes)},
        orientation="LPS",
        metrics={"validation_dice": validation_dice},
    )
    folder.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(folder / name, {"model": network}, card)[0]


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
