"""The shared evaluation protocol and its metrics."""

from medbench.evaluation.metrics import METRICS, classification_metrics
from medbench.evaluation.protocol import ModelScore, Protocol, evaluate, model_seeds

__all__ = ["METRICS", "ModelScore", "Protocol", "classification_metrics", "evaluate", "model_seeds"]
