"""Synthetic categories in the MVTec AD layout, with exact ground-truth masks.

Used by the tests and by the quick profile when the real MVTec AD (with masks) is absent. A
*texture* is a field of oriented stripes with grain noise; an *object* is a round "cap" seen from
above on a plain background, with small pose jitter. Defects are drawn on test images and their
masks are exactly the pixels the drawing changed:

``scratch``  a thin bright line;  ``stain``  a dark blob;  ``hole``  a disc of background colour.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..config import cache_root

DEFECTS = ("scratch", "stain", "hole")


def _texture(rng, size, channels):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.pi / 4 + rng.normal(0, 0.05)
    phase = rng.uniform(0, 2 * np.pi)
    base = 0.5 + 0.25 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / 8 + phase)
    img = base[..., None] + rng.normal(0, 0.04, (size, size, channels))
    tint = np.array([0.9, 0.75, 0.55][:channels]) if channels == 3 else np.array([1.0])
    return np.clip(img * tint, 0, 1)


def _object(rng, size, channels):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, size * 0.02, 2)
    r = np.hypot(yy - cy, xx - cx)
    radius = size * 0.32
    img = np.full((size, size, channels), 0.15, np.float32)
    disc = r < radius
    shade = 0.55 + 0.35 * np.sqrt(np.clip(1 - r / radius, 0, 1))
    img[disc] = shade[disc][:, None] * (np.array([0.3, 0.6, 0.9][:channels]) if channels == 3 else 1.0)
    ring = np.abs(r - radius * 0.6) < size * 0.015
    img[ring] *= 0.7
    img += rng.normal(0, 0.01, img.shape)
    return np.clip(img, 0, 1), disc


def _defect_mask(rng, size, kind, region=None):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # place the defect inside the object (region) when there is one
    choices = np.argwhere(region) if region is not None else None
    if choices is not None and len(choices):
        cy, cx = choices[rng.integers(len(choices))].astype(np.float32)
    else:
        cy, cx = rng.uniform(size * 0.2, size * 0.8, 2)
    if kind == "scratch":
        ang = rng.uniform(0, np.pi)
        length = size * rng.uniform(0.2, 0.35)
        d_along = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        d_across = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        m = (np.abs(d_along) < length / 2) & (np.abs(d_across) < max(1.0, size / 96))
    else:
        ry, rx = size * rng.uniform(0.04, 0.09, 2)
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    if region is not None:
        m &= region
    return m


def _apply(img, mask, kind, background):
    out = img.copy()
    if kind == "scratch":
        out[mask] = 0.97
    elif kind == "stain":
        out[mask] = out[mask] * 0.35
    else:  # hole: background shows through
        out[mask] = background
    return out


def _save(path: Path, a: np.ndarray) -> None:
    a8 = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(a8[..., 0] if a8.shape[-1] == 1 else a8).save(path)


def write_synthetic_mvtec(root, category: str = "synthetic_texture", kind: str = "texture", n_train: int = 40,
                          n_test_good: int = 10, n_test_defect: int = 6, size: int = 128, seed: int = 0,
                          grayscale: bool = False) -> Path:
    """Write one MVTec-layout category to ``root/category``; return ``root``.

    ``n_test_defect`` images per defect type in :data:`DEFECTS`; masks in ``ground_truth/``.
    Deterministic for a given seed. A pixel of a mask is set exactly where the defect changed it.
    """
    if kind not in ("texture", "object"):
        raise ValueError(f"kind must be 'texture' or 'object', not {kind!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    channels = 1 if grayscale else 3
    folder = root / category

    def draw():
        if kind == "texture":
            return _texture(rng, size, channels), None
        return _object(rng, size, channels)

    for sub in ["train/good", "test/good"] + [f"test/{d}" for d in DEFECTS] + [f"ground_truth/{d}" for d in DEFECTS]:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        _save(folder / "train/good" / f"{i:03d}.png", draw()[0])
    for i in range(n_test_good):
        _save(folder / "test/good" / f"{i:03d}.png", draw()[0])
    for d in DEFECTS:
        for i in range(n_test_defect):
            img, region = draw()
            mask = _defect_mask(rng, size, d, region)
            if not mask.any():  # never write a defect image without defect pixels
                mask[size // 2, size // 2] = True
            background = 0.15 if kind == "object" else 0.05
            _save(folder / f"test/{d}" / f"{i:03d}.png", _apply(img, mask, d, background))
            _save(folder / f"ground_truth/{d}" / f"{i:03d}_mask.png", mask[..., None].astype(np.float32))
    return root


def synthetic_mvtec_root(root=None, size: int = 128) -> Path:
    """A folder holding ``synthetic_texture`` and ``synthetic_object`` (written on first use, reused
    later): ``root`` if given, else ``<cache root>/synthetic_mvtec``. Generated data never goes into
    the data root, which may be a shared read-only copy."""
    target = Path(root) if root is not None else cache_root() / "synthetic_mvtec"
    for cat, kind, seed in (("synthetic_texture", "texture", 0), ("synthetic_object", "object", 1)):
        done = target / cat / ".complete"
        if not done.exists():
            write_synthetic_mvtec(target, cat, kind, size=size, seed=seed)
            done.write_text("written by energyad.data.synthetic.write_synthetic_mvtec\n")
    return target
