"""Builders the tests share: tiny projects, configs and teachers, DICOM series, project lookups.

One place for each, imported as ``from helpers import ...`` (the tests folder is on the path), so no
test module imports another's.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from napari_ssl_seg.io import Volume
from napari_ssl_seg.io.dicom import write_dicom_series as write_dicom_series_with
from napari_ssl_seg.store import Project
from napari_ssl_seg.store.models import register_model
from napari_ssl_seg.training import TrainConfig
from napari_ssl_seg.training.loop import train

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SHAPE = (10, 22, 26)  # (z, y, x): larger than the tests' patch, a few patches per case


def make_tiny_project(
    root: Path, *, labeled: int = 2, unlabeled: int = 1, validation: int = 1, shape: tuple[int, int, int] = SHAPE
) -> Path:
    """A project of small synthetic cases: a bright ball (class 1) and a dark box (class 2) in noise."""
    project = Project.create(root, seed=5, name="tiny")
    project.set_setting("label_names", json.dumps({"1": "ball", "2": "box"}))
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    plan = ["train"] * labeled + ["unlabeled"] * unlabeled + ["validation"] * validation
    for index, split in enumerate(plan):
        centre = rng.uniform(0.35, 0.65, size=3) * np.asarray(shape)
        label = np.zeros(shape, dtype=np.uint8)
        label[((z - centre[0]) / 3) ** 2 + ((y - centre[1]) / 6) ** 2 + ((x - centre[2]) / 6) ** 2 < 1] = 1
        label[2:5, 2:8, -9:-3] = 2
        image = rng.normal(0, 0.3, size=shape).astype(np.float32) + 2.0 * (label == 1) - 1.5 * (label == 2)
        name = f"case_{index:02d}"
        project.add_case(
            name, Volume(array=image, spacing=(4.0, 1.0, 1.0)), split="train" if split != "validation" else split
        )
        if split != "unlabeled":
            project.save_label(name, label, author="test")
    project.close()
    return root


def tiny_config(**changes: Any) -> TrainConfig:
    base = TrainConfig(
        method="supervised",
        iterations=6,
        batch_labeled=1,
        batch_unlabeled=1,
        patch_size=(8, 16, 16),
        base_width=4,
        depth=3,
        dropout=0.2,
        lr_step=4,
        rampup_iterations=6,
        checkpoint_every=3,
        validate_every=3,
        log_every=2,
    )
    values = {**base.to_dict(), **changes}
    return TrainConfig.from_dict(values)


# Seconds on one core: a record every iteration, validation and checkpoint only at the end. The
# network's width and depth come from the active (tiny) teacher the retrain starts from.
TINY = [
    "batch_labeled=1",
    "batch_unlabeled=1",
    "patch_size=8,16,16",
    "log_every=1",
    "validate_every=1000",
    "checkpoint_every=1000",
    "amp=false",
]


def tiny_trained_project(folder: Path) -> Path:
    """A tiny project under ``folder`` whose active teacher is a 2-iteration supervised model."""
    root = make_tiny_project(folder / "project")
    result = train(root, tiny_config(iterations=2), root.parent / "first", device="cpu")
    with Project.open(root) as project:
        register_model(project, result.model_path, activate=True)
    return root


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


def write_dicom_series(
    volume: Volume, folder: Path, *, modality: str, series: str = "1.2.826.0.1.3680043.2.1125.1"
) -> list[Path]:
    """The package's DICOM writer, with a patient name in every file: one that must never surface anywhere."""
    return write_dicom_series_with(
        volume, folder, modality=modality, series_uid=series, extra_tags={"0010|0010": "Doe^Jane"}
    )


def unlabeled_case(root: Path) -> str:
    with Project.open(root) as project:
        return next(c.name for c in project.cases() if c.split == "train" and not c.is_labeled)


def ranking_teacher(folder: Path, *, num_classes: int = 8, seed: int = 0, name: str = "tiny") -> Path:
    """A tiny UCMT-carded teacher whose validation Dice tells the seeds apart."""
    return tiny_teacher(folder, num_classes, method="ucmt", seed=seed, name=name, validation_dice=0.5 + seed / 100)


def ranking_cohort(folder: Path) -> Path:
    """A 6-case chest-CT cohort (1 labeled training case) to rank."""
    from conftest import SAMPLE_DIR

    from napari_ssl_seg.cohort.cohort_project import build_cohort_project

    root = folder / "cohort"
    build_cohort_project(
        root, SAMPLE_DIR / "CTChest4.nrrd", SAMPLE_DIR / "Segmentation.seg.nrrd", cases=6, seed=3, labeled=1
    ).close()
    return root


def load_benchmark(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (the scripts are not a package); their folder goes on the path for the
    length of the test, since most import a sibling script."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
