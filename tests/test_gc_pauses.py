"""Freezing the start-up heap: once per process, and later garbage is still collected."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_freeze_once_and_later_cycles_are_still_collected() -> None:
    # In a child: freezing is process-wide and must not leak into the test process.
    script = textwrap.dedent(
        """
        import gc, weakref
        from napari_ssl_seg.runtime.gc_pauses import freeze_startup_objects

        class Node:
            pass

        assert gc.get_freeze_count() == 0
        assert freeze_startup_objects() is True
        frozen = gc.get_freeze_count()
        assert frozen > 1000, frozen
        assert freeze_startup_objects() is False and gc.get_freeze_count() == frozen

        node = Node(); node.self = node  # a cycle made after the freeze
        alive = weakref.ref(node)
        del node
        gc.collect()
        assert alive() is None, "a cycle made after the freeze was not collected"
        print("ok", frozen)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
