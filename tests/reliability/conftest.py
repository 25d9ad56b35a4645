"""Shared fixtures of the reliability suite, and its end-of-run counts.

The ``--reliability-full`` option itself is declared in ``tests/conftest.py``: pytest only honours
``pytest_addoption`` in conftest files it loads before parsing the command line, and this folder's
conftest is not one of them when the whole suite runs. ``pytest_terminal_summary`` does work here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from napari_ssl_seg.networks import ModelCard, VNet, save_checkpoint
from reliability.corpus import build_corpus
from reliability.tally import summary_line


def full_run(config: pytest.Config) -> bool:
    """The full repetition counts: ``--reliability-full`` or ``NAPARI_SSL_SEG_FULL=1``."""
    return bool(config.getoption("--reliability-full", default=False)) or bool(os.environ.get("NAPARI_SSL_SEG_FULL"))


@pytest.fixture(scope="session")
def full(request: pytest.FixtureRequest) -> bool:
    return full_run(request.config)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def make_tiny_model(folder: Path, *, num_classes: int = 3, name: str = "tiny") -> Path:
    """A V-Net small enough to predict an 8x8x8 patch in milliseconds; returns the weights path."""
    torch.manual_seed(0)
    network = VNet(base_width=2, depth=2, num_classes=num_classes)
    card = ModelCard(
        method="supervised",
        network=network.config,
        patch_size=(8, 8, 8),
        intensity={"kind": "zscore"},
        classes={i: f"class{i}" for i in range(num_classes)},
        orientation="LPS",
    )
    folder.mkdir(parents=True, exist_ok=True)
    weights, _ = save_checkpoint(folder / name, {"model": network}, card)
    return weights


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    line = summary_line()
    if line:
        terminalreporter.write_line(line)
