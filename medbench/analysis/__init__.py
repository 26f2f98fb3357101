"""Statistics over stored results: seed-level gains, corrected verdicts, rankings across datasets,
correlation with random subsets, predictions."""

from medbench.analysis.correlation import (
    MIN_DATASETS,
    NEEDS_MORE,
    Correlation,
    Line,
    Prediction,
    correlate,
    correlation_frame,
    critical_r,
    fit_line,
    gain_frame,
    paired_points,
    predict,
)
from medbench.analysis.frames import describe_protocol, metric_values, model_scores, protocols

__all__ = [
    "MIN_DATASETS",
    "NEEDS_MORE",
    "Correlation",
    "Line",
    "Prediction",
    "correlate",
    "correlation_frame",
    "critical_r",
    "describe_protocol",
    "fit_line",
    "gain_frame",
    "metric_values",
    "model_scores",
    "paired_points",
    "predict",
    "protocols",
]
