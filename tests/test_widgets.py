"""Explorers: live controls in Jupyter, the first state as a picture on a static page."""
import base64

import ipywidgets as w
import matplotlib
import pytest

from energyad import widgets

matplotlib.use("Agg")


def _draw(k=1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot(range(5), [k * i for i in range(5)])
    return fig


def test_explorer_bundle_has_the_widget_and_the_first_state_as_png():
    calls = []

    def fn(k):
        calls.append(k)
        return _draw(k)

    ex = widgets.explore(fn, k=w.IntSlider(value=3, min=0, max=5))
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    html = bundle["text/html"]
    png = base64.b64decode(html.split("base64,")[1].split('"')[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == widgets.figure_png(_draw(3))   # the first state, k=3
    assert calls[0] == 3 and widgets.NOTE in html


def test_explore_needs_a_control():
    with pytest.raises(ValueError, match="at least one control"):
        widgets.explore(_draw)
