"""One row per stored cell: test metrics as mean ± std over the eval models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from tabulate import tabulate

from medbench.evaluation.metrics import METRICS
from medbench.storage.store import Store

SUMMARY_COLUMNS = ["dataset", "size", "method", "ipc", "seed", "status", "models",
                   *[f"test_{m}" for m in METRICS], *[f"test_{m}_std" for m in METRICS],
                   "val_accuracy", "eval_lr", "epochs", "distill_seconds", "eval_seconds",
                   "compression_ratio", "protocol_id", "message", "cell_id"]


def summarize(store: Store, cell_ids: list[str] | None = None) -> pd.DataFrame:
    cells = store.cells(cell_ids)
    scores = store.scores(cell_ids)
    if cells.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    per_model = _per_model(scores)
    grouped = per_model.groupby("cell_id")
    stats = pd.DataFrame({"models": grouped.size(), "eval_lr": grouped.lr.first(), "epochs": grouped.epochs.first(),
                          "val_accuracy": grouped["val_accuracy"].mean()})
    for metric in METRICS:
        column = f"test_{metric}"
        stats[column] = grouped[column].mean()
        stats[f"{column}_std"] = grouped[column].std(ddof=1)  # sample std over eval models
    out = cells.merge(stats, left_on="cell_id", right_index=True, how="left")
    out["ipc"] = out["ipc"].map(lambda v: "full" if pd.isna(v) else int(v)).astype(object)
    out["models"] = out["models"].fillna(0).astype(int)
    return out.reindex(columns=SUMMARY_COLUMNS).reset_index(drop=True)


def _per_model(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, eval model) with a column per split metric; every summary column present
    even when no cell has scores (a grid whose cells all failed)."""
    needed = ["cell_id", "model_index", "lr", "epochs", "val_accuracy", *[f"test_{m}" for m in METRICS]]
    if scores.empty:
        return pd.DataFrame(columns=needed)
    wide = scores.pivot_table(index=["cell_id", "model_index"], columns=["split", "metric"], values="value",
                              dropna=False)
    wide.columns = [f"{split}_{metric}" for split, metric in wide.columns]
    per_model = wide.reset_index().merge(
        scores.drop_duplicates(["cell_id", "model_index"])[["cell_id", "model_index", "lr", "epochs"]],
        on=["cell_id", "model_index"])
    return per_model.reindex(columns=list(dict.fromkeys([*per_model.columns, *needed])))


def _pm(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "—"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if not pd.isna(std) else f"{100 * mean:.1f}"


def display_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Human-readable columns: percentages as mean ± std over the eval models."""
    rows = []
    for _, r in summary.iterrows():
        rows.append({
            "dataset": r.dataset, "size": r["size"], "method": r.method, "ipc": r.ipc, "seed": r.seed,
            "models": r.models,
            "accuracy %": _pm(r.test_accuracy, r.test_accuracy_std) if r.status == "done" else r.status,
            "balanced acc %": _pm(r.test_balanced_accuracy, r.test_balanced_accuracy_std),
            "macro-F1 %": _pm(r.test_macro_f1, r.test_macro_f1_std),
            "AUC %": _pm(r.test_auc, r.test_auc_std),
            "val acc %": _pm(r.val_accuracy, np.nan),
            "distil s": None if pd.isna(r.distill_seconds) else round(r.distill_seconds, 1),
            "eval s": None if pd.isna(r.eval_seconds) else round(r.eval_seconds, 1),
            "protocol": r.protocol_id,
        })
    return pd.DataFrame(rows)


def format_summary(summary: pd.DataFrame, fmt: str = "table") -> str:
    if fmt == "csv":
        return summary.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(summary.to_json(orient="records")), indent=2)
    if summary.empty:
        return "no results"
    failed = summary[summary.status == "failed"]
    text = tabulate(display_frame(summary), headers="keys", tablefmt="github", showindex=False)
    for _, r in failed.iterrows():
        text += f"\nfailed: {r.method} · {r.dataset} · ipc {r.ipc} · seed {r.seed}: {r.message}"
    return text
