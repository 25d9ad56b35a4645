"""A labeling project: cases, their images, and every label version ever saved."""

from __future__ import annotations

import getpass
import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from napari_ssl_seg.errors import InputError, ProjectError
from napari_ssl_seg.io import Volume, geometry_mismatch, read_volume, write_volume
from napari_ssl_seg.io.atomic import atomic_output, sha256_file
from napari_ssl_seg.io.read import file_suffix
from napari_ssl_seg.store.label_arrays import as_label_array, changed_voxels
from napari_ssl_seg.store.names import inside, safe_case_name
from napari_ssl_seg.store.records import CaseRecord, LabelVersion, case_from_row
from napari_ssl_seg.store.schema import migrate

DATABASE_NAME = "project.sqlite"
SPLITS = ("train", "validation", "test")
LABEL_SUFFIX = ".nii.gz"
LABEL_KINDS = ("import", "annotation", "prediction", "simulation")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def default_author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


class Project:
    """A project folder. Open with :meth:`open` or :meth:`create`."""

    def __init__(self, root: Path, connection: sqlite3.Connection) -> None:
        self.root = root
        self._connection = connection

    # -- opening -----------------------------------------------------------
    @classmethod
    def create(cls, root: Path | str, *, seed: int = 0, name: str | None = None) -> Project:
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ProjectError(f"{root}: already exists and is not an empty folder")
        root.mkdir(parents=True, exist_ok=True)
        for folder in ("images", "labels", "models", "runs"):
            (root / folder).mkdir(exist_ok=True)
        project = cls(root, _connect(root / DATABASE_NAME))
        with project.transaction() as connection:
            connection.executemany(
                "INSERT INTO project (key, value) VALUES (?, ?)",
                [("name", name or root.resolve().name), ("seed", str(int(seed))), ("created_at", utc_now())],
            )
        return project

    @classmethod
    def open(cls, root: Path | str) -> Project:
        root = Path(root)
        database = root / DATABASE_NAME
        if not database.is_file():
            raise ProjectError(f"{root}: not a napari-ssl-seg project (no {DATABASE_NAME}); create one with `init`")
        return cls(root, _connect(database))

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database write lock up front.

        ``BEGIN IMMEDIATE`` serialises writers across processes (the GUI, a
        retrain reading its snapshot, a second annotator) before any read
        that a decision depends on, such as the next version number.
        """
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT (disk full): otherwise the connection stays mid-transaction.
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) in _STORAGE_ERRORS:
                raise ProjectError(
                    f"{self.root}: project database cannot be written ({exc}); nothing was saved"
                ) from exc
            raise

    def read(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        """Rows of a read-only query (the store's sibling modules use this; others use methods)."""
        return self._connection.execute(sql, parameters).fetchall()

    # -- project settings --------------------------------------------------
    def setting(self, key: str) -> str | None:
        row = self._connection.execute("SELECT value FROM project WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        with self.transaction() as connection:
            connection.execute("INSERT OR REPLACE INTO project (key, value) VALUES (?, ?)", (key, value))

    def label_names(self) -> dict[int, str]:
        stored = self.setting("label_names")
        return {int(value): name for value, name in json.loads(stored).items()} if stored else {}

    def save_reference_label(self, name: str, label: np.ndarray) -> Path:
        """Keep a withheld ground truth (simulation, evaluation) outside the label history."""
        placed = self.case_geometry(name, as_label_array(label, name))
        folder = self.root / "reference"
        folder.mkdir(exist_ok=True)
        return write_volume(placed, inside(self.root, f"reference/{name}{LABEL_SUFFIX}"), overwrite=False)

    def read_reference_label(self, name: str) -> Volume:
        path = inside(self.root, f"reference/{name}{LABEL_SUFFIX}")
        if not path.is_file():
            raise ProjectError(f"case {name!r} has no reference label")
        return read_volume(path)

    @property
    def seed(self) -> int:
        return int(self.setting("seed") or 0)

    # -- cases -------------------------------------------------------------
    def add_case(
        self,
        name: str,
        image: Volume,
        *,
        split: str = "train",
        source_file: Path | None = None,
        connection: sqlite3.Connection | None = None,
    ) -> str:
        """Publish a case's image and insert its row; returns the case name.

        A single-file source is copied byte for byte (its header, and so its
        geometry, stays exactly as the scanner or the user wrote it); DICOM
        folders and in-memory volumes are written as NIfTI.
        """
        name = safe_case_name(name)
        if split not in SPLITS:
            raise ProjectError(f"unknown split {split!r}; expected one of {SPLITS}")
        if source_file is not None and source_file.is_file():
            relative = f"images/{name}{file_suffix(source_file)}"
            with atomic_output(inside(self.root, relative), overwrite=False) as temporary:
                shutil.copyfile(source_file, temporary)
        else:
            relative = f"images/{name}{LABEL_SUFFIX}"
            write_volume(image, inside(self.root, relative), overwrite=False)
        row = (
            name,
            relative,
            sha256_file(self.root / relative),
            split,
            json.dumps(list(image.shape)),
            json.dumps(list(image.spacing)),
            json.dumps(list(image.origin)),
            json.dumps([v for row in image.direction for v in row]),
            image.modality,
            source_file.name if source_file is not None else None,
            utc_now(),
        )
        sql = (
            "INSERT INTO cases (name, image_path, image_sha256, split, shape, spacing, origin, direction,"
            " modality, source_name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        if connection is not None:
            connection.execute(sql, row)
        else:
            with self.transaction() as own:
                own.execute(sql, row)
        return name

    def cases(self, name: str | None = None) -> list[CaseRecord]:
        """All cases by name, or just the one called ``name`` (empty list when absent)."""
        rows = self._connection.execute(
            """
            SELECT c.id, c.name, c.image_path, c.split, c.shape, c.spacing, c.origin, c.direction, c.modality,
                   l.version, l.author, l.created_at
            FROM cases c
            LEFT JOIN label_versions l ON l.id = (
                SELECT id FROM label_versions WHERE case_id = c.id ORDER BY version DESC LIMIT 1)
            WHERE ? IS NULL OR c.name = ?
            ORDER BY c.name
            """,
            (name, name),
        ).fetchall()
        return [case_from_row(row) for row in rows]

    def case(self, name: str) -> CaseRecord:
        found = self.cases(name)
        if found:
            return found[0]
        raise ProjectError(f"no case named {name!r} in {self.root}")

    def read_image(self, name: str) -> Volume:
        record = self.case(name)
        return read_volume(inside(self.root, record.image_path))

    def case_geometry(self, name: str, array: np.ndarray) -> Volume:
        """``array`` placed on the case's voxel grid (without reading the image)."""
        record = self.case(name)
        if tuple(array.shape) != record.shape:
            raise InputError(
                f"label shape {tuple(array.shape)} does not match case {name!r} image shape {record.shape}"
            )
        return Volume(
            array=array,
            spacing=record.spacing,
            origin=record.origin,
            direction=np.asarray(record.direction).reshape(3, 3),
            source_format="nifti",
        )

    # -- labels ------------------------------------------------------------
    def save_label(
        self,
        name: str,
        label: Volume | np.ndarray,
        *,
        author: str | None = None,
        kind: str = "annotation",
        edit_seconds: float | None = None,
        started_from: tuple[str, np.ndarray] | None = None,
    ) -> LabelVersion:
        """Save a new label version of case ``name``; earlier versions are never touched.

        ``started_from``: (model version name, its predicted label map) when the annotator began
        from a teacher's prediction rather than an earlier version: the first version's changed
        voxels then count against that prediction (the correction effort).

        Order of events: the label file is published atomically under a name
        no other version uses, then the row is committed. A crash before the
        commit leaves an unreferenced file and the previous versions intact.
        """
        if kind not in LABEL_KINDS:
            raise ProjectError(f"unknown label kind {kind!r}")
        array = label.array if isinstance(label, Volume) else np.asarray(label)
        placed = self.case_geometry(name, as_label_array(array, name))
        if isinstance(label, Volume) and (mismatch := geometry_mismatch(label, placed)):
            raise InputError(f"label geometry does not match case {name!r}: {mismatch}")
        published: list[Path] = []
        try:
            version_id = self._insert_label(name, placed, published, author, kind, edit_seconds, started_from)
        except BaseException:
            # Not committed (disk full, read-only database, ...): remove the file no row refers to.
            for path in published:
                path.unlink(missing_ok=True)
            raise
        return self.label_version(version_id)

    def _insert_label(
        self,
        name: str,
        placed: Volume,
        published: list[Path],
        author: str | None,
        kind: str,
        edit_seconds: float | None,
        started_from: tuple[str, np.ndarray] | None,
    ) -> int:
        with self.transaction() as connection:
            case_id = connection.execute("SELECT id FROM cases WHERE name = ?", (name,)).fetchone()[0]
            parent = connection.execute(
                "SELECT id, version, path FROM label_versions WHERE case_id = ? ORDER BY version DESC LIMIT 1",
                (case_id,),
            ).fetchone()
            version = parent[1] + 1 if parent else 1
            # The edit counts against the previous version, or the prediction the first one began from.
            source = None if parent or started_from is None else started_from[0]
            before: np.ndarray | None
            if parent:
                before = read_volume(inside(self.root, parent[2])).array
            else:
                before = None if started_from is None else started_from[1]
            changed = None if before is None else changed_voxels(before, placed.array, name)
            folder = inside(self.root, f"labels/{name}")
            folder.mkdir(parents=True, exist_ok=True)
            # The random token keeps a file orphaned by a crash from ever being reused.
            relative = f"labels/{name}/v{version:04d}-{uuid.uuid4().hex[:8]}{LABEL_SUFFIX}"
            path = write_volume(placed, inside(self.root, relative), overwrite=False)
            published.append(path)
            digest = sha256_file(path)
            cursor = connection.execute(
                "INSERT INTO label_versions (case_id, version, path, sha256, author, kind, parent_id, created_at,"
                " edit_seconds, changed_voxels, started_from, foreground_voxels)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    case_id,
                    version,
                    relative,
                    digest,
                    author or default_author(),
                    kind,
                    parent[0] if parent else None,
                    utc_now(),
                    edit_seconds,
                    changed,
                    source,
                    int(np.count_nonzero(placed.array)),
                ),
            )
            version_id = cursor.lastrowid
        if version_id is None:
            raise RuntimeError("SQLite returned no row id for the saved label version")
        return int(version_id)

    _LABEL_COLUMNS = (
        "SELECT l.id, c.name, l.version, l.path, l.sha256, l.author, l.kind, l.parent_id, l.created_at,"
        " l.edit_seconds, l.changed_voxels, l.started_from, l.foreground_voxels"
        " FROM label_versions l JOIN cases c ON c.id = l.case_id"
    )

    def label_versions(self, name: str | None = None) -> list[LabelVersion]:
        """Every label version, oldest first; only case ``name``'s when given."""
        rows = self._connection.execute(
            self._LABEL_COLUMNS + " WHERE ? IS NULL OR c.name = ? ORDER BY c.name, l.version", (name, name)
        ).fetchall()
        return [LabelVersion(*row) for row in rows]

    def label_version(self, version_id: int) -> LabelVersion:
        row = self._connection.execute(self._LABEL_COLUMNS + " WHERE l.id = ?", (version_id,)).fetchone()
        if row is None:
            raise ProjectError(f"no label version with id {version_id}")
        return LabelVersion(*row)

    def read_label(self, name: str, version: int | None = None) -> Volume:
        """Read a label version (the latest by default), verifying its checksum."""
        versions = self.label_versions(name)
        if not versions:
            raise ProjectError(f"case {name!r} has no label yet")
        chosen = versions[-1] if version is None else next((v for v in versions if v.version == version), None)
        if chosen is None:
            raise ProjectError(f"case {name!r} has no label version {version}")
        path = inside(self.root, chosen.path)
        if sha256_file(path) != chosen.sha256:
            raise ProjectError(f"label file {chosen.path} does not match its recorded checksum")
        return read_volume(path)

    def integrity_check(self) -> str:
        return str(self._connection.execute("PRAGMA integrity_check").fetchone()[0])

    def summary(self) -> dict[str, object]:
        records = self.cases()
        return {
            "project": str(self.root),
            "name": self.setting("name"),
            "seed": self.seed,
            "cases": len(records),
            "labeled": sum(record.is_labeled for record in records),
            "splits": {split: sum(record.split == split for record in records) for split in SPLITS},
            "label_versions": len(self.label_versions()),
        }


# SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN: the storage refused, not a bug.
_STORAGE_ERRORS = frozenset({13, 8, 10, 14})


def _connect(database: Path) -> sqlite3.Connection:
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (see Project.transaction).
        connection = sqlite3.connect(database, isolation_level=None, timeout=60.0)
        connection.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed label version survives power loss, not only a process crash.
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        migrate(connection)
    except sqlite3.DatabaseError as exc:
        raise ProjectError(f"{database}: project database cannot be opened ({exc})") from None
    return connection
