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

import yaml

from medbench.errors import MedbenchError

# Keys taken as they are (the others are parsed below: lists, paths, the protocol mapping).
PLAIN_KEYS = ("size", "download", "device", "retry_failed", "workers", "executor", "ray_address", "eval_batching",
              "eval_compile")
KEYS = {"methods", "datasets", "ipc", "seeds", "protocol", "eval", "data_root", "db", *PLAIN_KEYS}
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
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise MedbenchError(f"{path}: cannot read grid file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise MedbenchError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
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
            out["methods"] = tuple(methods)
            out["method_args"] = {k: dict(v or {}) for k, v in methods.items()}
        else:
            out["methods"] = tuple(str(m) for m in _as_list(methods, "methods", path))
    if "datasets" in raw:
        entries = []
        for entry in _as_list(raw["datasets"], "datasets", path):
            if isinstance(entry, dict):
                if "name" not in entry or set(entry) - {"name", "size"}:
                    raise MedbenchError(f"{path}: a dataset entry is a name or {{name: ..., size: ...}}")
                entries.append((_resolve(base, str(entry["name"])), entry.get("size")))
            else:
                entries.append((_resolve(base, str(entry)), None))
        out["datasets"] = tuple(entries)
    for key, target in (("ipc", "ipcs"), ("seeds", "seeds")):
        if key in raw:
            try:
                out[target] = tuple(int(v) for v in _as_list(raw[key], key, path))
            except (TypeError, ValueError):
                raise MedbenchError(f"{path}: {key} must be integers") from None
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
    for key in PLAIN_KEYS:
        if key in raw:
            out[key] = raw[key]
    return out
