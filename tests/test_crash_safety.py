"""SIGKILL during label saves loses nothing that was already saved."""

from __future__ import annotations

import hashlib
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

from napari_ssl_seg.store import Project

SHAPE = (12, 32, 32)
KILLS = 60 if os.environ.get("NAPARI_SSL_SEG_FULL") else 12

SAVER = """
import sys
import numpy as np
from napari_ssl_seg.store import Project
sys.path.insert(0, sys.argv[2])
from test_crash_safety import expected_label

project = Project.open(sys.argv[1])
print("ready", flush=True)
while True:
    version = len(project.label_versions("case")) + 1
    project.save_label("case", expected_label(version), author="saver")
"""


def expected_label(version: int) -> np.ndarray:
    """The content the saver writes as ``version``: distinct for every version."""
    rng = np.random.default_rng(version)
    return rng.integers(0, 5, size=SHAPE).astype(np.uint8)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_sigkill_during_label_saves_keeps_every_saved_version(tmp_path: Path) -> None:
    root = tmp_path / "project"
    with Project.create(root) as project:
        project.add_case("case", make_volume(SHAPE, dtype="float32"))
    verified: dict[int, str] = {}
    rng = random.Random(0)
    tests_dir = str(Path(__file__).parent)
    for _ in range(KILLS):
        saver = subprocess.Popen([sys.executable, "-c", SAVER, str(root), tests_dir], stdout=subprocess.PIPE, text=True)
        assert saver.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.5))
        saver.send_signal(signal.SIGKILL)
        saver.wait(timeout=60)
        with Project.open(root) as project:
            assert project.integrity_check() == "ok"
            versions = project.label_versions("case")
            assert [v.version for v in versions] == list(range(1, len(versions) + 1))
            for version in versions:
                path = root / version.path
                if version.version in verified:
                    assert _sha(path) == verified[version.version], "an earlier version changed"
                    continue
                label = project.read_label("case", version.version)  # also checks the recorded checksum
                np.testing.assert_array_equal(label.array, expected_label(version.version))
                verified[version.version] = _sha(path)
    print(f"\ncrash safety: {KILLS} kills survived, {len(verified)} label versions verified bit-identical")
    assert len(verified) > KILLS // 2, "kills should land between saves, not only before the first"
