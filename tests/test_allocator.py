"""keep_freed_memory(): it applies or says it cannot, it can be opted out of, and the memory it keeps is reused.

What it buys against the C library's default settings is a speed question for the machine at hand,
measured side by side by ``benchmarks/allocator.py``, not asserted here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys

import pytest

from napari_ssl_seg.runtime import allocator

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

# Reports glibc's own accounting (mallinfo2) around a 64 MB tensor, while it lives and once it is freed,
# then before and after 20 more tensors of that size are made and freed.
PROBE = """
import ctypes, ctypes.util, json, torch
from napari_ssl_seg.runtime.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2

def info():
    got = libc.mallinfo2()
    return {"heap": got.arena, "mapped": got.hblkhd, "free_in_heap": got.fordblks}

applied = keep_freed_memory()
tensor = torch.ones(16 * 1024 * 1024)
living = info()
del tensor
freed = info()
# The heap first grows by a few fragments (to 5-9 tensors' worth here), then mostly settles at its size.
steady = 0
for _ in range(200):
    heap = info()["heap"]
    torch.ones(16 * 1024 * 1024).sum()
    steady = steady + 1 if info()["heap"] == heap else 0
    if steady == 5:
        break
settled = info()
for _ in range(20):
    torch.ones(16 * 1024 * 1024).sum()
print(json.dumps({"applied": applied, "living": living, "freed": freed, "settled": settled, "after": info()}))
"""
MB64 = 64 * 1024 * 1024


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallinfo2")
    except OSError:
        return False


def _probe(**environment: str) -> dict:
    output = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **environment}, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output)


@linux
@pytest.mark.skipif(not _has_mallinfo2(), reason="the C library has no mallinfo2 (glibc before 2.33, or not glibc)")
def test_kept_memory_stays_in_the_heap_and_is_reused() -> None:
    report = _probe()
    assert report["applied"] is True
    living, freed, settled, after = (report[key] for key in ("living", "freed", "settled", "after"))
    # Served from the heap, not from a mapping of its own that free would hand back to the kernel.
    assert living["mapped"] < MB64 and living["heap"] >= MB64
    # Freed, it stays in the process...
    assert freed["heap"] == living["heap"] and freed["free_in_heap"] >= MB64
    # ... and the tensors made after it take memory the heap already has. Another thread's allocation
    # can still split a freed block now and then (3 new fragments seen on a loaded machine), so the bound is 8,
    # against the 20 tensors' worth a heap that never reused its memory would grow by.
    assert after["heap"] - settled["heap"] <= 8 * MB64 and after["mapped"] < MB64


@linux
def test_the_opt_out_leaves_the_c_library_alone() -> None:
    report = _probe(NAPARI_SSL_SEG_MALLOC="default") if _has_mallinfo2() else None
    if report is not None:
        assert report["applied"] is False
    output = subprocess.run(
        [
            sys.executable,
            "-c",
            "from napari_ssl_seg.runtime.allocator import keep_freed_memory; print(keep_freed_memory())",
        ],
        env={**os.environ, "NAPARI_SSL_SEG_MALLOC": "default"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert output.strip() == "False"


def test_a_c_library_without_mallopt_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoMallopt:
        def __init__(self, *_args: object) -> None:
            pass

    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.delenv("NAPARI_SSL_SEG_MALLOC", raising=False)
    monkeypatch.setattr(allocator.ctypes, "CDLL", NoMallopt)  # musl-like: the symbol is missing
    assert allocator.keep_freed_memory() is False

    def no_library(*_args: object) -> None:
        raise OSError("libc.so.6: cannot open shared object file")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_library)
    assert allocator.keep_freed_memory() is False


def test_off_linux_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
