"""A grid is a list of independent cells: (method, dataset, size, IPC, seed) under one protocol."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from medbench.core import hparams
from medbench.core.errors import MedbenchError
from medbench.core.hparams import as_dict
from medbench.data.catalog import is_path_reference
from medbench.data.registry import DATASETS, DEFAULT_DATA_ROOT, MEDMNIST_SIZES
from medbench.distill.budget import Budget
from medbench.distill.contract import DEFAULT_SELECTION, SELECTION_METRICS, get_method
from medbench.evaluation import Protocol
from medbench.nn.batched import BATCHINGS, compile_options
from medbench.storage.store import DEFAULT_DB

MAX_SEED = 2**32 - 1


def digest(payload: Any) -> str:
    """A short, stable hash of JSON-able settings: cell and protocol identities."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    method: str
    dataset: str  # a registered name, or the absolute path of an npz file
    size: int | None  # None: the file's own size
    ipc: int | None  # None: the method ignores IPC
    seed: int
    params: dict[str, Any]  # the method's complete hyper-parameters, defaults included
    protocol: Protocol
    tuning: dict[str, Any] | None = None  # the stored tuning these params come from (``run --tuned``)
    budget: Budget | None = None  # what an iterative method may spend distilling (None: no limit)
    selection: str = DEFAULT_SELECTION  # the val score a selecting method chooses its candidates by
    added: str = field(default="", compare=False)  # not in the grid: added as this baseline (not identity)
    drop_duplicates: bool = False  # val/test without their exact copies of train (val) images: another dataset

    @property
    def protocol_id(self) -> str:
        return digest(self.protocol.identity())

    @property
    def selects(self) -> bool:
        """Whether this cell's method chooses among candidates on val (so the selection metric matters)."""
        return get_method(self.method).chooses(self.params)

    @property
    def cell_id(self) -> str:
        # A tuned cell is never the default cell, even where the search chose the default values.
        tuned = [self.tuning["tuning_id"]] if self.tuning else []
        budget = [{self.budget.key: self.budget.amount}] if self.budget is not None else []
        # Cells stored before the selection metric existed chose by accuracy: that value is left out, so
        # they keep their ids; a method that chooses nothing is the same cell under any metric.
        selection = [{"selection": self.selection}] if self.selection != "accuracy" and self.selects else []
        dropped = [{"drop_duplicates": True}] if self.drop_duplicates else []
        params = hparams.identity(get_method(self.method).params, self.params)
        return digest([self.method, self.dataset, self.size, self.ipc, self.seed, params,
                       self.protocol.identity(), *tuned, *budget, *selection, *dropped])

    @property
    def label(self) -> str:
        budget = f" · {self.budget.label}" if self.budget is not None else ""
        return f"{self.method} · {Path(self.dataset).stem} · ipc {self.ipc or 'full'} · seed {self.seed}{budget}"


@dataclass(frozen=True)
class GridSpec:
    """Everything one ``medbench run`` needs; the CLI and ``medbench.harness`` both build one."""

    methods: tuple[str, ...] = ("random",)
    # names or paths; an entry may carry its own size as (ref, size)
    datasets: tuple[str | tuple[str, int | None], ...] = ("bloodmnist",)
    ipcs: tuple[int, ...] = (1, 10, 50)
    seeds: tuple[int, ...] = (0, 1, 2)  # seeds are the unit of replication: one subset / distillation each
    size: int | None = None
    method_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: Protocol = field(default_factory=Protocol)
    data_root: Path = DEFAULT_DATA_ROOT
    download: bool = False
    db: Path = DEFAULT_DB
    device: str = "auto"
    retry_failed: bool = False
    executor: str = "local"  # local (in-process), process (a local pool) or ray
    workers: int = 1
    ray_address: str | None = None  # None: start a local Ray instance; "auto" or HOST:PORT to join one
    eval_batching: str = "auto"  # how the K eval networks are trained; same numbers, so not part of a cell
    eval_compile: str = "off"  # torch.compile / CUDA graphs for eval training (speed only, like eval_batching)
    memory_budget: float | None = None  # GiB a cell may plan for (speed only); None: the machine's default
    tuned: bool = False  # use the configurations `medbench tune` stored in ``db``
    # Distillation budgets (seconds, CPU seconds or FLOPs): every cell of an iterative method once per
    # budget, stopped there with its val-chosen checkpoint (equal-compute comparisons); () or (None,): none.
    budgets: tuple[Budget | float | None, ...] = (None,)  # a number: wall-clock seconds
    # The val score every selecting method (and tuning) chooses candidates by (SELECTION_METRICS).
    selection_metric: str = DEFAULT_SELECTION
    # Add each method's matched baseline (random choosing among as many subsets, the tiled random of a
    # tiled method, random_soft of a soft-label one) and plain random, where the grid lacks them.
    matched_baselines: bool = True
    # After its own cells, wait for the cells other processes on the database are computing (taking over
    # those whose process died); False: stop, and exit EXIT_UNFINISHED (3) naming how many are left.
    wait: bool = True
    # Remove from val the images that are also in train, and from test those in train or val (exact copies).
    drop_duplicates: bool = False


def _dataset_key(ref: str, size: int | None) -> str:
    """Check a dataset reference before any work starts; paths become absolute."""
    if ref in DATASETS or not is_path_reference(ref):
        source = DATASETS.get(ref)
        if source.unsupported:
            raise MedbenchError(f"{ref} is not supported: {source.unsupported}")
        if size is not None and source.sizes and size not in source.sizes:
            raise MedbenchError(f"{ref}: size {size} is not available; choose one of {source.sizes}")
        return ref
    path = Path(ref).expanduser().resolve()
    if (path / "manifest.json").is_file():
        raise MedbenchError(f"{ref} is a medbench share package (a training set only): evaluate it on your "
                            f"own dataset with --methods package --method-args package:path={ref}")
    if not (path.is_file() or path.is_dir()):
        raise MedbenchError(f"{ref}: no such dataset file or folder (and no registered dataset of that name)")
    return str(path)


def expand(spec: GridSpec) -> list[Cell]:
    """Validate the whole grid up front, then list its cells in a stable order."""
    if not spec.methods or not spec.datasets or not spec.seeds:
        raise MedbenchError("a grid needs at least one method, one dataset and one seed")
    if any(ipc < 1 for ipc in spec.ipcs):
        raise MedbenchError(f"IPC must be at least 1, got {', '.join(map(str, spec.ipcs))}")
    bad_seeds = [s for s in spec.seeds if not 0 <= s <= MAX_SEED]
    if bad_seeds:
        raise MedbenchError(f"seeds must lie in 0..{MAX_SEED} (2^32 − 1), got {', '.join(map(str, bad_seeds))}")
    sizes = {spec.size} | {e[1] for e in spec.datasets if isinstance(e, tuple)}
    if any(size is not None and size < 8 for size in sizes):
        raise MedbenchError(f"sizes {sorted(s for s in sizes if s)} include one below 8 px "
                            f"(MedMNIST sizes: {MEDMNIST_SIZES})")
    if spec.eval_batching not in BATCHINGS:
        raise MedbenchError(f"unknown eval batching {spec.eval_batching!r}; choose {', '.join(BATCHINGS)}")
    compile_options(spec.eval_compile)  # an unknown mode fails here, before any work
    if spec.executor not in ("local", "process", "ray"):
        raise MedbenchError(f"unknown executor {spec.executor!r}; choose local, process or ray")
    if spec.selection_metric not in SELECTION_METRICS:
        raise MedbenchError(f"unknown selection metric {spec.selection_metric!r}; "
                            f"choose {' or '.join(SELECTION_METRICS)}")
    if spec.workers < 1:
        raise MedbenchError(f"workers must be at least 1, got {spec.workers}")
    # A plain number is wall-clock seconds (the only kind before FLOP and CPU-time budgets).
    budgets = tuple(b if b is None or isinstance(b, Budget) else Budget("seconds", float(b)) for b in spec.budgets)
    stray = sorted(set(spec.method_args) - set(spec.methods))
    if stray:
        raise MedbenchError(f"method arguments given for {', '.join(stray)}, which is not in the grid")
    methods = {name: get_method(name) for name in spec.methods}
    params = {name: as_dict(m.make_params(spec.method_args.get(name))) for name, m in methods.items()}
    if any(m.uses_ipc for m in methods.values()) and not spec.ipcs:
        raise MedbenchError("no IPC given")
    entries = [entry if isinstance(entry, tuple) else (entry, spec.size) for entry in spec.datasets]
    datasets = [(_dataset_key(ref, size), size) for ref, size in entries]
    cells = []
    for dataset, size in datasets:
        for name, method in methods.items():
            # A method that does not iterate (random, coresets, full) has nothing to stop: one cell, no budget.
            method_budgets = (budgets or (None,)) if _iterates(method) else (None,)
            for ipc in spec.ipcs if method.uses_ipc else [None]:
                for budget in method_budgets:
                    for seed in spec.seeds:
                        cells.append(Cell(name, dataset, size, ipc, seed, params[name], spec.protocol,
                                          budget=budget, selection=spec.selection_metric,
                                          drop_duplicates=spec.drop_duplicates))
    cells = _with_tuning(cells, Path(spec.db)) if spec.tuned else cells
    return with_baselines(cells) if spec.matched_baselines else cells


def matched_baseline(cell: Cell) -> Cell | None:
    """The cell of ``cell``'s matched baseline (its method's ``matched`` declaration): same dataset,
    size, IPC, seed, protocol and selection metric; None where the method declares none."""
    found = get_method(cell.method).baseline(cell.params) if cell.ipc is not None else None
    if found is None:
        return None
    name, values = found
    params = as_dict(get_method(name).make_params(values))
    return Cell(name, cell.dataset, cell.size, cell.ipc, cell.seed, params, cell.protocol, selection=cell.selection,
                added=_describe(name, params), drop_duplicates=cell.drop_duplicates)


def with_baselines(cells: list[Cell]) -> list[Cell]:
    """``cells`` plus, where missing, plain ``random`` beside every other method that uses IPC and
    each cell's matched baseline (:func:`matched_baseline`), so every gain is reported against the
    baseline that had the same chances. A baseline goes just before the first cell that needs it;
    an added cell says so in ``added`` (what :func:`added_baselines` names)."""
    present = {c.cell_id for c in cells}
    out: dict[str, Cell] = {}
    for cell in cells:
        if cell.ipc is not None and cell.method != "random":
            plain = Cell("random", cell.dataset, cell.size, cell.ipc, cell.seed,
                         as_dict(get_method("random").make_params()), cell.protocol, selection=cell.selection,
                         added="random", drop_duplicates=cell.drop_duplicates)
            for extra in (plain, matched_baseline(cell)):
                if extra is not None and extra.cell_id not in present:
                    out.setdefault(extra.cell_id, extra)
        out.setdefault(cell.cell_id, cell)
    return list(out.values())


def added_baselines(cells: list[Cell]) -> str:
    """One line naming the baselines :func:`with_baselines` added ("" where none)."""
    names = list(dict.fromkeys(c.added for c in cells if c.added))
    return f"medbench: adding matched baselines: {'; '.join(names)}" if names else ""


def _describe(method: str, params: dict[str, Any]) -> str:
    changed = {k: v for k, v in params.items() if v != _default(method, k)}
    return method + (f" ({', '.join(f'{k}={v}' for k, v in sorted(changed.items()))})" if changed else "")


def _default(method: str, key: str) -> Any:
    return as_dict(get_method(method).make_params()).get(key)


def _iterates(method: Any) -> bool:
    """Whether a method distils in iterations (and so honours a distillation budget)."""
    return any(f.name == "iterations" for f in fields(method.params)) if is_dataclass(method.params) else False


def _with_tuning(cells: list[Cell], db: Path) -> list[Cell]:
    """Cells with the configuration ``medbench tune`` chose for their method, dataset, size and IPC
    (merged over the grid's parameters); one line per key that has none."""
    from medbench.storage.tuning import TuningRecords, cell_key

    records = TuningRecords(db, readonly=True) if db.is_file() and db.stat().st_size else None
    out, missing, mismatched = [], {}, {}
    for cell in cells:
        model = cell.protocol.model_spec()
        key = cell_key(cell.method, cell.dataset, cell.size, cell.ipc, [model.name, model.options])
        chosen = records.chosen(key) if records is not None and cell.ipc is not None else None
        if chosen is None:
            missing.setdefault((cell.method, Path(cell.dataset).name, cell.ipc), None)
            out.append(cell)
            continue
        if chosen.get("objective") != cell.selection:
            mismatched.setdefault((cell.method, Path(cell.dataset).name, cell.ipc, chosen.get("objective")), None)
        params = as_dict(get_method(cell.method).make_params({**cell.params, **chosen["config"]}))
        out.append(replace(cell, params=params, tuning={k: chosen[k] for k in
                                                        ("tuning_id", "config", "objective", "value", "rescored",
                                                         "budget")}))
    for method, dataset, ipc in missing:
        print(f"medbench: no tuned configuration for {method} · {dataset} · ipc {ipc} in {db}; "
              f"using its parameters as given", file=sys.stderr)
    for method, dataset, ipc, objective in mismatched:
        print(f"medbench: the tuned configuration for {method} · {dataset} · ipc {ipc} was searched by val "
              f"{objective}; this run selects by {cells[0].selection}", file=sys.stderr)
    return out
