"""Golden files: freeze a set of results (``medbench baseline``) and check later runs against them
(``medbench check``), seed by seed.

A cell is identified by (method, dataset, size, ipc, seed, protocol_id): the method's hyper-parameters
are deliberately *not* part of the key, so a changed default or a broken method shows up as a change
of the same cell. When a database holds several cells with one key, the most recently written wins.
A cell's score is its test metric (balanced accuracy by default) averaged over its evaluation networks.

The rules, in the order they are reported:

* **missing**: a golden cell with no done cell in the database (absent or failed) fails.
* **fingerprint** (per cell): where the cell was made on the golden's platform (torch version,
  torch threads, CPU instruction set or GPU, as recorded with each cell), its condensed set must be
  bit-identical (the sha256 stored with it). Any behavioural change of a method fails here at once,
  down to one pixel. On another platform the rule says n/a: floating-point results differ across
  machines and thread counts, and only the scores can be compared.
* **equivalence** (per configuration: method, dataset, size, IPC, protocol): the seeds are paired
  and the current − golden differences of their scores are tested for equivalence with two one-sided
  t-tests (TOST, statsmodels ``ttost_paired``) within ± ``margin`` (default 5 points) at ``alpha``
  0.05; equivalently, the 90 % interval of the mean difference (scipy) must lie inside ± margin. A
  gain beyond the margin fails too: the method no longer scores what it scored. With all seeds
  giving the same difference (no spread), the rule is |difference| < margin. One seed gives no
  interval: the rule is then |difference| < margin, said so in the report.
* **time** (optional, ``--time-factor``): seconds per distillation iteration grew beyond the factor
  and by more than ``time_floor`` seconds in total; only on the golden's platform (speed claims
  belong in ``medbench bench``).

An intended change is re-blessed with a stated reason (``medbench baseline --rebless --reason``): the
golden file keeps every earlier blessing in its ``history`` with the cells that changed.

Exit status: 0 when every rule holds (n/a included), 1 otherwise (with a table naming each failed
cell or configuration, the rule, by how much and the margin), 2 on bad input.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.weightstats import ttost_paired

from medbench.analysis.frames import metric_values
from medbench.core.errors import MedbenchError
from medbench.storage.store import Store

CELL_KEY = ("method", "dataset", "size", "ipc", "seed", "protocol_id")
CONFIG_KEY = ("method", "dataset", "size", "ipc", "protocol_id")
FORMAT_VERSION = 2
PLATFORM_KEYS = ("torch", "threads", "cpu_capability", "device")


@dataclass(frozen=True)
class Rules:
    """What ``check`` allows. ``margin`` and ``alpha``: the equivalence test's; ``fingerprint``: require
    bit-identical sets on the golden's platform; ``time_factor``: None (off) or the allowed growth."""

    margin: float = 0.05
    alpha: float = 0.05
    fingerprint: bool = True
    time_factor: float | None = None
    time_floor: float = 1.0


@dataclass(frozen=True)
class Finding:
    where: str  # a cell or a configuration, in words
    rule: str  # missing | fingerprint | equivalence | time
    status: str  # ok | fail | n/a
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def _clean(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _key(row: dict[str, Any], fields: tuple[str, ...] = CELL_KEY) -> tuple:
    return tuple(_clean(row[k]) for k in fields)


def cell_label(row: dict[str, Any]) -> str:
    ipc = row["ipc"] if row["ipc"] is not None else "full"
    seed = f" · seed {row['seed']}" if "seed" in row else ""
    return f"{row['method']} · {row['dataset']}@{row['size']} · ipc {ipc}{seed} · {str(row['protocol_id'])[:8]}"


def platform_of(environment: dict[str, Any]) -> dict[str, Any]:
    """The facts a bit-identical result holds for: torch version, threads, CPU instruction set, device."""
    device = str(environment.get("device", ""))
    return {"torch": (environment.get("packages") or {}).get("torch"), "threads": environment.get("torch_threads"),
            "cpu_capability": environment.get("cpu_capability"),
            "device": device if device.startswith("cpu") else environment.get("device_name", device)}


def _iterations(config: dict[str, Any]) -> int | None:
    info = config.get("condensed_info") or {}
    value = info.get("iterations_run", info.get("iterations"))  # MTT records iterations_run; DC/DSA/DM iterations
    return int(value) if isinstance(value, int | float) and value > 0 else None


def snapshot(store: Store, metric: str = "balanced_accuracy") -> dict[tuple, dict[str, Any]]:
    """Every cell key's latest state: its score (test ``metric``, mean over networks), fingerprint,
    platform and timing, or its status when it is not done."""
    cells = store.cells().sort_values("created_at", kind="stable")
    values = metric_values(store, metric)
    scores = values.groupby("cell_id").value.agg(["mean", "count"])
    out: dict[tuple, dict[str, Any]] = {}
    for row in cells.to_dict("records"):
        row["size"] = None if pd.isna(row["size"]) else int(row["size"])
        row["ipc"] = None if pd.isna(row["ipc"]) else int(row["ipc"])
        entry: dict[str, Any] = dict(zip(CELL_KEY, _key(row), strict=True))
        entry["status"] = row["status"]
        if row["status"] == "done" and row["cell_id"] in scores.index:
            config, environment = json.loads(row["config"]), json.loads(row["environment"])
            seconds = None if pd.isna(row["distill_seconds"]) else float(row["distill_seconds"])
            iterations = _iterations(config)
            entry.update({
                "cell_id": row["cell_id"], "score": float(scores.loc[row["cell_id"], "mean"]),
                "n_models": int(scores.loc[row["cell_id"], "count"]), "sha256": config.get("condensed_sha256"),
                "platform": platform_of(environment), "distill_seconds": seconds,
                "seconds_per_iteration": seconds / iterations if seconds is not None and iterations else None,
            })
        out[_key(entry)] = entry  # sorted by created_at: the latest cell of a key wins
    return out


def make_golden(store: Store, *, metric: str = "balanced_accuracy", rules: Rules = Rules(),
                previous: dict[str, Any] | None = None, reason: str | None = None,
                commit: str | None = None) -> dict[str, Any]:
    """The JSON document ``medbench baseline`` writes; with ``previous`` (a re-blessing) its history
    grows by one entry naming the reason and every cell whose set or score changed."""
    cells = [e for e in snapshot(store, metric).values() if e["status"] == "done" and "score" in e]
    if not cells:
        raise MedbenchError(f"{store.path}: no finished cells to freeze as a golden file")
    cells = sorted(cells, key=lambda e: [str(v) for v in _key(e)])
    history = list(previous.get("history", [])) if previous else []
    changed = _changes(previous["cells"], cells) if previous else []
    history.append({"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit,
                    "reason": reason or "first blessing", "cells": len(cells), "changed": changed})
    return {"format": FORMAT_VERSION, "created": history[-1]["date"], "db": str(store.path), "metric": metric,
            "rules": {"margin": rules.margin, "alpha": rules.alpha}, "cells": cells, "history": history}


def _changes(old_cells: list[dict[str, Any]], new_cells: list[dict[str, Any]]) -> list[str]:
    old = {_key(c): c for c in old_cells}
    out = []
    for cell in new_cells:
        before = old.get(_key(cell))
        if before is None:
            out.append(f"{cell_label(cell)}: new")
        elif before.get("sha256") != cell.get("sha256") or before["score"] != cell["score"]:
            out.append(f"{cell_label(cell)}: {100 * before['score']:.1f} → {100 * cell['score']:.1f} %, "
                       f"set {str(before.get('sha256'))[:12]} → {str(cell.get('sha256'))[:12]}")
    gone = set(old) - {_key(c) for c in new_cells}
    return out + [f"{cell_label(old[k])}: removed" for k in sorted(gone, key=str)]


def equivalence(golden: list[float], current: list[float], margin: float, alpha: float) -> tuple[bool, str]:
    """TOST on the paired differences ``current − golden`` within ± ``margin``: (equivalent, one line)."""
    diff = np.asarray(current, dtype=float) - np.asarray(golden, dtype=float)
    n = len(diff)
    bound = f"± {100 * margin:g} pp"
    if n < 2 or np.ptp(diff) == 0:
        mean = float(diff.mean())
        why = "1 seed, no interval" if n < 2 else f"all {n} seeds differ by the same amount"
        ok = abs(mean) < margin
        return ok, f"Δ {100 * mean:+.2f} pp ({why}) {'within' if ok else 'outside'} {bound}"
    low, high = stats.ttest_rel(current, golden).confidence_interval(confidence_level=1 - 2 * alpha)
    p = float(ttost_paired(np.asarray(current, float), np.asarray(golden, float), -margin, margin)[0])
    ok = p < alpha
    return ok, (f"mean Δ {100 * diff.mean():+.2f} pp over {n} seeds, {100 * (1 - 2 * alpha):g} % CI "
                f"[{100 * low:+.2f}, {100 * high:+.2f}] {'within' if ok else 'not within'} {bound} "
                f"(TOST p = {p:.3g})")


def compare(golden: dict[str, Any], current: dict[tuple, dict[str, Any]], rules: Rules,
            here: dict[str, Any] | None = None) -> list[Finding]:
    """Apply the module's rules (see the module docstring) to every golden cell and configuration."""
    findings: list[Finding] = []
    pairs: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for old in golden["cells"]:
        label = cell_label(old)
        new = current.get(_key(old))
        if new is None or new["status"] != "done" or "score" not in new:
            status = "not in the database" if new is None else f"cell status {new['status']}, no scores"
            findings.append(Finding(label, "missing", "fail", status))
            continue
        pairs[_key(old, CONFIG_KEY)].append((old["score"], new["score"]))
        if rules.fingerprint:
            findings.append(_fingerprint(label, old, new))
        if rules.time_factor is not None:
            findings.append(_time(label, old, new, rules))
    for key, scores in pairs.items():
        ok, detail = equivalence([g for g, _ in scores], [c for _, c in scores], rules.margin, rules.alpha)
        findings.append(Finding(cell_label(dict(zip(CONFIG_KEY, key, strict=True))), "equivalence",
                                "ok" if ok else "fail", detail))
    return findings


def _same_platform(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """None when both cells were made on the same platform, else what differs."""
    a, b = old.get("platform") or {}, new.get("platform") or {}
    differs = [f"{k} {a.get(k)} → {b.get(k)}" for k in PLATFORM_KEYS if a.get(k) != b.get(k)]
    return ", ".join(differs) if differs else None


def _fingerprint(label: str, old: dict[str, Any], new: dict[str, Any]) -> Finding:
    differs = _same_platform(old, new)
    if differs:
        return Finding(label, "fingerprint", "n/a", f"another platform ({differs})")
    if old.get("sha256") is None or new.get("sha256") is None:
        return Finding(label, "fingerprint", "n/a", "no fingerprint stored with the cell")
    if old["sha256"] == new["sha256"]:
        return Finding(label, "fingerprint", "ok", f"bit-identical set {new['sha256'][:12]}")
    return Finding(label, "fingerprint", "fail",
                   f"the condensed set changed on the same platform: sha256 {old['sha256'][:12]} → "
                   f"{new['sha256'][:12]}; score {100 * old['score']:.1f} → {100 * new['score']:.1f} %")


def _time(label: str, old: dict[str, Any], new: dict[str, Any], rules: Rules) -> Finding:
    if _same_platform(old, new):
        return Finding(label, "time", "n/a", "another platform")
    per_it = old.get("seconds_per_iteration") is not None and new.get("seconds_per_iteration") is not None
    unit = "seconds_per_iteration" if per_it else "distill_seconds"
    t_old, t_new = old.get(unit), new.get(unit)
    total_old, total_new = old.get("distill_seconds"), new.get("distill_seconds")
    if not t_old or t_new is None or total_old is None or total_new is None:
        return Finding(label, "time", "n/a", "no timing stored")
    what = "s/iteration" if per_it else "distill s"
    slower = t_new > rules.time_factor * t_old and total_new - total_old > rules.time_floor
    return Finding(label, "time", "fail" if slower else "ok",
                   f"{what} {t_old:.3g} → {t_new:.3g} (× {t_new / t_old:.2f}, allowed × {rules.time_factor:g})")


def load_golden(path: Path) -> dict[str, Any]:
    """A golden file written by ``medbench baseline``, checked key by key (one line per problem)."""
    try:
        document = json.loads(Path(path).read_text())
    except OSError as exc:
        raise MedbenchError(f"{path}: cannot read the golden file ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise MedbenchError(f"{path}: not a golden file (invalid JSON: {exc.msg})") from None
    if not isinstance(document, dict) or not isinstance(document.get("cells"), list):
        raise MedbenchError(f"{path}: not a golden file (no 'cells' list); write one with medbench baseline")
    if document.get("format") != FORMAT_VERSION:
        raise MedbenchError(f"{path}: golden format {document.get('format', 1)!r} (per-network accuracy rule) "
                            f"is no longer read; make it again with medbench baseline from its database")
    for cell in document["cells"]:
        if not isinstance(cell, dict):
            raise MedbenchError(f"{path}: not a golden file (a cell is {type(cell).__name__}, not a mapping)")
        missing = [k for k in (*CELL_KEY, "score") if k not in cell]
        if missing:
            raise MedbenchError(f"{path}: a golden cell lacks {', '.join(missing)}")
        for key, kinds, optional in VALUE_TYPES:
            value = cell.get(key)
            if (value is None and optional) or (isinstance(value, kinds) and not isinstance(value, bool)):
                continue
            raise MedbenchError(f"{path}: a golden cell's {key} is {value!r}, not "
                                f"{' or '.join(k.__name__ for k in kinds)}{' or null' if optional else ''}")
    return document


# A golden cell's values and their types (key, accepted types, may be null).
VALUE_TYPES = (("method", (str,), False), ("dataset", (str,), False), ("protocol_id", (str,), False),
               ("seed", (int,), False), ("size", (int,), True), ("ipc", (int,), True),
               ("score", (int, float), False), ("sha256", (str,), True), ("platform", (dict,), True),
               ("distill_seconds", (int, float), True), ("seconds_per_iteration", (int, float), True))
