"""SQLite schema and migrations of the project database.

``PRAGMA user_version`` is the schema version. ``MIGRATIONS[i]`` upgrades a
database from version ``i`` to ``i + 1``; a new release appends a script and
never edits an old one.
"""

from __future__ import annotations

import sqlite3

from napari_ssl_seg.errors import ProjectError

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the initial schema.
    """
    CREATE TABLE project (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE cases (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        image_path   TEXT NOT NULL,
        image_sha256 TEXT NOT NULL,
        split        TEXT NOT NULL CHECK (split IN ('train', 'validation', 'test')),
        shape        TEXT NOT NULL,
        spacing      TEXT NOT NULL,
        origin       TEXT NOT NULL,
        direction    TEXT NOT NULL,
        modality     TEXT,
        source_name  TEXT,
        created_at   TEXT NOT NULL
    );
    CREATE TABLE label_versions (
        id             INTEGER PRIMARY KEY,
        case_id        INTEGER NOT NULL REFERENCES cases(id),
        version        INTEGER NOT NULL,
        path           TEXT NOT NULL,
        sha256         TEXT NOT NULL,
        author         TEXT NOT NULL,
        kind           TEXT NOT NULL CHECK (kind IN ('import', 'annotation', 'prediction', 'simulation')),
        parent_id      INTEGER REFERENCES label_versions(id),
        created_at     TEXT NOT NULL,
        edit_seconds   REAL,
        changed_voxels INTEGER,
        UNIQUE (case_id, version)
    );
    CREATE TABLE model_versions (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        method          TEXT NOT NULL,
        weights_path    TEXT NOT NULL,
        card_path       TEXT NOT NULL,
        parent_id       INTEGER REFERENCES model_versions(id),
        validation_dice REAL,
        created_at      TEXT NOT NULL,
        is_active       INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE training_runs (
        id              INTEGER PRIMARY KEY,
        method          TEXT NOT NULL,
        config          TEXT NOT NULL,
        label_snapshot  TEXT NOT NULL,
        init_model_id   INTEGER REFERENCES model_versions(id),
        result_model_id INTEGER REFERENCES model_versions(id),
        status          TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'cancelled')),
        started_at      TEXT NOT NULL,
        finished_at     TEXT
    );
    CREATE TABLE scores (
        case_id     INTEGER NOT NULL REFERENCES cases(id),
        model_id    INTEGER REFERENCES model_versions(id),
        strategy    TEXT NOT NULL,
        score       REAL NOT NULL,
        computed_at TEXT NOT NULL
    );
    -- Model-free strategies store NULL as model; COALESCE keeps one row per key.
    CREATE UNIQUE INDEX scores_key ON scores (case_id, COALESCE(model_id, 0), strategy);
    CREATE INDEX label_versions_case ON label_versions (case_id, version);
    """,
    # 1 -> 2: annotation effort in voxels. started_from names the teacher whose prediction the
    # annotator began from (changed_voxels then counts against that prediction, as it counts against
    # the parent version otherwise); foreground_voxels is what labeling from scratch paints.
    """
    ALTER TABLE label_versions ADD COLUMN started_from TEXT;
    ALTER TABLE label_versions ADD COLUMN foreground_voxels INTEGER;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; each step is one transaction."""
    current = schema_version(connection)
    if current > SCHEMA_VERSION:
        raise ProjectError(
            f"project database has schema version {current}, newer than this napari-ssl-seg "
            f"understands ({SCHEMA_VERSION}); upgrade the package"
        )
    for version in range(current, SCHEMA_VERSION):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version]):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {version + 1}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT behind our back; split so the migration stays one transaction.
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]
