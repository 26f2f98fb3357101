"""Statistics over stored results: across-dataset correlation with random subsets, gains, predictions."""

from medbench.analysis.correlation import (
    MIN_DATASETS,
    NEEDS_MORE,
    Correlation,
    Line,
    Prediction,
    bootstrap_r,
    correlate,
    correlation_frame,
    fit_line,
    gain_frame,
    paired_points,
    predict,
)
from medbench.analysis.frames import describe_protocol, metric_values, model_scores, protocols

__all__ = [
    "MIN_DATASETS", "NEEDS_MORE", "Correlation", "Line", "Prediction", "bootstrap_r", "correlate",
    "correlation_frame", "describe_protocol", "fit_line", "gain_frame", "metric_values", "model_scores",
    "paired_points", "predict", "protocols",
]
