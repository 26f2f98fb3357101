"""Reports from a results database: Markdown leaderboard, tidy CSV and a self-contained HTML page."""

from medbench.reports.build import ReportFiles, build_sections, tidy_results, write_report

__all__ = ["ReportFiles", "build_sections", "tidy_results", "write_report"]
