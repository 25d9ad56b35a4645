"""``python -m MODULE ARGS...`` in a niced child process whose stdout is one JSON result.

The old-vs-new validation (``training.promote``) and the re-rank (``napari-ssl-seg rank``) that
follow a retrain run this way: in GUI threads they competed with napari for the interpreter (see
``training/promote.py`` for the measurement); a child process shares neither the GIL nor the GUI's
priority, and a crash or an out-of-memory kill in it leaves the GUI standing.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

__all__ = ["NICENESS", "ChildCommand"]

NICENESS = 10


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

    def result(self) -> tuple[dict[str, Any] | None, str | None]:
        """(the JSON result, None) on success, else (None, the last error line)."""
        self.output.seek(0)
        self.errors.seek(0)
        if self.process.returncode == 0:
            return json.loads(self.output.read() or b"{}"), None
        lines = [line for line in self.errors.read().decode(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        return None, (errors or lines or [f"exit code {self.process.returncode}"])[-1]
