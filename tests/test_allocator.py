"""The glibc setting that keeps freed tensor memory: it takes effect, can be opted out of, and stops page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

# Allocates and frees a 64 MB tensor 20 times (after 3 to warm up) and counts the minor page faults it took.
PROBE = """
import json, resource, sys, torch
from napari_ssl_seg.allocator import keep_freed_memory
applied = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # the heap settles into its size
    torch.ones(16 * 1024 * 1024).sum()
before = faults()
for _ in range(20):
    torch.ones(16 * 1024 * 1024).sum()
print(json.dumps({"applied": applied, "faults": faults() - before}))
"""


def _probe(**environment: str) -> dict:
    output = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **environment}, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output)


def test_kept_memory_is_reused_instead_of_faulted_in_again() -> None:
    kept = _probe()
    default = _probe(NAPARI_SSL_SEG_MALLOC="default")
    assert kept["applied"] is True and default["applied"] is False
    # 20 fresh 64 MB mappings are 20 x 16384 pages faulted in; reused heap memory faults in a few at most.
    assert default["faults"] > 20 * 16384 * 0.9
    assert kept["faults"] < default["faults"] / 5
