"""Coreset baselines (herding, k-center) against brute force on tiny problems, and end to end."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from _synth import make_splits, make_task

from medbench.core.errors import MedbenchError
from medbench.distill.contract import get_method, list_methods
from medbench.methods.coresets import herding_order, kcenter_order


def _herding_by_hand(x: np.ndarray, k: int) -> list[int]:
    """Herding written out: try every unchosen row, keep the one whose addition puts the chosen
    mean nearest the overall mean."""
    mu, chosen = x.mean(0), []
    for _ in range(k):
        best = min((i for i in range(len(x)) if i not in chosen),
                   key=lambda i: np.linalg.norm(x[[*chosen, i]].mean(0) - mu))
        chosen.append(best)
    return chosen


def test_herding_matches_a_brute_force_greedy_and_tracks_the_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    picks = herding_order(torch.from_numpy(x), 5)
    assert picks == _herding_by_hand(x, 5)
    err = lambda idx: np.linalg.norm(x[list(idx)].mean(0) - x.mean(0))  # noqa: E731
    # one image: herding is the exhaustive optimum (the row nearest the mean)
    assert err(picks[:1]) == min(err([i]) for i in range(12))
    # five images: closer to the class mean than most of the 792 possible 5-subsets
    errors = sorted(err(c) for c in itertools.combinations(range(12), 5))
    assert err(picks) <= errors[len(errors) // 20]  # within the best 5 %


def _radius(x: np.ndarray, idx: list[int]) -> float:
    return float(np.min(np.linalg.norm(x[:, None] - x[idx][None], axis=2), axis=1).max())


def test_kcenter_covers_better_than_random_subsets():
    rng = np.random.default_rng(1)
    # three tight clusters of very different sizes: random subsets tend to miss the small ones
    x = np.concatenate([rng.normal(0, 0.1, (40, 2)), rng.normal(5, 0.1, (3, 2)), rng.normal(-5, 0.1, (3, 2))])
    picks = kcenter_order(torch.from_numpy(x), 3)
    radius = _radius(x, picks)
    assert len(set(picks)) == 3 and radius < 1.0  # one pick per cluster
    optimum = min(_radius(x, list(c)) for c in itertools.combinations(range(len(x)), 3))
    assert radius <= 2 * optimum + 1e-9  # farthest-first is a 2-approximation (brute force over all 15,180)
    randoms = [_radius(x, list(rng.choice(len(x), 3, replace=False))) for _ in range(200)]
    assert radius <= np.median(randoms)
    assert all(radius <= r + 1e-9 for r in randoms if r > 1.0)  # never worse than a subset missing a cluster


@pytest.mark.parametrize("name", ["herding", "kcenter"])
def test_coreset_methods_select_real_images_deterministically(name):
    assert name in list_methods()
    splits = make_splits(num_classes=3, per_class=20)
    method = get_method(name)
    params = method.make_params({"embed_epochs": 2})
    first = method.run(make_task(splits, ipc=3, seed=0), params)
    again = method.run(make_task(splits, ipc=3, seed=0), params)
    assert torch.equal(first.extras["train_indices"], again.extras["train_indices"])
    idx = first.extras["train_indices"]
    assert len(set(idx.tolist())) == 9 and torch.equal(first.labels, splits.train.labels[idx])
    assert torch.equal(first.labels, torch.arange(3).repeat_interleave(3))
    assert torch.allclose(first.images, splits.normalize(splits.train.images[idx]))
    with pytest.raises(MedbenchError, match="embed_lr must be positive"):
        method.make_params({"embed_lr": 0})


def test_kcenter_never_picks_an_image_twice_among_identical_rows():
    rows = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert sorted(kcenter_order(rows, 4)) == [0, 1, 2, 3] and len(set(kcenter_order(rows, 3))) == 3


def test_herding_and_kcenter_share_one_embedding_network_per_seed(monkeypatch):
    """Every IPC of a seed, herding and k-center alike, trains the embedding network once per process;
    another seed trains its own; the sets equal those made without the cache."""
    from medbench.methods import coresets

    splits = make_splits(num_classes=3, size=8, per_class=20)
    calls = []
    real = coresets._embeddings
    monkeypatch.setattr(coresets, "_embeddings", lambda task, params: calls.append(task.seed) or real(task, params))
    params = get_method("herding").make_params({"embed_epochs": 1})
    cached = {(name, ipc, seed): get_method(name).run(make_task(splits, ipc=ipc, seed=seed), params)
              for seed in (0, 1) for name in ("herding", "kcenter") for ipc in (1, 3)}
    assert calls == [0, 1]
    monkeypatch.setattr(coresets, "CACHED", 0)  # every call trains again
    for (name, ipc, seed), condensed in cached.items():
        fresh = get_method(name).run(make_task(splits, ipc=ipc, seed=seed), params)
        assert torch.equal(fresh.images, condensed.images), (name, ipc, seed)
