"""Expert buffer: training, copies per epoch, storage, cache reuse, resume and corruption rebuild."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from conftest import make_arrays, write_npz

from medbench.core.errors import MedbenchError
from medbench.data import load_dataset
from medbench.distill.contract import DistillTask
from medbench.methods.trajectory import (
    ExpertBuffer,
    ExpertConfig,
    FlatParams,
    build_buffer,
    build_seeded,
    derived_seed,
)
from medbench.nn.models import ModelSpec
from medbench.nn.whitening import ZCA

SPEC = ModelSpec("convnet", {"width": 4})


pytestmark = pytest.mark.usefixtures("one_thread")


CONFIG = ExpertConfig(num_experts=2, epochs=3, batch_size=16, augment=False)


@pytest.fixture
def splits(tmp_path):
    return load_dataset(str(write_npz(tmp_path / "toy.npz", make_arrays(channels=3, size=8))))


def task_of(splits) -> DistillTask:
    return DistillTask(train=splits.train, val=splits.val, num_classes=splits.num_classes, ipc=2, seed=0,
                       device=torch.device("cpu"), normalize=splits.normalize, model=SPEC)


def build(splits, root, config=CONFIG, **kw):
    lines: list[str] = []
    buffer = build_buffer(splits, config, root, model=SPEC, log=lines.append, **kw)
    return buffer, lines


def test_build_shapes_copies_and_accuracy(splits, tmp_path):
    buffer, lines = build(splits, tmp_path / "experts")
    assert buffer.num_experts == 2 and buffer.num_epochs == 3
    assert buffer.path.parent == tmp_path / "experts"
    traj = buffer.trajectory(0)
    assert traj.shape == (4, buffer.num_params) and traj.dtype == torch.float32
    # Every stored epoch is its own copy: consecutive snapshots differ (the reference's CPU
    # aliasing made them all equal to the last one).
    for e in range(3):
        assert not torch.equal(traj[e], traj[e + 1])
    # Epoch 0 is the untrained network of the expert's seed.
    init = build_seeded(SPEC, 3, 3, 8, derived_seed(CONFIG.seed, 0, 0xE4), torch.device("cpu"))
    assert torch.equal(traj[0], FlatParams(init).flatten())
    assert torch.equal(buffer.snapshots(0, [3, 1]), traj[[3, 1]])
    assert not torch.equal(buffer.trajectory(1), traj)  # experts differ
    assert 0.0 <= buffer.test_accuracy <= 1.0 and 0.0 <= buffer.val_accuracy <= 1.0
    assert buffer.bytes_on_disk > 2 * 4 * buffer.num_params * 4
    manifest = json.loads((buffer.path / "manifest.json").read_text())
    assert set(manifest["experts"]) == {"0", "1"}
    assert manifest["dataset"] == "toy" and len(manifest["experts"]["0"]["sha256"]) == 64
    assert any("training 2 of 2" in line for line in lines)


def test_second_call_reuses_without_training(splits, tmp_path):
    first, _ = build(splits, tmp_path)
    files = {f.name: f.stat().st_mtime_ns for f in first.path.iterdir()}
    seen: list[tuple[int, int]] = []
    start = time.perf_counter()
    second, lines = build(splits, tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert time.perf_counter() - start < 2.0
    assert second.path == first.path and lines == []
    assert seen == [(6, 6)]
    assert {f.name: f.stat().st_mtime_ns for f in second.path.iterdir()} == files


def test_key_depends_on_config_data_and_model(splits, tmp_path):
    base, _ = build(splits, tmp_path, ExpertConfig(num_experts=1, epochs=1, augment=False))
    other_lr, _ = build(splits, tmp_path, ExpertConfig(num_experts=1, epochs=1, augment=False, lr=0.02))
    other_model = build_buffer(splits, ExpertConfig(num_experts=1, epochs=1, augment=False), tmp_path,
                               model=ModelSpec("convnet", {"width": 5}), log=None)
    other = load_dataset(str(write_npz(tmp_path / "b.npz", make_arrays(channels=3, size=8, seed=3))))
    other_data = build_buffer(other, ExpertConfig(num_experts=1, epochs=1, augment=False), tmp_path,
                              model=SPEC, log=None)
    assert len({base.path, other_lr.path, other_model.path, other_data.path}) == 4
    # Equivalent model specs (defaults spelled out or not) build the same network: same buffer.
    spelled = build_buffer(splits, ExpertConfig(num_experts=1, epochs=1, augment=False), tmp_path,
                           model=ModelSpec("convnet", {"width": 4, "depth": None, "norm": "instance"}),
                           log=None)
    assert spelled.path == base.path


def test_resume_trains_only_missing_expert_identically(splits, tmp_path):
    buffer, _ = build(splits, tmp_path)
    before = buffer.trajectory(1)
    (buffer.path / "expert_001.safetensors").unlink()  # as if interrupted before expert 1
    manifest = json.loads((buffer.path / "manifest.json").read_text())
    del manifest["experts"]["1"]
    (buffer.path / "manifest.json").write_text(json.dumps(manifest))
    mtime0 = (buffer.path / "expert_000.safetensors").stat().st_mtime_ns
    again, lines = build(splits, tmp_path)
    assert any("training 1 of 2" in line for line in lines)
    assert (again.path / "expert_000.safetensors").stat().st_mtime_ns == mtime0
    assert torch.equal(again.trajectory(1), before)  # deterministic on the CPU


def test_corrupt_files_are_reported_and_rebuilt(splits, tmp_path):
    buffer, _ = build(splits, tmp_path)
    good = buffer.trajectory(0)
    path = buffer.path / "expert_000.safetensors"
    path.write_bytes(path.read_bytes()[:-100])  # truncated: size and header disagree
    again, lines = build(splits, tmp_path)
    assert len([line for line in lines if "expert 0" in line]) == 1
    assert torch.equal(again.trajectory(0), good)
    # A same-size bit flip: caught by the sha256 (forced here; a changed mtime triggers it too).
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    again, lines = build(splits, tmp_path, verify=True)
    assert any("expert 0 sha256 mismatch" in line for line in lines)
    assert torch.equal(again.trajectory(0), good)


def test_task_built_buffer_is_shared_and_gets_test_accuracy_later(splits, tmp_path):
    from_task = build_buffer(task_of(splits), CONFIG, tmp_path, log=None)
    assert math.isnan(from_task.test_accuracy)  # a method never sees the test split
    assert 0.0 <= from_task.val_accuracy <= 1.0
    full, lines = build(splits, tmp_path)
    assert full.path == from_task.path
    assert any("test accuracy" in line for line in lines) and not any("training" in line for line in lines)
    assert 0.0 <= full.test_accuracy <= 1.0


def test_bfloat16_storage(splits, tmp_path):
    f32, _ = build(splits, tmp_path, ExpertConfig(num_experts=1, epochs=2, augment=False))
    bf16, _ = build(splits, tmp_path, ExpertConfig(num_experts=1, epochs=2, augment=False, dtype="bfloat16"))
    assert bf16.path != f32.path
    assert bf16.trajectory(0).dtype == torch.float32
    assert torch.allclose(bf16.trajectory(0), f32.trajectory(0), rtol=1e-2, atol=1e-3)
    assert bf16.bytes_on_disk < 0.7 * f32.bytes_on_disk


def test_augmented_experts_and_zca(splits, tmp_path):
    config = ExpertConfig(num_experts=1, epochs=1, batch_size=16, augment=True, zca=True)
    buffer, _ = build(splits, tmp_path, config)
    zca = buffer.zca()
    assert zca is not None and (buffer.path / "zca.safetensors").is_file()
    assert torch.isfinite(buffer.trajectory(0)).all()
    restored = ZCA.from_extras(zca.to_extras())
    x = splits.normalize(splits.val.images[:4])
    assert torch.allclose(restored(x), zca(x))


def test_zca_whitens():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(12, 12, generator=g)
    x = (torch.randn(4000, 12, generator=g) @ mix).view(4000, 3, 2, 2)
    zca = ZCA.fit(lambda a, b: x[a:b], len(x), eps=1e-6, chunk=1000)
    white = zca(x).flatten(1)
    assert torch.allclose(torch.cov(white.T), torch.eye(12), atol=1e-3)


def test_bad_config_and_bad_directory(tmp_path):
    with pytest.raises(MedbenchError, match="num_experts"):
        ExpertConfig(num_experts=0)
    with pytest.raises(MedbenchError, match="lr"):
        ExpertConfig(lr=-1.0)
    with pytest.raises(MedbenchError, match="not an expert buffer"):
        ExpertBuffer(tmp_path)


@pytest.mark.parametrize("batching", ["vmap", "grouped"])
@pytest.mark.parametrize("augment", [False, True])
def test_experts_trained_together_match_one_at_a_time(splits, tmp_path, batching, augment):
    """Each expert keeps its seed's initialisation, data order and augmentation draws when trained
    with the others as one computation; only the batched kernels' rounding differs (as in evaluation)."""
    config = ExpertConfig(num_experts=3, epochs=3, batch_size=16, augment=augment)
    one, _ = build(splits, tmp_path / "one", config, batching="sequential")
    together, lines = build(splits, tmp_path / "together", config, batching=batching)
    assert together.path.name == one.path.name  # speed only: the same buffer key
    for i in range(3):
        a, b = one.trajectory(i), together.trajectory(i)
        assert torch.equal(a[0], b[0])  # the same initialisation
        scale = (a[-1] - a[0]).abs().max()
        assert (a - b).abs().max() <= 1e-6 * a.abs().max(), (i, float((a - b).abs().max()))  # measured 3e-8
        assert scale > 1e-3  # the experts did move, so the comparison is not vacuous
    manifest = json.loads((together.path / "manifest.json").read_text())
    assert set(manifest["experts"]) == {"0", "1", "2"} and any("training 3 of 3" in line for line in lines)
