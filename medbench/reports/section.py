"""What a report shows for one protocol: built by :mod:`medbench.reports.build`, rendered by
:mod:`medbench.reports.page`."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from medbench.analysis.correlation import Correlation
from medbench.reports.tables import Table


@dataclass
class Section:
    """Everything shown for one protocol."""

    protocol_id: str
    title: str  # the protocol by name and what was changed from it
    description: str
    caption: str
    headline: str
    verdicts: list[str]
    datasets: list[Table]
    correlation: Table
    correlation_note: str
    gains: Table
    gains_note: str
    results: list[Correlation]
    agg: pd.DataFrame
    notes: list[str]
    ranking: Table | None = None
    published: list[Table] = field(default_factory=list)  # with --reference: the paper's numbers beside ours
    compute: pd.DataFrame | None = None  # per-seed scores within distillation budgets (reports.compute)
    equal_budget: Table | None = None
    tuned: Table | None = None  # tuned against default rows (reports.tuned)
    # Figures (base64 PNG) and image mosaics (HTML blocks), filled for the HTML page only.
    cd_figure: str | None = None
    ipc_figure: str | None = None
    scatter_figure: str | None = None
    anytime_figure: str | None = None
    grids: list[str] = field(default_factory=list)
