"""Freeze a set of results and check later runs against it (``medbench baseline`` / ``medbench check``).

A cell is identified by (method, dataset, size, ipc, seed, protocol_id): the method's
hyper-parameters are deliberately *not* part of the key, so a changed default or a broken method
shows up as a regression of the same cell. When a database holds several cells with one key
(runs with different hyper-parameters), the most recently written one is used.

The rule, per baseline cell (accuracy = test accuracy, mean over the K eval models):

* **accuracy**: with baseline mean/std/K ``m₀, s₀, n₀`` and current ``m₁, s₁, n₁``, the cell
  regressed when ``m₀ − m₁ > max(k · SE, floor)`` where ``SE = sqrt(s₀²/n₀ + s₁²/n₁)`` is the
  standard error of the difference of the two means (a std counts as 0 with a single model),
  ``k`` is ``--tolerance-sigmas`` (default 2) and ``floor`` is ``--accuracy-floor`` (default 0.01,
  one percentage point): eval networks that agree perfectly must not turn noise into failures.
  Improvements never fail.
* **time**: seconds per distillation iteration when the method recorded its iteration count
  (``condensed_info.iterations``, or MTT's ``iterations_run``), else total distillation seconds.
  It regressed when the new value exceeds ``--time-factor`` (default 1.5) × the old one *and*
  the total distillation time grew by more than ``--time-floor`` seconds (default 1), so
  millisecond methods (random) do not fail on timer noise.
* **missing**: a baseline cell with no done cell in the database (absent or failed) fails.

Exit status: 0 when nothing regressed, 1 otherwise (with a table of what did), 2 on bad input.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from medbench.analysis.frames import metric_values
from medbench.core.errors import MedbenchError
from medbench.storage.store import Store

CELL_KEY = ("method", "dataset", "size", "ipc", "seed", "protocol_id")
FORMAT_VERSION = 1


def _key(row: dict[str, Any]) -> tuple:
    return tuple(None if row[k] is None or (isinstance(row[k], float) and math.isnan(row[k])) else row[k]
                 for k in CELL_KEY)


def _label(key: tuple) -> str:
    method, dataset, size, ipc, seed, pid = key
    return f"{method} · {dataset}@{size} · ipc {ipc if ipc is not None else 'full'} · seed {seed} · {pid}"


def _iterations(config: str) -> int | None:
    info = json.loads(config).get("condensed_info") or {}
    value = info.get("iterations_run", info.get("iterations"))  # MTT records iterations_run; DC/DSA/DM iterations
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def snapshot(store: Store) -> dict[tuple, dict[str, Any]]:
    """Current state of every cell key: accuracy mean/std/n and timing, or status failed."""
    cells = store.cells().sort_values("created_at", kind="stable")
    values = metric_values(store, "accuracy")
    acc = values.groupby("cell_id").value.agg(["mean", "std", "count"])
    out: dict[tuple, dict[str, Any]] = {}
    for row in cells.to_dict("records"):
        row["size"] = None if pd.isna(row["size"]) else int(row["size"])
        row["ipc"] = None if pd.isna(row["ipc"]) else int(row["ipc"])
        key = _key(row)
        entry: dict[str, Any] = dict(zip(CELL_KEY, key, strict=True))
        entry["status"] = row["status"]
        entry["cell_id"] = row["cell_id"]
        if row["status"] == "done" and row["cell_id"] in acc.index:
            stats = acc.loc[row["cell_id"]]
            iterations = _iterations(row["config"])
            seconds = None if pd.isna(row["distill_seconds"]) else float(row["distill_seconds"])
            entry.update({
                "accuracy_mean": float(stats["mean"]),
                "accuracy_std": None if pd.isna(stats["std"]) else float(stats["std"]),
                "n_models": int(stats["count"]),
                "distill_seconds": seconds,
                "iterations": iterations,
                "seconds_per_iteration": seconds / iterations if seconds is not None and iterations else None,
            })
        out[key] = entry  # sorted by created_at: the latest cell of a key wins
    return out


def make_baseline(store: Store) -> dict[str, Any]:
    """The JSON document ``medbench baseline`` writes: every done cell's accuracy and timing."""
    cells = [e for e in snapshot(store).values() if e["status"] == "done" and "accuracy_mean" in e]
    if not cells:
        raise MedbenchError(f"{store.path}: no finished cells to freeze as a baseline")
    return {"format": FORMAT_VERSION, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "db": str(store.path), "cells": sorted(cells, key=lambda e: [str(v) for v in _key(e)])}


@dataclass(frozen=True)
class Tolerance:
    sigmas: float = 2.0
    accuracy_floor: float = 0.01
    time_factor: float = 1.5
    time_floor: float = 1.0


@dataclass(frozen=True)
class Finding:
    key: tuple
    status: str  # ok | regressed | slower | missing | failed
    detail: str

    @property
    def failed(self) -> bool:
        return self.status != "ok"


def _se(std: float | None, n: int) -> float:
    return 0.0 if std is None or n < 2 else std**2 / n


def compare(baseline: dict[str, Any], current: dict[tuple, dict[str, Any]], tol: Tolerance) -> list[Finding]:
    """Apply the module's rule to every baseline cell (see the module docstring)."""
    findings = []
    for old in baseline["cells"]:
        key = _key(old)
        new = current.get(key)
        if new is None:
            findings.append(Finding(key, "missing", "not in the database"))
            continue
        if new["status"] != "done" or "accuracy_mean" not in new:
            findings.append(Finding(key, "failed", f"cell status {new['status']}, no scores"))
            continue
        problems = []
        se = math.sqrt(_se(old.get("accuracy_std"), old["n_models"]) + _se(new["accuracy_std"], new["n_models"]))
        allowed = max(tol.sigmas * se, tol.accuracy_floor)
        drop = old["accuracy_mean"] - new["accuracy_mean"]
        if drop > allowed:
            problems.append(("regressed", f"accuracy {100 * old['accuracy_mean']:.1f} → "
                             f"{100 * new['accuracy_mean']:.1f} % (drop {100 * drop:.1f} pp > allowed "
                             f"{100 * allowed:.1f} pp = "
                             f"max({tol.sigmas:g}×SE {100 * se:.1f}, floor {100 * tol.accuracy_floor:.1f}))"))
        per_it = old.get("seconds_per_iteration") is not None and new.get("seconds_per_iteration") is not None
        unit = "seconds_per_iteration" if per_it else "distill_seconds"
        t_old, t_new = old.get(unit), new.get(unit)
        total_old, total_new = old.get("distill_seconds"), new.get("distill_seconds")
        if (t_old and t_new is not None and total_old is not None and total_new is not None
                and t_new > tol.time_factor * t_old and total_new - total_old > tol.time_floor):
            what = "s/iteration" if per_it else "distill s"
            problems.append(("slower", f"{what} {t_old:.3g} → {t_new:.3g} (× {t_new / t_old:.2f} > "
                                       f"{tol.time_factor:g})"))
        if problems:
            findings.append(Finding(key, problems[0][0] if len(problems) == 1 else "regressed+slower",
                                    "; ".join(p[1] for p in problems)))
        else:
            findings.append(Finding(key, "ok", f"accuracy {100 * new['accuracy_mean']:.1f} % "
                                                f"(baseline {100 * old['accuracy_mean']:.1f} %)"))
    return findings


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text())
    except OSError as exc:
        raise MedbenchError(f"{path}: cannot read the baseline ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise MedbenchError(f"{path}: not a baseline file (invalid JSON: {exc.msg})") from None
    if not isinstance(document, dict) or not isinstance(document.get("cells"), list):
        raise MedbenchError(f"{path}: not a baseline file (no 'cells' list); write one with medbench baseline")
    for cell in document["cells"]:
        if not isinstance(cell, dict):
            raise MedbenchError(f"{path}: not a baseline file (a cell is {type(cell).__name__}, not a mapping)")
        missing = [k for k in (*CELL_KEY, "accuracy_mean", "n_models") if k not in cell]
        if missing:
            raise MedbenchError(f"{path}: a baseline cell lacks {', '.join(missing)}")
        for key, kinds, optional in VALUE_TYPES:
            value = cell.get(key)
            if (value is None and optional) or (isinstance(value, kinds) and not isinstance(value, bool)):
                continue
            raise MedbenchError(f"{path}: a baseline cell's {key} is {value!r}, not "
                                f"{' or '.join(k.__name__ for k in kinds)}{' or null' if optional else ''}")
    return document


# A baseline cell's values and their types (key, accepted types, may be null).
VALUE_TYPES = (("method", (str,), False), ("dataset", (str,), False), ("protocol_id", (str,), False),
               ("seed", (int,), False), ("size", (int,), True), ("ipc", (int,), True),
               ("accuracy_mean", (int, float), False), ("accuracy_std", (int, float), True),
               ("n_models", (int,), False), ("distill_seconds", (int, float), True),
               ("seconds_per_iteration", (int, float), True))








