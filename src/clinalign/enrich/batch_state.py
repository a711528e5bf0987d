"""The on-disk state of a batch/export enrichment: ``OUT/batch/state.sqlite``.

SQLite (standard library) keeps per-record status on disk, so memory does not grow with the number of records,
and every state change is one transaction: a process killed at any point leaves either the old or the new state.

Tables:

- ``meta``: run facts (input fingerprint, preset hash, mode).
- ``records``: one row per input record: ``status`` (``pending`` -> ``submitted`` -> ``validated`` | ``failed``),
  the ``job`` its current request is in, ``round`` (0 for the first request, +1 per repair or retry), the repair
  turns to append (``extra``), the failure ``reason``/``detail``/``raw`` and the accumulated ``usage``.
- ``jobs``: one row per request file: ``state`` (``written`` -> ``uploaded`` -> ``created`` -> ``finished`` ->
  ``imported``), its Files-API id, Batch id, output and error file ids.
- ``parts``: the enriched part files (``writing`` until the transaction that marks their records validated).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clinalign.data.records import Record

STATE_DIR = "batch"
STATE_FILE = "state.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    custom_id TEXT UNIQUE NOT NULL,
    label TEXT NOT NULL,
    record TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    job INTEGER,
    round INTEGER NOT NULL DEFAULT 0,
    repairs INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    expiries INTEGER NOT NULL DEFAULT 0,
    extra TEXT,
    reason TEXT,
    detail TEXT,
    raw TEXT,
    usage TEXT,
    part TEXT
);
CREATE INDEX IF NOT EXISTS records_status ON records (status, seq);
CREATE INDEX IF NOT EXISTS records_job ON records (job, status);
CREATE TABLE IF NOT EXISTS jobs (
    job INTEGER PRIMARY KEY,
    round INTEGER NOT NULL,
    path TEXT NOT NULL,
    requests INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    state TEXT NOT NULL,
    input_file_id TEXT,
    batch_id TEXT,
    batch_status TEXT,
    output_file_id TEXT,
    error_file_id TEXT
);
CREATE TABLE IF NOT EXISTS parts (name TEXT PRIMARY KEY, state TEXT NOT NULL, rows INTEGER NOT NULL DEFAULT 0);
"""


def custom_id_base(record_id: str) -> str:
    """The stable part of a record's ``custom_id``: a hash of its id (ids may hold any characters)."""
    return "rec-" + hashlib.sha256(record_id.encode("utf-8")).hexdigest()[:24]


def custom_id(base: str, round_: int) -> str:
    """``custom_id`` of request number ``round_`` of a record (0: first request; then repairs and retries)."""
    return f"{base}-{round_}"


def split_custom_id(value: str) -> tuple[str, int] | None:
    """(base, round) of a ``custom_id`` this module made, or None."""
    base, sep, number = value.rpartition("-")
    if not sep or not base.startswith("rec-") or not number.isdigit():
        return None
    return base, int(number)


def record_from_json(text: str) -> Record:
    data = json.loads(text)
    return Record(
        id=data["id"],
        image=Path(data["image"]),
        label=data["label"],
        split=data.get("split"),
        patient_id=data.get("patient_id"),
        metadata=data.get("metadata") or {},
    )


class BatchState:
    """The SQLite state of one output folder (see the module docstring)."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / STATE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / STATE_FILE
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- meta
    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- records
    def count(self, status: str | None = None) -> int:
        if status is None:
            return int(self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        return int(self.db.execute("SELECT COUNT(*) FROM records WHERE status = ?", (status,)).fetchone()[0])

    def labels(self) -> list[str]:
        return [str(r[0]) for r in self.db.execute("SELECT DISTINCT label FROM records ORDER BY label")]

    def iter_records(self, where: str, params: tuple[Any, ...] = (), chunk: int = 1000) -> Iterator[sqlite3.Row]:
        """Rows matching ``where`` in input order, fetched ``chunk`` at a time (keyset pagination on seq)."""
        last = -1
        while True:
            rows = self.db.execute(
                f"SELECT * FROM records WHERE ({where}) AND seq > ? ORDER BY seq LIMIT ?", (*params, last, chunk)
            ).fetchall()
            if not rows:
                return
            yield from rows
            last = rows[-1]["seq"]

    def by_base(self, base: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM records WHERE custom_id = ?", (base,)).fetchone()

    def per_label(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for label, status, n in self.db.execute("SELECT label, status, COUNT(*) FROM records GROUP BY label, status"):
            row = table.setdefault(str(label), {"done": 0, "failed": 0, "total": 0})
            row["total"] += int(n)
            if status == "validated":
                row["done"] += int(n)
            elif status == "failed":
                row["failed"] += int(n)
        return table

    # --- jobs
    def jobs(self, where: str = "1", params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self.db.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY job", params).fetchall()

    def update_job(self, job: int, **values: Any) -> None:
        columns = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as db:
            db.execute(f"UPDATE jobs SET {columns} WHERE job = ?", (*values.values(), job))

    def next_job_number(self) -> int:
        value = self.db.execute("SELECT MAX(job) FROM jobs").fetchone()[0]
        return 0 if value is None else int(value) + 1

    # --- parts
    def done_parts(self) -> list[tuple[str, int]]:
        rows = self.db.execute("SELECT name, rows FROM parts WHERE state = 'done' AND rows > 0 ORDER BY name")
        return [(str(r[0]), int(r[1])) for r in rows]

    def next_part_number(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM parts").fetchone()[0])
