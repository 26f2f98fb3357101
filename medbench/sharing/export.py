"""Export a stored cell's distilled set as a self-describing package, and verify one.

A package is a folder another site can check and train on without medbench's database:

- ``condensed.npz``: MedMNIST layout (uint8 ``train_images``, ``train_labels`` N×1) plus the exact
  ``images_float32``, the normalisation statistics, any learned lr, soft labels and ZCA transform;
- ``contact_sheet.png``: every image, one row per class, labelled with the class names;
- ``manifest.json``: where it came from (dataset and license), how it was made (method and every
  hyper-parameter), how well it did (scores and protocol), package versions, and the sha256 of
  every file. The manifest also hashes itself, so a changed byte anywhere is caught.

Checksums catch corruption and careless edits; they are not a signature (whoever can rewrite
the files can rewrite the manifest too).

The folder is written under a temporary name beside ``DIR`` and renamed into place, so a failed
export leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medbench.errors import DataError, MedbenchError
from medbench.sharing.figures import contact_sheet
from medbench.sharing.stored import StoredCell, class_names, open_store, resolve_cell
from medbench.storage.files import npz_arrays, sha256_file

PACKAGE_FORMAT = "medbench-package"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
NPZ = "condensed.npz"
SHEET = "contact_sheet.png"
SELF_HASH_KEY = "manifest_sha256"
_PLACEHOLDER = "0" * 64
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


def safe_member(root: Path, name: str) -> Path:
    """``root / name`` for a plain file name inside ``root``; rejects absolute names, ``..``, sub
    folders and symlinks (a manifest must not make verify read files elsewhere)."""
    candidate = Path(name)
    if candidate.is_absolute() or len(candidate.parts) != 1 or name in (".", ".."):
        raise MedbenchError(f"{name!r}: not a plain file name inside the package")
    path = root / name
    if path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
        raise MedbenchError(f"{name!r}: points outside the package")
    return path


# --- the manifest's own hash ------------------------------------------------------------------


def _self_hash_field(value: str) -> str:
    return f'"{SELF_HASH_KEY}": "{value}"'


def manifest_text(manifest: dict[str, Any]) -> str:
    """Serialise with the sha256 of the exact bytes written (computed over a zero placeholder)."""
    body = json.dumps({**manifest, SELF_HASH_KEY: _PLACEHOLDER}, indent=2, sort_keys=True, allow_nan=False)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return body.replace(_self_hash_field(_PLACEHOLDER), _self_hash_field(digest), 1)


def _check_self_hash(raw: str, manifest: dict[str, Any]) -> str | None:
    value = manifest.get(SELF_HASH_KEY)
    if not isinstance(value, str) or _self_hash_field(value) not in raw:
        return f"{MANIFEST}: its own checksum is missing"
    body = raw.replace(_self_hash_field(value), _self_hash_field(_PLACEHOLDER), 1)
    if hashlib.sha256(body.encode()).hexdigest() != value:
        return f"{MANIFEST}: content does not match its checksum (the manifest was changed)"
    return None


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


@dataclass
class Verification:
    """What ``verify`` found: an empty ``problems`` list means the package is intact."""

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_arrays(npz_path: Path, manifest: dict[str, Any]) -> list[str]:
    from medbench.data.npz import _images_nchw, _labels_flat

    problems: list[str] = []
    try:
        arrays = npz_arrays(npz_path)
        images = _images_nchw(npz_path, "train", arrays["train_images"])
        labels = _labels_flat(npz_path, "train", arrays["train_labels"], images.shape[0])
    except KeyError as exc:
        return [f"{NPZ}: missing array {exc}"]
    except MedbenchError as exc:
        return [str(exc)]
    ds = manifest.get("dataset", {})
    n, c, h, _ = images.shape
    if (c, h) != (ds.get("channels"), ds.get("size")):
        problems.append(f"{NPZ}: images are {c}×{h}×{h}, the manifest says {ds.get('channels')}×{ds.get('size')}"
                        f"×{ds.get('size')}")
    classes = int(ds.get("num_classes") or 0)
    if labels.min() < 0 or labels.max() >= classes:
        problems.append(f"{NPZ}: labels outside 0..{classes - 1}")
    if n != manifest.get("n_images"):
        problems.append(f"{NPZ}: {n} images, the manifest says {manifest.get('n_images')}")
    elif np.bincount(labels, minlength=classes).tolist() != manifest.get("class_counts"):
        problems.append(f"{NPZ}: images per class differ from the manifest")
    exact = arrays.get("images_float32")
    if exact is None or exact.dtype != np.float32 or exact.shape != (n, c, h, h):
        problems.append(f"{NPZ}: images_float32 missing or not float32 N×{c}×{h}×{h}")
    elif not np.isfinite(exact).all():
        problems.append(f"{NPZ}: images_float32 has non-finite values")
    for key in ("norm_mean", "norm_std"):
        if key not in arrays or arrays[key].shape != (c,):
            problems.append(f"{NPZ}: {key} missing or not one value per channel")
    if "norm_std" in arrays and (arrays["norm_std"] <= 0).any():
        problems.append(f"{NPZ}: norm_std must be positive")
    return problems


def verify_package(path: Path) -> Verification:
    """Check the manifest's own hash, every file's sha256 and size, that no file was added, and
    that the npz loads and passes the shape and label checks."""
    root = Path(path)
    result = Verification(root)
    if not root.is_dir():
        result.problems.append("not a folder")
        return result
    manifest_path = root / MANIFEST
    if not manifest_path.is_file() or manifest_path.is_symlink():
        result.problems.append(f"no {MANIFEST} (not a medbench package)")
        return result
    try:
        raw = manifest_path.read_bytes().decode("utf-8")
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        result.problems.append(f"{MANIFEST}: not valid JSON ({exc})")
        return result
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        result.problems.append(f"{MANIFEST}: not a {PACKAGE_FORMAT} manifest")
        return result
    result.manifest = manifest
    if (problem := _check_self_hash(raw, manifest)) is not None:
        result.problems.append(problem)
    files = manifest.get("files")
    if not isinstance(files, dict) or NPZ not in files:
        result.problems.append(f"{MANIFEST}: no file list with {NPZ}")
        return result
    for name, expected in sorted(files.items()):
        try:
            member = safe_member(root, name)
        except MedbenchError as exc:
            result.problems.append(str(exc))
            continue
        if not member.is_file():
            result.problems.append(f"{name}: missing")
        elif not isinstance(expected, dict) or member.stat().st_size != expected.get("bytes"):
            result.problems.append(f"{name}: size differs from the manifest (file changed)")
        elif sha256_file(member) != expected.get("sha256"):
            result.problems.append(f"{name}: sha256 differs from the manifest (file changed)")
    extra = sorted(p.name for p in root.iterdir() if p.name not in files and p.name != MANIFEST)
    if extra:
        result.problems.append(f"files not in the manifest: {', '.join(extra)}")
    if not result.problems:  # only parse an npz whose bytes are the ones the manifest vouches for
        result.problems.extend(_check_arrays(root / NPZ, manifest))
    return result


def require_valid(path: Path) -> Verification:
    """Verify or raise one line naming the first problem (for loaders)."""
    result = verify_package(path)
    if not result.ok:
        more = f" (and {len(result.problems) - 1} more)" if len(result.problems) > 1 else ""
        raise DataError(f"{path}: package does not verify: {result.problems[0]}{more}")
    return result
