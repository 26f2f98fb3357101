"""Tuning results in the results database: every trial, and the configuration chosen per
(method, dataset, size, IPC, distillation network). Two tables beside the cells; a database made
before tuning existed gets them on first use."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from medbench.storage.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS tuning_trials (
    tuning_id TEXT NOT NULL,     -- what was tuned: method, dataset, size, IPC, network, space, objective, seed
    trial INTEGER NOT NULL,
    key TEXT NOT NULL,           -- JSON [method, dataset, size, ipc, model]: the tuned cell key
    config TEXT NOT NULL,        -- JSON: the sampled values
    objective TEXT NOT NULL,     -- val accuracy or val balanced accuracy
    value REAL,                  -- best val score among the trial's checkpoints (NULL: failed)
    checkpoints INTEGER,
    seconds REAL,
    status TEXT NOT NULL,        -- done | stopped (early, by the scheduler) | failed
    message TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tuning_id, trial)
);
CREATE TABLE IF NOT EXISTS tuned (
    key TEXT PRIMARY KEY,        -- JSON [method, dataset, size, ipc, model]
    tuning_id TEXT NOT NULL,
    config TEXT NOT NULL,        -- JSON: the chosen values
    objective TEXT NOT NULL,
    value REAL,                  -- its search score (seed of the search)
    rescored REAL,               -- its mean score over fresh seeds (the guard against over-fitting val)
    budget TEXT NOT NULL,        -- JSON: trials, seconds, space, scheduler, searcher, seeds
    created_at TEXT NOT NULL
);
"""


def cell_key(method: str, dataset: str, size: int | None, ipc: int, model: Any) -> str:
    return json.dumps([method, dataset, size, ipc, model], sort_keys=True, default=str)


@dataclass(frozen=True)
class Trial:
    trial: int
    config: dict[str, Any]
    value: float | None
    checkpoints: int
    seconds: float
    status: str
    message: str = ""


class TuningRecords:
    """Read and write the tuning tables of one results database."""

    def __init__(self, db: Path, *, readonly: bool = False) -> None:
        Store(db, readonly=readonly).close()  # refuses a file that is not a medbench database
        self.db, self.readonly = Path(db), readonly

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            return sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        conn = sqlite3.connect(self.db, timeout=30)
        conn.executescript(SCHEMA)
        return conn

    def _has_tables(self, conn: sqlite3.Connection) -> bool:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {"tuning_trials", "tuned"} <= names

    def trials(self, tuning_id: str | None = None) -> pd.DataFrame:
        with self._connect() as conn:
            if not self._has_tables(conn):
                return pd.DataFrame(columns=["tuning_id", "trial", "key", "config", "objective", "value",
                                             "checkpoints", "seconds", "status", "message", "created_at"])
            where, args = ("WHERE tuning_id = ?", (tuning_id,)) if tuning_id else ("", ())
            return pd.read_sql_query(f"SELECT * FROM tuning_trials {where} ORDER BY tuning_id, trial", conn,
                                     params=args)

    def add_trial(self, tuning_id: str, key: str, objective: str, trial: Trial) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO tuning_trials VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         (tuning_id, trial.trial, key, json.dumps(trial.config, sort_keys=True), objective,
                          trial.value, trial.checkpoints, trial.seconds, trial.status, trial.message, now))

    def choose(self, key: str, tuning_id: str, config: dict, objective: str, value: float | None,
               rescored: float | None, budget: dict) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO tuned VALUES (?,?,?,?,?,?,?,?)",
                         (key, tuning_id, json.dumps(config, sort_keys=True), objective, value, rescored,
                          json.dumps(budget, sort_keys=True, default=str), now))

    def chosen(self, key: str) -> dict[str, Any] | None:
        """The stored choice for a cell key: config, tuning_id, objective, value, rescored, budget."""
        with self._connect() as conn:
            if not self._has_tables(conn):
                return None
            row = conn.execute("SELECT tuning_id, config, objective, value, rescored, budget FROM tuned "
                               "WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {"tuning_id": row[0], "config": json.loads(row[1]), "objective": row[2], "value": row[3],
                "rescored": row[4], "budget": json.loads(row[5])}

    def all_chosen(self) -> pd.DataFrame:
        with self._connect() as conn:
            if not self._has_tables(conn):
                return pd.DataFrame(columns=["key", "tuning_id", "config", "objective", "value", "rescored",
                                             "budget", "created_at"])
            return pd.read_sql_query("SELECT * FROM tuned ORDER BY key", conn)
