"""Run core work off the GUI thread with a napari progress bar, errors as notifications.

napari's thread workers deliver results on the GUI thread; progress callbacks from the core run
on the worker thread, so they go through :class:`Relay`, a QObject living on the GUI thread whose
queued signal hands each update back to it.

The plugin's workers run in a thread pool of its own (:func:`start_worker`), never in Qt's global
pool, which napari and every other plugin share and Qt itself uses for GUI-thread work.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, QThreadPool, QTimer, Signal, Slot
from qtpy.QtWidgets import QApplication

from napari_ssl_seg.errors import InputError, ProjectError
from napari_ssl_seg.runtime import core_sharing

__all__ = [
    "USER_ERRORS",
    "Relay",
    "in_background_priority",
    "in_event_loop_turns",
    "plugin_thread_pool",
    "report_errors",
    "run_in_background",
    "start_worker",
]

#: How much lower (POSIX nice) background work runs than the GUI thread.
BACKGROUND_NICENESS = 10

#: Errors a user can cause and fix (bad file, bad project): one line, never a traceback.
USER_ERRORS = (InputError, ProjectError, OSError, ValueError)


class Relay(QObject):
    """Calls ``handler`` on the thread that made the relay, whatever thread calls :meth:`send`."""

    _sent = Signal(object)

    def __init__(self, handler: Callable[[Any], None]) -> None:
        super().__init__()
        self._handler = handler
        self._sent.connect(self._deliver)

    def send(self, value: Any) -> None:
        self._sent.emit(value)

    @Slot(object)
    def _deliver(self, value: Any) -> None:
        self._handler(value)


#: Threads of the plugin's pool. Its workers mostly wait (on a niced compute thread, a child
#: process, a file read), which costs no CPU, so the pool is sized by how many may wait at once.
PLUGIN_POOL_THREADS = 8

_pool: QThreadPool | None = None
_running: set[Any] = set()  # started workers, kept alive until they finish


def plugin_thread_pool() -> QThreadPool:
    """The plugin's own thread pool, owned by the QApplication (which waits for it on exit).

    napari's ``worker.start()`` uses Qt's global pool, whose size defaults to the number of cores,
    and Qt runs some of its own GUI-thread work there: QImage conversion splits each image over pool
    threads and waits for them (napari's activity spinner converts a frame every few tens of ms).
    With a prediction and a plot waiting in the only two global pool threads of a 2-core machine,
    ``py-spy dump`` found the GUI thread blocked 1.0-1.8 s in that wait. Growing the global pool
    fixed it but changed state every other plugin shares; a pool of our own leaves it as it was.
    """
    global _pool
    if _pool is None:
        _pool = QThreadPool(QApplication.instance())
        _pool.setMaxThreadCount(PLUGIN_POOL_THREADS)
        _pool.destroyed.connect(_forget_pool)
    return _pool


def _forget_pool(*_: Any) -> None:
    global _pool
    _pool = None


def start_worker(worker: Any) -> Any:
    """Start a napari/superqt worker made with ``_start_thread=False`` in :func:`plugin_thread_pool`."""
    _running.add(worker)
    worker.finished.connect(lambda: _running.discard(worker))
    plugin_thread_pool().start(worker)
    return worker


def in_event_loop_turns(
    steps: list[Callable[[], None]],
    *,
    still_wanted: Callable[[], bool] = lambda: True,
    done: Callable[[], None] | None = None,
) -> None:
    """Run ``steps`` one per turn of the event loop, so the GUI repaints and reacts between them.

    Each step that changes layers or docks costs a repaint (tens of ms under software OpenGL);
    run back to back they were one stall. ``still_wanted`` is asked before every step (e.g. the
    case is still open); ``done`` runs after the last step, or when the steps are abandoned.
    """
    if not steps or not still_wanted():
        if done is not None:
            done()
        return
    try:
        steps[0]()
    finally:
        if len(steps) > 1:
            QTimer.singleShot(0, lambda: in_event_loop_turns(steps[1:], still_wanted=still_wanted, done=done))
        elif done is not None:
            done()


def in_background_priority(function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``function`` to run at background priority, leaving the GUI thread a core of its own.

    Measured with benchmarks/gui_latency.py on 2 cores: a prediction's torch threads at the GUI's
    priority starved napari's repaints (software OpenGL under Xvfb included) into 0.5 s stalls.
    Linux applies ``setpriority`` to the calling thread alone (and to the threads it starts, such
    as torch's pool); torch keeps one core free for the GUI.

    The work runs in a thread of its own, which the Qt pool thread of the napari worker waits on.
    Nicing the pool thread itself was a priority inversion: an unprivileged process cannot undo a
    nice, and Qt hands its pool threads later work the GUI thread waits for (QImage conversions,
    e.g. of napari's activity spinner). ``py-spy dump`` caught the GUI thread waiting 1.8 s on such
    a conversion while training and prediction kept the niced pool thread from running.
    """

    def run(*args: Any, **kwargs: Any) -> Any:
        outcome: dict[str, Any] = {}

        def body() -> None:
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
            if "torch" in sys.modules:
                import torch

                torch.set_num_threads(core_sharing.compute_threads(os.cpu_count() or 2))
            try:
                with core_sharing.computing():  # a retrain's child shares the cores meanwhile
                    outcome["value"] = function(*args, **kwargs)
            except BaseException as exc:  # handed to the waiting worker, which reports it
                outcome["error"] = exc

        thread = threading.Thread(target=body, name=f"background {getattr(function, '__name__', 'work')}", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    return run


def run_in_background(
    function: Callable[..., Any],
    *args: Any,
    description: str,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    **kwargs: Any,
) -> Any:
    """Start ``function(*args, progress=callback, **kwargs)`` in a thread; returns the worker.

    ``callback(done, total, *rest)`` from the core drives a napari progress bar. A raised error
    becomes a one-line notification (and ``on_error``); the result goes to ``on_done``.
    """
    bar = progress(total=0, desc=description)

    def update(values: tuple) -> None:
        done, total = int(values[0]), int(values[1])
        if bar.total != total:
            bar.total = total
        bar.n = min(done, total) if total else done
        bar.refresh()

    relay = Relay(update)
    kwargs["progress"] = lambda *values: relay.send(values)
    worker = create_worker(in_background_priority(function), *args, _start_thread=False, _ignore_errors=True, **kwargs)
    worker.relay = relay  # keep the relay alive as long as the worker
    # napari relays every worker error as a notification with a traceback; a user's error (a bad
    # folder, a corrupt file) deserves one line instead, so ``failed`` decides below.
    relay_error = getattr(worker, "_relay_error", None)
    if relay_error is not None:
        # TypeError: this napari does not relay worker errors itself.
        with contextlib.suppress(TypeError):
            worker.errored.disconnect(relay_error)

    def finished_ok(result: Any) -> None:
        bar.close()
        if on_done is not None:
            on_done(result)

    def failed(exc: BaseException) -> None:
        bar.close()
        if isinstance(exc, USER_ERRORS) or relay_error is None:
            show_error(f"{description} failed: {exc}")
        else:  # a bug: keep the traceback reachable from the notification
            relay_error(exc)
        if on_error is not None:
            on_error(exc)

    worker.returned.connect(finished_ok)
    worker.errored.connect(failed)
    return start_worker(worker)


def report_errors(action: Callable[..., Any], *, arguments: int = 0) -> Callable[..., Any]:
    """A Qt slot running ``action``; a user error becomes a one-line napari notification.

    The slot hands ``action`` the first ``arguments`` values of the signal and drops the rest:
    Qt sends what its signal carries (``clicked`` sends ``checked``), and a slot that takes
    ``*args`` gets all of it, so passing it through broke every button whose action takes none.
    """

    def guarded(*signal_values: Any) -> Any:
        try:
            return action(*signal_values[:arguments])
        except USER_ERRORS as exc:
            show_error(f"{type(exc).__name__ if isinstance(exc, OSError) else 'error'}: {exc}")
            return None

    guarded.__name__ = getattr(action, "__name__", "action")
    guarded.__doc__ = action.__doc__
    return guarded
