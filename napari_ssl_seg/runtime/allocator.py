"""Keep freed tensor memory inside the process on glibc Linux, so large CPU tensors stop page-faulting.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves every request above its
mmap threshold (at most 32 MB) with a fresh ``mmap`` and hands it back with ``munmap`` on free, so
each sliding window's full-resolution activations (a 16-channel 80x112x112 float32 map is 64 MB) are
page-faulted and zeroed by the kernel again, every window and every MC-dropout pass.

Measured by ``benchmarks/allocator.py --ct`` (both settings side by side, each in its own process) on
the 2-core development CPU (AMD EPYC, glibc 2.41, transparent huge pages ``madvise``), 2026-12-01:
one 80x112x112 window of the papers' V-Net took 0.42 s kept against 1.07 s by default (0 against
297,594 minor page faults and 0.74 s of system time per window); a plain prediction of a 300x512x512
CT took 87.9 s against 134.6 s, at a peak resident memory of 2.09 against 1.93 GB. The price is that
memory: freed blocks stay in the heap (343 MB held after 64 MB tensors came and went, 84 MB by default).

PyTorch has no public CPU caching allocator, and the usual cure (jemalloc or tcmalloc through
``LD_PRELOAD``) needs a system library that pip cannot install, so this uses glibc's own knob,
``mallopt``: no mmap for large blocks (they come from the heap and are reused after free) and a trim
threshold that keeps up to ``keep_bytes`` of freed memory at the top of the heap instead of
returning it at every free. The command line and the child processes the docks start (training,
promotion, re-ranking) apply it at start; the plugin never changes the allocator of a
napari process it is loaded into.

Set ``NAPARI_SSL_SEG_MALLOC=default`` to leave the C library alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
DEFAULT_KEEP_BYTES = 1 << 30
_applied = False


def _enabled() -> bool:
    return sys.platform.startswith("linux") and os.environ.get("NAPARI_SSL_SEG_MALLOC", "") != "default"


def keep_freed_memory(keep_bytes: int = DEFAULT_KEEP_BYTES) -> bool:
    """Switch this process's glibc malloc to reuse freed large blocks; True when it took effect.

    A no-op (False) off Linux, on a C library without ``mallopt`` (musl) or when opted out.
    Call it once, early, in a process that runs networks on the CPU: it is process-wide.
    """
    global _applied
    if _applied:
        return True
    if not _enabled():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, int(keep_bytes)))
    return _applied
