"""Uncertainty from the test set itself, and what a guess scores on it.

Medical test sets are small (BreastMNIST: 156 images), so a number measured on one is uncertain
even with infinitely many seeds. Every evaluation network's predicted class per test image is
stored (``Store.predictions``); here the test images are resampled with replacement (a seeded
bootstrap, the *same* resamples for every cell of a dataset, so paired differences stay paired)
and each network's metric is recomputed on every resample from its weighted confusion counts.

A cell's (one seed's) bootstrap values are the mean over its networks per resample; the variance
of a row's mean (or of a paired gain) over the resamples is the test-set part of its uncertainty,
added to the seed part by :mod:`medbench.analysis.verdicts`.

AUC needs the networks' probabilities, which are not stored: AUC intervals are over seeds only.
"""

from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")  # recomputable from predicted classes
N_BOOT = 1000


def resample_weights(n_images: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n_images) counts: how often each test image is drawn in each bootstrap resample."""
    rng = np.random.default_rng([seed, n_images])
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_boot).astype(np.float64)


def weighted_metric(metric: str, truth: np.ndarray, predicted: np.ndarray, weights: np.ndarray,
                    num_classes: int) -> np.ndarray:
    """``metric`` of the predictions of one network under each row of ``weights`` (image counts);
    with all weights 1 it equals scikit-learn's score (tested). Balanced accuracy averages the
    recall of the classes present in a resample; macro-F1 averages all classes (0 where undefined)."""
    truth = np.asarray(truth, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    weights = np.atleast_2d(weights)
    correct = (truth == predicted).astype(np.float64)
    if metric == "accuracy":
        return weights @ correct / weights.sum(1)
    eye = np.eye(num_classes)
    true_hot, pred_hot = eye[truth], eye[predicted]
    hits = weights @ (true_hot * correct[:, None])  # (B, C) true positives
    totals = weights @ true_hot  # (B, C) images of each class
    if metric == "balanced_accuracy":
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(totals > 0, hits / totals, np.nan)
        return np.nanmean(recall, axis=1)
    if metric == "macro_f1":
        denominator = totals + weights @ pred_hot
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(denominator > 0, 2 * hits / denominator, 0.0)
        return f1.mean(axis=1)
    raise ValueError(f"{metric} cannot be recomputed from predicted classes")


def cell_bootstrap(metric: str, predictions: np.ndarray, weights: np.ndarray, num_classes: int) -> np.ndarray:
    """One cell's (n_boot,) values: the mean over its networks of ``metric`` on every resample.
    ``predictions``: (1 + K, N), row 0 the true labels (``Store.predictions``)."""
    truth, networks = predictions[0], predictions[1:]
    return np.mean([weighted_metric(metric, truth, p, weights, num_classes) for p in networks], axis=0)


def chance_level(metric: str, test_counts: list[int]) -> float:
    """What a classifier without skill scores on a test split with ``test_counts`` images per class:
    for accuracy the constant majority-class guess, for balanced accuracy 1/C (any constant guess),
    for macro-F1 the constant majority guess (F1 2p/(1+p) on its class, 0 elsewhere), for AUC 0.5."""
    present = [c for c in test_counts if c]
    if not present:
        return math.nan
    share = max(present) / sum(present)
    return {"accuracy": share, "balanced_accuracy": 1 / len(present),
            "macro_f1": 2 * share / (1 + share) / len(test_counts), "auc": 0.5}.get(metric, math.nan)
