"""Which stored rows a table compares: matched baselines, and rows that are the same set.

* **Matched baseline.** A method that chooses its result among N candidates on val is compared
  with the baseline that had the same chance (its registration's ``matched``: random choosing
  among N subsets, tiled random for a tiled set, random_soft for soft labels). The baseline's
  cells are found among the stored ones by content: same protocol, dataset, size, IPC and seed,
  the baseline's method and parameters, and the same selection metric.
* **Identical sets.** Two rows whose condensed sets have the same fingerprint on every seed
  (herding and k-center at IPC 1 both start from the image nearest the class mean; a budgeted run
  that is its full run) are one result: shown once, as ``a = b``, and ranked once.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from medbench.analysis.frames import POOLED, base_method, old_behaviour, selection_of
from medbench.core.errors import MedbenchError
from medbench.core.hparams import as_dict
from medbench.distill.contract import get_method
from medbench.storage.condensed_io import locate_condensed

ROW = [*POOLED, "method"]  # a table row: protocol, dataset, size, IPC and the method's display name


def _key(row: pd.Series) -> tuple:
    return (row.protocol_id, row.dataset, None if pd.isna(row["size"]) else int(row["size"]),
            None if pd.isna(row.ipc) else int(row.ipc))


@functools.cache
def _defaults(method: str) -> dict:
    try:
        return as_dict(get_method(method).make_params())
    except MedbenchError:
        return {}


def _canonical(method: str, params: dict) -> str:
    """Stored parameters as comparable text: a field added after a cell was stored reads as its old
    behaviour, any other missing field as its default."""
    return json.dumps({**_defaults(method), **old_behaviour(method), **params}, sort_keys=True, default=str)


@functools.cache
def _declared(method: str, params_json: str) -> tuple[str, str] | None:
    """(baseline method, its canonical params) that ``method`` with these params declares."""
    try:
        found = get_method(method).baseline(json.loads(params_json))
        if found is None:
            return None
        name, values = found
        return name, _canonical(name, as_dict(get_method(name).make_params(values)))
    except MedbenchError:  # a method not installed here, or parameters it no longer accepts
        return None


def matched_baselines(cells: pd.DataFrame) -> dict[tuple, str]:
    """(protocol_id, dataset, size, IPC, method display name) -> the display name of its matched
    baseline, for every row whose baseline's cells are stored. ``cells``: done cells with their
    display names in ``method`` and their stored ``config``."""
    configs = {cid: json.loads(c) for cid, c in zip(cells.cell_id, cells.config, strict=True)}
    index: dict[tuple, str] = {}  # (key, seed, method, canonical params, selection) -> display name
    for _, row in cells.iterrows():
        config = configs[row.cell_id]
        stored = str(config.get("method", base_method(row.method)))
        index[(_key(row), int(row.seed), stored, _canonical(stored, config.get("params") or {}),
               selection_of(config))] = row.method
    votes: dict[tuple, Counter] = {}
    for _, row in cells.iterrows():
        config = configs[row.cell_id]
        stored = str(config.get("method", base_method(row.method)))
        declared = _declared(stored, json.dumps(config.get("params") or {}, sort_keys=True, default=str))
        if declared is None:
            continue
        name, params = declared
        selection = selection_of(config) if name != "random_soft" else None
        found = index.get((_key(row), int(row.seed), name, params, selection))
        if found is None and selection is not None:  # a baseline that chose nothing (one candidate)
            found = index.get((_key(row), int(row.seed), name, params, None))
        if found is not None and found != row.method:
            votes.setdefault((*_key(row), row.method), Counter())[found] += 1
    return {key: counter.most_common(1)[0][0] for key, counter in votes.items()}


def file_fingerprint(path: Path) -> str | None:
    """sha256 of a stored condensed file's float32 images and labels (cells stored before the
    fingerprint was recorded with them)."""
    try:
        with np.load(path) as arrays:
            digest = hashlib.sha256(np.ascontiguousarray(arrays["images_float32"]).tobytes())
            digest.update(np.ascontiguousarray(arrays["train_labels"]).tobytes())
            return digest.hexdigest()
    except (OSError, KeyError, ValueError):
        return None


def identical_rows(cells: pd.DataFrame, db: Path | None = None) -> dict[tuple, str]:
    """(protocol_id, dataset, size, IPC, method display name) -> the name of the merged row, for rows
    whose sets are the same as another row's on every seed (both run on the same seeds): ``a = b``
    in method order. Fingerprints are the stored ``condensed_sha256``, else the condensed file's."""
    prints: dict[tuple, dict[int, str]] = {}
    for _, row in cells.iterrows():
        config = json.loads(row.config)
        digest = config.get("condensed_sha256")
        if digest is None and isinstance(row.get("condensed_path"), str) and db is not None:
            path = locate_condensed(row.condensed_path, db)
            digest = file_fingerprint(path) if path else None
        if digest is not None:
            prints.setdefault((*_key(row), row.method), {})[int(row.seed)] = digest
    groups: dict[tuple, dict[tuple, list[str]]] = {}
    for (*key, method), by_seed in prints.items():
        signature = tuple(sorted(by_seed.items()))
        groups.setdefault(tuple(key), {}).setdefault(signature, []).append(method)
    out: dict[tuple, str] = {}
    for key, by_signature in groups.items():
        for members in by_signature.values():
            if len(members) > 1:
                name = " = ".join(sorted(members, key=_order))
                out.update({(*key, m): name for m in members})
    return out


def _order(method: str) -> tuple:
    return (method not in ("random", "full"), method == "full", method)
