"""Finding a stored cell by id prefix and its condensed file: shared by export, audit, crossarch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medbench.core.errors import MedbenchError
from medbench.storage.condensed_io import locate_condensed
from medbench.storage.store import Store


@dataclass(frozen=True)
class StoredCell:
    """One done cell read back from the store, with its JSON columns decoded."""

    row: pd.Series
    config: dict[str, Any]
    environment: dict[str, Any]
    condensed_path: Path | None

    @property
    def cell_id(self) -> str:
        return str(self.row.cell_id)

    @property
    def dataset_facts(self) -> dict[str, Any]:
        return dict(self.config.get("dataset") or {})

    def require_condensed(self) -> Path:
        if self.condensed_path is None:
            raise MedbenchError(f"cell {self.cell_id[:12]} ({self.row.method}) has no condensed set on disk "
                                "(the full training set is never copied)")
        return self.condensed_path


def open_store(db: Path, *, readonly: bool = True) -> Store:
    """Open an existing results database (never create an empty one by mistake)."""
    if not Path(db).is_file():  # never create an empty database by mistake, even to write into
        raise MedbenchError(f"{db}: no results database here (run `medbench run` first or pass --db)")
    return Store(db, readonly=readonly)


def _condensed_file(db: Path, row: pd.Series) -> Path | None:
    """The stored path, or the same file name beside the database (the db folder was moved)."""
    if row.condensed_path is None or pd.isna(row.condensed_path):
        return None
    found = locate_condensed(str(row.condensed_path), db)
    if found is None:
        raise MedbenchError(f"cell {row.cell_id[:12]}: condensed file {row.condensed_path} is missing")
    return found


def stored_cell(store: Store, row: pd.Series) -> StoredCell:
    return StoredCell(row, json.loads(row.config), json.loads(row.environment), _condensed_file(store.path, row))


def resolve_cell(store: Store, prefix: str) -> StoredCell:
    """A done cell by its id or a unique prefix of it."""
    if not prefix:
        raise MedbenchError("give a cell id (or a unique prefix of one); `medbench results` lists them")
    cells = store.cells()
    matches = cells[cells.cell_id.str.startswith(prefix)]
    if matches.empty:
        raise MedbenchError(f"no cell id starts with {prefix!r} in {store.path}")
    if len(matches) > 1:
        raise MedbenchError(f"{prefix!r} matches {len(matches)} cells ({', '.join(matches.cell_id.str[:12])}); "
                            "give more of the id")
    row = matches.iloc[0]
    if row.status != "done":
        raise MedbenchError(f"cell {row.cell_id[:12]} is {row.status}, not done: {row.message}")
    return stored_cell(store, row)


def class_names(facts: dict[str, Any]) -> list[str]:
    """Class names of a stored dataset: MedMNIST's own labels, else ``class i``."""
    n = int(facts.get("num_classes") or 0)
    flag = facts.get("medmnist_flag")
    if flag:
        from medmnist.info import INFO

        labels = INFO.get(flag, {}).get("label", {})
        if len(labels) == n:
            return [str(labels[str(i)]) for i in range(n)]
    return [f"class {i}" for i in range(n)]


def load_cell_splits(cell: StoredCell, data_root: Path, device: Any = "cpu") -> Any:
    """The dataset a cell was made from (its stored reference and size under ``data_root``),
    refusing data whose training statistics differ from the stored ones (a different file)."""
    from medbench.data.catalog import load_dataset

    facts = cell.dataset_facts
    ref = str(cell.config.get("dataset_ref") or facts.get("name"))
    size = None if pd.isna(cell.row["size"]) else int(cell.row["size"])
    splits = load_dataset(ref, size=size, root=Path(data_root).expanduser())
    stored = (facts.get("n_train"), facts.get("mean"), facts.get("std"))
    if stored[0] is not None and (
        len(splits.train) != stored[0]
        or not np.allclose(splits.mean, stored[1], rtol=0, atol=1e-6)
        or not np.allclose(splits.std, stored[2], rtol=0, atol=1e-6)
    ):
        raise MedbenchError(f"{ref}: the data found under {data_root} is not the data cell {cell.cell_id[:12]} "
                            "was made from (training size or statistics differ)")
    return splits.to(device)
