"""A training child shares the cores with the process that started it while that one computes (core_sharing.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from napari_ssl_seg.runtime import core_sharing
from napari_ssl_seg.runtime.core_sharing import CoreShare


@pytest.fixture
def restore_threads() -> Iterator[int]:
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_the_child_follows_the_signal_file(tmp_path: Path, restore_threads: int) -> None:
    signal = tmp_path / "signal"
    with CoreShare(signal, threads=4) as cores:
        assert cores.update() == 4
        signal.touch()
        assert cores.update() == 2 and torch.get_num_threads() == 2  # half, while the starting process computes
        signal.unlink()
        assert cores.update() == 4 and torch.get_num_threads() == 4
        signal.touch()
        cores.update()
    assert torch.get_num_threads() == 4  # leaving gives every thread back, signal or not
    assert CoreShare(signal, threads=1).update() == 1  # one thread is never taken away
    assert CoreShare(None, threads=3).update() == 3  # no signal named: nothing changes


def test_the_starting_process_takes_the_other_half_while_a_child_shares(tmp_path: Path) -> None:
    assert [core_sharing.compute_threads(cores) for cores in (1, 2, 16)] == [1, 1, 15]  # a core for the GUI thread
    core_sharing.share_with(tmp_path / "signal")
    try:
        assert [core_sharing.compute_threads(cores) for cores in (1, 2, 3, 16)] == [1, 1, 2, 8]
    finally:
        core_sharing.stop_sharing_with(tmp_path / "signal")
    assert core_sharing.compute_threads(16) == 15


def test_the_signal_stands_while_any_thread_computes(tmp_path: Path) -> None:
    early, late = tmp_path / "early", tmp_path / "late"
    core_sharing.share_with(early)
    try:
        assert not early.exists()
        inside, release = threading.Event(), threading.Event()

        def work() -> None:
            with core_sharing.computing():
                inside.set()
                release.wait(10)

        worker = threading.Thread(target=work)
        worker.start()
        assert inside.wait(10)
        assert early.exists()
        core_sharing.share_with(late)  # a child started while work runs is told at once
        assert late.exists()
        with core_sharing.computing():
            pass
        assert early.exists()  # the other thread still computes
        release.set()
        worker.join(10)
        assert not early.exists() and not late.exists()
    finally:
        core_sharing.stop_sharing_with(early)
        core_sharing.stop_sharing_with(late)
    with core_sharing.computing():
        assert not early.exists()  # an ended child is no longer signalled
