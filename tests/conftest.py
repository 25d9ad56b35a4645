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
