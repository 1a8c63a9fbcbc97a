"""One way to show a table in the book: rows of results become a captioned HTML table.

Every chapter's "ours beside the paper's" section, the comparison and the reproduction report call
:func:`table`; it returns a pandas ``Styler``, which Jupyter and the built book render as a real
HTML table (a caption, no index, status cells coloured). ``frame`` gives the plain DataFrame for
asserts.
"""
from __future__ import annotations

import pandas as pd

# Background colours of a status cell (the report's statuses, plus the comparison's verdicts).
STATUS_COLOURS = {
    "reproduced": "#c8e6c9",
    "partly": "#fff3c4",
    "did not reproduce": "#ffcdd2",
    "not comparable": "#e1bee7",
    "not judged": "#e3f2fd",
    "not run": "#e0e0e0",
    "stale": "#ffe0b2",
}


def frame(rows, columns=None) -> pd.DataFrame:
    """Rows (a list of dicts, or of sequences with ``columns``) as a DataFrame, column order kept."""
    if rows and not isinstance(rows[0], dict):
        if columns is None:
            raise ValueError("rows given as sequences need their column names")
        return pd.DataFrame([list(r) for r in rows], columns=list(columns))
    df = pd.DataFrame(list(rows))
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise KeyError(f"columns {missing} are not in the rows (they have {list(df.columns)})")
        df = df[list(columns)]
    return df


def table(rows, columns=None, caption: str = "", status: str | None = None, precision: int = 3):
    """A captioned HTML table (pandas ``Styler``) of ``rows``.

    ``status`` names a column whose cells are coloured by :data:`STATUS_COLOURS` (the first word
    that matches); floats are shown with ``precision`` decimals. The caption should say where the
    numbers come from (profile, data, commit)."""
    df = rows if isinstance(rows, pd.DataFrame) else frame(rows, columns)
    styler = df.style.hide(axis="index").format(precision=precision, na_rep="—")
    if caption:
        styler = styler.set_caption(caption)
    styler = styler.set_table_styles([
        {"selector": "caption", "props": "caption-side: top; text-align: left; font-weight: bold; padding: 4px 0;"},
        {"selector": "td, th", "props": "text-align: left; vertical-align: top; padding: 2px 8px;"},
    ])
    if status is not None:
        if status not in df.columns:
            raise KeyError(f"status column {status!r} is not in the table (columns: {list(df.columns)})")
        styler = styler.map(_status_css, subset=[status])
    return styler


def _status_css(value) -> str:
    text = str(value).lower()
    for key in sorted(STATUS_COLOURS, key=len, reverse=True):   # "did not reproduce" before "reproduced"
        if text.startswith(key):
            return f"background-color: {STATUS_COLOURS[key]}; font-weight: bold;"
    return ""
