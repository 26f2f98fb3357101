"""Per-network scores joined with their cell keys: the one frame every analysis starts from.

Working from the individual evaluation networks (not from cell means) keeps the eval-model
spread available, which the gain uncertainty and the regression tolerance both need.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import pandas as pd

from medbench.core.errors import MedbenchError
from medbench.core.hparams import SINCE_KEY, as_dict
from medbench.distill.budget import Budget
from medbench.distill.contract import get_method
from medbench.evaluation.named import changed_fields
from medbench.storage.store import Store

KEY = ["protocol_id", "dataset", "size", "method", "ipc"]


def ipc_label(value: object) -> object:
    """``NULL`` IPC (the full training set) shows as "full"; integers stay integers."""
    return "full" if value is None or pd.isna(value) else int(value)


POOLED = ["protocol_id", "dataset", "size", "ipc"]  # cells a table puts in one row (over seeds)


def method_variants(cells: pd.DataFrame) -> dict[str, str]:
    """cell_id -> the method's name in tables. The plain name, unless cells of the method that a
    table would pool (same protocol, dataset, size and IPC) were run with different parameters:
    then every cell of that method is named with those parameters, e.g. ``mtt (iterations=100)``,
    so two configurations are never passed off as repeated runs of one. A configuration equal to the
    method's defaults keeps the plain name (so ``random`` stays the baseline beside
    ``random (candidates=5)``). Cells run with a stored tuning (``run --tuned``) are ``method (tuned)``,
    cells stopped at a distillation budget ``method (30 s)`` or ``method (1e+12 FLOP)``."""
    configs = {cid: json.loads(config) for cid, config in zip(cells.cell_id, cells.config, strict=True)}
    # A parameter added after a cell was stored is read as the value that reproduces the old behaviour.
    params = {cid: {**old_behaviour(str(c.get("method", ""))), **(c.get("params") or {})}
              for cid, c in configs.items()}
    names = dict(zip(cells.cell_id, cells.method, strict=True))
    # Tuned rows and rows stopped at a distillation budget are their own rows, marked by a suffix; within
    # each (method, suffix) group cells run with different parameters are named by them.
    suffix = {cid: (" (tuned)" if c.get("tuning") else "")
              + (f" ({budget.label})" if (budget := Budget.from_config(c)) is not None else "")
              + (" (accuracy-selected)" if selection_of(c) == "accuracy" else "")
              for cid, c in configs.items()}
    frame = cells.assign(_suffix=cells.cell_id.map(suffix))
    for (method, tail), group in frame.groupby(["method", "_suffix"]):
        varying: set[str] = set()
        for _, pool in group.groupby(POOLED, dropna=False):
            pooled = [params[cid] for cid in pool.cell_id]
            for key in set().union(*pooled):
                if len({json.dumps(c.get(key), sort_keys=True) for c in pooled}) > 1:
                    varying.add(key)
        defaults = _defaults(str(method)) if varying else None
        for cid in group.cell_id:
            plain = not varying or (defaults is not None
                                    and all(_same(params[cid].get(k), defaults.get(k)) for k in varying))
            label = "" if plain else f" ({', '.join(f'{k}={params[cid].get(k)}' for k in sorted(varying))})"
            names[cid] = f"{method}{label}{tail}"
    return names


def selection_of(config: dict) -> str | None:
    """The val score a stored cell chose its result by among several candidates, or None where it
    chose nothing. Cells stored before the selection metric existed chose by accuracy."""
    info = config.get("condensed_info") or {}
    candidates = info.get("candidates", 1)
    if not isinstance(candidates, int | float) or candidates <= 1:
        return None
    return str(config.get("selection_metric", "accuracy"))


@functools.cache
def old_behaviour(method: str) -> dict:
    """Fields of ``method``'s params that name the value of the behaviour before they existed."""
    try:
        params = get_method(method).params
    except MedbenchError:
        return {}
    if not dataclasses.is_dataclass(params):
        return {}
    return {f.name: f.metadata[SINCE_KEY] for f in dataclasses.fields(params) if SINCE_KEY in f.metadata}


def _same(a: object, b: object) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _defaults(method: str) -> dict | None:
    """The registered method's default parameters (None for a method not installed here)."""
    try:
        return json.loads(json.dumps(as_dict(get_method(method).make_params()), default=str))
    except MedbenchError:
        return None


def base_method(name: str) -> str:
    """The registered method of a :func:`method_variants` name: ``mtt (iterations=100)`` -> ``mtt``
    (of a merged row ``a = b``, the first's)."""
    return name.split(" = ", 1)[0].split(" (", 1)[0]


BASELINE_METHODS = ("random", "random_tiled", "random_soft")  # real subsets: the yardsticks, never "distilled"


def is_baseline(name: str) -> bool:
    """Whether a row is one of the random baselines (plain, val-chosen, tiled, soft-labelled): a
    yardstick, never counted as a distillation method."""
    return base_method(name) in BASELINE_METHODS


def model_scores(store: Store, *, split: str = "test") -> pd.DataFrame:
    """One row per done cell, evaluation network and metric of ``split`` with the cell's keys;
    ``method`` names the variant where one method was run with several parameter sets
    (:func:`method_variants`)."""
    cells = store.cells()
    cells = cells[cells.status == "done"].copy()
    cells["method"] = cells.cell_id.map(method_variants(cells))
    scores = store.scores(list(cells.cell_id))
    scores = scores[scores.split == split]
    keep = ["cell_id", "method", "dataset", "size", "ipc", "seed", "protocol_id", "compression_ratio",
            "condensed_images"]
    out = scores.merge(cells[keep], on="cell_id")
    out["size"] = out["size"].astype("Int64")
    out["ipc"] = out["ipc"].astype("Int64")
    return out


def metric_values(store: Store, metric: str = "accuracy", *, split: str = "test") -> pd.DataFrame:
    """The ``metric`` of every evaluation network of every done cell (NaN values dropped)."""
    frame = model_scores(store, split=split)
    frame = frame[frame.metric == metric].dropna(subset=["value"])
    return frame.reset_index(drop=True)


def protocols(store: Store) -> dict[str, dict]:
    """protocol_id -> the stored protocol dict (from any cell that used it)."""
    cells = store.cells()
    out: dict[str, dict] = {}
    for pid, config in zip(cells.protocol_id, cells.config, strict=True):
        if pid not in out:
            out[pid] = json.loads(config).get("protocol", {})
    return out


def protocol_name(protocol: dict) -> str:
    """The named protocol and what was changed from it: ``dsa (changed: width 32, epochs 300)``."""
    name = protocol.get("name") or "unnamed (stored before named protocols)"
    changed = changed_fields(protocol) if protocol.get("name") else {}
    return name + (f" (changed: {', '.join(f'{k} {v}' for k, v in changed.items())})" if changed else "")


def describe_protocol(protocol: dict, protocol_id: str) -> str:
    """One line naming every setting that changes the numbers, so a table never loses its context."""
    if not protocol:
        return f"protocol {protocol_id} (settings not stored)"
    depth = protocol.get("depth")
    parts = [
        f"named protocol {protocol_name(protocol)}",
        f"architecture {protocol.get('architecture', 'convnet-v1 (stored before versions)')}",
        f"model {protocol.get('model', '?')}",
        f"width {protocol.get('width', '?')}",
        f"depth {depth if depth is not None else 'auto (by resolution)'}",
        f"norm {protocol.get('norm', '?')}",
        f"epochs {protocol.get('epochs', '?')} (full data: {protocol.get('full_epochs', '?')})",
        f"lr {protocol.get('lr', '?')}" + (" or the method's learned lr" if protocol.get("use_learned_lr") else ""),
        f"batch {protocol.get('batch_size', '?')}",
        f"augmentation {protocol.get('augment', '?')}",
        f"{protocol.get('eval_models', '?')} eval models",
    ]
    return f"protocol {protocol_id}: " + ", ".join(parts)


def short_protocol(protocol: dict, protocol_id: str) -> str:
    """The protocol in one compact caption: enough to tell two tables' settings apart."""
    if not protocol:
        return f"protocol {protocol_id}"
    depth = protocol.get("depth")
    return (f"{protocol_name(protocol)} · {protocol.get('model', '?')} width {protocol.get('width', '?')} depth "
            f"{depth if depth is not None else 'auto'}"
            f" · {protocol.get('epochs', '?')} epochs (full {protocol.get('full_epochs', '?')})"
            f" · lr {protocol.get('lr', '?')} · aug {protocol.get('augment', '?')}"
            f" · {protocol.get('eval_models', '?')} eval models · protocol {protocol_id}")
