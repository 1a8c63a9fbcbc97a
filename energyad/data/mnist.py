"""MNIST from the four official IDX ``.gz`` files, and one-class splits.

Files are looked up in ``<data root>/MNIST/raw/`` (the layout of the official download and of
torchvision). When missing and ``download=True`` they are fetched with :mod:`pooch`, which checks
each archive against its published MD5 before it is used. A file that is present is checked for
structure (IDX magic number, dimensions, length) so a truncated or corrupt file fails with a
message naming it. When MNIST is neither present nor downloadable, :func:`load_mnist_or_standin`
falls back to scikit-learn's bundled 8x8 digits upscaled to 28x28, with a visible notice.
"""
from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

from ..config import data_root
from .errors import DataError, notice_standin

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# MD5 of the official .gz archives (checked on download).
FILES = {
    "train": (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432")),
    "test": (("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
             ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
}
SIZES = {"train": 60_000, "test": 10_000}


def mnist_folder(root=None) -> Path:
    return data_root(root) / "MNIST" / "raw"


def _download(name: str, md5: str, folder: Path) -> Path:
    import pooch

    from ..config import downloads_allowed

    if not downloads_allowed():
        raise DataError(f"MNIST file {folder / name} is missing and downloads are off (ENERGYAD_OFFLINE). "
                        "Fix: unset ENERGYAD_OFFLINE, or set ENERGYAD_DATA to a folder that contains MNIST/raw/.")
    last = None
    for base in MIRRORS:
        try:
            return Path(pooch.retrieve(base + name, known_hash=f"md5:{md5}", fname=name,
                                       path=folder, progressbar=True))
        except ValueError as err:  # checksum mismatch: pooch deletes the bad file
            raise DataError(f"Downloaded {folder / name} does not match its published MD5 ({err}). "
                            "Delete it and try again, or place the official file there by hand.") from err
        except Exception as err:  # network errors: try the next mirror
            last = err
    raise DataError(
        f"MNIST file {folder / name} is missing and could not be downloaded ({last}). "
        f"Fix: download {name} from one of {', '.join(MIRRORS)} into {folder}, "
        "or set ENERGYAD_DATA to a folder that contains MNIST/raw/."
    )


def read_idx(path: Path, expect_ndim: int) -> np.ndarray:
    """Read a gzipped IDX file (uint8 data) and check its header against its length."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path} is not a readable gzip file ({err}); it may be truncated. "
                        "Fix: delete it and download it again (load_mnist(..., download=True)).") from err
    if len(raw) < 4:
        raise DataError(f"{path} is empty or truncated. Fix: delete it and download it again.")
    zero, dtype, ndim = raw[0] * 256 + raw[1], raw[2], raw[3]
    if zero != 0 or dtype != 0x08 or ndim != expect_ndim:
        raise DataError(f"{path} is not an IDX file of uint8 with {expect_ndim} dimensions "
                        f"(header {raw[:4].hex()}). Fix: replace it with the official MNIST file.")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{path} is truncated or corrupt: header says {dims}, "
                        f"found {len(body)} bytes of data. Fix: delete it and download it again.")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def load_mnist(split: str = "train", root=None, download: bool = True):
    """Return ``(images uint8 (N, 28, 28), labels int64 (N,))`` for ``split`` in {"train", "test"}."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    folder = mnist_folder(root)
    paths = []
    for name, md5 in FILES[split]:
        p = folder / name
        if not p.exists():
            if not download:
                raise DataError(f"MNIST file {p} is missing. Fix: call load_mnist(..., download=True) "
                                "with a network, or set ENERGYAD_DATA to a folder holding MNIST/raw/.")
            folder.mkdir(parents=True, exist_ok=True)
            p = _download(name, md5, folder)
        paths.append(p)
    images = read_idx(paths[0], 3)
    labels = read_idx(paths[1], 1).astype(np.int64)
    if images.shape[1:] != (28, 28) or len(images) != len(labels) or len(images) != SIZES[split]:
        raise DataError(f"{paths[0]} / {paths[1]}: expected {SIZES[split]} images of 28x28 with as many "
                        f"labels, found {images.shape} and {labels.shape}. Fix: replace them with the official files.")
    return images, labels


def raw_md5(path) -> str:
    """MD5 of the uncompressed content of a ``.gz`` file (for provenance)."""
    with gzip.open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def standin_digits(split: str = "train"):
    """scikit-learn's 1,797 bundled 8x8 digits, upscaled to 28x28 uint8 (a stand-in for MNIST).

    Split 70/30 into "train"/"test" with a fixed permutation.
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0        # (N, 1, 8, 8)
    x = F.pad(x, (1, 1, 1, 1))                                             # (N, 1, 10, 10): a border like MNIST's
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    labels = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    cut = int(0.7 * len(order))
    idx = order[:cut] if split == "train" else order[cut:]
    return images[idx], labels[idx]


def load_mnist_or_standin(split: str = "train", root=None, download: bool = True):
    """``(images, labels, source)``: real MNIST when it can be had, else the stand-in with a notice."""
    try:
        images, labels = load_mnist(split, root, download)
        return images, labels, f"MNIST ({split}, official IDX files in {mnist_folder(root)})"
    except DataError as err:
        notice_standin("MNIST", str(err).split(". Fix")[0],
                       "set ENERGYAD_DATA to a folder with MNIST/raw/*.gz, or allow the download.")
        images, labels = standin_digits(split)
        return images, labels, f"STAND-IN: scikit-learn 8x8 digits upscaled to 28x28 ({split})"


def one_class_split(train, test, normal_digit: int, n_train: int | None = None, n_test: int | None = None,
                    seed: int = 0):
    """One-class MNIST: train on one digit; test that digit (label 0) against all others (label 1).

    ``train`` and ``test`` are ``(images, labels)`` pairs. Returns ``(x_train, x_test, y_test)``
    with images as float32 tensors (N, 1, 28, 28) in [0, 1] and ``y_test`` int64 (1 = anomaly).
    ``n_train``/``n_test`` draw a seeded random subset (the quick profile).
    """
    import torch

    rng = np.random.default_rng(seed)
    xtr, ytr = train
    xte, yte = test
    tr = np.flatnonzero(ytr == normal_digit)
    if n_train is not None and n_train < len(tr):
        tr = np.sort(rng.choice(tr, n_train, replace=False))
    te = np.arange(len(yte))
    if n_test is not None and n_test < len(te):
        te = np.sort(rng.choice(te, n_test, replace=False))
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float().div(255.0)[:, None]  # (N, 1, 28, 28)
    return to_t(xtr[tr]), to_t(xte[te]), torch.from_numpy((yte[te] != normal_digit).astype(np.int64))
