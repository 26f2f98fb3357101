"""User-facing errors: the CLI prints their message on one line and exits with status 2."""

from __future__ import annotations


class MedbenchError(Exception):
    """Bad input from the user (a name, a value, a file). Never a bug in medbench."""


class DataError(MedbenchError):
    """A dataset file is missing or does not have the expected layout."""


# A run that stopped with cells of its grid still being computed elsewhere (1: regression, 2: bad input).
EXIT_UNFINISHED = 3


class GridUnfinished(Exception):
    """``run --no-wait`` stopped while cells of its grid were claimed by other processes: said in one
    line, exit status :data:`EXIT_UNFINISHED` (never 0: a scheduler must not take the grid as done)."""

    def __init__(self, left: int, db: object) -> None:
        super().__init__(f"{left} cell(s) of the grid are still being computed by other processes on {db} (or were "
                         "claimed by one that died and has not expired yet); run the same command again to wait "
                         "for them or take them over")
        self.left = left


class CellFailed(MedbenchError):
    """A method could not finish one cell (for example it diverged). The cell is stored as
    failed with this message and the grid goes on with the next cell."""
