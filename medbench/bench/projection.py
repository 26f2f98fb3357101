"""The wall-clock of the eight-dataset MedMNIST grid projected from measured step times."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medbench.bench.measure import EIGHT


def _linear(points: list[tuple[float, float]]) -> Callable[[float], float]:
    """Cost through the first and last (x, y) points, extrapolated linearly, never below 0.

    More images never cost less: when noise makes the measured slope negative, the larger of the
    two times is used as a constant (a conservative projection rather than one that reaches 0).
    """
    points = sorted(points)
    (x0, y0), (x1, y1) = points[0], points[-1]
    if x1 == x0 or y1 <= y0:
        top = max(y for _, y in points)
        return lambda _x: top
    slope = (y1 - y0) / (x1 - x0)
    return lambda x: max(0.0, y0 + slope * (x - x0))

def project(results: dict[str, Any], k: int = 5, ipcs: tuple[int, ...] = (1, 10, 50)) -> dict[str, Any]:
    """Projected seconds per (dataset, method, IPC) of the eight-dataset grid from measured times.

    Model (all at the measured width and 28 px; channels only change the first layer and are
    ignored): one evaluation network's SGD step costs ``a + b·images`` (fitted per network from
    the auto trainer at K = 5, IPC 1 and 10); a DC outer step scales with classes and linearly
    in IPC; an MTT iteration linearly in the synthetic images; scoring at the measured images/s.
    Method settings are the official defaults (DC 1000 iterations, checkpoint every 100; MTT
    5000 iterations, checkpoint every 500, buffer 100 experts × 50 epochs; eval 300 epochs, i.e. the
    `dc` protocol: the default `dsa` protocol trains 1000 epochs, about 3.3× the evaluation time).
    """
    import medmnist

    from medbench.methods.dc import loop_schedule

    s = results["settings"]
    classes8, batch = s["classes"], 256
    evals = [r for r in results["eval"] if r["k"] == (k if k in s["ks"] else max(s["ks"]))
             and r["mode"] == r["auto_picks"]]
    step = _linear([(r["images_per_step"], r["seconds"] / (r["k"] * s["epochs"])) for r in evals])
    pred = {r["mode"]: r["model_images_per_s"] for r in results["predict"]}
    auto_mode = evals[0]["auto_picks"] if evals else "sequential"
    predict_ips = pred.get(auto_mode, pred.get("sequential", 1.0))
    dc_outer = _linear([(r["ipc"], r["outer_step_s"]) for r in results["dc"]])
    mtt_iter = _linear([(r["ipc"] * classes8, r["iteration_s"]) for r in results["mtt"]])
    expert_ips = results["experts"]["images_per_s"]

    def epoch(n: int) -> float:  # one network, one epoch over n images
        full, rest = divmod(n, batch)
        return full * step(batch) + (step(rest) if rest else 0.0)

    def evaluation(n: int, n_score: int, networks: int = k) -> float:
        return networks * (300 * epoch(n) + n_score / predict_ips)

    rows, total = [], 0.0
    for name in EIGHT:
        info = medmnist.INFO[name]
        c = len(info["label"])
        n_train, n_val, n_test = (info["n_samples"][p] for p in ("train", "val", "test"))
        buffer = 100 * 50 * n_train / expert_ips
        for ipc in ipcs:
            n = c * ipc
            eval_s = evaluation(n, n_val + n_test)
            checkpoint = evaluation(n, n_val, networks=1)
            outer, inner = loop_schedule(ipc)
            dc_iter = outer * dc_outer(ipc) * c / classes8 + (outer - 1) * inner * epoch(n)
            cells = {
                "random": eval_s,
                "dc": 1000 * dc_iter + 11 * checkpoint + eval_s,
                "mtt": 5000 * mtt_iter(n) + 11 * checkpoint + eval_s + (buffer if ipc == ipcs[0] else 0.0),
            }
            for method, seconds in cells.items():
                rows.append({"dataset": name, "classes": c, "n_train": n_train, "method": method, "ipc": ipc,
                             "seconds": seconds})
                total += seconds
    return {"rows": rows, "total_seconds": total, "eval_models": k, "auto_mode": auto_mode,
            "note": "MTT's expert buffer (100 experts × 50 epochs) is charged once per dataset, to its first IPC."}
