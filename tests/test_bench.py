"""``medbench bench`` runs end to end in a tiny configuration and writes a well-formed report.

No timing assertions: speed claims live in the committed reports under reports/bench.
"""

from __future__ import annotations

import json

import pytest
import torch

from medbench.bench.measure import EIGHT, MODES
from medbench.bench.projection import _linear, project
from medbench.bench.report import busy_warning
from medbench.cli.main import main

TINY = ["--device", "cpu", "--quick", "--width", "4", "--depth", "2", "--classes", "3", "--size", "12",
        "--ks", "1,2", "--ipcs", "1,2", "--epochs", "1", "--repeats", "1", "--batch-real", "4", "--mtt-steps", "2",
        "--expert-images", "24", "--predict-images", "32", "--threads", "1"]


def test_bench_writes_a_well_formed_report(tmp_path, capsys):
    assert main(["bench", *TINY, "--projection", "--out", str(tmp_path)]) == 0
    [md] = list(tmp_path.glob("cpu-*-quick.md"))
    data = json.loads(md.with_suffix(".json").read_text())

    assert data["machine"]["device"] == "cpu" and data["machine"]["torch"] and data["machine"]["threads"] == 1
    assert data["command"].startswith("medbench bench") and "--width 4" in data["command"]
    assert data["settings"]["width"] == 4 and data["settings"]["ks"] == [1, 2]
    # every (IPC, K, mode) measured, with positive throughput; auto picks sequential on the CPU
    assert {(r["ipc"], r["k"], r["mode"]) for r in data["eval"]} == {(i, k, m) for i in (1, 2) for k in (1, 2)
                                                                    for m in MODES}
    assert all(r["net_epochs_per_s"] > 0 and r["auto_picks"] == "sequential" for r in data["eval"])
    assert {r["mode"] for r in data["predict"]} == set(MODES)
    assert [r["ipc"] for r in data["dc"]] == [1, 2] and "iteration_s_measured" in data["dc"][0]
    assert [r["ipc"] for r in data["dm"]] == [1, 2]
    assert all(r["iteration_s"] > 0 and r["peak_mb"] > 0 for r in data["mtt"])
    assert data["experts"]["images_per_s"] > 0
    projection = data["projection"]
    assert {r["dataset"] for r in projection["rows"]} == set(EIGHT)
    assert len(projection["rows"]) == len(EIGHT) * 3 * 3  # methods × IPC 1, 10, 50
    assert projection["total_seconds"] == pytest.approx(sum(r["seconds"] for r in projection["rows"]))

    text = md.read_text()
    for heading in ("## Machine", "## Evaluation training", "## DC", "## DM", "## MTT", "## Expert-buffer",
                    "## Projection", "not measured"):
        assert heading in text
    assert "wrote" in capsys.readouterr().out


def test_projection_scales_with_the_grid():
    """More classes, images or IPC never make a cell cheaper; the buffer is charged once per dataset."""
    eval_rows = [{"k": 5, "mode": "sequential", "auto_picks": "sequential", "images_per_step": b,
                  "seconds": 5 * 10 * (0.01 + 0.001 * b)} for b in (8, 80)]
    results = {"settings": {"classes": 8, "ks": [5], "epochs": 10}, "eval": eval_rows,
               "predict": [{"mode": "sequential", "model_images_per_s": 1000.0}],
               "dc": [{"ipc": 1, "outer_step_s": 1.0}, {"ipc": 10, "outer_step_s": 2.0}],
               "mtt": [{"ipc": 1, "iteration_s": 0.5}, {"ipc": 10, "iteration_s": 1.5}],
               "experts": {"images_per_s": 1000.0}}
    p = project(results)
    rows = {(r["dataset"], r["method"], r["ipc"]): r["seconds"] for r in p["rows"]}
    for name in EIGHT:
        for method in ("random", "dc"):
            assert rows[(name, method, 1)] < rows[(name, method, 10)] < rows[(name, method, 50)]
        assert rows[(name, "mtt", 10)] < rows[(name, "mtt", 50)]
        assert rows[(name, "mtt", 1)] > rows[(name, "mtt", 10)]  # carries the expert buffer
    assert rows[("tissuemnist", "mtt", 1)] > rows[("bloodmnist", "mtt", 1)]  # 165k vs 12k training images


def test_linear_extrapolation():
    f = _linear([(8, 1.0), (80, 2.0)])
    assert f(8) == pytest.approx(1.0) and f(152) == pytest.approx(3.0) and f(-1000) == 0.0
    assert _linear([(5, 2.0)])(100) == 2.0
    assert _linear([(8, 3.0), (80, 2.0)])(400) == 3.0  # a noisy negative slope: the larger, constant


def test_bad_bench_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--ks", "0,5"])
    assert exc.value.code == 2


def test_a_busy_machine_is_flagged_in_the_report():
    assert busy_warning([7.9, 7.0, 6.0], 2).startswith("**Busy machine: load average 7.9 on 2 cores")
    assert busy_warning([0.4, 1.0, 1.0], 2) == ""
    assert busy_warning(None, 2) == ""


def test_speed_options_are_measured_one_at_a_time(tmp_path):
    """The options section runs each option alone against its trainer's baseline (here without
    torch.compile, which needs minutes of compiling on a CPU); CUDA-only ones are marked, not faked."""
    from medbench.bench.measure import OPTION_TRAINERS, Settings, bench_options
    from medbench.bench.report import _render_options

    s = Settings(device="cpu", width=4, ks=(2,), ipcs=(1,), epochs=1, repeats=1, size=28, channels=1, classes=2)
    variants = ("baseline", "bf16", "channels_last", "cudnn_benchmark", "cuda_graphs")
    rows = bench_options(s, torch.device("cpu"), lambda _: None, variants=variants)
    assert [(r["trainer"], r["variant"]) for r in rows] == [(t, v) for t in OPTION_TRAINERS for v in variants]
    for r in rows:
        if r["variant"] in ("cudnn_benchmark", "cuda_graphs"):
            assert r == {**r, "skipped": "CUDA only"} and "seconds" not in r
        else:
            assert r["net_epochs_per_s"] > 0 and r["first_call_s"] > 0 and r["k"] == 2
    assert all(r["vs_baseline"] == 1.0 for r in rows if r["variant"] == "baseline")
    table = "\n".join(_render_options(rows, {"width": 4, "epochs": 1}))
    assert "| 1 | grouped |" in table and "n/a (CUDA only)" in table and "bf16 autocast" in table


def test_the_kernels_section_counts_flops_and_compares_with_the_measured_peak(monkeypatch):
    """The section's machinery on two tiny steps (no timing claims: the numbers only have to exist)."""
    from types import SimpleNamespace

    from medbench.bench import kernels
    from medbench.nn import blocking

    monkeypatch.setattr(kernels, "WIDTH", 8)
    monkeypatch.setattr(kernels, "SIZE", 8)
    monkeypatch.setattr(kernels, "STEPS", (
        kernels.Step("tiny step", "a tiny training step", kernels._eval(16, 8), bf16=True),
        kernels.Step("tiny unroll", "a 2-step MTT unroll", kernels._trajectory(1, 2, False), repeats=1),
    ))
    monkeypatch.setattr(kernels, "peak_flops", lambda dtype: 1e10)
    saved = blocking.BLOCK_BYTES
    result = kernels.bench_kernels(SimpleNamespace(repeats=2), torch.device("cpu"), lambda line: None)
    assert saved == blocking.BLOCK_BYTES  # restored after timing one pass
    step, unroll = result["rows"]
    # 16 images at 8 px, width 8: the first convolution alone is 2·3·8·9·64 FLOPs per image forward
    assert step["gflop"] * 1e9 > 16 * 2 * 3 * 8 * 9 * 64
    assert step["of_peak"] == pytest.approx(step["gflops"] * 1e9 / 1e10)
    assert 0 < step["vendor_share"] <= 1 and step["before_s"] > 0 and step["after_s"] > 0 and step["bf16_s"] > 0
    # a tiny graph fits any memory budget: auto unrolls; recompute costs more FLOPs than the one graph
    assert unroll["implementation"] == "unrolled" and unroll["gflop_before"] > unroll["gflop"] > 0
    text = "\n".join(kernels.render_kernels(result))
    assert "| tiny step |" in text and "10.0 GFLOP/s fp32" in text and "Auto chose `unrolled`" in text
