"""Pure plotting functions: arrays in, a ``matplotlib.figure.Figure`` out.

They never touch pyplot's global state (no ``plt.figure``, no ``plt.show``), so they are safe in
scripts, tests and notebooks alike; a notebook displays a returned figure by ending a cell with it.
Images may be tensors or arrays, (C, H, W) or (H, W), with values in [0, 1].
"""
from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

from . import metrics


def _img(x) -> np.ndarray:
    """(C, H, W) or (H, W) tensor/array -> (H, W) or (H, W, 3) numpy array for imshow."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)  # (C, H, W) -> (H, W, C)
    return a


def _grid_axes(n: int, ncol: int, size: float = 1.6):
    nrow = max(1, math.ceil(n / ncol))
    fig = Figure(figsize=(size * ncol, size * nrow * 1.05), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    return fig, axes


def image_grid(images, nrow: int = 8, titles=None, cmap: str | None = None, vmin=0.0, vmax=1.0) -> Figure:
    """Images in a grid with ``nrow`` images per row (``images``: (N, C, H, W) or a list)."""
    images = list(images)
    fig, axes = _grid_axes(len(images), min(nrow, max(1, len(images))))
    for i, (ax, im) in enumerate(zip(axes, images)):
        a = _img(im)
        ax.imshow(a, cmap=cmap or ("gray" if a.ndim == 2 else None), vmin=vmin, vmax=vmax)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    return fig


def _draw_overlay(ax, image, anomaly_map, mask=None, alpha: float = 0.5, vmax=None):
    a = _img(image)
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1)
    if anomaly_map is not None:
        ax.imshow(_img(anomaly_map), cmap="jet", alpha=alpha, vmax=vmax)
    if mask is not None:
        m = _img(mask)
        if m.max() > 0:
            ax.contour(m, levels=[0.5], colors="white", linewidths=1.0)
    ax.set_axis_off()


def overlay(image, anomaly_map=None, mask=None, alpha: float = 0.5, title: str | None = None) -> Figure:
    """An image with its anomaly map as a heat map and the ground-truth mask as a white contour."""
    fig = Figure(figsize=(3, 3), layout="constrained")
    ax = fig.subplots()
    _draw_overlay(ax, image, anomaly_map, mask, alpha)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def overlay_grid(images, maps=None, masks=None, titles=None, ncol: int = 4, alpha: float = 0.5) -> Figure:
    """Several overlays in a grid; ``maps``/``masks`` may be None (image and contour only)."""
    images = list(images)
    fig, axes = _grid_axes(len(images), min(ncol, max(1, len(images))), size=2.4)
    for i, ax in enumerate(axes[: len(images)]):
        _draw_overlay(ax, images[i], None if maps is None else maps[i], None if masks is None else masks[i], alpha)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    return fig


def score_histogram(scores, labels, threshold=None, bins: int = 50,
                    labels_text=("normal", "anomalous"), title: str | None = None) -> Figure:
    """Histograms (densities) of scores for normal vs anomalous samples, with an optional threshold."""
    s = metrics._np(scores).ravel().astype(float)
    y = metrics._np(labels).ravel() > 0.5
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    edges = np.histogram_bin_edges(s, bins=bins)
    ax.hist(s[~y], bins=edges, density=True, alpha=0.6, label=labels_text[0])
    ax.hist(s[y], bins=edges, density=True, alpha=0.6, label=labels_text[1])
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel("score"); ax.set_ylabel("density"); ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def roc_plot(curves: dict, title: str = "ROC") -> Figure:
    """ROC curves of ``{name: (scores, labels)}`` with each AUROC in the legend."""
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    for name, (scores, labels) in curves.items():
        fpr, tpr, _ = metrics.roc_curve(scores, labels)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {metrics.image_auroc(scores, labels):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("false-positive rate"); ax.set_ylabel("true-positive rate"); ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def pro_plot(curves: dict, fpr_limit: float = 0.3, title: str = "PRO curve") -> Figure:
    """PRO curves of ``{name: (maps, masks)}`` up to ``fpr_limit``, AUPRO in the legend."""
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    for name, (maps, masks) in curves.items():
        fpr, pro = metrics.pro_curve(maps, masks)
        keep = fpr <= fpr_limit
        ax.plot(fpr[keep], pro[keep], label=f"{name} (AUPRO {metrics.aupro(maps, masks, fpr_limit):.3f})")
    ax.set_xlim(0, fpr_limit); ax.set_ylim(0, 1.02)
    ax.set_xlabel("false-positive rate"); ax.set_ylabel("per-region overlap"); ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def line_plot(x, ys: dict, xlabel: str = "", ylabel: str = "", title: str = "", logx: bool = False) -> Figure:
    """One line per entry of ``ys`` (``{name: values}``) over ``x``."""
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    for name, y in ys.items():
        ax.plot(x, metrics._np(y), marker="o", ms=3, label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel); ax.set_ylabel(ylabel); ax.set_title(title)
    if len(ys) > 1:
        ax.legend(fontsize=8)
    return fig


MAX_PNG_BYTES = 1_000_000   # committed figures stay small: larger PNGs are re-encoded with 256 colours


def save(fig: Figure, path) -> str:
    """Save ``fig`` (PNG at 120 dpi) and return the path as a string. A PNG over
    :data:`MAX_PNG_BYTES` (photographs in a grid) is re-encoded with an adaptive 256-colour palette."""
    fig.savefig(path, dpi=120)
    shrink_png(path)
    return str(path)


def shrink_png(path, max_bytes: int = MAX_PNG_BYTES) -> None:
    """Re-encode the PNG at ``path`` with a 256-colour palette when it is larger than ``max_bytes``."""
    import os

    from PIL import Image

    if os.path.getsize(path) <= max_bytes:
        return
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(256)
    small.save(path, optimize=True)
