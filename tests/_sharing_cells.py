"""Tiny stored cells for the sharing, audit and crossarch tests (generated data, ConvNet width 8)."""

from __future__ import annotations

from pathlib import Path

from conftest import FAST, make_arrays, write_npz

import medbench


def random_cell(tmp_path: Path, ipc: int = 2, size: int = 16, classes: int = 3) -> tuple[Path, str, Path]:
    """(db, cell_id, dataset npz) of one stored random-selection cell."""
    data = write_npz(tmp_path / "toy.npz", make_arrays(size=size, classes=classes))
    db = tmp_path / "results" / "r.sqlite"
    df = medbench.run(methods=["random"], datasets=[str(data)], ipc=[ipc], db=db, device="cpu", seeds=[0], **FAST)
    assert (df.status == "done").all()
    return db, str(df.cell_id.iloc[0]), data
