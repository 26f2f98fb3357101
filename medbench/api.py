"""The Python API, mirroring ``medbench run`` and ``medbench results``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medbench.data.registry import DEFAULT_DATA_ROOT
from medbench.distill.contract import DEFAULT_SELECTION
from medbench.evaluation.named import DEFAULT_PROTOCOL, named_protocol
from medbench.harness.grid import GridSpec
from medbench.harness.runner import run_grid
from medbench.storage.store import DEFAULT_DB, Store
from medbench.storage.summary import summarize


def _seq(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def run(
    methods: str | Sequence[str] = ("random",),
    datasets: str | Sequence[str] = ("bloodmnist",),
    ipc: int | Sequence[int] = (1, 10, 50),
    seeds: int | Sequence[int] = (0, 1, 2),
    *,
    size: int | None = None,
    method_args: Mapping[str, Mapping[str, Any]] | None = None,
    data_root: str | Path = DEFAULT_DATA_ROOT,
    download: bool = False,
    db: str | Path = DEFAULT_DB,
    device: str = "auto",
    retry_failed: bool = False,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    eval_batching: str = "auto",
    eval_compile: str = "off",
    progress: bool = False,
    protocol: str = DEFAULT_PROTOCOL,
    selection_metric: str = DEFAULT_SELECTION,
    matched_baselines: bool = True,
    **settings: Any,
) -> pd.DataFrame:
    """Run a grid and return one row per cell (metrics as mean and std over the eval models).

    ``protocol`` names the evaluation protocol (``medbench protocols``); ``settings`` override any
    of its fields (:class:`medbench.evaluation.Protocol`), e.g. ``eval_models=5, epochs=300``.
    ``selection_metric``: the val score methods choose their checkpoints by; ``matched_baselines``:
    add each method's matched baseline and plain random (``--no-matched-baselines`` turns it off).
    Cells already in ``db`` are not run again.
    """
    spec = GridSpec(
        methods=_seq(methods), datasets=_seq(datasets), ipcs=_seq(ipc), seeds=_seq(seeds), size=size,
        method_args={k: dict(v) for k, v in (method_args or {}).items()},
        protocol=named_protocol(protocol, settings),
        data_root=Path(data_root).expanduser(), download=download, db=Path(db), device=device,
        retry_failed=retry_failed, executor=executor, workers=workers, ray_address=ray_address,
        eval_batching=eval_batching, eval_compile=eval_compile, selection_metric=selection_metric,
        matched_baselines=matched_baselines,
    )
    return run_grid(spec, progress=progress)


def results(db: str | Path = DEFAULT_DB) -> pd.DataFrame:
    """Every stored cell of ``db``."""
    with Store(db, readonly=True) as store:
        return summarize(store)
