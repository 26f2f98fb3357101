"""The results store: one SQLite file, one row per evaluated cell, one per eval model and metric.

A cell is written in a single transaction together with its scores, so a killed run never
leaves a half-written cell; a cell already stored is skipped on the next run (resume).
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from medbench.core.errors import MedbenchError

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    dataset TEXT NOT NULL,
    size INTEGER,
    ipc INTEGER,                 -- NULL: the method ignores IPC (the full training set)
    seed INTEGER NOT NULL,
    protocol_id TEXT NOT NULL,   -- hash of the evaluation protocol: never compare across it silently
    status TEXT NOT NULL,        -- done | failed
    message TEXT,
    config TEXT NOT NULL,        -- JSON: method params, protocol, dataset facts and stats
    environment TEXT NOT NULL,   -- JSON: package versions, git commit, device
    distill_seconds REAL,
    eval_seconds REAL,
    condensed_images INTEGER,
    condensed_bytes INTEGER,
    compression_ratio REAL,
    condensed_path TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS eval_models (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id) ON DELETE CASCADE,
    model_index INTEGER NOT NULL,
    model_seed INTEGER NOT NULL,
    lr REAL NOT NULL,
    epochs INTEGER NOT NULL,
    train_seconds REAL NOT NULL,
    PRIMARY KEY (cell_id, model_index)
);
CREATE TABLE IF NOT EXISTS scores (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id) ON DELETE CASCADE,
    model_index INTEGER NOT NULL,
    split TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (cell_id, model_index, split, metric)
);
"""


DEFAULT_DB = Path("results/medbench.sqlite")  # where `medbench run` stores results unless --db says otherwise

CLAIMS = "CREATE TABLE IF NOT EXISTS claims (cell_id TEXT PRIMARY KEY, owner TEXT NOT NULL, heartbeat REAL NOT NULL)"
# Per-image test predictions of every evaluation network (int16 class indices), for intervals that
# resample test images; model_index −1 holds the split's true labels. Databases written before it
# existed lack it: their intervals are over seeds only, and reports say so.
PREDICTIONS = ("CREATE TABLE IF NOT EXISTS predictions (cell_id TEXT NOT NULL REFERENCES cells(cell_id) ON DELETE "
               "CASCADE, model_index INTEGER NOT NULL, split TEXT NOT NULL, classes BLOB NOT NULL, "
               "PRIMARY KEY (cell_id, model_index, split))")
TRUTH = -1  # the model_index of a split's true labels in ``predictions``


@dataclass(frozen=True)
class ModelRow:
    index: int
    seed: int
    lr: float
    epochs: int
    train_seconds: float
    scores: dict[str, dict[str, float]]  # split -> metric -> value
    test_predicted: np.ndarray | None = None  # the class predicted for every test image


@dataclass(frozen=True)
class CellRecord:
    cell_id: str
    method: str
    dataset: str
    size: int | None
    ipc: int | None
    seed: int
    protocol_id: str
    config: dict
    environment: dict
    status: str = "done"
    message: str = ""
    distill_seconds: float | None = None
    eval_seconds: float | None = None
    condensed_images: int | None = None
    condensed_bytes: int | None = None
    compression_ratio: float | None = None
    condensed_path: str | None = None
    models: list[ModelRow] = field(default_factory=list)
    test_labels: np.ndarray | None = None  # the test split's labels, stored with the predictions


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long to stat, say
        return False


def _columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """table -> column names of every table in an open database."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t!r})")] for t in tables}


with sqlite3.connect(":memory:") as _schema:
    _schema.executescript(SCHEMA)
    TABLES = _columns(_schema)  # what a medbench database holds


class Store:
    """The results database. ``readonly=True`` (every command that only reads) opens an existing
    file without ever creating or changing it; either way a file that is not a medbench database
    (another program's SQLite file, a text file) is refused with one line and left untouched."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise MedbenchError(f"{self.path}: no results database here (run `medbench run` first or pass --db)")
        try:
            if readonly:
                self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(self.path, timeout=30)
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._check_schema(create=not readonly)
        except (sqlite3.DatabaseError, MedbenchError) as exc:
            if hasattr(self, "_conn"):
                self._conn.close()
            if isinstance(exc, MedbenchError):
                raise
            raise MedbenchError(f"{self.path}: cannot open the results database ({exc})") from None
        except OSError as exc:
            blocker = next((p for p in self.path.parents if _is_file(p)), None)
            reason = f"{blocker} is a file, not a folder" if blocker else exc.strerror
            raise MedbenchError(f"{self.path}: cannot create the results database ({reason})") from None

    def _check_schema(self, *, create: bool) -> None:
        present = _columns(self._conn)
        ours = {t: c for t, c in present.items() if t in TABLES}
        if not present and create:
            self._conn.executescript(SCHEMA)
        elif ours != TABLES:
            found = ", ".join(sorted(present)) or "no tables"
            raise MedbenchError(f"{self.path}: not a medbench results database ({found}); pass another --db")
        if create:
            self._conn.execute(CLAIMS)  # cells being computed (medbench.harness.claims); older files lack it
            self._conn.execute(PREDICTIONS)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def status(self, cell_id: str) -> str | None:
        row = self._conn.execute("SELECT status FROM cells WHERE cell_id = ?", (cell_id,)).fetchone()
        return row[0] if row else None

    def stored_at(self, cell_id: str) -> str | None:
        """When the cell was stored (ISO time, UTC), or None."""
        row = self._conn.execute("SELECT created_at FROM cells WHERE cell_id = ?", (cell_id,)).fetchone()
        return row[0] if row else None

    def write(self, record: CellRecord) -> None:
        """Insert (or replace) one cell with all its scores, atomically."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._conn:  # one transaction: the cell and its scores land together or not at all
            self._conn.execute("DELETE FROM cells WHERE cell_id = ?", (record.cell_id,))
            self._conn.execute("DELETE FROM claims WHERE cell_id = ?", (record.cell_id,))
            self._conn.execute(
                "INSERT INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.cell_id, record.method, record.dataset, record.size, record.ipc, record.seed,
                    record.protocol_id, record.status, record.message,
                    json.dumps(record.config, sort_keys=True, default=str),
                    json.dumps(record.environment, sort_keys=True, default=str),
                    record.distill_seconds, record.eval_seconds, record.condensed_images,
                    record.condensed_bytes, record.compression_ratio, record.condensed_path, now,
                ),
            )
            for model in record.models:
                self._conn.execute(
                    "INSERT INTO eval_models VALUES (?,?,?,?,?,?)",
                    (record.cell_id, model.index, model.seed, model.lr, model.epochs, model.train_seconds),
                )
                self._conn.executemany(
                    "INSERT INTO scores VALUES (?,?,?,?,?)",
                    [
                        (record.cell_id, model.index, split, metric,
                         None if value is None or math.isnan(value) else float(value))
                        for split, metrics in model.scores.items()
                        for metric, value in metrics.items()
                    ],
                )
            predicted = {m.index: m.test_predicted for m in record.models if m.test_predicted is not None}
            if predicted and record.test_labels is not None:
                self._conn.executemany(
                    "INSERT INTO predictions VALUES (?,?,?,?)",
                    [(record.cell_id, index, "test", np.asarray(classes, dtype="<i2").tobytes())
                     for index, classes in {TRUTH: record.test_labels, **predicted}.items()])

    def merge(self, source: Path | str) -> int:
        """Copy the cells of another results database that this one lacks (with their scores and
        condensed files); returns how many were added. For grids run on several machines."""
        source = Path(source)
        with Store(source, readonly=True) as other:
            other_ids = list(other.cells().cell_id)
        new = [c for c in other_ids if self.status(c) is None]
        with self._conn:
            self._conn.execute("ATTACH DATABASE ? AS src", (str(source),))
            try:
                tables = ["cells", "eval_models", "scores"]
                if "predictions" in _columns(self._conn) and self._has_table("src", "predictions"):
                    tables.append("predictions")
                for cell_id in new:
                    for table in tables:
                        self._conn.execute(f"INSERT INTO {table} SELECT * FROM src.{table} WHERE cell_id = ?",
                                           (cell_id,))
            finally:
                self._conn.commit()
                self._conn.execute("DETACH DATABASE src")
        for cell_id in new:
            file = source.parent / "condensed" / f"{cell_id}.npz"
            if file.is_file():
                target = self.path.parent / "condensed" / file.name
                target.parent.mkdir(parents=True, exist_ok=True)
                if file.resolve() != target.resolve():  # databases in one folder share condensed/
                    shutil.copy2(file, target)
                self._conn.execute("UPDATE cells SET condensed_path = ? WHERE cell_id = ?",
                                   (str(target.resolve()), cell_id))
        self._conn.commit()
        return len(new)

    def _has_table(self, schema: str, table: str) -> bool:
        return self._conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?",
                                  (table,)).fetchone() is not None

    def predictions(self, cell_ids: list[str] | None = None, split: str = "test") -> dict[str, np.ndarray]:
        """cell_id -> (1 + K, N) int array: row 0 the split's true labels, then each evaluation network's
        predicted class per image (model order). Cells stored without predictions are absent."""
        if not self._has_table("main", "predictions"):
            return {}
        rows = self._conn.execute("SELECT cell_id, model_index, classes FROM predictions WHERE split = ? "
                                  "ORDER BY cell_id, model_index", (split,)).fetchall()
        wanted = None if cell_ids is None else set(cell_ids)
        out: dict[str, list[np.ndarray]] = {}
        for cell_id, _, blob in rows:  # model_index −1 (the truth) sorts first
            if wanted is None or cell_id in wanted:
                out.setdefault(cell_id, []).append(np.frombuffer(blob, dtype="<i2"))
        return {c: np.stack(arrays).astype(np.int64) for c, arrays in out.items() if len(arrays) > 1}

    def cells(self, cell_ids: list[str] | None = None) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM cells ORDER BY dataset, method, ipc, seed", self._conn)
        return df if cell_ids is None else df[df.cell_id.isin(cell_ids)]

    def scores(self, cell_ids: list[str] | None = None) -> pd.DataFrame:
        """Tidy scores: one row per cell, eval model, split and metric."""
        df = pd.read_sql_query(
            "SELECT s.*, m.model_seed, m.lr, m.epochs, m.train_seconds FROM scores s "
            "JOIN eval_models m USING (cell_id, model_index)",
            self._conn,
        )
        return df if cell_ids is None else df[df.cell_id.isin(cell_ids)]
