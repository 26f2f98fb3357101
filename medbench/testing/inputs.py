"""Inputs a method needs before the kit can run it: a share package for ``package`` (random's set on
the kit's data, run and exported the way a sending site would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medbench.api import run
from medbench.data.splits import Splits
from medbench.sharing.export import export_cell
from medbench.testing.data import write_generated


def package_params(splits: Splits, workdir: Path) -> dict[str, Any]:
    """``{"path": DIR}``: a package exported from ``random``'s IPC-2 set of ``splits`` (seed 0)."""
    from medbench.testing.conformance import IPC  # the kit's IPC (its module imports this one lazily)

    workdir.mkdir(parents=True, exist_ok=True)
    data = write_generated(workdir / "sender" / f"{splits.name}.npz", splits)
    db = workdir / "sender" / "results.sqlite"
    rows = run(methods="random", datasets=str(data), ipc=IPC, seeds=0, db=db, data_root=workdir / "sender",
               device="cpu", matched_baselines=False, epochs=1, eval_models=1, width=8)
    return {"path": str(export_cell(db, str(rows.cell_id[0]), workdir / "package", force=True))}
