"""A share package's format (``medbench export`` writes it, another site reads it): the file names,
the manifest's own checksum, and verification of every file, checksum and array before anything in a
package is used.

A package is a folder another site can check and train on without medbench's database:

- ``condensed.npz``: MedMNIST layout (uint8 ``train_images``, ``train_labels`` N×1) plus the exact
  ``images_float32``, the normalisation statistics, any learned lr, soft labels and ZCA transform;
- ``contact_sheet.png``: every image, one row per class, labelled with the class names;
- ``manifest.json``: where it came from (dataset and license), how it was made (method and every
  hyper-parameter), how well it did (scores and protocol), package versions, and the sha256 of
  every file. The manifest also hashes itself, so a changed byte anywhere is caught.

Checksums catch corruption and careless edits; they are not a signature (whoever can rewrite
the files can rewrite the manifest too).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medbench.core.errors import DataError, MedbenchError
from medbench.core.files import npz_arrays, sha256_file

PACKAGE_FORMAT = "medbench-package"


FORMAT_VERSION = 1


MANIFEST = "manifest.json"


NPZ = "condensed.npz"


SHEET = "contact_sheet.png"


SELF_HASH_KEY = "manifest_sha256"


_PLACEHOLDER = "0" * 64


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
