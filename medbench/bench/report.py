"""A bench run's report: the machine, the measurements rendered as Markdown, both files written;
and a saved report re-projected."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from medbench.bench.kernels import bench_kernels, render_kernels
from medbench.bench.measure import (
    EIGHT,
    MODES,
    OPT_IN,
    OPTION_VARIANTS,
    PROJECTION_NEEDS,
    Settings,
    _seeded,
    bench_dc,
    bench_dm,
    bench_eval,
    bench_experts,
    bench_mtt,
    bench_options,
    bench_predict,
)
from medbench.bench.projection import project
from medbench.core.errors import MedbenchError


def machine(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": str(device), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info

def _slug(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda-" + "".join(ch if ch.isalnum() else "-" for ch in torch.cuda.get_device_name(device).lower())
    return "cpu"

def _fmt_hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h"

def busy_warning(load: Sequence[float] | None, cores: int | None) -> str:
    """A loud line when other work already kept the machine's cores busy at the start: small networks
    then slow down 10–50× (threads spin-wait for a core), which distorts times and their ratios."""
    if not load or not cores or load[0] < cores:
        return ""
    return (f"**Busy machine: load average {load[0]:.1f} on {cores} cores at the start.** Other processes competed "
            "for the CPU during these measurements; treat the times and ratios below as unreliable and rerun on an "
            "idle machine.")

def render(results: dict[str, Any]) -> str:
    """The Markdown report."""
    m, s = results["machine"], results["settings"]
    out = [f"# medbench bench — {results['device_slug']} — {results['date']}", ""]
    if m["device"].startswith("cpu") and not results.get("options"):
        bf16 = (" bf16 autocast is timed in the kernels section (its accuracy: `reports/bf16/`); the other"
                if results.get("kernels") else " GPU-only")
        out += [f"**CPU run.**{bf16} speed options (channels-last, torch.compile, cuDNN benchmark; `EvalOptions`) "
                "are **not measured** in this report and stay off by default.", ""]
    busy = busy_warning(results.get("load_start"), m.get("cpu_count"))
    if busy:
        out += [busy, ""]
    out += ["## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in m.items()]
    out += ["", f"Command: `{results['command']}`", "",
            f"Settings: {', '.join(f'{k}={v}' for k, v in s.items())}", "",
            f"Load average at start {results['load_start']}, at end {m['load_average']} "
            "(a shared machine: compare ratios within this report; medians of "
            f"{s['repeats']} interleaved repeats).", ""]
    if results.get("eval"):
        out += ["## Evaluation training: networks × epochs per second",
                f"(ConvNet width {s['width']} depth {s['depth']}, {s['classes']} classes, {s['size']} px, "
                f"{s['epochs']} epochs per measurement; × = speed relative to sequential)", "",
                "| IPC | images/step | K | sequential | vmap | grouped | auto picks | auto vs sequential |",
                "|---|---|---|---|---|---|---|---|"]
        for ipc in s["ipcs"]:
            for k in s["ks"]:
                row = {r["mode"]: r for r in results["eval"] if r["ipc"] == ipc and r["k"] == k}
                seq, auto = row["sequential"], row["sequential"]["auto_picks"]
                cells = [f"{row[mo]['net_epochs_per_s']:.1f} ({row[mo]['vs_sequential']:.2f}×)" for mo in MODES]
                out.append(f"| {ipc} | {seq['images_per_step']} | {k} | {' | '.join(cells)} | {auto} | "
                           f"{row[auto]['vs_sequential']:.2f}× |")
        out.append("")
    if results.get("options"):
        out += _render_options(results["options"], s)
    if results.get("predict"):
        out += ["## Scoring: model·images per second (K = 5)", "", "| mode | model·images/s |", "|---|---|"]
        out += [f"| {r['mode']} | {r['model_images_per_s']:,.0f} |" for r in results["predict"]]
        out.append("")
    if results.get("dc"):
        out += ["## DC", f"(real batch {s['batch_real']} per class)", "",
                "| IPC | outer step | inner epoch | (outer, inner) | iteration (composed) | iteration (measured) |",
                "|---|---|---|---|---|---|"]
        for r in results["dc"]:
            measured = f"{r['iteration_s_measured']:.3f} s" if "iteration_s_measured" in r else "—"
            out.append(f"| {r['ipc']} | {r['outer_step_s']:.3f} s | {r['inner_epoch_s']:.4f} s | "
                       f"({r['outer_loop']}, {r['inner_loop']}) | {r['iteration_s_composed']:.3f} s | {measured} |")
        out.append("")
    if results.get("dm"):
        out += ["## DM", "", "| IPC | iteration |", "|---|---|"]
        out += [f"| {r['ipc']} | {r['iteration_s']:.3f} s |" for r in results["dm"]]
        out.append("")
    if results.get("mtt"):
        out += ["## MTT (exact recompute gradient, DSA, one iteration in a fresh process)", "",
                "| IPC | J | iteration | peak memory above start |", "|---|---|---|---|"]
        out += [f"| {r['ipc']} | {r['syn_steps']} | {r['iteration_s']:.3f} s | {r['delta_mb']:.0f} MB |"
                for r in results["mtt"]]
        out.append("")
    if results.get("experts"):
        e = results["experts"]
        out += ["## Expert-buffer training", "",
                f"{e['images_per_s']:,.0f} images/s ({e['images']} images × {e['epochs']} epochs, DSA, plain SGD).",
                ""]
    if results.get("kernels"):
        out += render_kernels(results["kernels"])
    if results.get("projection"):
        p = results["projection"]
        where = "this CPU" if m["device"].startswith("cpu") else m.get("gpu", m["device"])
        out += ["## Projection: the eight-dataset grid", "",
                f"Random, DC, MTT × IPC 1, 10, 50 × {p['eval_models']} evaluation networks on "
                f"{', '.join(EIGHT)} (published MedMNIST split sizes), projected from the numbers above for "
                f"**{where}** at width {s['width']} (eval trainer: {p['auto_mode']}). A model, not a measurement: "
                "see `medbench.bench.project`. " + p["note"], "",
                "| dataset | classes | train | random (1/10/50) | DC (1/10/50) | MTT (1/10/50) |",
                "|---|---|---|---|---|---|"]
        for name in EIGHT:
            rows = [r for r in p["rows"] if r["dataset"] == name]
            by = {meth: " / ".join(_fmt_hours(r["seconds"]) for r in rows if r["method"] == meth)
                  for meth in ("random", "dc", "mtt")}
            out.append(f"| {name} | {rows[0]['classes']} | {rows[0]['n_train']:,} | {by['random']} | {by['dc']} | "
                       f"{by['mtt']} |")
        out += ["", f"**Total: {_fmt_hours(p['total_seconds'])}** "
                f"({p['total_seconds'] / 86400:,.1f} days) on one such device, cells run one after another.", ""]
    return "\n".join(out)

def _render_options(rows: list[dict[str, Any]], s: dict[str, Any]) -> list[str]:
    names = list(dict.fromkeys(r["variant"] for r in rows))
    labels = [OPTION_VARIANTS[n].label for n in names]
    out = ["## Speed options, each alone: networks × epochs per second",
           f"(K = {rows[0]['k']} networks, ConvNet width {s['width']}, {s['epochs']} epochs per call; × = relative to "
           "the baseline of the same trainer; in brackets the seconds of the variant's first, 1-epoch call, which pays "
           "compilation once per process and shape. Speed only: bf16 must also be checked for accuracy on real data "
           "before it is turned on.)", "",
           "| IPC | trainer | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for (ipc, trainer), group in _group(rows, ("ipc", "trainer")).items():
        by = {r["variant"]: r for r in group}
        cells = []
        for n in names:
            r = by.get(n)
            if r is None or "skipped" in r:
                cells.append(f"n/a ({r['skipped']})" if r else "—")
            else:
                ratio = f"{r['vs_baseline']:.2f}×" if r.get("vs_baseline") else "—"
                cells.append(f"{r['net_epochs_per_s']:.1f} ({ratio}) [{r['first_call_s']:.2f} s]")
        out.append(f"| {ipc} | {trainer} | " + " | ".join(cells) + " |")
    return [*out, ""]

def _group(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups

def run_bench(s: Settings, out_dir: Path, command: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure everything, write ``<out_dir>/<device>-<date>[-quick].md`` and ``.json``."""
    from medbench.core.devices import resolve_device

    device = resolve_device(s.device)
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results: dict[str, Any] = {"date": dt.date.today().isoformat(), "device_slug": _slug(device),
                               "command": command, "settings": dataclasses.asdict(s), "load_start": load_start}
    sections = {"eval": bench_eval, "options": bench_options, "predict": bench_predict, "dc": bench_dc,
                "dm": bench_dm, "mtt": bench_mtt, "experts": bench_experts, "kernels": bench_kernels}
    only = set(s.only or set(sections) - set(OPT_IN))
    if s.projection and not set(PROJECTION_NEEDS) <= only:
        raise MedbenchError(f"--projection needs the sections {','.join(PROJECTION_NEEDS)}")
    with _seeded():
        for name, fn in sections.items():
            if name in only:
                results[name] = fn(s, device, log)
    if s.projection:
        results["projection"] = project(results)
        log(f"projection: {_fmt_hours(results['projection']['total_seconds'])} for the eight-dataset grid")
    results["machine"] = machine(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ("-quick" if s.quick else "") + (f"-{'-'.join(s.only)}" if s.only else "")
    stem = out_dir / f"{results['device_slug']}-{results['date']}{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(render(results) + "\n")
    results["paths"] = [str(stem.with_suffix(".md")), str(stem.with_suffix(".json"))]
    log(f"wrote {results['paths'][0]} and .json")
    return results

def reproject(path: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Recompute the projection of a saved ``.json`` report and rewrite it and its ``.md``."""
    try:
        results = json.loads(Path(path).read_text())
    except OSError as exc:
        raise MedbenchError(f"{path}: cannot read the bench report ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MedbenchError(f"{path}: not a bench report (invalid JSON: {exc})") from None
    needed = ("settings", "eval", "predict", "dc", "mtt", "experts")
    if not isinstance(results, dict) or any(k not in results for k in needed):
        raise MedbenchError(f"{path}: not a `medbench bench` JSON report with every section (needs "
                            f"{', '.join(needed)}); nothing was rewritten")
    try:
        results["projection"] = project(results)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
        raise MedbenchError(f"{path}: cannot project from this report ({type(exc).__name__}: {exc}); "
                            "nothing was rewritten") from None
    results["settings"]["projection"] = True
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    path.with_suffix(".md").write_text(render(results) + "\n")
    log(f"projection: {_fmt_hours(results['projection']['total_seconds'])}; rewrote {path} and .md")
    return results
