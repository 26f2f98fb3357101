"""Scores for one evaluated network. Medical test sets are imbalanced, so accuracy never
stands alone: balanced accuracy, macro-F1 and macro one-vs-rest AUC stand beside it."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auc")


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    num_classes = probs.shape[1]
    pred = probs.argmax(1)
    scores = {
        "accuracy": float(accuracy_score(labels, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
        "macro_f1": float(f1_score(labels, pred, average="macro", labels=list(range(num_classes)),
                                   zero_division=0)),
    }
    present = np.unique(labels)
    if len(present) < 2:
        scores["auc"] = math.nan  # undefined with one class in the split
    elif num_classes == 2:
        scores["auc"] = float(roc_auc_score(labels, probs[:, 1]))
    else:
        # One-vs-rest over the classes present; renormalise so rows still sum to one.
        sub = probs[:, present] / np.clip(probs[:, present].sum(1, keepdims=True), 1e-12, None)
        scores["auc"] = float(roc_auc_score(labels, sub, multi_class="ovr", average="macro", labels=present))
    return scores
