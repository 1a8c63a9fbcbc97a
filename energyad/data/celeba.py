"""CelebA faces (Liu et al., ICCV 2015) from a folder of images or a zip of them (for inpainting).

Looked up in ``<data root>/celeba_64/`` (a folder of JPEG/PNG files or zips of them), or at a path
given. Images are read in sorted file-name order, centre-cropped to a square and resized.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..config import data_root
from .errors import DataError

EXTS = (".jpg", ".jpeg", ".png")


def _to_tensor(im: Image.Image, size: int) -> torch.Tensor:
    im = im.convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != size:
        im = im.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)  # (3, size, size)


def _sources(path: Path) -> list:
    """(display name, opener) pairs for every image under ``path`` (a zip, a folder, or a folder of zips)."""
    out = []
    zips = [path] if path.suffix == ".zip" else sorted(path.glob("*.zip")) if path.is_dir() else []
    for z in zips:
        try:
            zf = zipfile.ZipFile(z)
        except zipfile.BadZipFile as err:
            raise DataError(f"{z} is not a readable zip file ({err}). Fix: download or copy it again.") from err
        for name in sorted(n for n in zf.namelist() if n.lower().endswith(EXTS)):
            out.append((f"{z}:{name}", lambda zf=zf, name=name: io.BytesIO(zf.read(name))))
    if path.is_dir():
        out += [(str(f), lambda f=f: f) for f in sorted(path.rglob("*")) if f.suffix.lower() in EXTS]
    return out


def load_celeba(root=None, n: int | None = None, size: int = 64, seed: int = 0, progress: bool = True) -> torch.Tensor:
    """Faces as a float tensor (N, 3, size, size) in [0, 1]; ``n`` picks a seeded random subset."""
    from tqdm.auto import tqdm

    path = Path(root) if root is not None else data_root() / "celeba_64"
    if not path.exists():
        raise DataError(f"CelebA not found at {path}. Fix: put the aligned faces (a folder of JPEGs or a zip of "
                        "them) there, or pass load_celeba(root=<folder or zip>). CelebA is for non-commercial "
                        "research use; it is not downloaded automatically.")
    sources = _sources(path)
    if not sources:
        raise DataError(f"No images (.jpg, .png) found in {path}. Fix: unpack the faces there or pass the zip.")
    if n is not None and n < len(sources):
        pick = np.sort(np.random.default_rng(seed).choice(len(sources), n, replace=False))
        sources = [sources[i] for i in pick]
    out = []
    for name, opener in tqdm(sources, desc="CelebA", disable=not progress, leave=False):
        try:
            with Image.open(opener()) as im:
                out.append(_to_tensor(im, size))
        except (OSError, UnidentifiedImageError, zipfile.BadZipFile) as err:
            raise DataError(f"Cannot read image {name}: {err}. Fix: replace the file.") from err
    return torch.stack(out)
