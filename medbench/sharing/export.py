"""Export a stored cell's distilled set as a self-describing package (its format and verification:
:mod:`medbench.data.package`).

The folder is written under a temporary name beside ``DIR`` and renamed into place, so a failed
export leaves nothing half-written.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medbench.core.errors import MedbenchError
from medbench.core.files import npz_arrays, sha256_file
from medbench.data.package import (
    FORMAT_VERSION,
    MANIFEST,
    NPZ,
    PACKAGE_FORMAT,
    SHEET,
    manifest_text,
    verify_package,
)
from medbench.sharing.figures import contact_sheet
from medbench.storage.stored import StoredCell, class_names, open_store, resolve_cell

# Extras a receiver needs to train on the images; anything else (e.g. the indices of the real
# training images a random subset drew) stays with the source site.
TRANSFORM_EXTRAS = ("extra_zca_mean", "extra_zca_matrix")


# --- paths ------------------------------------------------------------------------------------


def check_out_dir(out: Path, force: bool) -> Path:
    """The absolute output folder, refusing ``..`` parts, a symlink, a file, or (without
    ``force``) a non-empty existing folder."""
    out = Path(out).expanduser()
    if ".." in out.parts:
        raise MedbenchError(f"{out}: output path must not contain '..'")
    if out.is_symlink():
        raise MedbenchError(f"{out}: output path is a symbolic link; give the real folder")
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise MedbenchError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MedbenchError(f"{out}: folder exists and is not empty; add --force to replace it")
    return out




# --- the manifest's own hash ------------------------------------------------------------------








# --- export -----------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """JSON without NaN: undefined scores (AUC on one class) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def evaluation_summary(store: Any, cell: StoredCell) -> dict[str, Any]:
    """Per-network scores of the cell plus their mean and sample std, with the protocol."""
    scores = store.scores([cell.cell_id])
    models = []
    for (index, seed, lr, epochs), group in scores.groupby(["model_index", "model_seed", "lr", "epochs"]):
        entry: dict[str, Any] = {"index": int(index), "seed": int(seed), "lr": float(lr), "epochs": int(epochs)}
        for split, part in group.groupby("split"):
            entry[str(split)] = {str(m): (None if v is None or np.isnan(v) else float(v))
                                 for m, v in zip(part.metric, part.value, strict=True)}
        models.append(entry)
    summary: dict[str, dict[str, float | None]] = {}
    for split in ("val", "test"):
        part = scores[scores.split == split]
        for metric, values in part.groupby("metric").value:
            vals = values.dropna().to_numpy(dtype=float)
            summary.setdefault(f"{split}_mean", {})[str(metric)] = float(vals.mean()) if len(vals) else None
            summary.setdefault(f"{split}_std", {})[str(metric)] = float(vals.std(ddof=1)) if len(vals) > 1 else None
    return {"protocol": cell.config.get("protocol"), "protocol_id": str(cell.row.protocol_id),
            "models": models, **summary}


def _package_arrays(source: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keep = ["train_images", "train_labels", "images_float32", "norm_mean", "norm_std", "soft_labels",
            "learned_lr", *TRANSFORM_EXTRAS]
    return {k: source[k] for k in keep if k in source}


def _versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    from medbench.storage.provenance import PACKAGES

    out: dict[str, Any] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def build_manifest(cell: StoredCell, arrays: dict[str, np.ndarray], source: dict[str, np.ndarray],
                   evaluation: dict[str, Any]) -> dict[str, Any]:
    facts = cell.dataset_facts
    labels = arrays["train_labels"].reshape(-1)
    n_classes = int(facts.get("num_classes") or labels.max() + 1)
    counts = np.bincount(labels.astype(np.int64), minlength=n_classes).tolist()
    real_copies = "extra_train_indices" in source
    row = cell.row
    dataset_ref = str(cell.config.get("dataset_ref", facts.get("name")))
    return _finite({
        "format": PACKAGE_FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source_cell": {"cell_id": cell.cell_id, "protocol_id": str(row.protocol_id),
                        "stored_at": str(row.created_at)},
        "dataset": {
            "name": facts.get("name"),
            # a local path says nothing to the receiver and leaks the source's file layout
            "ref": dataset_ref if "/" not in dataset_ref else Path(dataset_ref).name,
            "license": facts.get("license"),
            "class_names": class_names(facts),
            "num_classes": n_classes,
            "channels": facts.get("channels"),
            "size": facts.get("size"),
            "splits": {k: facts.get(f"n_{k}") for k in ("train", "val", "test")},
            "medmnist_flag": facts.get("medmnist_flag"),
            "task": facts.get("task"),
        },
        "method": {"name": str(row.method), "params": cell.config.get("params", {}),
                   "info": cell.config.get("condensed_info", {})},
        "ipc": None if row.ipc is None or (isinstance(row.ipc, float) and math.isnan(row.ipc)) else int(row.ipc),
        "seed": int(row.seed),
        "n_images": len(labels),
        "class_counts": counts,
        "labels": "soft" if "soft_labels" in arrays else "hard",
        "compression_ratio": float(row.compression_ratio),
        "condensed_bytes": int(row.condensed_bytes),
        "learned_lr": float(arrays["learned_lr"]) if "learned_lr" in arrays else None,
        "transforms": {
            "normalisation": {"mean": arrays["norm_mean"].tolist(), "std": arrays["norm_std"].tolist(),
                              "definition": "images_float32 = (train_images / 255 - mean) / std, per channel"},
            "zca": "extra_zca_matrix" in arrays,
        },
        "privacy": {
            "contains_real_images": real_copies,
            "note": (f"these {len(labels)} images ARE real training images of {facts.get('name')}, "
                     "copied unchanged (random selection); share them only where the patients' "
                     "images themselves may be shared") if real_copies else
                    "synthetic images produced by the method; run `medbench audit` at the source site "
                    "to check them for near-copies of real images before sharing",
        },
        "evaluation": evaluation,
        "environment": {"stored_with_cell": cell.environment, "exported_with": _versions()},
        "usage": "train on train_images/train_labels (or images_float32) and evaluate on your own "
                 "val/test: medbench run --methods package --method-args package:path=THIS_DIR "
                 f"--ipc {'' if row.ipc is None else int(row.ipc)} --datasets YOUR_DATASET",
    })


def _write_package(tmp: Path, cell: StoredCell, store: Any) -> None:
    source = npz_arrays(cell.require_condensed())
    arrays = _package_arrays(source)
    with open(tmp / NPZ, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    facts = cell.dataset_facts
    contact_sheet(arrays["train_images"], arrays["train_labels"], class_names(facts), tmp / SHEET,
                  title=f"{cell.row.method} · {facts.get('name')} · IPC {cell.row.ipc} · seed {cell.row.seed}")
    manifest = build_manifest(cell, arrays, source, evaluation_summary(store, cell))
    manifest["files"] = {name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                         for name in (NPZ, SHEET)}
    (tmp / MANIFEST).write_text(manifest_text(manifest))


def export_cell(db: Path, cell_ref: str, out: Path, *, force: bool = False) -> Path:
    """Write the package of cell ``cell_ref`` (id or unique prefix) into folder ``out``."""
    out = check_out_dir(out, force)
    with open_store(db) as store:
        cell = resolve_cell(store, cell_ref)
        cell.require_condensed()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; a package is meant to be read by others
            _write_package(tmp, cell, store)
            problems = verify_package(tmp).problems
            if problems:  # never hand out a package that does not verify
                raise MedbenchError(f"export of {cell.cell_id[:12]} failed its own check: {problems[0]}")
            if out.exists():
                old = out.with_name(f".{out.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


# --- verify -----------------------------------------------------------------------------------








