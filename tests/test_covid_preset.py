"""The covid19-mtt preset and its reference numbers: every setting names a real parameter."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import pytest
import yaml

from medbench.data import DATASETS
from medbench.distill.contract import get_method
from medbench.evaluation import Protocol
from medbench.methods.mtt import MTTParams

PRESETS = Path(str(resources.files("medbench.presets")))


def _load(name: str) -> dict:
    return yaml.safe_load((PRESETS / name).read_text())


def test_preset_settings_are_valid_parameters():
    grid = _load("covid19-mtt.yaml")
    assert set(grid["methods"]) == {"random", "mtt", "full"}
    for name in grid["methods"]:
        get_method(name)  # registered
    mtt = MTTParams(**grid["methods"]["mtt"])  # unknown names or bad values raise here
    assert (mtt.num_experts, mtt.buffer_epochs) == (100, 50)
    fields = {f.name for f in dataclasses.fields(MTTParams)}
    assert set(grid["methods"]["mtt"]) <= fields
    protocol = Protocol(**grid["eval"])
    assert (protocol.depth, protocol.width, protocol.eval_models, protocol.model) == (5, 128, 5, "convnet")
    assert grid["datasets"] == [{"name": "covid19_radiography", "size": 112}]
    assert "covid19_radiography" in DATASETS
    assert grid["ipc"] == [1, 2, 3, 5, 10, 20] and grid["seeds"] == [0]


def test_reference_numbers_match_the_grid():
    grid, ref = _load("covid19-mtt.yaml"), _load("covid19-mtt.reference.yaml")
    assert ref["preset"] == "covid19-mtt" and ref["dataset"] == "covid19_radiography"
    assert sorted(ref["accuracy"]["mtt"]) == grid["ipc"]
    assert ref["accuracy"]["mtt"] == {1: 52.5, 2: 76.4, 3: 77.0, 5: 79.3, 10: 82.2, 20: 82.7}
    assert ref["accuracy"]["full"] == 88.9
    paper = {s["label"]: s for s in ref["settings"]}
    assert paper["classes"]["paper"] == 4
    assert paper["image size (px)"]["paper"] == grid["datasets"][0]["size"]
    assert paper["ConvNet depth"]["paper"] == grid["eval"]["depth"]
    assert paper["ConvNet width"]["paper"] == grid["eval"]["width"]
    assert paper["expert trajectories (MTT)"]["paper"] == grid["methods"]["mtt"]["num_experts"]


def test_reference_settings_name_stored_fields():
    """Every `stored` path names a field medbench really stores, so the comparison cannot go blank."""
    ref = _load("covid19-mtt.reference.yaml")
    stored = {"dataset": {"num_classes", "size", "channels", "n_train", "n_val", "n_test"},  # Splits.describe()
              "protocol": {f.name for f in dataclasses.fields(Protocol)},
              "params": {f.name for f in dataclasses.fields(MTTParams)}}
    for s in ref["settings"]:
        for path in s.get("stored", "").split("+") if "stored" in s else []:
            head, _, name = path.strip().partition(".")
            assert name in stored[head], s


def test_preset_reads_as_a_grid_file():
    gridfile = pytest.importorskip("medbench.harness.gridfile", reason="grid files not available yet")
    out = gridfile.read_grid_file(PRESETS / "covid19-mtt.yaml")
    assert out["methods"] == ("random", "mtt", "full")
    assert out["datasets"] == (("covid19_radiography", 112),)
    assert out["method_args"]["mtt"]["num_experts"] == 100
    assert "covid19-mtt" in gridfile.list_presets()
