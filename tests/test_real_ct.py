"""benchmarks/real_ct.py: teachers scored with statistics re-estimated over real CTs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import load_benchmark, tiny_teacher
from safetensors.numpy import load_file


def _ct(path: Path) -> Path:
    rng = np.random.default_rng(0)
    hu = rng.normal(0.0, 300.0, size=(20, 40, 40)).astype(np.int16)
    hu[:, 10:30, 8:18] = -800  # two dark "lungs"
    hu[:, 10:30, 22:32] = -800
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((4.0, 4.0, 5.0))
    sitk.WriteImage(image, str(path))
    return path


def test_each_teacher_gets_its_own_reestimated_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Teachers of run folders are all called model.safetensors: the copies must not overwrite each other.
    benchmark = load_benchmark("real_ct", monkeypatch)
    cts = [_ct(tmp_path / "ct.nrrd")]
    first = tiny_teacher(tmp_path / "run_a", 3, seed=0, name="model")
    second = tiny_teacher(tmp_path / "run_b", 3, seed=1, name="model")
    models = benchmark.with_statistics([("a", first), ("b", second)], cts, 2, tmp_path / "work")
    assert [name for name, _ in models] == ["a", "b", "a +statistics", "b +statistics"]
    copies = [path for _, path in models[2:]]
    assert copies[0] != copies[1] and all(copy.exists() for copy in copies)
    key = next(name for name in load_file(str(first)) if name.endswith("running_mean"))
    means = [load_file(str(path))[key] for path in (first, *copies)]
    assert not np.allclose(means[0], means[1])  # re-estimated: no longer the fresh network's zeros
    assert not np.allclose(means[1], means[2])  # each teacher's own statistics
