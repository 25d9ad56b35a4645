"""Crash-safe file replacement: write a temporary file, fsync, rename.

A reader (or a crash) sees either the old file or the complete new one, never
a half-written file. The temporary file sits in the destination folder, so the
final rename stays on one file system and is atomic.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from napari_ssl_seg.errors import InputError

TEMP_PREFIX = ".partial-"


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (which is what makes a rename durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_output(final: Path | str, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``final`` atomically.

    The temporary name ends with ``final``'s own name, so libraries that pick
    the format from the extension (nibabel, SimpleITK) write the right one.
    With ``overwrite=False`` an existing ``final`` is never replaced: the
    publish step is a hard link, which fails instead of clobbering.
    """
    final = Path(final)
    temporary = final.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{final.name}"
    try:
        yield temporary
        fsync_path(temporary)
        if overwrite:
            os.replace(temporary, final)
        else:
            try:
                os.link(temporary, final)
            except FileExistsError:
                raise InputError(f"refusing to overwrite existing file {final}") from None
            temporary.unlink()
        fsync_path(final.parent)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(f"disk full while writing {final}; nothing was changed") from exc
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise InputError(f"cannot write {final}: {exc.strerror}") from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def atomic_write_bytes(final: Path | str, data: bytes, *, overwrite: bool = True) -> None:
    with atomic_output(final, overwrite=overwrite) as temporary, open(temporary, "wb") as handle:
        handle.write(data)
