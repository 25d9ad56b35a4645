"""``python -m MODULE ARGS...`` in a niced child process: JSON result on stdout, progress and errors on stderr.

Heavy work started from the GUI (prediction, the old-vs-new validation, re-ranking) runs this way:
in a thread of the napari process it competed with the event loop for the interpreter and for the
CPU (see ``benchmarks/gui_latency.py``); a child process shares neither the GIL nor the GUI's
priority, and a crash or an out-of-memory kill in it leaves the GUI standing.

A child reports progress as ``progress DONE TOTAL`` lines on stderr (:func:`report_progress`) and
failure as a last ``error: ...`` line, the command line's convention.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from typing import IO, Any

__all__ = ["NICENESS", "ChildCommand", "report_progress"]

NICENESS = 10
_PROGRESS = "progress "


def report_progress(done: int, total: int, stream: IO[str] | None = None) -> None:
    """Write one progress line for the parent (:meth:`ChildCommand.progress` reads the last one)."""
    print(f"{_PROGRESS}{done} {total}", file=stream or sys.stderr, flush=True)


class ChildCommand:
    """One niced ``python -m`` child; poll :attr:`is_running`, then read :meth:`result`."""

    def __init__(self, module: str, *args: str) -> None:
        # Files, not pipes: nobody reads while it runs, and a full pipe would block the child.
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as this object)
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115
        self.reported = False
        command = [sys.executable, "-m", module, *args]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.output, stderr=self.errors)
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, self.process.pid, NICENESS)

    @property
    def is_running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()

    def _error_lines(self) -> list[str]:
        self.errors.seek(0)
        text = self.errors.read().decode(errors="replace")
        return [line for line in text.splitlines() if line.strip()]

    def progress(self) -> tuple[int, int] | None:
        """The last ``(done, total)`` the child reported, or None before its first report."""
        for line in reversed(self._error_lines()):
            if line.startswith(_PROGRESS):
                with contextlib.suppress(ValueError):
                    done, total = line[len(_PROGRESS) :].split()
                    return int(done), int(total)
        return None

    def result(self) -> tuple[dict[str, Any] | None, str | None]:
        """(the JSON result, None) on success, else (None, the last error line)."""
        self.output.seek(0)
        if self.process.returncode == 0:
            return json.loads(self.output.read() or b"{}"), None
        lines = [line for line in self._error_lines() if not line.startswith(_PROGRESS)]
        errors = [line for line in lines if line.startswith("error:")]
        return None, (errors or lines or [f"exit code {self.process.returncode}"])[-1]
