import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from energyad import plotting  # noqa: E402

rng = np.random.default_rng(0)
IMGS = torch.rand(5, 3, 16, 16)
MAPS = torch.rand(5, 1, 16, 16)
MASKS = torch.zeros(5, 1, 16, 16)
MASKS[1:, :, 4:8, 4:8] = 1


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


@pytest.mark.parametrize("make, n_axes", [
    (lambda: plotting.image_grid(IMGS, nrow=3, titles=list("abcde")), 6),
    (lambda: plotting.image_grid(IMGS[:, :1]), 5),
    (lambda: plotting.overlay(IMGS[1], MAPS[1], MASKS[1], title="x"), 1),
    (lambda: plotting.overlay_grid(IMGS, MAPS, MASKS, ncol=5), 5),
    (lambda: plotting.score_histogram(rng.random(50), rng.integers(0, 2, 50), threshold=0.5), 1),
    (lambda: plotting.roc_plot({"a": ([0.1, 0.9, 0.4], [0, 1, 1])}), 1),
    (lambda: plotting.pro_plot({"a": (MAPS, MASKS)}), 1),
    (lambda: plotting.line_plot([1, 2, 3], {"x": [1, 2, 3], "y": [3, 2, 1]}, "n", "v"), 1),
])
def test_returns_figure_and_leaves_pyplot_alone(make, n_axes):
    before = plt.get_fignums()
    fig = make()
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes
    assert plt.get_fignums() == before


def test_roc_legend_carries_auroc(tmp_path):
    fig = plotting.roc_plot({"perfect": ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])})
    text = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert text == ["perfect (AUROC 1.000)"]
    path = plotting.save(fig, tmp_path / "roc.png")
    assert (tmp_path / "roc.png").stat().st_size > 1000 and path.endswith("roc.png")


def test_large_pngs_are_reencoded_with_a_palette(tmp_path):
    import numpy as np
    from PIL import Image

    from energyad import plotting

    noise = (np.random.default_rng(0).random((600, 600, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png")
    before = (tmp_path / "big.png").stat().st_size
    plotting.shrink_png(tmp_path / "big.png", max_bytes=100_000)
    with Image.open(tmp_path / "big.png") as im:
        assert im.mode == "P" and im.size == (600, 600)
    assert (tmp_path / "big.png").stat().st_size < before
    Image.fromarray(noise[:10, :10]).save(tmp_path / "small.png")
    plotting.shrink_png(tmp_path / "small.png", max_bytes=100_000)
    with Image.open(tmp_path / "small.png") as im:
        assert im.mode == "RGB"                                # small files are left as they are
