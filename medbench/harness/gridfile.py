"""Grid files: a YAML description of a whole benchmark, and named presets shipped with medbench.

```yaml
methods:            # a list of names, or a mapping name -> hyper-parameters
  random: {}
  dc: {iterations: 200}
datasets:           # names, npz paths, folders, or {name: ..., size: ...}
  - bloodmnist
  - {name: covid19_radiography, size: 64}
ipc: [1, 10]
seeds: [0, 1]
size: 28            # default for datasets without their own size
protocol: dsa       # a named evaluation protocol (medbench protocols); default dsa
eval:               # any field of medbench.evaluation.Protocol, overriding the named protocol
  eval_models: 5
data_root: ~/.medmnist
db: results/medbench.sqlite
device: auto
```

Relative paths in a file are relative to the file's folder, so a grid runs the same from
anywhere; options given on the command line override the file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from medbench.core.errors import MedbenchError
from medbench.core.files import read_yaml
from medbench.distill.budget import KINDS, NAMES, Budget

# Keys taken as they are, with their type (the others are parsed below: lists, paths, the protocol).
PLAIN_TYPES: dict[str, type] = {"size": int, "download": bool, "device": str, "retry_failed": bool, "workers": int,
                                "executor": str, "ray_address": str, "eval_batching": str, "eval_compile": str,
                                "tuned": bool, "selection_metric": str, "matched_baselines": bool, "wait": bool,
                                "drop_duplicates": bool}
KEYS = {"methods", "datasets", "ipc", "seeds", *(f"budget_{kind}" for kind in KINDS), "protocol", "eval", "data_root",
        "db", *PLAIN_TYPES}
PRESET_PACKAGE = "medbench.presets"


def list_presets() -> list[str]:
    folder = resources.files(PRESET_PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir()
                  if p.name.endswith(".yaml") and not p.name.endswith(".reference.yaml"))


def preset_path(name: str) -> Path:
    path = Path(str(resources.files(PRESET_PACKAGE) / f"{name}.yaml"))
    if name not in list_presets():
        raise MedbenchError(f"unknown preset {name!r}; available: {', '.join(list_presets()) or 'none'}")
    return path


def _typed(value: Any, kind: type, key: str, path: Path) -> Any:
    """``value`` if it is a ``kind`` (a bool is not an int, and "no" is not a bool)."""
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise MedbenchError(f"{path}: {key} must be {'true or false' if kind is bool else f'a {kind.__name__}'}, "
                        f"got {value!r}")


def _integers(value: Any, key: str, path: Path) -> tuple[int, ...]:
    items = _as_list(value, key, path)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise MedbenchError(f"{path}: {key} must be integers, got {value!r}")
    return tuple(items)


def _as_list(value: Any, key: str, path: Path) -> list:
    if isinstance(value, (str, int, dict)):
        return [value]
    if isinstance(value, list):
        return value
    raise MedbenchError(f"{path}: {key} must be a list, got {type(value).__name__}")


def _resolve(base: Path, value: str, *, is_path: bool = False) -> str:
    """Paths are made relative to ``base``; a dataset entry is a path if it has a slash or ends
    in .npz, and otherwise a registered name."""
    expanded = Path(value).expanduser()
    if expanded.is_absolute() or not (is_path or "/" in value or value.endswith(".npz")):
        return str(expanded)
    return str((base / expanded).resolve())


def read_grid_file(path: Path) -> dict[str, Any]:
    """Parse a grid file into keyword arguments for :class:`~medbench.harness.grid.GridSpec`."""
    raw = read_yaml(path, "grid file")
    if not isinstance(raw, dict):
        raise MedbenchError(f"{path}: a grid file is a mapping with keys {', '.join(sorted(KEYS))}")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise MedbenchError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}")
    base = path.resolve().parent
    out: dict[str, Any] = {}
    if "methods" in raw:
        methods = raw["methods"]
        if isinstance(methods, dict):
            bad = sorted(str(k) for k, v in methods.items() if v is not None and not isinstance(v, dict))
            if bad:
                raise MedbenchError(f"{path}: the settings of method {bad[0]} must be a mapping "
                                    f"{{setting: value}}, got {methods[bad[0]]!r}")
            out["methods"] = tuple(str(k) for k in methods)
            out["method_args"] = {str(k): dict(v or {}) for k, v in methods.items()}
        else:
            names = _as_list(methods, "methods", path)
            if not all(isinstance(m, str) for m in names):
                raise MedbenchError(f"{path}: methods must be names, or a mapping of name to settings")
            out["methods"] = tuple(names)
    if "datasets" in raw:
        entries = []
        for entry in _as_list(raw["datasets"], "datasets", path):
            if isinstance(entry, dict):
                if "name" not in entry or set(entry) - {"name", "size"}:
                    raise MedbenchError(f"{path}: a dataset entry is a name or {{name: ..., size: ...}}")
                size = entry.get("size")
                if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
                    raise MedbenchError(f"{path}: dataset {entry['name']}: size must be a whole number of pixels, "
                                        f"got {size!r}")
                entries.append((_resolve(base, str(entry["name"])), entry.get("size")))
            else:
                entries.append((_resolve(base, str(entry)), None))
        out["datasets"] = tuple(entries)
    for key, target in (("ipc", "ipcs"), ("seeds", "seeds")):
        if key in raw:
            out[target] = _integers(raw[key], key, path)
    budgets = []
    for kind in KINDS:
        key = f"budget_{kind}"
        if key in raw:
            values = _as_list(raw[key], key, path)
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                raise MedbenchError(f"{path}: {key} must be numbers of {NAMES[kind]}, got {raw[key]!r}")
            budgets += [Budget(kind, float(v)) for v in values]
    if budgets:
        out["budgets"] = tuple(budgets)
    if "eval" in raw:
        if not isinstance(raw["eval"], dict):
            raise MedbenchError(f"{path}: eval must be a mapping of protocol settings")
        out["eval"] = dict(raw["eval"])
    if "protocol" in raw:
        if not isinstance(raw["protocol"], str):
            raise MedbenchError(f"{path}: protocol must be the name of an evaluation protocol, e.g. dsa or dc")
        out["protocol_name"] = raw["protocol"]
    for key in ("data_root", "db"):
        if key in raw:
            out[key] = Path(_resolve(base, str(raw[key]), is_path=True))
    for key, kind in PLAIN_TYPES.items():
        if key in raw and not (key in ("size", "ray_address") and raw[key] is None):
            out[key] = _typed(raw[key], kind, key, path)
    return out
