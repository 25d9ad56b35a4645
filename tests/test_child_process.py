"""Children of the package: their JSON result, or the reason they failed from their one error line."""

from __future__ import annotations

import os
import time

from napari_ssl_seg.runtime.child_process import ChildCommand, last_error_line


def _finished(child: ChildCommand) -> ChildCommand:
    deadline = time.monotonic() + 60
    while child.is_running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child.is_running
    return child


def test_the_error_line_is_the_last_one_even_between_progress_redraws() -> None:
    text = "loading\r 10%|#  |\r 20%|## |\rerror: first\nerror: out of memory\r 30%|###|\n"
    assert last_error_line(text) == "out of memory"
    assert last_error_line("Traceback (most recent call last):\n  ValueError\n") is None


def test_a_child_command_returns_its_json_or_its_reason() -> None:
    ok = _finished(ChildCommand("json.tool", os.devnull))  # `python -m json.tool` on an empty file fails
    result, error = ok.result()
    assert result is None and error  # no error: line, so stderr's last line is the reason
    failed = _finished(ChildCommand("napari_ssl_seg.cli", "info", "/nonexistent/scan.nii.gz"))
    result, error = failed.result()
    assert result is None and error == "/nonexistent/scan.nii.gz: no such file or folder"


def test_a_successful_child_s_stdout_is_its_json_result(tmp_path) -> None:
    source = tmp_path / "result.json"
    source.write_text('{"promoted": true, "new_dice": 0.71}', encoding="utf-8")
    result, error = _finished(ChildCommand("json.tool", str(source))).result()
    assert error is None and result == {"promoted": True, "new_dice": 0.71}
