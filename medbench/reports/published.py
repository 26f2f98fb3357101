"""Published numbers next to ours.

A reference file (``<preset>.reference.yaml`` shipped beside a preset, or any file of the same
shape) holds a paper's accuracies per method and IPC and the settings it used. ``medbench report
--reference`` turns it into two tables per protocol and dataset: the paper's number and ours row
by row, and the paper's settings next to the ones stored with our results, so every difference
in data and setting is spelled out rather than left for the reader to find.

```yaml
preset: covid19-mtt
dataset: covid19_radiography
metric: test_accuracy_percent
accuracy:            # method -> {IPC: %}, or method -> % for a method without IPC (full)
  mtt: {1: 52.5, 10: 82.2}
  full: 88.9
settings:            # stored: where a medbench result keeps the same setting (config JSON path; a+b adds)
  - {label: classes, stored: dataset.num_classes, paper: 4}
  - {label: expert trajectories, stored: params.num_experts, method: mtt, paper: 100}
  - {label: original image size (px), paper: 299}
notes: [free text shown under the tables]
```
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medbench.analysis.frames import base_method
from medbench.core.errors import MedbenchError
from medbench.harness.gridfile import PRESET_PACKAGE
from medbench.reports.tables import Table, method_order, pm

SUFFIX = ".reference.yaml"


@dataclass(frozen=True)
class Setting:
    label: str
    paper: Any
    stored: str | None = None  # dotted path into a cell's stored config, e.g. "protocol.width"
    method: str | None = None  # read from this method's cells (method parameters differ by method)


@dataclass(frozen=True)
class Reference:
    source: str
    dataset: str
    accuracy: dict[str, dict[int | None, float]]  # method -> IPC (None: no IPC, e.g. full) -> %
    settings: list[Setting] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def available() -> list[str]:
    """Names of the presets that ship published numbers."""
    folder = resources.files(PRESET_PACKAGE)
    return sorted(p.name[: -len(SUFFIX)] for p in folder.iterdir() if p.name.endswith(SUFFIX))


def load_reference(spec: str | Path) -> Reference:
    """A preset name with a shipped reference file, or the path of a reference file."""
    path = Path(spec).expanduser()
    if not path.is_file():
        if str(spec) not in available():
            raise MedbenchError(f"--reference {spec}: neither a file nor a preset with published numbers; "
                                f"presets with them: {', '.join(available()) or 'none'}")
        path = Path(str(resources.files(PRESET_PACKAGE) / f"{spec}{SUFFIX}"))
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MedbenchError(f"{path}: cannot read the reference file ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("accuracy"), dict):
        raise MedbenchError(f"{path}: a reference file needs an 'accuracy' mapping of method -> numbers")
    accuracy: dict[str, dict[int | None, float]] = {}
    try:
        for method, numbers in raw["accuracy"].items():
            if isinstance(numbers, dict):
                accuracy[str(method)] = {int(ipc): float(v) for ipc, v in numbers.items()}
            else:
                accuracy[str(method)] = {None: float(numbers)}
        settings = [Setting(**entry) for entry in raw.get("settings") or []]
    except (TypeError, ValueError) as exc:
        raise MedbenchError(f"{path}: malformed reference file ({exc})") from None
    return Reference(str(path), str(raw.get("dataset", "")), accuracy, settings,
                     [str(n) for n in raw.get("notes") or []])


def _stored(config: dict, path: str) -> Any:
    """The value at a dotted ``path``; ``a.b+a.c`` adds numbers (None when any part is missing)."""
    if "+" in path:
        parts = [_stored(config, p.strip()) for p in path.split("+")]
        return None if any(not isinstance(v, int | float) for v in parts) else sum(parts)
    value: Any = config
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def comparison_table(agg: pd.DataFrame, ref: Reference, dataset: str, size: object) -> Table:
    """One row per method and IPC of ours or the paper's: the paper's %, ours (mean ± std) and Δ.

    ``agg`` is :func:`medbench.reports.tables.aggregate` output for one protocol."""
    mine = agg[(agg.dataset == dataset) & ((agg["size"] == size) if not pd.isna(size) else agg["size"].isna())]
    stats = {(r.method, None if pd.isna(r.ipc) else int(r.ipc), r.metric): r for r in mine.itertuples()}
    ours = {(m, i) for (m, i, _) in stats}
    # The paper's number stands beside each of our variants of its method (mtt (iterations=100)...),
    # and in a row of its own only where we have none.
    covered = {(base_method(m), i) for m, i in ours}
    keys = ours | {(m, i) for m, per in ref.accuracy.items() for i in per if (m, i) not in covered}
    methods = method_order(sorted({m for m, _ in keys}))
    rows = []
    for ipc in sorted({i for _, i in keys}, key=lambda i: math.inf if i is None else i):
        for method in methods:
            if (method, ipc) not in keys:
                continue
            paper = ref.accuracy.get(base_method(method), {}).get(ipc)
            acc = stats.get((method, ipc, "accuracy"))
            bal = stats.get((method, ipc, "balanced_accuracy"))
            delta = "—" if paper is None or acc is None else f"{100 * acc.mean - paper:+.1f}"
            rows.append({"method": method, "IPC": "full" if ipc is None else str(ipc),
                         "paper accuracy %": "—" if paper is None else f"{paper:.1f}",
                         "ours accuracy %": pm(acc.mean, acc.std) if acc is not None else "not run",
                         "ours balanced acc %": pm(bal.mean, bal.std) if bal is not None else "—",
                         "Δ accuracy (pp)": delta,
                         "networks": str(int(acc.count)) if acc is not None else "—"})
    title = f"{dataset}" + ("" if pd.isna(size) else f" · {int(size)} px") + " next to the published numbers"
    table = Table(title, ["method", "IPC", "paper accuracy %", "ours accuracy %", "ours balanced acc %",
                          "Δ accuracy (pp)", "networks"], rows)
    table.notes.append(f"paper: {ref.dataset or 'unnamed dataset'} ({Path(ref.source).name}); "
                       f"ours: {dataset}")
    if ref.dataset and ref.dataset != dataset:
        table.notes.append(f"Different data: the paper's numbers are on {ref.dataset}, ours on {dataset}; "
                           "compare the shape of the curves, not the levels.")
    return table


def settings_table(cells: pd.DataFrame, ref: Reference, dataset: str) -> Table:
    """The paper's settings next to the values stored with our cells of ``dataset``."""
    mine = cells[(cells.dataset == dataset) & (cells.status == "done")]
    configs = {m: [json.loads(c) for c in group.config] for m, group in mine.groupby("method")}
    every = [c for group in configs.values() for c in group]
    rows = []
    for s in ref.settings:
        if s.stored is None:
            ours = "not stored"
        else:
            pool = configs.get(s.method, []) if s.method else every
            values = sorted({_show(_stored(c, s.stored)) for c in pool})
            ours = ", ".join(values) if values else f"no {s.method} cells" if s.method else "—"
        same = "" if s.stored is None or ours != _show(s.paper) else "same"
        rows.append({"setting": s.label, "paper": _show(s.paper), "ours": ours, "": same})
    table = Table(f"{dataset}: settings, paper vs ours", ["setting", "paper", "ours", ""], rows)
    table.notes.append("ours: as stored with the results (config JSON of each cell)")
    table.notes.extend(ref.notes)
    return table
