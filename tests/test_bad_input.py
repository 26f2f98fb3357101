"""The promise for bad input, command by command: one line naming the problem on stderr, exit
status 2, no traceback, and no file created or changed anywhere under the working folder.

Each case runs ``medbench`` in-process in a fresh folder that holds every fixture it may name
(a good npz, a results database with one cell and its condensed file, bad files of every kind);
the whole folder is fingerprinted before and after. ``{name}`` in an argument is the path of the
fixture ``name``; fixtures are made only when a case names them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _records import record, store_with, write_condensed_npz
from conftest import make_arrays, write_npz

from medbench.cli.main import main


def _npz(**change: object) -> Callable[[Path], Path]:
    """A toy npz with some arrays replaced (``None`` drops the key)."""

    def make(path: Path) -> Path:
        arrays = make_arrays()
        for key, value in change.items():
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value(arrays) if callable(value) else value
        return write_npz(path, arrays)

    return make


def _text(content: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.write_text(content)
        return path

    return make


def _grid(body: str) -> Callable[[Path], Path]:
    """A grid file whose other settings are good (tiny protocol, the toy npz, a db in out/)."""

    def make(path: Path) -> Path:
        toy = _npz()(path.parent / "grid_toy.npz")
        keys = {line.split(":", 1)[0] for line in body.splitlines() if line and not line.startswith(" ")}
        base = {"datasets": f"[{toy}]", "ipc": "[1]", "seeds": "[0]", "db": "out/r.sqlite",
                "eval": "{width: 4, epochs: 1, eval_models: 1}"}
        text = "".join(f"{k}: {v}\n" for k, v in base.items() if k not in keys) + body
        path.write_text(text)
        return path

    return make


def _db(path: Path) -> Path:
    condensed = write_condensed_npz(path.parent / "condensed" / "c.npz", classes=3, ipc=2)
    return store_with(path, [record("random", "toy", 2, [0.5, 0.6], condensed_path=condensed, classes=3)])


def _db_with_condensed(content: bytes) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        db = _db(path)
        with sqlite3.connect(db) as conn:
            stored = conn.execute("SELECT condensed_path FROM cells").fetchone()[0]
        conn.close()
        Path(stored).write_bytes(content if content else Path(stored).read_bytes()[:200])
        return db

    return make


def _foreign_db(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE cells (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    return path


def _folder(files: dict[str, bytes | None]) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        for rel, content in files.items():
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if content is not None:
                target.write_bytes(content)
        path.mkdir(exist_ok=True)
        return path

    return make


def _json(document: object) -> Callable[[Path], Path]:
    return _text(json.dumps(document))


def _pkg_missing_manifest(path: Path) -> Path:
    path.mkdir()
    (path / "images.npz").write_bytes(b"x")
    return path


def _package(change: str = "") -> Callable[[Path], Path]:
    """A share package exported from the one-cell database (``tampered``: one byte of its npz changed)."""

    def make(path: Path) -> Path:
        from medbench.sharing.export import export_cell

        condensed = write_condensed_npz(path.parent / f"{path.name}_condensed" / "c.npz", classes=3, ipc=2)
        rec = record("random", "toy", 2, [0.5, 0.6], condensed_path=condensed, classes=3, size=12)
        rec.config["dataset"].update(channels=1, size=12, mean=[0.5], std=[0.25])
        db = store_with(path.parent / f"{path.name}_source.sqlite", [rec])
        with sqlite3.connect(db) as conn:
            cell = conn.execute("SELECT cell_id FROM cells").fetchone()[0]
        conn.close()
        export_cell(db, cell, path)
        if change == "tampered":
            npz = path / "condensed.npz"
            data = bytearray(npz.read_bytes())
            data[len(data) // 2] ^= 0xFF
            npz.write_bytes(bytes(data))
        return path

    return make


def _images_folder(counts: dict[str, int]) -> Callable[[Path], Path]:
    """Class folders of small PNGs (``counts``: images per class)."""

    def make(path: Path) -> Path:
        from PIL import Image

        rng = np.random.default_rng(0)
        for name, n in counts.items():
            (path / name).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(path / name / f"{k}.png")
        return path

    return make


def _labels(values: list[int]) -> Callable[[dict], np.ndarray]:
    return lambda a: np.resize(np.asarray(values, dtype=np.int64), a["train_labels"].shape)


FIXTURES: dict[str, Callable[[Path], Path]] = {
    "toy.npz": _npz(),
    "db.sqlite": _db,
    "foreign.sqlite": _foreign_db,
    "text.sqlite": _text("not a database\n" * 50),
    "truncated_db.sqlite": _db_with_condensed(b""),
    "garbage_db.sqlite": _db_with_condensed(b"garbage"),
    "file": _text("a regular file\n"),
    "text.npz": _text("hello\nworld\n"),
    "nokeys.npz": _npz(val_images=None, val_labels=None),
    "float_labels.npz": _npz(train_labels=lambda a: a["train_labels"].astype(np.float32)),
    "huge_label.npz": _npz(train_labels=_labels([0, 1, 2, 10**12])),
    "negative_label.npz": _npz(train_labels=_labels([0, 1, 2, -1])),
    "float_images.npz": _npz(train_images=lambda a: a["train_images"].astype(np.float32)),
    "flat_images.npz": _npz(train_images=lambda a: a["train_images"].reshape(len(a["train_images"]), -1)),
    "nonsquare.npz": _npz(train_images=lambda a: a["train_images"][:, :, :8]),
    "short_labels.npz": _npz(train_labels=lambda a: a["train_labels"][:-3]),
    "empty_class.npz": _npz(train_labels=lambda a: np.where(a["train_labels"] == 1, 0, a["train_labels"])),
    "wide_labels.npz": _npz(train_labels=lambda a: np.repeat(a["train_labels"], 2, axis=1)),
    "four_channels.npz": _npz(train_images=lambda a: np.repeat(a["train_images"][..., None], 4, axis=-1)),
    "empty_folder": _folder({}),
    "no_images_folder": _folder({"A/notes.txt": b"x", "B/readme.md": b"y"}),
    "pkg_missing_manifest": _pkg_missing_manifest,
    "pkg": _package(),
    "pkg_tampered": _package("tampered"),
    "rgb.npz": lambda path: write_npz(path, make_arrays(channels=3)),
    "four_class.npz": lambda path: write_npz(path, make_arrays(classes=4)),
    "one_class_folder": _images_folder({"A": 12}),
    "small_class_folder": _images_folder({"A": 20, "B": 20, "C": 3}),
    "baseline_typed.json": _json({"format": 2, "cells": [{"method": "random", "dataset": "toy", "size": 28, "ipc": 2,
                                                          "seed": 0, "protocol_id": "p1", "score": "high"}]}),
    "bad.yaml": _text("a: [1\n"),
    "list.yaml": _text("- 1\n- 2\n"),
    "baseline_list.json": _json([1, 2]),
    "baseline_cells_int.json": _json({"format": 2, "cells": [1]}),
    "baseline_cells_incomplete.json": _json({"format": 2, "cells": [{"method": "random"}]}),
    "baseline_format1.json": _json({"cells": []}),
    "baseline_invalid.json": _text("{not json"),
    "bench_foreign.json": _json({"a": 1}),
    "bench_invalid.json": _text("{"),
    "reference_bad.yaml": _text("not: [valid\n"),
    "space_unknown.yaml": _text("dm: {lr_imgg: {low: 1, high: 2}}\n"),
    "space_range.yaml": _text("dm: {lr_img: {low: 5, high: 1}}\n"),
    "space_log.yaml": _text("dm: {lr_img: {low: 0, high: 1, scale: log}}\n"),
    "space_scale.yaml": _text("dm: {lr_img: {low: 1, high: 2, scale: cubic}}\n"),
    "space_int.yaml": _text("dm: {lr_img: {low: 1.5, high: 2, integer: true}}\n"),
    "space_key.yaml": _text("dm: {lr_img: {low: 1, high: 2, step: 1}}\n"),
    "space_word.yaml": _text("dm: {lr_img: {low: one, high: 2}}\n"),
    "space_stray.yaml": _text("dc: {lr_img: {low: 1, high: 2}}\n"),
}
for _body_name, _body in {
    "g_not_yaml": "methods: [random\n", "g_list": None, "g_unknown_key": "colour: blue\n",
    "g_methods_int": "methods: 5\n", "g_methods_settings_int": "methods: {dm: 5}\n",
    "g_methods_settings_list": "methods: {random: [1, 2]}\n", "g_methods_numbers": "methods: [1, 2]\n",
    "g_dataset_entry": "datasets: [{name: x, colour: 1}]\n", "g_ipc_float": "ipc: [1.7]\n",
    "g_ipc_word": "ipc: [one]\n", "g_ipc_zero": "ipc: [0]\n", "g_seeds_negative": "seeds: [-1]\n",
    "g_seeds_float": "seeds: [1.5]\n", "g_seeds_huge": "seeds: [18446744073709551616]\n",
    "g_workers_word": "workers: abc\n", "g_workers_zero": "workers: 0\n", "g_size_word": "size: abc\n",
    "g_size_tiny": "size: 5\n", "g_download_word": "download: 'no'\n", "g_retry_word": "retry_failed: 'no'\n",
    "g_device_int": "device: 5\n", "g_device_tpu": "device: tpu\n", "g_executor": "executor: slurm\n",
    "g_eval_int": "eval: 5\n", "g_eval_negative": "eval: {epochs: -1}\n", "g_eval_unknown": "eval: {colour: 1}\n",
    "g_eval_name": "eval: {name: dc}\n", "g_eval_lr_word": "eval: {lr: fast}\n",
    "g_protocol_list": "protocol: [dc]\n", "g_protocol_unknown": "protocol: dcc\n",
    "g_batching": "eval_batching: 3\n", "g_db_under_file": "db: g_db_under_file.yaml/r.sqlite\n",
    "g_method_args_bad": "methods: {dc: {lr_img: -1}}\n", "g_method_unknown": "methods: [herding2]\n",
    "g_budget_word": "budget_seconds: [ten]\n", "g_budget_zero": "budget_seconds: [0]\n",
    "g_budget_flops_zero": "budget_flops: [0]\n",
    "g_dataset_size_word": "datasets: [{name: bloodmnist, size: abc}]\n", "g_duplicate_key": "ipc: [1]\nipc: [2]\n",
    "g_duplicate_method": "methods: {dm: {}, dm: {iterations: 2}}\n",
}.items():
    FIXTURES[f"{_body_name}.yaml"] = _text("- random\n") if _body is None else _grid(_body)

RUN = ["run", "--width", "4", "--epochs", "1", "--eval-models", "1", "--seeds", "0", "--no-progress"]
RUN_TOY = [*RUN, "--datasets", "{toy.npz}", "--ipc", "1", "--db", "out/r.sqlite"]
TUNE = ["tune", "--datasets", "{toy.npz}", "--ipc", "1", "--db", "out/r.sqlite", "--width", "4", "--methods", "dm"]

CASES: list[tuple[list[str], str]] = [
    # --- run: options --------------------------------------------------------------------------
    ([*RUN_TOY, "--methods", "nope"], "unknown method 'nope'"),
    ([*RUN_TOY, "--methods", ","], "at least one method"),
    ([*RUN, "--datasets", "nosuchset", "--db", "out/r.sqlite"], "unknown dataset 'nosuchset'"),
    ([*RUN, "--datasets", "missing/x.npz", "--db", "out/r.sqlite"], "no such dataset file"),
    ([*RUN, "--datasets", "chestmnist", "--db", "out/r.sqlite"], "chestmnist is not supported"),
    ([*RUN, "--datasets", "bloodmnist", "--size", "32", "--db", "out/r.sqlite"], "size 32 is not available"),
    ([*RUN_TOY, "--ipc", "0"], "IPC must be at least 1"),
    ([*RUN_TOY, "--ipc", "-1"], "IPC must be at least 1"),
    ([*RUN_TOY, "--ipc", "a"], "expected comma-separated integers"),
    ([*RUN_TOY, "--ipc", "1.5"], "expected comma-separated integers"),
    ([*RUN_TOY, "--ipc", "99"], "exceeds the smallest class"),
    ([*RUN_TOY, "--seeds=-1"], "seeds must lie in 0.."),
    ([*RUN_TOY, "--seeds", str(2**64)], "seeds must lie in 0.."),
    ([*RUN_TOY, "--seeds", "x"], "expected comma-separated integers"),
    ([*RUN_TOY, "--size", "7"], "below 8 px"),
    ([*RUN_TOY, "--size", "abc"], "invalid int value"),
    ([*RUN_TOY, "--epochs", "0"], "must be positive"),
    ([*RUN_TOY, "--epochs", "-3"], "must be positive"),
    ([*RUN_TOY, "--epochs", "abc"], "expected a number"),
    ([*RUN_TOY, "--eval-models", "0"], "must be positive"),
    ([*RUN_TOY, "--lr", "0"], "must be positive"),
    ([*RUN_TOY, "--lr", "nan"], "must be a finite positive number"),
    ([*RUN_TOY, "--lr", "inf"], "must be a finite"),
    ([*RUN_TOY, "--full-epochs", "0"], "must be positive"),
    ([*RUN_TOY, "--batch-size", "0"], "must be positive"),
    ([*RUN_TOY, "--width", "0"], "must be positive"),
    ([*RUN_TOY, "--depth", "0"], "must be positive"),
    ([*RUN_TOY, "--depth", "9"], "pools a"),
    ([*RUN_TOY, "--norm", "layer"], "invalid choice"),
    ([*RUN_TOY, "--eval-augment", "mixup"], "unknown eval augmentation 'mixup'"),
    ([*RUN_TOY, "--model", "vit"], "unknown model 'vit'"),
    ([*RUN_TOY, "--device", "tpu"], "unknown device 'tpu'"),
    ([*RUN_TOY, "--device", "cuda"], "CUDA is not available"),
    ([*RUN_TOY, "--workers", "0"], "must be positive"),
    ([*RUN_TOY, "--workers", "-2"], "must be positive"),
    ([*RUN_TOY, "--executor", "slurm"], "invalid choice"),
    ([*RUN_TOY, "--eval-batching", "fast"], "invalid choice"),
    ([*RUN_TOY, "--eval-compile", "jit"], "invalid choice"),
    ([*RUN_TOY, "--protocol", "dcc"], "unknown protocol 'dcc'"),
    ([*RUN_TOY, "--format", "xml"], "invalid choice"),
    ([*RUN_TOY, "--report", "{file}"], "exists and is not a folder"),
    ([*RUN_TOY, "--preset", "nope"], "unknown preset 'nope'"),
    ([*RUN_TOY, "--preset", "covid19-mtt", "{g_ipc_zero.yaml}"], "grid file or --preset, not both"),
    ([*RUN, "--datasets", "{toy.npz}", "--ipc", "1", "--db", "{file}/r.sqlite"], "is a file, not a folder"),
    ([*RUN, "--datasets", "{toy.npz}", "--ipc", "1", "--db", "/proc/medbench/r.sqlite"], "cannot write in /proc"),
    ([*RUN, "--datasets", "{toy.npz}", "--ipc", "1", "--db", "{foreign.sqlite}"], "not a medbench results"),
    ([*RUN, "--datasets", "{toy.npz}", "--ipc", "1", "--db", "{text.sqlite}"], "cannot open the results"),
    ([*RUN, "--datasets", "{toy.npz}", "--ipc", "1", "--db", "x" * 300 + "/r.sqlite"], "File name too long"),
    # --- run: method settings ------------------------------------------------------------------
    ([*RUN_TOY, "--method-args", "random:foo=1"], "unknown setting foo"),
    ([*RUN_TOY, "--method-args", "dc:foo=1"], "not in the grid"),
    ([*RUN_TOY, "--methods", "dc", "--method-args", "dc:lr_img=abc"], "cannot read 'abc' as float"),
    ([*RUN_TOY, "--methods", "dc", "--method-args", "dc:lr_img=-1"], "lr_img must be positive"),
    ([*RUN_TOY, "--methods", "dc", "--method-args", "dc:iterations=0"], "iterations must be at least 1"),
    ([*RUN_TOY, "--methods", "dc", "--method-args", "dc:init=zeros"], "unknown init 'zeros'"),
    ([*RUN_TOY, "--methods", "dc", "--method-args", "dc:dis_metric=l1"], "unknown dis_metric 'l1'"),
    ([*RUN_TOY, "--methods", "dc", "--method-args", "dc:lr_img"], "expected key=value"),
    ([*RUN_TOY, "--methods", "dc", "--method-args", "dc:iterations=2.5"], "cannot read '2.5' as int"),
    ([*RUN_TOY, "--methods", "dsa", "--method-args", "dsa:momentum_img=1"], "momentum_img must lie in"),
    ([*RUN_TOY, "--methods", "dm", "--method-args", "dm:batch_real=0"], "batch_real must be at least 1"),
    ([*RUN_TOY, "--methods", "dm", "--method-args", "dm:augment=maybe"], "cannot read 'maybe' as bool"),
    ([*RUN_TOY, "--methods", "mtt", "--method-args", "mtt:syn_steps=0"], "syn_steps must be at least 1"),
    ([*RUN_TOY, "--methods", "mtt", "--method-args", "mtt:lr_img=-5"], "lr_img must be positive"),
    ([*RUN_TOY, "--methods", "mtt", "--method-args", "mtt:max_start_epoch=100"], "exceeds"),
    ([*RUN_TOY, "--methods", "mtt", "--method-args", "mtt:implementation=fast"], "is not one of"),
    ([*RUN_TOY, "--methods", "mtt", "--method-args", "mtt:expert_dtype=int8"], "is not one of"),
    ([*RUN_TOY, "--methods", "random", "--method-args", "random:candidates=0"], "candidates must be at least 1"),
    ([*RUN_TOY, "--methods", "package", "--method-args", "package:path={pkg_missing_manifest}"], "manifest"),
    ([*RUN_TOY, "--methods", "random,dc", "--method-args", "lr_img=1"], "say which method"),
    ([*RUN_TOY, "--method-args", "missing.yaml"], "cannot read method arguments"),
    ([*RUN_TOY, "--method-args", "{bad.yaml}"], "not valid YAML"),
    ([*RUN_TOY, "--method-args", "{list.yaml}"], "expected a mapping"),
    # --- run: datasets -------------------------------------------------------------------------
    *[([*RUN, "--datasets", f"{{{name}}}", "--ipc", "1", "--db", "out/r.sqlite"], message) for name, message in [
        ("text.npz", "not an npz file"), ("nokeys.npz", "missing key(s)"), ("float_labels.npz", "dtype float32"),
        ("huge_label.npz", "have no training images"), ("negative_label.npz", "labels"),
        ("float_images.npz", "dtype float32"),
        ("flat_images.npz", "images"), ("nonsquare.npz", "square"), ("short_labels.npz", "images but"),
        ("empty_class.npz", "class"), ("wide_labels.npz", "labels"), ("four_channels.npz", "images"),
        ("empty_folder", "no class folders"), ("no_images_folder", "no readable"),
    ]],
    ([*RUN, "--datasets", "{toy.npz},{text.npz}", "--ipc", "1", "--db", "out/r.sqlite"], "not an npz file"),
    # --- run: grid files -----------------------------------------------------------------------
    *[(["run", f"{{{name}.yaml}}", "--no-progress"], message) for name, message in [
        ("g_not_yaml", "not valid YAML"), ("g_list", "a grid file is a mapping"), ("g_unknown_key", "unknown key"),
        ("g_methods_int", "methods must be names"), ("g_methods_settings_int", "must be a mapping"),
        ("g_methods_settings_list", "must be a mapping"), ("g_methods_numbers", "methods must be names"),
        ("g_dataset_entry", "a dataset entry is a name"), ("g_ipc_float", "ipc must be integers"),
        ("g_ipc_word", "ipc must be integers"), ("g_ipc_zero", "IPC must be at least 1"),
        ("g_seeds_negative", "seeds must lie in"), ("g_seeds_float", "seeds must be integers"),
        ("g_seeds_huge", "seeds must lie in"), ("g_workers_word", "workers must be a int"),
        ("g_workers_zero", "workers must be at least 1"), ("g_size_word", "size must be a int"),
        ("g_size_tiny", "below 8 px"), ("g_download_word", "download must be true or false"),
        ("g_retry_word", "retry_failed must be true or false"), ("g_device_int", "device must be a str"),
        ("g_device_tpu", "unknown device 'tpu'"), ("g_executor", "unknown executor 'slurm'"),
        ("g_eval_int", "eval must be a mapping"), ("g_eval_negative", "epochs must be at least 1"),
        ("g_eval_unknown", "unknown setting colour"), ("g_eval_name", "choose the protocol by name"),
        ("g_eval_lr_word", "cannot read 'fast' as float"), ("g_protocol_list", "protocol must be the name"),
        ("g_protocol_unknown", "unknown protocol 'dcc'"), ("g_batching", "eval_batching must be a str"),
        ("g_db_under_file", "is a file, not a folder"), ("g_method_args_bad", "lr_img must be positive"),
        ("g_method_unknown", "unknown method 'herding2'"),
    ]],
    (["run", "missing_grid.yaml"], "cannot read grid file"),
    # --- results, merge -------------------------------------------------------------------------
    (["results", "--db", "missing.sqlite"], "no results database here"),
    (["results", "--db", "{foreign.sqlite}"], "not a medbench results database"),
    (["results", "--db", "{text.sqlite}"], "cannot open the results database"),
    (["results", "--db", "{db.sqlite}", "--format", "xml"], "invalid choice"),
    (["merge", "missing.sqlite", "--db", "{db.sqlite}"], "no results database here"),
    (["merge", "{foreign.sqlite}", "--db", "{db.sqlite}"], "not a medbench results database"),
    (["merge", "{db.sqlite}", "--db", "{foreign.sqlite}"], "not a medbench results database"),
    (["merge", "{text.sqlite}", "--db", "{db.sqlite}"], "cannot open the results database"),
    # --- report, correlate ----------------------------------------------------------------------
    (["report", "--db", "missing.sqlite", "--out", "rep"], "no results database here"),
    (["report", "--db", "{foreign.sqlite}", "--out", "rep"], "not a medbench results database"),
    (["report", "--db", "{db.sqlite}", "--out", "rep", "--images-per-class", "0"], "at least 1"),
    (["report", "--db", "{db.sqlite}", "--out", "rep", "--reference", "nope"], "nope"),
    (["report", "--db", "{db.sqlite}", "--out", "rep", "--reference", "{reference_bad.yaml}"], "reference"),
    (["report", "--db", "{db.sqlite}"], "required"),
    (["correlate", "--db", "missing.sqlite"], "no results database here"),
    (["correlate", "--db", "{foreign.sqlite}"], "not a medbench results database"),
    (["correlate", "--db", "{db.sqlite}", "--bootstrap", "5"], "unrecognized arguments: --bootstrap"),
    (["report", "--db", "{db.sqlite}", "--out", "rep", "--metric", "speed"], "invalid choice"),
    (["correlate", "--db", "{db.sqlite}", "--predict", "50"], "--predict needs --method and --ipc"),
    (["correlate", "--db", "{db.sqlite}", "--predict", "150", "--method", "dc", "--ipc", "1"], "an accuracy lies"),
    (["correlate", "--db", "{db.sqlite}", "--predict", "abc", "--method", "dc", "--ipc", "1"], "expected an acc"),
    (["correlate", "--db", "{db.sqlite}", "--metric", "speed"], "invalid choice"),
    # --- baseline, check ------------------------------------------------------------------------
    (["baseline", "--db", "missing.sqlite", "--out", "b.json"], "no results database here"),
    (["baseline", "--db", "{foreign.sqlite}", "--out", "b.json"], "not a medbench results database"),
    (["check", "--baseline", "missing.json", "--db", "{db.sqlite}"], "cannot read the golden file"),
    (["check", "--baseline", "{baseline_list.json}", "--db", "{db.sqlite}"], "not a golden file"),
    (["check", "--baseline", "{baseline_cells_int.json}", "--db", "{db.sqlite}"], "not a golden file"),
    (["check", "--baseline", "{baseline_cells_incomplete.json}", "--db", "{db.sqlite}"], "a golden cell lacks"),
    (["check", "--baseline", "{baseline_format1.json}", "--db", "{db.sqlite}"], "golden format 1"),
    (["check", "--baseline", "{baseline_invalid.json}", "--db", "{db.sqlite}"], "invalid JSON"),
    (["check", "--baseline", "{baseline_list.json}", "--db", "{foreign.sqlite}"], "not a"),
    # --- export, verify, audit, crossarch --------------------------------------------------------
    (["export", "nope", "--db", "{db.sqlite}", "--out", "pkg"], "no cell"),
    (["export", "abc", "--db", "missing.sqlite", "--out", "pkg"], "no results database here"),
    (["export", "abc", "--db", "{foreign.sqlite}", "--out", "pkg"], "not a medbench results database"),
    (["export", "@cell", "--db", "{truncated_db.sqlite}", "--out", "pkg"], "not an npz file"),
    (["export", "@cell", "--db", "{garbage_db.sqlite}", "--out", "pkg"], "not an npz file"),
    (["export", "@cell", "--db", "{db.sqlite}", "--out", "{file}"], "not a folder"),
    (["verify", "missing_pkg"], "no such folder"),
    (["verify", "{file}"], "no such folder"),
    (["audit", "@cell", "--db", "{db.sqlite}", "--out", "aud", "--device", "tpu"], "unknown device 'tpu'"),
    (["audit", "nope", "--db", "{db.sqlite}", "--out", "aud"], "no cell"),
    (["audit", "abc", "--db", "missing.sqlite", "--out", "aud"], "no results database here"),
    (["audit", "@cell", "--db", "{truncated_db.sqlite}", "--out", "aud"], "not an npz file"),
    (["audit", "@cell", "--db", "{db.sqlite}", "--out", "aud", "--bootstrap", "-1"], "must be ≥ 0"),
    (["crossarch", "--db", "missing.sqlite"], "no results database here"),
    (["crossarch", "--db", "{foreign.sqlite}"], "not a medbench results database"),
    (["crossarch", "--db", "{db.sqlite}", "--archs", "vit"], "unknown model vit"),
    (["crossarch", "--db", "{db.sqlite}", "--device", "tpu"], "unknown device 'tpu'"),
    (["crossarch", "--db", "{db.sqlite}", "--methods", "nope"], "no done cell with a condensed set matches"),
    # --- bench, experts, datasets ---------------------------------------------------------------
    (["bench", "--reproject", "missing.json"], "cannot read the bench report"),
    (["bench", "--reproject", "{bench_foreign.json}"], "not a `medbench bench` JSON report"),
    (["bench", "--reproject", "{bench_invalid.json}"], "invalid JSON"),
    (["bench", "--only", "everything"], "unknown section 'everything'"),
    (["bench", "--width", "0"], "must be at least 1"),
    (["experts", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["experts", "--dataset", "{toy.npz}", "--num-experts", "0"], "must be positive"),
    (["experts", "--dataset", "{toy.npz}", "--epochs", "0"], "must be positive"),
    (["experts", "--dataset", "{toy.npz}", "--method-args", "mtt:colour=1"], "unknown setting colour"),
    (["experts", "--dataset", "{toy.npz}", "--device", "tpu"], "unknown device 'tpu'"),
    (["experts", "--dataset", "{text.npz}"], "not an npz file"),
    (["datasets", "--size", "abc"], "invalid int value"),
    (["nosuchcommand"], "invalid choice"),
    # --- tune: search spaces and budgets (checked before the database exists) ---------------------
    ([*TUNE, "--space", "{space_unknown.yaml}"], "unknown field 'lr_imgg'"),
    ([*TUNE, "--space", "{space_range.yaml}"], "low 5 must be below high 1"),
    ([*TUNE, "--space", "{space_log.yaml}"], "a log scale needs low > 0"),
    ([*TUNE, "--space", "{space_scale.yaml}"], "unknown scale 'cubic'"),
    ([*TUNE, "--space", "{space_int.yaml}"], "integer range needs integer bounds"),
    ([*TUNE, "--space", "{space_key.yaml}"], "unknown key 'step'"),
    ([*TUNE, "--space", "{space_word.yaml}"], "bounds must be finite numbers"),
    ([*TUNE, "--space", "{space_stray.yaml}"], "search space for dc, which is not in the grid"),
    ([*TUNE, "--space", "{list.yaml}"], "expected a mapping of method name"),
    ([*TUNE, "--space", "{bad.yaml}"], "not valid YAML"),
    ([*TUNE, "--space", "missing.yaml"], "cannot read the search space"),
    ([*TUNE[:-1], "random"], "random has no search space"),
    ([*TUNE, "--trials", "0"], "must be positive"),
    ([*TUNE, "--time-budget", "-5"], "must be positive"),
    ([*TUNE, "--time-budget", "inf"], "must be a finite positive number"),
    ([*TUNE, "--selection-metric", "f1"], "invalid choice"),
    ([*TUNE, "--method-args", "dm:lr_img=-1"], "lr_img must be positive"),
    ([*RUN_TOY, "--budget-seconds", "0"], "budget seconds must be positive"),
    ([*RUN_TOY, "--budget-seconds", "ten"], "expected comma-separated seconds"),
    ([*RUN_TOY, "--budget-seconds", "inf"], "budget seconds must be positive"),
    ([*RUN_TOY, "--budget-flops", "0"], "budget FLOPs must be positive"),
    ([*RUN_TOY, "--budget-cpu-seconds", "x"], "expected comma-separated CPU seconds"),
    (["run", "{g_budget_flops_zero.yaml}"], "budget FLOPs must be positive"),
    ([*RUN_TOY, "--memory-budget", "0"], "must be positive"),
    (["run", "{g_budget_word.yaml}"], "budget_seconds must be numbers of seconds"),
    (["run", "{g_budget_zero.yaml}"], "budget seconds must be positive"),
    # --- typed values, duplicate keys ------------------------------------------------------------
    (["run", "{g_dataset_size_word.yaml}"], "size must be a whole number of pixels, got 'abc'"),
    (["run", "{g_duplicate_key.yaml}"], "gives 'ipc' twice (line"),
    (["run", "{g_duplicate_method.yaml}"], "gives 'dm' twice (line"),
    (["check", "--baseline", "{baseline_typed.json}", "--db", "{db.sqlite}"], "score is 'high', not"),
    # --- outputs that cannot be written: one check shared by every command that writes ------------
    (["report", "--db", "{db.sqlite}", "--out", "{file}/rep"], "is a file, not a folder"),
    (["report", "--db", "{db.sqlite}", "--out", "/proc/medbench-report"], "cannot write in /proc"),
    ([*RUN_TOY, "--report", "{file}/rep"], "is a file, not a folder"),
    (["baseline", "--db", "{db.sqlite}", "--out", "{file}/b.json"], "is a file, not a folder"),
    (["baseline", "--db", "{db.sqlite}", "--out", "/proc/medbench-b.json"], "cannot write in /proc"),
    (["export", "@cell", "--db", "{db.sqlite}", "--out", "{file}/pkg"], "is a file, not a folder"),
    (["export", "@cell", "--db", "{db.sqlite}", "--out", "/proc/medbench-pkg"], "cannot write in /proc"),
    (["audit", "@cell", "--db", "{db.sqlite}", "--out", "{file}/aud"], "is a file, not a folder"),
    (["audit", "@cell", "--db", "{db.sqlite}", "--out", "/proc/medbench-aud"], "cannot write in /proc"),
    (["bench", "--out", "{file}/bench"], "is a file, not a folder"),
    (["bench", "--out", "/proc/medbench-bench"], "cannot write in /proc"),
    (["experts", "--dataset", "{toy.npz}", "--experts-root", "{file}/experts"], "is a file, not a folder"),
    (["experts", "--dataset", "{toy.npz}", "--experts-root", "/proc/medbench-experts"], "cannot write in /proc"),
    ([*TUNE[:-4], "--db", "{file}/t.sqlite", "--width", "4", "--methods", "dm"], "is a file, not a folder"),
    ([*TUNE[:-4], "--db", "/proc/medbench-t.sqlite", "--width", "4", "--methods", "dm"], "cannot write in /proc"),
    (["merge", "{db.sqlite}", "--db", "{file}/m.sqlite"], "is a file, not a folder"),
    (["merge", "{db.sqlite}", "--db", "/proc/medbench-m.sqlite"], "cannot write in /proc"),
    # --- checked before the database exists: a share package, a class-folder conversion -----------
    ([*RUN, "--methods", "package", "--method-args", "package:path={pkg_tampered}", "--datasets", "{toy.npz}",
      "--ipc", "2", "--db", "out/r.sqlite"], "sha256"),
    ([*RUN, "--methods", "package", "--method-args", "package:path={pkg}", "--datasets", "{rgb.npz}", "--ipc", "2",
      "--db", "out/r.sqlite"], "the dataset is 3-channel"),
    ([*RUN, "--methods", "package", "--method-args", "package:path={pkg}", "--datasets", "{four_class.npz}",
      "--ipc", "2", "--db", "out/r.sqlite"], "with 4 classes"),
    ([*RUN, "--methods", "package", "--method-args", "package:path={pkg}", "--datasets", "{toy.npz}", "--ipc", "1",
      "--db", "out/r.sqlite"], "package has IPC 2; run it with --ipc 2"),
    ([*RUN, "--methods", "package", "--method-args", "package:path={pkg},sha256=abc", "--datasets", "{toy.npz}",
      "--ipc", "2", "--db", "out/r.sqlite"], "not the pinned abc"),
    ([*RUN, "--datasets", "{one_class_folder}", "--ipc", "1", "--size", "8", "--data-root", "cache",
      "--db", "out/r.sqlite"], "only one class"),
    ([*RUN, "--datasets", "{small_class_folder}", "--ipc", "5", "--size", "8", "--data-root", "cache",
      "--db", "out/r.sqlite"], "exceeds the smallest class"),
]


def _fingerprint(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root) + "/"] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _expand(argv: list[str], tmp: Path) -> list[str]:
    out = []
    for arg in argv:
        for name, make in FIXTURES.items():
            token = "{" + name + "}"
            if token in arg:
                path = tmp / "fixtures" / name
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    make(path)
                arg = arg.replace(token, str(path))
        out.append(arg)
    if "@cell" in out:  # the id of the one cell in the database the case names
        with sqlite3.connect(out[out.index("--db") + 1]) as conn:
            cell = conn.execute("SELECT cell_id FROM cells").fetchone()[0]
        conn.close()
        out[out.index("@cell")] = cell
    return out


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[f"{i:03d}-{c[0][0]}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, message):
    if "cuda" in argv:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA present")
    monkeypatch.chdir(tmp_path)
    args = _expand(argv, tmp_path)
    before = _fingerprint(tmp_path)
    try:
        code = main(args)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (args, out, err)
    assert err.count("\n") == 1 and err.endswith("\n"), err  # exactly one line
    assert "Traceback" not in err and message in err, err
    assert _fingerprint(tmp_path) == before  # nothing created, nothing changed


def test_the_suite_is_large_enough():
    assert len(CASES) >= 150
