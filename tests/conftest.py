"""Shared fixtures: small generated files in the MedMNIST layout, and the real data if present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # for the subprocesses tests start
SHARED_DATA = Path(os.environ.get("MEDBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


def make_arrays(n=(40, 12, 20), classes=3, size=12, channels=1, seed=0, separable=True):
    """Images whose class is visible as a bright square at a class-specific spot (learnable)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        labels = np.arange(count) % classes
        rng.shuffle(labels)
        shape = (count, size, size) + ((channels,) if channels == 3 else ())
        images = rng.integers(0, 80, size=shape, dtype=np.uint8)
        if separable:
            for i, c in enumerate(labels):
                r = (c * 3) % (size - 3)
                images[i, r : r + 3, r : r + 3] = 250
        out[f"{split}_images"] = images
        out[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    return out


def write_npz(path: Path, arrays: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def toy_npz(tmp_path: Path) -> Path:
    return write_npz(tmp_path / "toy.npz", make_arrays())


@pytest.fixture
def toy_rgb_npz(tmp_path: Path) -> Path:
    return write_npz(tmp_path / "toy_rgb.npz", make_arrays(channels=3, size=16, seed=1))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: OpenMP threads only add spin-waiting (seconds on a busy 2-core machine). A module
    uses it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "medmnist" / "bloodmnist.npz").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (expected ../shared/data beside the checkout)")
    return SHARED_DATA


# A protocol small enough for tests: tiny ConvNet, few epochs.
FAST = {"width": 8, "epochs": 4, "full_epochs": 2, "eval_models": 2, "batch_size": 32, "augment": "none"}


def pytest_configure(config):
    # Test tensors are tiny: extra OpenMP threads only add spin-waiting, which on a busy 2-core
    # machine makes small ops 10–100× slower.
    import torch

    torch.set_num_threads(1)
