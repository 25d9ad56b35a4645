"""Case names double as file names inside the project: keep them harmless."""

from __future__ import annotations

import re
from pathlib import Path

from napari_ssl_seg.errors import ProjectError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 128


def safe_case_name(raw: str) -> str:
    """Map a file stem to a case name made of ``[A-Za-z0-9._-]``, never ``.``/``..``-like.

    Path separators and anything else outside the safe set become ``_``, so a
    name can never point outside its folder.
    """
    name = _UNSAFE.sub("_", raw).strip("._-")
    if not name:
        raise ProjectError(f"cannot derive a case name from {raw!r}")
    return name[:MAX_NAME_LENGTH]


def inside(root: Path, relative: str | Path) -> Path:
    """Resolve ``relative`` under ``root`` and refuse anything that escapes it."""
    if Path(relative).is_absolute():
        raise ProjectError(f"absolute path {str(relative)!r} is not allowed inside a project")
    root = root.resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise ProjectError(f"path {str(relative)!r} escapes the project folder")
    return candidate
