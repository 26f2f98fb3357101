"""Hand-made result cells for the analysis/report/regression tests: no training, exact numbers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from medbench.storage.store import CellRecord, ModelRow, Store

PROTOCOL = {"model": "convnet", "width": 8, "depth": None, "norm": "instance", "epochs": 4, "full_epochs": 2,
            "lr": 0.01, "use_learned_lr": True, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 32,
            "eval_models": 3, "augment": "none"}


def record(method: str, dataset: str, ipc: int | None, accs: list[float], *, seed: int = 0,
           protocol_id: str = "p1", protocol: dict | None = None, size: int = 28, n_train: int = 1000,
           classes: int = 4, balanced: list[float] | None = None, distill_seconds: float | None = 1.0,
           iterations: int | None = None, condensed_path: str | None = None, params: dict | None = None,
           status: str = "done", sha256: str | None = None, environment: dict | None = None) -> CellRecord:
    """One cell whose eval models scored exactly ``accs`` (test accuracy)."""
    params = params or {}
    cell_id = hashlib.sha256(repr((method, dataset, ipc, seed, protocol_id, size, sorted(params.items())))
                             .encode()).hexdigest()[:16]
    balanced = balanced if balanced is not None else [a - 0.05 for a in accs]
    models = [ModelRow(k, 100 + k, 0.01, 4, 0.5,
                       {"test": {"accuracy": a, "balanced_accuracy": b, "macro_f1": a - 0.1, "auc": 0.9},
                        "val": {"accuracy": a + 0.01, "balanced_accuracy": b, "macro_f1": a, "auc": 0.9}})
              for k, (a, b) in enumerate(zip(accs, balanced, strict=True))] if status == "done" else []
    n_images = n_train if ipc is None else ipc * classes
    info = {"iterations": iterations} if iterations else {}
    return CellRecord(
        cell_id=cell_id, method=method, dataset=dataset, size=size, ipc=ipc, seed=seed, protocol_id=protocol_id,
        config={"method": method, "params": params, "protocol": protocol or PROTOCOL,
                "dataset": {"name": dataset, "n_train": n_train, "num_classes": classes},
                "condensed_info": info, **({"condensed_sha256": sha256} if sha256 else {})},
        environment=environment or {}, status=status, message="diverged" if status == "failed" else "",
        distill_seconds=distill_seconds, eval_seconds=1.0, condensed_images=n_images,
        condensed_bytes=n_images * 4, compression_ratio=n_images / n_train, condensed_path=condensed_path,
        models=models,
    )


def write_condensed_npz(path: Path, classes: int, ipc: int, size: int = 12, channels: int = 1, seed: int = 0) -> str:
    """A condensed-set file in the layout ``save_condensed`` writes (uint8 + float32 + stats)."""
    rng = np.random.default_rng(seed)
    shape = (classes * ipc, size, size) + ((3,) if channels == 3 else ())
    coarse = rng.integers(0, 255, size=(shape[0], size // 4 + 1, size // 4 + 1, *shape[3:]))
    images = np.kron(coarse, np.ones((1, 4, 4, *(1,) * (len(shape) - 3))))[:, :size, :size].astype(np.uint8)
    labels = np.repeat(np.arange(classes), ipc).reshape(-1, 1)
    chw = images.reshape(len(images), size, size, channels).transpose(0, 3, 1, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, train_images=images, train_labels=labels,
                        images_float32=((chw / 255.0 - 0.5) / 0.25).astype(np.float32),
                        norm_mean=np.full(channels, 0.5, np.float32), norm_std=np.full(channels, 0.25, np.float32))
    return str(path)


def store_with(path: Path, records: list[CellRecord]) -> Path:
    with Store(path) as store:
        for r in records:
            store.write(r)
    return path
