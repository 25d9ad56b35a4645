"""Every child process the package starts: ``python -m MODULE ARGS...``, niced, importing this copy.

Three kinds of work leave the GUI process this way: a retrain (``training/job.py``, the CLI's
``train``), the old-vs-new validation and the re-rank that follow it (:class:`ChildCommand`, one
JSON result on stdout), and the docks' figures (``runtime/plot_server.py``). In GUI threads they
competed with napari for the interpreter (see ``training/promote.py`` for the measurement); a child
shares neither the GIL nor the GUI's priority, and a crash or an out-of-memory kill in it leaves
the GUI standing. A child that fails says why in one ``error: ...`` line on stderr, the CLI's
contract; :func:`last_error_line` is the one reader of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["NICENESS", "ChildCommand", "last_error_line", "start_python_module"]

NICENESS = 10
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])

Stream = int | IO[Any] | None


def start_python_module(
    module: str,
    args: Sequence[str] = (),
    *,
    stdin: Stream = subprocess.DEVNULL,
    stdout: Stream,
    stderr: Stream,
    environment: Mapping[str, str] | None = None,
    niceness: int = NICENESS,
    own_session: bool = False,
) -> subprocess.Popen:
    """Start ``python -m module args`` with this interpreter and return at once.

    The child finds this very package first on its path, also when it runs from a source tree.
    ``niceness`` is applied at once, before the child's interpreter starts compute threads (they
    inherit it). ``own_session``: a process group of its own, so a Ctrl-C in the terminal reaches
    only the parent, which then cancels the child as it sees fit.
    """
    env = {**os.environ, **(environment or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    kwargs: dict[str, Any] = {}
    if own_session:
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
    command = [sys.executable, "-m", module, *args]
    process = subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=stderr, env=env, **kwargs)
    if niceness:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, process.pid, niceness)
    return process


def last_error_line(text: str) -> str | None:
    """The reason of the last ``error: ...`` line in a child's stderr (prefix removed), if any."""
    # tqdm redraws with carriage returns: split on both line ends.
    errors = [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip().startswith("error:")]
    return errors[-1].removeprefix("error:").strip() if errors else None


class ChildCommand:
    """One niced ``python -m`` child whose stdout is one JSON result; poll :attr:`is_running`, then
    read :meth:`result`."""

    def __init__(self, module: str, *args: str) -> None:
        # Files, not pipes: nobody reads while it runs, and a full pipe would block the child.
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as this object)
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115
        self.reported = False
        self.process = start_python_module(module, args, stdout=self.output, stderr=self.errors)

    @property
    def is_running(self) -> bool:
        return self.process.poll() is None

    def result(self) -> tuple[dict[str, Any] | None, str | None]:
        """(the JSON result, None) on success, else (None, why: the error line, else stderr's last line)."""
        self.output.seek(0)
        self.errors.seek(0)
        if self.process.returncode == 0:
            return json.loads(self.output.read() or b"{}"), None
        text = self.errors.read().decode(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        return None, last_error_line(text) or (lines[-1] if lines else f"exit code {self.process.returncode}")
