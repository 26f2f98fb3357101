"""User-facing errors: the CLI prints their message on one line and exits with status 2."""

from __future__ import annotations


class MedbenchError(Exception):
    """Bad input from the user (a name, a value, a file). Never a bug in medbench."""


class DataError(MedbenchError):
    """A dataset file is missing or does not have the expected layout."""


class CellFailed(MedbenchError):
    """A method could not finish one cell (for example it diverged). The cell is stored as
    failed with this message and the grid goes on with the next cell."""
