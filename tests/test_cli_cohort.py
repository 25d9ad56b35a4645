"""`make-cohort` builds a project: splits, labeled pool, withheld references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_ssl_seg.cli import main
from napari_ssl_seg.store import Project


def test_make_cohort_project_with_unlabeled_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cohort"
    assert main(["make-cohort", str(out), "--cases", "5", "--seed", "4", "--labeled", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cases"] == 5
    assert summary["splits"] == {"train": 3, "validation": 1, "test": 1}
    with Project.open(out) as project:
        cases = {case.name: case for case in project.cases()}
        unlabeled = [name for name, case in cases.items() if not case.is_labeled]
        assert len(unlabeled) == 2 and all(cases[name].split == "train" for name in unlabeled)
        for name in unlabeled:
            reference = project.read_reference_label(name)
            image = project.read_image(name)
            assert reference.shape == image.shape
            assert set(np.unique(reference.array)) <= set(range(8))
        assert project.label_names()[5] == "right lung"
        assert project.integrity_check() == "ok"


def test_make_cohort_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-cohort", str(tmp_path / "a"), "--cases", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --cases")
    assert main(["make-cohort", str(tmp_path / "b"), "--cases", "5", "--labeled", "9"]) == 2
    assert capsys.readouterr().err.startswith("error: --labeled")
    assert main(["make-cohort", str(tmp_path / "c"), "--base", "x.nrrd", "--cases", "2"]) == 2
    with pytest.raises(SystemExit) as refused:  # argparse's own refusal of an unknown choice: status 2
        main(["make-cohort", str(tmp_path / "d"), "--cases", "2", "--image-interpolation", "quadratic"])
    assert refused.value.code == 2 and "--image-interpolation" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_make_cohort_records_its_image_and_label_interpolation(tmp_path: Path) -> None:
    out = tmp_path / "cubic"
    command = ["make-cohort", str(out), "--cases", "3", "--seed", "4", "--image-interpolation", "cubic"]
    assert main([*command, "--label-interpolation", "linear"]) == 0
    with Project.open(out) as project:
        recipe = json.loads(project.setting("cohort"))
        assert recipe["image_interpolation"] == "cubic" and recipe["cases"] == 3
        assert recipe["label_interpolation"] == "linear"
        assert len(project.cases()) == 3 and project.integrity_check() == "ok"
