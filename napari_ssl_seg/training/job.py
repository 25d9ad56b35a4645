"""A one-click retrain that runs in its own process, and the promotion rule that follows it.

:meth:`RetrainJob.start` launches ``python -m napari_ssl_seg.cli train ...`` as a child process
(fine-tuning the active teacher by default) and returns at once; :meth:`RetrainJob.poll` turns the
new lines of the run's ``log.jsonl`` into :class:`RetrainEvent` objects; :meth:`RetrainJob.finish`
scores the old and the new teacher on the validation split, registers the new one and makes it
active only if its validation Dice is at least the old one's.

Why a CLI subprocess: a thread shares the GIL with napari (the viewer stutters); ``multiprocessing``
spawn re-imports the parent's ``__main__`` (napari, Qt) and its queues break when the child dies
hard (out-of-memory kill). The CLI child starts from a clean interpreter with a tested interface
and exit statuses, leaves its stdout/stderr in the run folder, can be rerun by hand, and talks back
only through the append-only log the run writes anyway.

The label snapshot is taken by the child when it starts (``training.data.take_snapshot``); it
only reads the database afterwards, so the annotator keeps saving labels during the run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_ssl_seg.errors import InputError
from napari_ssl_seg.methods.registry import method_class
from napari_ssl_seg.runtime import core_sharing
from napari_ssl_seg.runtime.child_process import last_error_line, start_python_module
from napari_ssl_seg.store.models import ModelVersion, active_model, model_version
from napari_ssl_seg.store.project import Project
from napari_ssl_seg.training.budget import BUDGETS
from napari_ssl_seg.training.config import apply_overrides, preset
from napari_ssl_seg.training.data import take_snapshot
from napari_ssl_seg.training.plan import budget_for_device
from napari_ssl_seg.training.promote import RetrainOutcome, promote_if_better

__all__ = ["STATES", "RetrainEvent", "RetrainJob", "default_retrain_dir"]

#: In the run folder while the starting process computes: the child then trains on half its threads.
SHARE_FILE = "parent-computing"

STATES = ("running", "completed", "cancelled", "failed")
# (stage, done, total): stage is "old" or "new", the teacher being scored in finish().
FinishProgress = Callable[[str, int, int], None]
_OUT_OF_MEMORY = re.compile(r"out of memory|OutOfMemoryError|MemoryError|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)
_STDERR_TAIL = 64 * 1024


@dataclass(frozen=True)
class RetrainEvent:
    """One record of the run's log, or the end of the process.

    ``kind`` is a log record's kind ("train": mean ``loss`` etc. and ``it_per_s`` since the previous
    one; "validation": ``dice``, ``per_case``, ``best``; "note": ``message``; "cancelled") or
    "state", emitted once when the process has ended, with ``values`` ``{"state", "error",
    "returncode"}``. ``iteration`` of ``total`` is where the run was when the record was written.
    """

    kind: str
    iteration: int
    total: int
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def loss(self) -> float | None:
        """The training loss of a "train" event (first step's loss for two-step methods)."""
        value = self.values.get("loss", self.values.get("step0/loss"))
        return float(value) if isinstance(value, int | float) else None

    @property
    def dice(self) -> float | None:
        """The validation Dice of a "validation" event."""
        value = self.values.get("dice")
        return float(value) if isinstance(value, int | float) else None


def default_retrain_dir(project_root: Path | str, kind: str = "retrain") -> Path:
    """``<project>/runs/<kind>-<UTC time>``, with a suffix when two of them start in one second."""
    base = Path(project_root) / "runs" / f"{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    candidates = (base.with_name(f"{base.name}-{n}") if n > 1 else base for n in itertools.count(1))
    return next(path for path in candidates if not path.exists())


def _resolve_init(project: Project, init: str | None, active: ModelVersion | None) -> tuple[Path | None, str | None]:
    """(checkpoint to start from, registered version it is) for ``init_model``."""
    if init is None:
        return None, None
    if init == "active":
        if active is None:
            raise InputError(
                f"project {project.root} has no active model to retrain; train one with `napari-ssl-seg train` "
                "or register one with `napari-ssl-seg rank --model`"
            )
        return active.checkpoint(project), active.name
    with contextlib.suppress(InputError):
        version = model_version(project, init)
        return version.checkpoint(project), version.name
    if Path(init).is_file():
        return Path(init), None
    raise InputError(f"init model {init!r} is neither a registered model version nor a file")


class RetrainJob:
    """A training run in a child process; build it with :meth:`start`.

    Thread-safe: a Qt timer may :meth:`poll` while a worker thread runs :meth:`finish` (which has
    a lock of its own, so that the minutes it may take never block a poll).
    """

    def __init__(self, process: subprocess.Popen, out_dir: Path, method: str, total: int, **details: Any) -> None:
        self.out_dir, self.method, self.total, self.command = out_dir, method, total, list(process.args)
        self.project_root: Path = details["project_root"]
        # The registered version the run started from (else the one active at start): the new one's parent.
        self.parent_version: str | None = details["parent_version"]
        self.device: str = details["device"]
        self.log_path = out_dir / "log.jsonl"
        self.stdout_path, self.stderr_path = out_dir / "process.stdout.log", out_dir / "process.stderr.log"
        self._process = process
        self._lock, self._finish_lock = threading.RLock(), threading.Lock()
        self._offset, self._partial = 0, b""
        self._pending: list[RetrainEvent] = []
        self._iteration, self._logged_cancel = 0, False
        self._cancel_requested = self._killed = False
        self._state, self._error = "running", None
        self._outcome: RetrainOutcome | None = None

    @classmethod
    def start(
        cls,
        project_root: Path | str,
        *,
        method: str | None = None,
        init_model: str | None = "active",
        config: str | None = None,
        iterations: int | None = None,
        overrides: Sequence[str] = (),
        out_dir: Path | None = None,
        device: str = "auto",
        niceness: int = 10,
    ) -> RetrainJob:
        """Check the request, launch the child process and return without waiting.

        ``method`` None: the active model's method. ``init_model``: "active" (fine-tune the active
        teacher), a registered version name, a checkpoint path, or None (from scratch).
        ``config`` None: ``finetune`` when starting from a teacher, ``plan`` (training/plan.py) from scratch.
        ``niceness`` lowers the child's CPU priority (POSIX) so the viewer stays responsive.
        Raises :class:`InputError` for anything the child would refuse at once (no active model,
        unknown method or setting, no labeled training or validation case).
        """
        root = Path(project_root)
        with Project.open(root) as project:
            active = active_model(project)
            init_path, init_version = _resolve_init(project, init_model, active)
            if method is None:
                if active is None:
                    raise InputError(f"project {root} has no active model; name the method to train")
                method = active.method
            take_snapshot(project)  # the child would refuse the same way, only seconds later
        method_class(method)
        config = config or ("finetune" if init_path is not None else "plan")
        extra = [f"method={method}", *overrides] + ([] if iterations is None else [f"iterations={iterations}"])
        # The child makes the plan (it reads cases); its iteration count is its budget's own.
        base = preset(BUDGETS[budget_for_device(device)].preset if config == "plan" else config)
        total = apply_overrides(base, extra).iterations
        out = Path(out_dir) if out_dir is not None else default_retrain_dir(root)
        out.mkdir(parents=True, exist_ok=True)
        args = ["train", str(root), f"--method={method}", f"--config={config}", f"--out={out}", f"--device={device}"]
        args += [] if init_path is None else [f"--init={init_path}"]
        args += [] if iterations is None else [f"--iterations={iterations}"]
        args += [f"--set={item}" for item in overrides]
        # A session of its own: a Ctrl-C in the terminal reaches only us, and we then cancel
        # gracefully; cancel() signals the child alone.
        # The child shares the cores while this process computes (runtime/core_sharing.py).
        share = out / SHARE_FILE
        with open(out / "process.stdout.log", "wb") as stdout, open(out / "process.stderr.log", "wb") as stderr:
            process = start_python_module(
                "napari_ssl_seg.cli",
                args,
                stdout=stdout,
                stderr=stderr,
                environment={"PYTHONUNBUFFERED": "1", core_sharing.ENVIRONMENT: str(share)},
                niceness=niceness,
                own_session=True,
            )
        core_sharing.share_with(share)
        parent = init_version or (active.name if active is not None else None)
        return cls(process, out, method, total, project_root=root, parent_version=parent, device=device)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def state(self) -> str:
        """One of :data:`STATES`: "running", "completed", "cancelled" or "failed"."""
        self._update()
        return self._state

    @property
    def error(self) -> str | None:
        """One line saying why the run failed (None unless ``state`` is "failed")."""
        self._update()
        return self._error

    @property
    def progress(self) -> tuple[int, int]:
        """(iteration of the latest log record, total iterations)."""
        self._update()
        return self._iteration, self.total

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def poll(self) -> list[RetrainEvent]:
        """The events since the last call, without blocking (reads only the log's new bytes)."""
        with self._lock:
            self._update()
            events, self._pending = self._pending, []
            return events

    def wait(self, timeout: float | None = None) -> str:
        """Block until the process ends (or ``timeout`` seconds pass); return :attr:`state`."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout)
        return self.state

    def cancel(self) -> None:
        """Ask the run to stop: it checkpoints at the next iteration and ends as "cancelled"."""
        if self._process.poll() is not None:
            return
        self._cancel_requested = True
        with contextlib.suppress(OSError):
            self._process.send_signal(signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGTERM)

    def kill(self) -> None:
        """Stop the process at once (no checkpoint); the job ends as "failed"."""
        if self._process.poll() is not None:
            return
        self._killed = True
        with contextlib.suppress(OSError):
            self._process.kill()

    def _update(self) -> None:
        with self._lock:
            if self._state != "running":
                return
            # Exit status first: once the process is gone, the log read below is complete.
            code = self._process.poll()
            self._read_log()
            if code is not None:
                self._settle(code)

    def _read_log(self) -> None:
        try:
            size = self.log_path.stat().st_size
        except FileNotFoundError:
            return  # the child is still importing
        if size < self._offset:  # rewritten in place (a resumed run trims it): read it again
            self._offset, self._partial = 0, b""
        if size == self._offset:
            return
        with open(self.log_path, "rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read(size - self._offset)
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # b"" after a complete line, else a line still being written
        for line in lines:
            self._add_record(line)

    def _add_record(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return  # a torn line from a crash
        if not isinstance(record, dict):
            return
        kind = str(record.pop("kind", "unknown"))
        iteration = int(record.pop("iteration", 0) or 0)
        self._iteration = max(self._iteration, iteration)
        self._logged_cancel = self._logged_cancel or kind == "cancelled"
        self._pending.append(RetrainEvent(kind, iteration, self.total, record))

    def _settle(self, code: int) -> None:
        core_sharing.stop_sharing_with(self.out_dir / SHARE_FILE)
        if self._partial.strip():
            self._add_record(self._partial)
        self._partial = b""
        error = None
        if self._killed:
            state, error = "failed", self._failure(code)
        elif code == 0 and self._logged_cancel:
            state = "cancelled"
        elif code == 0 and (self.out_dir / "model.json").is_file():
            state = "completed"
        elif code == 0:
            state, error = "failed", "the run ended without exporting a model"
        elif self._cancel_requested and self._last_error_line() is None:
            state = "cancelled"  # stopped before its signal handler was in place: nothing trained yet
        else:
            state, error = "failed", self._failure(code)
        self._state, self._error = state, error
        values = {"state": state, "error": error, "returncode": code}
        self._pending.append(RetrainEvent("state", self._iteration, self.total, values))

    def _last_error_line(self) -> str | None:
        try:
            with open(self.stderr_path, "rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - _STDERR_TAIL))
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return None
        line = last_error_line(text)
        return None if line is None else line[:500]

    def _failure(self, code: int) -> str:
        line = self._last_error_line()
        if line is not None:
            return f"out of memory: {line}" if _OUT_OF_MEMORY.search(line) else line
        if code < 0:
            # A SIGKILL nobody here sent is most often the kernel's out-of-memory killer.
            likely = " (probably out of memory)" if -code == signal.SIGKILL and not self._killed else ""
            return f"killed by signal {-code}{likely}"
        return f"exit code {code}"

    # -- after the run ---------------------------------------------------------------------
    def finish(self, project: Project | Path | str, *, progress: FinishProgress | None = None) -> RetrainOutcome:
        """Score, register and maybe promote the new teacher; call once the process has ended.

        A path opens (and closes) the project here, which is what a worker thread must pass (a
        :class:`Project` is bound to the thread that opened it). The teacher compared against is
        the one active now (what a promotion would replace). On "cancelled" or "failed" nothing is
        registered. Calling it again returns the same outcome.
        """
        with self._finish_lock:
            if self.state == "running":
                raise InputError("the retrain is still running; wait for it to end before finishing it")
            if self._outcome is None:
                if isinstance(project, Project):
                    self._outcome = self._finish(project, progress)
                else:
                    with Project.open(project) as opened:
                        self._outcome = self._finish(opened, progress)
            return self._outcome

    def _finish(self, project: Project, progress: FinishProgress | None) -> RetrainOutcome:
        if self._state != "completed":
            old = active_model(project)
            old_name = old.name if old is not None else None
            return RetrainOutcome(self._state, self.out_dir, old_name, None, None, None, False, old_name, self._error)

        return promote_if_better(
            project, self.out_dir, parent=self.parent_version, device=self.device, progress=progress
        )
