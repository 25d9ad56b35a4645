"""The project store: one folder, one SQLite database, versioned files.

The store is the only writer of project files. Every file it publishes is
written atomically (temporary file, fsync, rename) before the database row
that refers to it is committed, so a crash at any moment leaves either the
previous state or the new one, and never loses a saved label version.
"""

from __future__ import annotations

from napari_ssl_seg.store.names import safe_case_name
from napari_ssl_seg.store.project import Project
from napari_ssl_seg.store.records import CaseRecord, LabelVersion

__all__ = ["CaseRecord", "LabelVersion", "Project", "safe_case_name"]
