"""Interactive explorers that also read on a static page.

``explore(fn, **controls)`` shows live ipywidgets controls in Jupyter; the built book (a static page
with no widget JavaScript) shows instead a picture of the first state, drawn by the same ``fn``. One
output carries both: the widget's MIME bundle holds the widget view for Jupyter and, as its HTML
fallback, the first state as a PNG. The book's ``_config.yml`` drops the widget view in HTML builds
(``nb_mime_priority_overrides``), so the page shows the picture and loads nothing from another host.
"""
from __future__ import annotations

import base64
import io

NOTE = "Interactive in Jupyter: run this notebook to move the controls. Shown here: the first state."


def figure_png(fig) -> bytes:
    """A matplotlib Figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
    return buf.getvalue()


class Explorer:
    """Live controls around ``fn(**values) -> Figure`` with a static first-state fallback."""

    def __init__(self, fn, **controls):
        import ipywidgets as w
        from IPython.display import display

        if not controls:
            raise ValueError("explore needs at least one control (an ipywidgets widget with a value)")
        self.fn, self.controls = fn, controls
        first = fn(**{k: c.value for k, c in controls.items()})
        self.first_png = figure_png(first)
        _close(first)

        def redraw(**values):
            fig = fn(**values)
            display(fig)
            _close(fig)

        out = w.interactive_output(redraw, controls)
        self.widget = w.VBox([w.HBox(list(controls.values()), layout=w.Layout(flex_flow="row wrap")), out])

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude) or {}
        data = base64.b64encode(self.first_png).decode()
        bundle = dict(bundle)
        bundle["text/html"] = (f'<figure class="energyad-explorer"><img src="data:image/png;base64,{data}" '
                               f'alt="first state of the explorer"/><figcaption><em>{NOTE}</em></figcaption></figure>')
        bundle["text/plain"] = NOTE
        return bundle


def explore(fn, **controls) -> Explorer:
    """Show ``fn``'s figure under live ``controls`` (ipywidgets) in Jupyter, its first state on a static page."""
    return Explorer(fn, **controls)


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)
