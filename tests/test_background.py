"""Background work runs niced in a thread of its own; the thread that waits for it keeps its priority."""

from __future__ import annotations

import os
import threading

import pytest

from napari_ssl_seg.widgets.background import BACKGROUND_NICENESS, in_background_priority

needs_thread_priorities = pytest.mark.skipif(not hasattr(os, "getpriority"), reason="POSIX thread priorities")


def _own_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@needs_thread_priorities
def test_work_is_niced_in_its_own_thread_and_the_caller_keeps_its_priority() -> None:
    seen: dict[str, int] = {}

    def work(value: int) -> int:
        seen["thread"] = threading.get_native_id()
        seen["priority"] = _own_priority()
        return value * 2

    # A fresh thread stands in for a Qt pool thread: its priority must survive the call.
    caller: dict[str, int] = {}

    def call() -> None:
        before = _own_priority()
        caller["result"] = in_background_priority(work)(21)
        caller["before"], caller["after"], caller["thread"] = before, _own_priority(), threading.get_native_id()

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    assert caller["result"] == 42
    assert caller["after"] == caller["before"]
    assert seen["thread"] != caller["thread"]
    assert seen["priority"] >= BACKGROUND_NICENESS


def test_errors_of_the_work_reach_the_caller() -> None:
    def broken() -> None:
        raise ValueError("corrupt file")

    with pytest.raises(ValueError, match="corrupt file"):
        in_background_priority(broken)()


@pytest.mark.gui
def test_workers_run_in_the_plugin_s_pool_and_leave_qt_s_global_pool_as_it_was(qtbot) -> None:
    from qtpy.QtCore import QRunnable, QThreadPool

    from napari_ssl_seg.widgets.background import plugin_thread_pool, run_in_background

    class Job(QRunnable):
        def __init__(self, done: threading.Event) -> None:
            super().__init__()
            self.done = done

        def run(self) -> None:
            self.done.set()

    pool = QThreadPool.globalInstance()
    size = pool.maxThreadCount()
    pool.setMaxThreadCount(2)  # a 2-core machine's default
    release = threading.Event()
    try:
        workers = [run_in_background(lambda progress: release.wait(60), description="waiting") for _ in range(3)]
        qtbot.waitUntil(lambda: plugin_thread_pool().activeThreadCount() >= 3, timeout=10_000)
        assert pool.maxThreadCount() == 2 and pool.activeThreadCount() == 0
        # Qt's own pool work (a QImage conversion the GUI thread waits on) must still get a thread.
        done = threading.Event()
        pool.start(Job(done))
        assert done.wait(10), "Qt's pool work queued behind waiting workers"
    finally:
        release.set()
        for worker in workers:
            qtbot.waitUntil(lambda worker=worker: not worker.is_running, timeout=10_000)
        pool.setMaxThreadCount(size)
