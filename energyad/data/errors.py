"""Errors and notices of the data layer: every message names the file and the fix."""
from __future__ import annotations


class DataError(RuntimeError):
    """A data file or folder is missing, truncated, corrupt or laid out wrongly."""


class StandInWarning(UserWarning):
    """A real data set was unavailable and an embedded stand-in is used instead.

    Shown in notebooks as a visible warning; experiments record it in their provenance.
    """


def notice_standin(what: str, why: str, fix: str) -> str:
    """Emit a :class:`StandInWarning` and print it, so it is visible in a notebook and a log."""
    import warnings

    msg = f"NOTICE: {what} is not available ({why}); using a stand-in instead. To use the real data: {fix}"
    warnings.warn(msg, StandInWarning, stacklevel=3)
    return msg
