"""Draw the docks' figures in a long-lived child process: :class:`PlotRenderer` and its server loop.

Why a process: ``benchmarks/gui_latency.py`` measured the longest Qt event-loop stall while a
prediction and a retrain ran together at 300-615 ms with the live training curves drawn by a worker
thread of the napari process, and 121 ms with the curves switched off (one run each, 2-core CPU,
``--diagnose`` showing matplotlib text layout and transforms in the worker during the long stalls).
A matplotlib draw is pure Python in 0.1-0.2 s bursts; every GL call of napari's canvas goes through
ctypes and must win the interpreter back from such a thread. A child process shares no interpreter.

Protocol, one request at a time over the child's stdin/stdout: a JSON line ``{"kind", "state",
"size"}``; the answer is a JSON line ``{"width", "height", "nbytes"}`` (or ``{"error"}``) followed by
``nbytes`` of RGBA. JSON, not pickle, so nothing the pipe carries can run code. The child exits when
its stdin closes, so it never outlives the napari process.

Run as ``python -m napari_ssl_seg.runtime.plot_server`` (only :class:`PlotRenderer` does).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import subprocess
import sys
import threading
from typing import IO, Any

from napari_ssl_seg.runtime.child_process import start_python_module

__all__ = ["PlotRenderer", "PlotRendererError", "RendererUnavailable", "serve", "shared_renderer"]


class PlotRendererError(RuntimeError):
    """The drawing failed (bad state or kind); the renderer process goes on."""


class RendererUnavailable(PlotRendererError):
    """The renderer process could not be started or died twice in a row."""


class PlotRenderer:
    """Client of one renderer child, started on first use and again after it dies; thread-safe."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _started(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            self._process = start_python_module(
                "napari_ssl_seg.runtime.plot_server",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                environment={"MPLBACKEND": "Agg"},
            )
        return self._process

    def _exchange(self, request: bytes) -> tuple[bytes, int, int]:
        process = self._started()
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(request)
        process.stdin.flush()
        header_line = process.stdout.readline()
        if not header_line:
            raise BrokenPipeError("the renderer process exited")
        header = json.loads(header_line)
        if "error" in header:
            raise PlotRendererError(header["error"])
        data = process.stdout.read(int(header["nbytes"]))
        if len(data) != int(header["nbytes"]):
            raise BrokenPipeError("the renderer process exited mid-answer")
        return data, int(header["width"]), int(header["height"])

    def render(self, kind: str, state: Any, size: tuple[float, float]) -> tuple[bytes, int, int]:
        """RGBA bytes, width and height of the drawing ``kind`` of ``state`` (see :mod:`.plotting`)."""
        request = (json.dumps({"kind": kind, "state": state, "size": list(size)}) + "\n").encode()
        with self._lock:
            # One retry: the child may have been killed since the last drawing.
            for attempt in range(2):
                try:
                    return self._exchange(request)
                except (BrokenPipeError, ValueError, OSError) as exc:
                    self._stop()
                    if attempt == 1:
                        raise RendererUnavailable(f"the plot renderer process failed: {exc}") from None
        raise AssertionError("unreachable")

    @property
    def pid(self) -> int | None:
        """The running child's process id, if one runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def close(self) -> None:
        """Stop the child (it exits on end of input)."""
        with self._lock:
            self._stop()


_shared: PlotRenderer | None = None
_shared_lock = threading.Lock()


def shared_renderer() -> PlotRenderer:
    """The process-wide renderer the docks share (one child for all of them), closed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PlotRenderer()
            atexit.register(_shared.close)
        return _shared


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer drawing requests from ``requests`` until it ends (the child's loop)."""
    from napari_ssl_seg.plotting import render

    for line in requests:
        try:
            request = json.loads(line)
            data, width, height = render(request["kind"], request["state"], tuple(request["size"]))
        except Exception as exc:  # a bad drawing is answered, never fatal to the loop
            answers.write((json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n").encode())
        else:
            header = {"width": width, "height": height, "nbytes": len(data)}
            answers.write((json.dumps(header) + "\n").encode())
            answers.write(data)
        answers.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
