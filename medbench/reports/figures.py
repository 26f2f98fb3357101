"""Report figures (matplotlib, Agg), returned as base64 PNG so the HTML needs no other file."""

from __future__ import annotations

import base64
import io
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scikit_posthocs as sp
from matplotlib.lines import Line2D
from PIL import Image

from medbench.analysis.correlation import Correlation
from medbench.analysis.ranking import Ranking
from medbench.core.errors import DataError
from medbench.core.files import npz_arrays
from medbench.reports.tables import method_order

plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                     "axes.grid": True, "grid.alpha": 0.25, "figure.dpi": 100})


def colors(methods: list[str]) -> dict[str, str]:
    """The same colour for a method in every figure: random grey, full black, the rest tab10."""
    palette = plt.get_cmap("tab10").colors
    others = [m for m in method_order(methods) if m not in ("random", "full")]
    out = {m: matplotlib.colors.to_hex(palette[i % 10]) for i, m in enumerate(others)}
    out.update({"random": "#7f7f7f", "full": "#111111"})
    return out


def to_base64(fig: plt.Figure) -> str:
    """A figure as base64 PNG with a 256-colour palette: plots have few colours besides their
    anti-aliasing, and the palette makes them about a third of the size, so reports stay small."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    buffer.seek(0)
    out = io.BytesIO()
    Image.open(buffer).convert("RGB").quantize(256).save(out, format="png", optimize=True)
    return base64.b64encode(out.getvalue()).decode("ascii")


def _grid(n: int, ncols: int = 3, w: float = 4.0, h: float = 3.1) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def score_vs_ipc(agg: pd.DataFrame, metric: str, title: str) -> str | None:
    """One panel per dataset: the test ``metric`` vs IPC per method (error bars: std across seeds);
    the full training set as a dashed line with its ±std band."""
    acc = agg[agg.metric == metric]
    datasets = sorted({(d, s) for d, s in zip(acc.dataset, acc["size"], strict=True)}, key=str)
    if not datasets:
        return None
    palette = colors(list(acc.method.unique()))
    fig, axes = _grid(len(datasets))
    for ax, (dataset, size) in zip(axes, datasets, strict=True):
        sub = acc[(acc.dataset == dataset) & (acc["size"] == size)]
        ipcs = sorted(int(i) for i in sub.ipc.dropna().unique())
        for method in method_order(list(sub.method.unique())):
            rows = sub[sub.method == method]
            if method == "full":
                mean, std = rows["mean"].iloc[0], rows["std"].fillna(0).iloc[0]
                ax.axhline(100 * mean, color=palette["full"], ls="--", lw=1.2, label=f"full ({100 * mean:.1f})")
                ax.axhspan(100 * (mean - std), 100 * (mean + std), color=palette["full"], alpha=0.08)
                continue
            rows = rows.sort_values("ipc")
            ax.errorbar(rows.ipc.astype(float), 100 * rows["mean"], yerr=100 * rows["std"].fillna(0),
                        marker="o", ms=4, capsize=3, lw=1.6, color=palette[method], label=method,
                        ls="--" if method == "random" else "-")
        if ipcs and max(ipcs) / min(ipcs) >= 10:
            ax.set_xscale("log")
        ax.set_xticks(ipcs, [str(i) for i in ipcs])
        ax.minorticks_off()
        ax.set_title(f"{dataset}" + ("" if pd.isna(size) else f" · {int(size)} px"), fontweight="bold")
        ax.set_xlabel("images per class (IPC)")
        ax.set_ylabel(f"test {metric.replace('_', ' ')} (%)")
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10, y=1.0)
    fig.tight_layout()
    return to_base64(fig)


def correlation_scatter(results: list[Correlation], title: str) -> str | None:
    """One panel per method: distilled vs random score per dataset (colour = IPC), the fitted
    line with its 95 % confidence band where there are ≥ 3 datasets, and the y = x diagonal."""
    if not results:
        return None
    methods = method_order(sorted({c.method for c in results}))
    ipcs = sorted({c.ipc for c in results})
    cmap = plt.get_cmap("viridis")
    ipc_color = {ipc: cmap(0.15 + 0.7 * i / max(len(ipcs) - 1, 1)) for i, ipc in enumerate(ipcs)}
    fig, axes = _grid(len(methods), w=4.4, h=4.0)
    for ax, method in zip(axes, methods, strict=True):
        xs_all, ys_all = [], []
        for c in (c for c in results if c.method == method):
            x, y = 100 * np.asarray(c.x), 100 * np.asarray(c.y)
            xs_all += list(x)
            ys_all += list(y)
            label = f"IPC {c.ipc}: r = {c.pearson_r:.2f}" if c.ok else f"IPC {c.ipc}: {c.message}"
            ax.scatter(x, y, s=28, color=ipc_color[c.ipc], label=label, zorder=3, edgecolor="white", lw=0.6)
            for name, xi, yi in zip(c.datasets, x, y, strict=True):
                ax.annotate(name.removesuffix("mnist"), (xi, yi), fontsize=6, xytext=(3, -2),
                            textcoords="offset points", alpha=0.7)
            if c.ok and c.line is not None:
                grid = np.linspace(min(c.x), max(c.x), 50)
                low, high = c.line.confidence_band(grid)
                ax.plot(100 * grid, 100 * (c.line.slope * grid + c.line.intercept), color=ipc_color[c.ipc], lw=1.4)
                ax.fill_between(100 * grid, 100 * low, 100 * high, color=ipc_color[c.ipc], alpha=0.15, lw=0)
        if xs_all:
            lo = min(xs_all + ys_all) - 3
            hi = max(xs_all + ys_all) + 3
            ax.plot([lo, hi], [lo, hi], ls=":", color="#999999", lw=1, label="y = x (no gain)")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(method, fontweight="bold")
        ax.set_xlabel("random subset (%)")
        ax.set_ylabel(f"{method} (%)")
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.suptitle(title, fontsize=10, y=1.0)
    fig.tight_layout()
    return to_base64(fig)


def load_images(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """uint8 images (N, H, W[, 3]) and labels of a stored condensed set; None when unreadable.

    Uses the npz's uint8 ``train_images`` (already denormalised); older files without it are
    denormalised from ``images_float32`` with the stored ``norm_mean``/``norm_std``.
    """
    try:
        npz = npz_arrays(path)
        labels = npz["train_labels"].reshape(-1)
        if "train_images" in npz:
            return npz["train_images"], labels
        x = npz["images_float32"]  # N, C, H, W normalised
        mean = npz["norm_mean"].reshape(1, -1, 1, 1)
        std = npz["norm_std"].reshape(1, -1, 1, 1)
        x = np.clip((x * std + mean) * 255, 0, 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
        return (x[..., 0] if x.shape[-1] == 1 else x), labels
    except (DataError, KeyError, ValueError):
        return None


def mosaic(images: np.ndarray, labels: np.ndarray, per_class: int = 10) -> tuple[np.ndarray, list[int], bool]:
    """One row per class, at most ``per_class`` images each, separated by white lines.

    With fewer than 3 images per class the classes become columns instead (IPC 1 would otherwise
    be one tall strip). Returns the pixels, the classes and whether classes are rows.
    """
    classes = sorted(int(c) for c in np.unique(labels))
    h, w = images.shape[1:3]
    per = max(min(per_class, int((labels == c).sum())) for c in classes)
    rows_are_classes = per >= 3
    n_rows, n_cols = (len(classes), per) if rows_are_classes else (per, len(classes))
    pad = max(1, h // 14)
    shape = (n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, *images.shape[3:])
    out = np.full(shape, 255, dtype=np.uint8)
    for k, c in enumerate(classes):
        for j, image in enumerate(images[labels == c][:per_class]):
            r, col = (k, j) if rows_are_classes else (j, k)
            y, x = pad + r * (h + pad), pad + col * (w + pad)
            out[y : y + h, x : x + w] = image
    return out, classes, rows_are_classes


def png_base64(pixels: np.ndarray) -> str:
    """A uint8 image as a pixel-exact PNG (no resampling, so a few KB per condensed set)."""
    buffer = io.BytesIO()
    rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
    plt.imsave(buffer, rgb, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def anytime(frame: pd.DataFrame, title: str) -> str | None:
    """One panel per (dataset, IPC): test accuracy reached within a distillation budget, per method
    (mean and ± std band across seeds), drawn at the mean seconds of distillation actually spent
    (log scale), the run without a budget as an open marker; a method run only without a budget as a
    dashed line from the seconds it took (random, at no cost, across the whole panel)."""
    if frame.empty:
        return None
    panels = sorted({(d, int(i)) for d, i in zip(frame.dataset, frame.ipc, strict=True)}, key=str)
    palette = colors(list(frame.method.unique()))
    fig, axes = _grid(len(panels))
    for ax, (dataset, ipc) in zip(axes, panels, strict=True):
        sub = frame[(frame.dataset == dataset) & (frame.ipc == ipc)]
        right = 1.5 * max(sub.seconds.max(), 1.0)
        for method in method_order(list(sub.method.unique())):
            cells = sub[sub.method == method]
            if cells.budget.isna().all():  # run only without a budget: its accuracy from the seconds it took on
                mean, seconds = 100 * cells.score.mean(), cells.seconds.mean()
                if seconds < 0.5:  # random: available at no cost
                    ax.axhline(mean, color=palette[method], ls="--", lw=1, label=method)
                else:
                    ax.plot([seconds, right], [mean, mean], color=palette[method], ls="--", lw=1, marker="s", ms=3,
                            markevery=[0], label=method)
                continue
            # One point per budget (and the run without one), at the seconds actually spent.
            labels = [f"{k} {a}" if isinstance(k, str) else "" for k, a in zip(cells.budget_kind, cells.budget,
                                                                                  strict=True)]
            stats = (cells.assign(budget=labels).groupby("budget")  # "": the run without a budget
                     .agg(seconds=("seconds", "mean"), mean=("score", "mean"), std=("score", "std"))
                     .sort_values("seconds"))
            x, m, sd = stats.seconds.to_numpy(), 100 * stats["mean"].to_numpy(), 100 * stats["std"].fillna(0).to_numpy()
            ax.plot(x, m, marker="o", ms=3, color=palette[method], label=method)
            ax.fill_between(x, m - sd, m + sd, color=palette[method], alpha=0.15, lw=0)
            if "" in stats.index:  # the run without a budget: open marker
                full = stats.loc[""]
                ax.plot(full.seconds, 100 * full["mean"], marker="o", ms=6, mfc="white", color=palette[method])
        ax.set_xscale("log")
        ax.set_title(f"{Path(dataset).stem} · IPC {ipc}")
        ax.set_xlabel("distillation seconds")
        ax.set_ylabel("test score %")
    # One legend for all panels, beside them, with what the markers mean.
    handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    handles["run without a budget"] = Line2D([], [], marker="o", ms=6, mfc="white", color="0.3", ls="none")
    handles["run only without a budget:\nfrom its seconds on"] = Line2D([], [], marker="s", ms=3, color="0.3", ls="--",
                                                                       lw=1)
    spare = [ax for ax in fig.axes if not ax.get_visible()]
    if spare:  # the grid's empty slot
        spare[0].set_visible(True)
        spare[0].axis("off")
        spare[0].legend(handles.values(), handles.keys(), fontsize=7, frameon=False, loc="center")
    else:
        fig.legend(handles.values(), handles.keys(), fontsize=7, frameon=False, loc="center left",
                   bbox_to_anchor=(1.0, 0.5))
    fig.subplots_adjust(hspace=0.45, wspace=0.28)
    fig.suptitle(textwrap.fill(title, 160), fontsize=9)
    return to_base64(fig)


def cd_diagram(rankings: list[Ranking], title: str) -> str | None:
    """One critical-difference diagram per IPC (scikit-posthocs): methods at their average rank across
    datasets, joined by a bar where the Wilcoxon–Holm tests do not separate them."""
    drawn = [r for r in rankings if len(r.ranks) >= 2]
    if not drawn:
        return None
    fig, axes = plt.subplots(len(drawn), 1, figsize=(8.5, 1.2 + 0.32 * max(len(r.ranks) for r in drawn)),
                             squeeze=False)
    for ax, ranking in zip(axes[:, 0], drawn, strict=True):
        methods = list(ranking.ranks.index)
        significance = (ranking.posthoc.loc[methods, methods] if ranking.posthoc is not None
                        else pd.DataFrame(1.0, index=methods, columns=methods))
        sp.critical_difference_diagram(ranking.ranks, significance, ax=ax, label_props={"fontsize": 8})
        ax.set_title(f"IPC {ranking.ipc} · {len(ranking.datasets)} datasets"
                     + (f" · Friedman p = {ranking.friedman_p:.2g}" if np.isfinite(ranking.friedman_p) else ""),
                     fontsize=9)
    fig.suptitle(textwrap.fill(title, 120), fontsize=9)
    fig.tight_layout()
    return to_base64(fig)
