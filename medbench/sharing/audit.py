"""Privacy audit of a distilled set before it leaves the hospital.

(One of the two modules over 500 lines: the audit's neighbour search, memorisation reference and
membership attack share one loaded cell and one report; issue 28 replaces the attack.)

Two questions, answered at the source site (the audit needs the real training split):

1. *Does the set contain (near-)copies of real images?* For every distilled image: its nearest
   training images by L2 in normalised pixel space and by SSIM in [0, 1] pixel space, with the
   distances; a figure with each distilled image beside its nearest real image; and the share of
   distilled images closer to a real image than two real images of the same class typically are
   (median same-class distance). A stricter reference is reported next to it: the 5th percentile
   of each real image's distance to its own nearest other training image. A class *average* is
   closer to real images than they are to each other, so the median flag alone over-calls
   averaging methods (DM, DC); being closer than real images ever are to their neighbours points
   at a copy.
2. *Does a network trained on the set leak membership?* A loss-threshold attack on a network
   trained (the cell's protocol) on the distilled set, against the same attack on a network
   trained on a random real subset of the same size. Members and non-members are chosen so the
   attack can only use membership (see :func:`member_sets` and ``audit.md``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from medbench.core.devices import resolve_device
from medbench.core.files import npz_arrays
from medbench.data.registry import DEFAULT_DATA_ROOT
from medbench.data.splits import Splits
from medbench.evaluation import Protocol
from medbench.evaluation.protocol import model_seeds
from medbench.nn.training import train_network
from medbench.sharing.export import _finite, check_out_dir
from medbench.sharing.figures import pairs_sheet
from medbench.storage.stored import class_names, load_cell_splits, open_store, resolve_cell

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_BUDGET = 3e11  # multiply-adds for exhaustive SSIM search; above it, search a shortlist by L2
NEAR_COPY_PERCENTILE = 5.0


@dataclass(frozen=True)
class AuditSettings:
    """Knobs of the audit; the defaults are what ``medbench audit`` runs."""

    k: int = 3  # nearest neighbours listed per distilled image
    ssim_shortlist: int | None = None  # None: exhaustive when affordable, else 512 by L2
    pairs_per_class: int = 2000  # real same-class pairs sampled for the median distance
    reference_images: int = 1000  # real images whose own nearest-neighbour distance is measured
    mia: bool = True
    max_members: int = 2000  # per side of the attack
    bootstrap: int = 1000
    seed: int = 0


# --- distances --------------------------------------------------------------------------------


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).double()


def nearest_l2(queries: torch.Tensor, pool: torch.Tensor, k: int,
               chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest ``pool`` rows of each query by L2: (distances, indices), distances recomputed
    directly so an exact copy reads 0, not rounding noise of the ‖a‖²+‖b‖²−2ab expansion."""
    q = _flat(queries)
    k = min(k, pool.shape[0])
    best_d = torch.full((q.shape[0], 0), math.inf, dtype=torch.float64)
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
    q_sq = (q * q).sum(1, keepdim=True)
    for start in range(0, pool.shape[0], chunk):
        p = _flat(pool[start : start + chunk])
        d2 = q_sq + (p * p).sum(1)[None, :] - 2 * q @ p.T
        cand_d = torch.cat([best_d, d2], 1)
        cand_i = torch.cat([best_i, torch.arange(start, start + p.shape[0]).expand(q.shape[0], -1)], 1)
        best_d, order = cand_d.topk(min(k, cand_d.shape[1]), dim=1, largest=False)
        best_i = cand_i.gather(1, order)
    exact = (q[:, None, :] - _flat(pool[best_i.flatten()]).view(q.shape[0], k, -1)).norm(dim=2)
    exact, order = exact.sort(dim=1)
    return exact, best_i.gather(1, order)


def _gauss_valid(n: int, window: int, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Matrix of a 1-D normalised Gaussian filter without padding: (n − window + 1) × n."""
    x = torch.arange(window, dtype=torch.float64) - window // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    out = torch.zeros(n - window + 1, n, dtype=torch.float64)
    for i in range(out.shape[0]):
        out[i, i : i + window] = g
    return out


def ssim_window(size: int) -> int:
    """11 px, or the largest odd window that fits a smaller image."""
    return SSIM_WINDOW if size >= SSIM_WINDOW else (size if size % 2 else size - 1)


def ssim_matrix(a: torch.Tensor, b: torch.Tensor, *, window: int | None = None, max_val: float = 1.0,
                eps: float = 1e-12, chunk: int = 256) -> torch.Tensor:
    """Mean SSIM of every pair (a_i, b_j) of images in [0, max_val]: an ``len(a)×len(b)`` matrix.

    Same definition as ``kornia.metrics.ssim(..., padding='valid').mean()`` per pair (Gaussian
    window, σ = 1.5), but each image's local means and variances are filtered once and only the
    cross term is filtered per pair, with the separable filter as two small matrix products.
    """
    size = a.shape[-1]
    window = window or ssim_window(size)
    g = _gauss_valid(size, window)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2

    def filt(x: torch.Tensor) -> torch.Tensor:  # (..., H, W) -> (..., h, w)
        return g @ x @ g.T

    a, b = a.double(), b.double()
    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.float64)
    for i in range(a.shape[0]):
        for start in range(0, b.shape[0], chunk):
            bb = b[start : start + chunk]
            m_b, v_b = mu_b[start : start + chunk], var_b[start : start + chunk]
            cov = filt(a[i][None] * bb) - mu_a[i][None] * m_b
            num = (2 * mu_a[i][None] * m_b + c1) * (2 * cov + c2)
            den = (mu_a[i][None] ** 2 + m_b**2 + c1) * (var_a[i][None] + v_b + c2) + eps
            out[i, start : start + chunk] = (num / den).flatten(1).mean(1)
    return out


def nearest_ssim(queries: torch.Tensor, pool: torch.Tensor,
                 shortlist: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """Highest-SSIM pool image per query (over all of ``pool``, or over each query's shortlist)."""
    best_s, best_i = np.empty(len(queries)), np.empty(len(queries), dtype=np.int64)
    if shortlist is None:
        sims = ssim_matrix(queries, pool)
        best_s[:], best_i[:] = sims.max(1).values.numpy(), sims.argmax(1).numpy()
        return best_s, best_i
    for q in range(len(queries)):
        cand = shortlist[q]
        sims = ssim_matrix(queries[q : q + 1], pool[cand])[0]
        best_s[q], best_i[q] = float(sims.max()), int(cand[int(sims.argmax())])
    return best_s, best_i


def same_class_median(real: torch.Tensor, labels: torch.Tensor, num_classes: int, pairs: int,
                      generator: torch.Generator) -> list[float | None]:
    """Median L2 distance between two different real images of the same class (sampled pairs)."""
    out: list[float | None] = []
    flat = _flat(real)
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < 2:
            out.append(None)
            continue
        i = idx[torch.randint(len(idx), (pairs,), generator=generator)]
        j = idx[torch.randint(len(idx), (pairs,), generator=generator)]
        keep = i != j
        out.append(float((flat[i[keep]] - flat[j[keep]]).norm(dim=1).median()))
    return out


def real_nn_distances(real: torch.Tensor, n: int, generator: torch.Generator) -> np.ndarray:
    """Each of ``n`` sampled real images' distance to its nearest *other* training image."""
    sample = torch.randperm(real.shape[0], generator=generator)[:n]
    d, i = nearest_l2(real[sample], real, k=2)
    own = i[:, 0] == sample  # the image itself (distance 0) comes first; exact duplicates aside
    return torch.where(own, d[:, 1], d[:, 0]).numpy()


# --- membership inference ---------------------------------------------------------------------


def rank_auc(member_scores: np.ndarray, non_scores: np.ndarray) -> np.ndarray:
    """ROC AUC of members vs non-members (higher score = member) from ranks, ties counted half
    (the Mann–Whitney U statistic); rows of 2-D inputs are independent resamples."""
    m, n = np.atleast_2d(member_scores), np.atleast_2d(non_scores)
    ranks = rankdata(np.concatenate([m, n], axis=1), axis=1)
    n_m, n_n = m.shape[1], n.shape[1]
    u = ranks[:, :n_m].sum(axis=1) - n_m * (n_m + 1) / 2
    return u / (n_m * n_n)


def auc_with_ci(member_scores: np.ndarray, non_scores: np.ndarray, bootstrap: int,
                rng: np.random.Generator) -> dict[str, float | None]:
    """AUC with a 95% interval from a stratified bootstrap (members and non-members resampled
    separately, so each resample keeps both sizes)."""
    if len(member_scores) < 1 or len(non_scores) < 1:
        return {"auc": None, "ci_low": None, "ci_high": None}
    auc = float(rank_auc(member_scores, non_scores)[0])
    if bootstrap < 1:
        return {"auc": auc, "ci_low": None, "ci_high": None}
    boots = rank_auc(rng.choice(member_scores, (bootstrap, len(member_scores))),
                     rng.choice(non_scores, (bootstrap, len(non_scores))))
    low, high = np.percentile(boots, [2.5, 97.5])
    return {"auc": auc, "ci_low": float(low), "ci_high": float(high)}


def class_matched(pool_labels: torch.Tensor, counts: list[int], generator: torch.Generator) -> torch.Tensor:
    """Indices drawing ``counts[c]`` images of each class c from ``pool_labels`` (all if fewer)."""
    chosen = []
    for c, n in enumerate(counts):
        idx = torch.nonzero(pool_labels == c).flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[:n]])
    return torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)


def member_sets(splits: Splits, selected: torch.Tensor | None, settings: AuditSettings,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(member training indices, non-member test indices), with identical class counts.

    Non-members come from the *test* split only: methods may pick checkpoints on val, so val
    images are not cleanly outside the process. For a selection (random) the members are exactly
    the selected real images. For synthetic sets every training image took part in distillation,
    so members are training images sampled to match the test split's class counts.
    """
    c = splits.num_classes
    test_counts = splits.test.class_counts(c)
    if selected is not None:
        sel_labels = splits.train.labels[selected]
        want = [min(int((sel_labels == k).sum()), test_counts[k]) for k in range(c)]
        members = selected[class_matched(sel_labels, want, generator)]
    else:
        train_counts = splits.train.class_counts(c)
        total = sum(min(t, r) for t, r in zip(test_counts, train_counts, strict=True))
        scale = min(1.0, settings.max_members / max(total, 1))
        want = [max(1, int(min(t, r) * scale)) if min(t, r) else 0
                for t, r in zip(test_counts, train_counts, strict=True)]
        members = class_matched(splits.train.labels, want, generator)
    member_counts = torch.bincount(splits.train.labels[members], minlength=c).tolist()
    non_members = class_matched(splits.test.labels, member_counts, generator)
    return members, non_members


def _losses(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, prepare: Any) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 512):
            x = prepare(images[start : start + 512])
            y = labels[start : start + 512]
            out.append(torch.nn.functional.cross_entropy(model(x), y, reduction="none").cpu())
    model.train()
    return torch.cat(out).numpy() if out else np.zeros(0)


def _train(images: torch.Tensor, labels: torch.Tensor, splits: Splits, protocol: Protocol, seed: int,
           lr: float | None) -> torch.nn.Module:
    """One network under the cell's protocol (the training the evaluation protocol does)."""
    torch.manual_seed(seed)
    model = protocol.model_spec().build(splits.channels, splits.num_classes, splits.size).to(splits.device)
    rate = lr if (protocol.use_learned_lr and lr) else protocol.lr
    train_network(model, images.to(splits.device), labels.to(splits.device), epochs=protocol.epochs, lr=rate,
                  generator=torch.Generator().manual_seed(seed), momentum=protocol.momentum,
                  weight_decay=protocol.weight_decay, batch_size=protocol.batch_size)
    return model


def _attack(model: torch.nn.Module, splits: Splits, members: torch.Tensor, non_members: torch.Tensor,
            prepare: Any, settings: AuditSettings, rng: np.random.Generator) -> dict[str, Any]:
    member_loss = _losses(model, splits.train.images[members], splits.train.labels[members], prepare)
    non_loss = _losses(model, splits.test.images[non_members], splits.test.labels[non_members], prepare)
    result = auc_with_ci(-member_loss, -non_loss, settings.bootstrap, rng)  # low loss: member
    return {**result, "members": len(members), "non_members": len(non_members),
            "member_loss_mean": float(member_loss.mean()) if len(member_loss) else None,
            "non_member_loss_mean": float(non_loss.mean()) if len(non_loss) else None}


# --- the audit --------------------------------------------------------------------------------


def _zca(arrays: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor] | None:
    if "extra_zca_matrix" not in arrays:
        return None
    return torch.from_numpy(arrays["extra_zca_mean"]).double(), torch.from_numpy(arrays["extra_zca_matrix"]).double()


def audit_cell(db: Path, cell_ref: str, out: Path, *, data_root: Path = DEFAULT_DATA_ROOT,
               settings: AuditSettings | None = None, device: str = "cpu") -> dict[str, Any]:
    """Run the audit of one stored cell and write ``audit.json``, ``audit.md`` and
    ``neighbours.png`` into ``out``; returns the JSON report."""
    settings = settings or AuditSettings()
    device = str(resolve_device(device))  # an unknown device fails before anything is read or written
    out = check_out_dir(out, force=True)
    with open_store(db) as store:
        cell = resolve_cell(store, cell_ref)
    arrays = npz_arrays(cell.require_condensed())
    splits = load_cell_splits(cell, data_root, device)
    facts = cell.dataset_facts
    names = class_names(facts)
    gen = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)

    # Distilled images in normalised pixel space (ZCA-whitened sets are whitened back).
    distilled = torch.from_numpy(arrays["images_float32"]).double()
    zca = _zca(arrays)
    if zca is not None:
        mean, matrix = zca
        flat = torch.linalg.solve(matrix, distilled.flatten(1).T).T + mean
        distilled = flat.view_as(distilled)
    labels = torch.from_numpy(arrays["train_labels"].reshape(-1).astype(np.int64))
    real_u8 = splits.train.images.cpu()
    real = splits.normalize(real_u8).double()
    real_labels = splits.train.labels.cpu()

    # 1. nearest neighbours and memorisation
    l2_d, l2_i = nearest_l2(distilled, real, settings.k)
    n, dims = len(distilled), real[0].numel()
    pix_mean = torch.tensor(splits.mean, dtype=torch.float64).view(1, -1, 1, 1)
    pix_std = torch.tensor(splits.std, dtype=torch.float64).view(1, -1, 1, 1)
    distilled_pix = (distilled * pix_std + pix_mean).clamp(0, 1)
    real_pix = real_u8.double() / 255.0
    cost = n * len(real) * splits.channels * splits.size**3 * 2
    shortlist_k = settings.ssim_shortlist if settings.ssim_shortlist else (None if cost <= SSIM_BUDGET else 512)
    shortlist = nearest_l2(distilled, real, shortlist_k)[1] if shortlist_k else None
    ssim_s, ssim_i = nearest_ssim(distilled_pix.float(), real_pix.float(), shortlist)
    medians = same_class_median(real, real_labels, splits.num_classes, settings.pairs_per_class, gen)
    ref_nn = real_nn_distances(real, settings.reference_images, gen)
    near_copy_threshold = float(np.percentile(ref_nn, NEAR_COPY_PERCENTILE))
    distilled_u8 = (distilled_pix * 255).round().clamp(0, 255).to(torch.uint8)
    nearest_u8 = real_u8[l2_i[:, 0]]
    exact = (distilled_u8 == nearest_u8).flatten(1).all(1)

    images = []
    for j in range(n):
        median = medians[int(labels[j])]
        images.append({
            "index": j, "label": int(labels[j]), "class": names[int(labels[j])] if int(labels[j]) < len(names) else "",
            "l2_neighbours": [{"train_index": int(i), "distance": float(d), "label": int(real_labels[i])}
                              for d, i in zip(l2_d[j], l2_i[j], strict=True)],
            "ssim_nearest": {"train_index": int(ssim_i[j]), "ssim": float(ssim_s[j]),
                             "label": int(real_labels[ssim_i[j]])},
            "closer_than_same_class_median": bool(median is not None and float(l2_d[j, 0]) < median),
            "near_copy": bool(float(l2_d[j, 0]) < near_copy_threshold),
            "exact_copy": bool(exact[j]),
        })

    selected = (torch.from_numpy(arrays["extra_train_indices"]).long()
                if "extra_train_indices" in arrays else None)
    real_images = None
    if selected is not None:
        real_images = {
            "count": len(selected),
            "nearest_is_the_selected_image": float((l2_i[:, 0] == selected).double().mean()) if len(selected) == n
            else None,
            "statement": f"This set IS {len(selected)} real training images of {facts.get('name')}, "
                         "copied unchanged: sharing it shares these patients' images.",
        }

    report: dict[str, Any] = {
        "cell_id": cell.cell_id, "method": str(cell.row.method), "dataset": facts.get("name"),
        "license": facts.get("license"), "ipc": None if cell.row.ipc is None or
        (isinstance(cell.row.ipc, float) and math.isnan(cell.row.ipc)) else int(cell.row.ipc),
        "seed": int(cell.row.seed), "n_distilled": n, "n_train": len(real), "pixel_dims": dims,
        "zca_whitened": zca is not None, "real_images": real_images,
        "distance_space": "L2 between images normalised with the training mean/std (per channel); "
                          "SSIM (Gaussian window 11, σ 1.5, valid) on [0, 1] pixels",
        "ssim_search": "exhaustive" if shortlist_k is None else f"among the {shortlist_k} nearest by L2",
        "memorisation": {
            "share_closer_than_same_class_median": float(np.mean([im["closer_than_same_class_median"]
                                                                 for im in images])),
            "same_class_median_distance": medians,
            "share_near_copies": float(np.mean([im["near_copy"] for im in images])),
            "near_copy_threshold": near_copy_threshold,
            "near_copy_definition": f"closer to a real image than the {NEAR_COPY_PERCENTILE:g}th percentile of real "
                                    f"images' distance to their nearest other training image (of {len(ref_nn)})",
            "exact_copies": int(exact.sum()),
            "min_distance": float(l2_d[:, 0].min()),
            "median_distance": float(l2_d[:, 0].median()),
            "max_ssim": float(ssim_s.max()),
        },
        "images": images,
        "settings": asdict(settings),
    }
    if settings.mia:
        report["membership_inference"] = membership_inference(cell, arrays, splits, selected, zca, settings, gen, rng)

    out.mkdir(parents=True, exist_ok=True)
    report = _finite(report)
    (out / "audit.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    pairs_sheet(distilled_u8.permute(0, 2, 3, 1).numpy(), nearest_u8.permute(0, 2, 3, 1).numpy(), labels.numpy(),
                names, out / "neighbours.png",
                title=f"{cell.row.method} · {facts.get('name')}: each distilled image (left) and its nearest "
                      "real training image by L2 (right)")
    (out / "audit.md").write_text(audit_markdown(report))
    return report


def membership_inference(cell: Any, arrays: dict[str, np.ndarray], splits: Splits, selected: torch.Tensor | None,
                         zca: tuple[torch.Tensor, torch.Tensor] | None, settings: AuditSettings,
                         gen: torch.Generator, rng: np.random.Generator) -> dict[str, Any]:
    """Loss-threshold attack on the distilled set's network and on a same-size real subset's."""
    protocol = Protocol.from_record(cell.config["protocol"])
    seed = model_seeds(int(cell.row.seed), 1)[0]
    device = splits.device

    def prepare(x: torch.Tensor) -> torch.Tensor:
        z = splits.normalize(x.to(device))
        if zca is not None:
            mean, matrix = (t.float().to(device) for t in zca)
            z = ((z.flatten(1) - mean) @ matrix.T).view_as(z)
        return z

    images = torch.from_numpy(arrays["images_float32"]).float()
    labels = (torch.from_numpy(arrays["soft_labels"]).float() if "soft_labels" in arrays
              else torch.from_numpy(arrays["train_labels"].reshape(-1).astype(np.int64)))
    lr = float(arrays["learned_lr"]) if "learned_lr" in arrays else None
    target = _train(images, labels, splits, protocol, seed, lr)
    members, non_members = member_sets(splits, selected, settings, gen)
    distilled_attack = _attack(target, splits, members, non_members, prepare, settings, rng)

    # Baseline: a random real subset with the distilled set's class counts, its own members.
    counts = np.bincount(arrays["train_labels"].reshape(-1), minlength=splits.num_classes).tolist()
    subset = class_matched(splits.train.labels.cpu(), counts, gen)
    baseline = _train(splits.normalize(splits.train.images[subset]), splits.train.labels[subset], splits,
                      protocol, seed, None)
    b_members, b_non = member_sets(splits, subset, settings, gen)
    baseline_attack = _attack(baseline, splits, b_members, b_non, splits.normalize, settings, rng)
    return {
        "attack": "loss threshold: score = −cross-entropy of the true label; AUC of members vs non-members",
        "protocol": protocol.record(), "model_seed": seed,
        "distilled": {**distilled_attack,
                      "members_are": "the selected real training images" if selected is not None else
                      "real training images (every one took part in distillation), class-matched to the "
                      "non-members"},
        "random_subset_baseline": {**baseline_attack, "subset_size": len(subset),
                                   "members_are": "the real images of the subset the baseline network trained on"},
        "non_members_are": "test images, never seen by the method (val is excluded: methods may select on it)",
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def audit_markdown(report: dict[str, Any]) -> str:
    mem = report["memorisation"]
    lines = [
        f"# Privacy audit: {report['method']} · {report['dataset']} · IPC {report['ipc']} · seed {report['seed']}",
        "",
        f"Cell `{report['cell_id']}`; dataset license: {report['license']}. "
        f"{report['n_distilled']} distilled images against {report['n_train']} real training images.",
        "",
    ]
    if report["real_images"]:
        lines += [f"**{report['real_images']['statement']}**", ""]
    lines += [
        "## Nearest real images",
        "",
        f"Distances: {report['distance_space']}. SSIM search: {report['ssim_search']}."
        + (" The set is ZCA-whitened; it was whitened back before comparing." if report["zca_whitened"] else ""),
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| exact copies (identical uint8 pixels) | {mem['exact_copies']} of {report['n_distilled']} |",
        f"| share closer to a real image than the median same-class distance (memorisation flag) | "
        f"{mem['share_closer_than_same_class_median']:.2f} |",
        f"| share of near-copies ({mem['near_copy_definition']}) | {mem['share_near_copies']:.2f} |",
        f"| smallest / median nearest-neighbour L2 | {_fmt(mem['min_distance'])} / {_fmt(mem['median_distance'])} |",
        f"| near-copy threshold (L2) | {_fmt(mem['near_copy_threshold'])} |",
        f"| median same-class L2 per class | {', '.join(_fmt(m) for m in mem['same_class_median_distance'])} |",
        f"| highest SSIM to a real image | {_fmt(mem['max_ssim'])} |",
        "",
        "The median flag compares each distilled image's nearest real image with the typical distance "
        "between two real images of its class. An average of many images is also closer than that, so "
        "for synthetic sets read it together with the near-copy share, which asks whether a distilled "
        "image is closer to a real one than real images are to their own nearest neighbours.",
        "",
        "`neighbours.png`: every distilled image (left of each pair) beside its nearest real training image "
        "by L2 (right), one row per class. Per-image neighbours and distances are in `audit.json`.",
        "",
    ]
    mia = report.get("membership_inference")
    if mia:
        d, b = mia["distilled"], mia["random_subset_baseline"]
        lines += [
            "## Membership inference",
            "",
            f"Attack: {mia['attack']}. Each network is trained once under the cell's protocol "
            f"({mia['protocol']['model']}, {mia['protocol']['epochs']} epochs). AUC 0.5 means the attack "
            "cannot tell members from non-members.",
            "",
            "| network trained on | members | non-members | AUC | 95% CI (bootstrap) |",
            "| --- | --- | --- | --- | --- |",
            f"| the distilled set | {d['members']} | {d['non_members']} | {_fmt(d['auc'])} | "
            f"{_fmt(d['ci_low'])} – {_fmt(d['ci_high'])} |",
            f"| a random real subset of the same size ({b['subset_size']}) | {b['members']} | {b['non_members']} | "
            f"{_fmt(b['auc'])} | {_fmt(b['ci_low'])} – {_fmt(b['ci_high'])} |",
            "",
            "### Who counts as a member",
            "",
            f"- Non-members: {mia['non_members_are']}.",
            f"- Members of the distilled set: {d['members_are']}. A distilled image is built from the whole "
            "training split, so the privacy question is whether a network trained on it fits *those patients* "
            "better than unseen ones. For a random selection only the selected images are members.",
            f"- Members of the baseline: {b['members_are']}.",
            "- Members and non-members have the same number of images per class, so the attack cannot win by "
            "telling classes apart; tiny sets give wide intervals, which the CI shows.",
            "",
        ]
    return "\n".join(lines)
