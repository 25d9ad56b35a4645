"""SIGKILL at chosen and at random moments of label saves: what was committed survives, bit for bit.

``tests/test_crash_safety.py`` kills one saver at random. This adds (1) a kill at each step of a
save (mid-write, before publish, before the row, before COMMIT, after COMMIT), checking what each
step leaves behind and that the next save works, and (2) random kills of two savers writing two
cases at once while a third process reads every version.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_volume

from napari_ssl_seg.io.atomic import TEMP_PREFIX, sha256_file
from napari_ssl_seg.store import Project
from reliability.saver import CRASH_POINTS, SHAPE, expected_label
from reliability.tally import TALLY

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent
CASES = ("alpha", "beta")


def _start(root: Path, role: str, case: str, *crash: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(REPO)]), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "reliability.saver", str(root), role, case, *crash],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def _new_project(root: Path) -> None:
    with Project.create(root) as project:
        for case in CASES:
            project.add_case(case, make_volume(SHAPE, dtype="float32"))


def verify(root: Path, seen: dict[tuple[str, int], str]) -> dict[str, int]:
    """Every recorded version reads back with its checksum and content; returns versions per case."""
    counts = {}
    with Project.open(root) as project:
        assert project.integrity_check() == "ok"
        referenced = set()
        for case in CASES:
            versions = project.label_versions(case)
            assert [v.version for v in versions] == list(range(1, len(versions) + 1)), f"{case}: gap in versions"
            for record in versions:
                referenced.add((root / record.path).resolve())
                key = (case, record.version)
                if key in seen:
                    assert sha256_file(root / record.path) == seen[key], f"{key} changed after it was saved"
                    continue
                label = project.read_label(case, record.version)  # raises on a checksum mismatch
                np.testing.assert_array_equal(label.array, expected_label(case, record.version))
                seen[key] = record.sha256
                TALLY["versions"] += 1
            counts[case] = len(versions)
    for path in (root / "labels").rglob("*"):
        if path.name.startswith(TEMP_PREFIX):
            assert path.resolve() not in referenced, f"a temporary file is recorded as a version: {path}"
    return counts


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_at_each_step_of_a_save(point: str, tmp_path: Path) -> None:
    root = tmp_path / "project"
    _new_project(root)
    child = _start(root, "save", "alpha", point)
    assert child.wait(timeout=120) == -signal.SIGKILL
    TALLY["kills"] += 1
    seen: dict[tuple[str, int], str] = {}
    counts = verify(root, seen)
    assert counts["alpha"] == (3 if point == "after_commit" else 2), "only committed saves may count"
    leftovers = {p.name for p in (root / "labels" / "alpha").iterdir()}
    partial = {name for name in leftovers if name.startswith(TEMP_PREFIX)}
    if point in ("mid_write", "before_publish"):
        assert partial, "the kill should have left its temporary file (it is harmless and unreferenced)"
    # The project goes on: the next save takes the next number and reads back intact.
    with Project.open(root) as project:
        record = project.save_label("alpha", expected_label("alpha", counts["alpha"] + 1))
        assert record.version == counts["alpha"] + 1
    verify(root, seen)


@pytest.mark.slow
def test_random_kills_of_concurrent_savers_and_a_reader(tmp_path: Path, full: bool) -> None:
    rounds = 30 if full else 4
    root = tmp_path / "project"
    _new_project(root)
    rng = random.Random(8)
    seen: dict[tuple[str, int], str] = {}
    grew = 0
    for _ in range(rounds):
        before = sum(verify(root, seen).values())
        children = [_start(root, "save", case) for case in CASES] + [_start(root, "read", "-")]
        deadline = time.monotonic() + rng.uniform(0.3, 1.5)
        for child in rng.sample(children, len(children)):  # staggered: each dies at its own moment
            time.sleep(max(0.0, deadline - time.monotonic()) * rng.random())
            child.send_signal(signal.SIGKILL)
        for child in children:
            assert child.wait(timeout=120) == -signal.SIGKILL
            TALLY["kills"] += 1
        grew += sum(verify(root, seen).values()) > before
    assert grew >= rounds // 2, "kills should mostly land after some saves, not before the first"
