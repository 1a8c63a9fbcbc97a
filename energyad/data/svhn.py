"""SVHN cropped digits (Netzer et al., 2011) from the official ``.mat`` files.

``<data root>/SVHN/train_32x32.mat`` and ``test_32x32.mat`` hold ``X`` (32, 32, 3, N) uint8 and
``y`` (N, 1) with labels 1..10, where 10 stands for the digit 0. Missing files are downloaded with
pooch and checked against the official MD5s.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import data_root
from .errors import DataError

URL = "http://ufldl.stanford.edu/housenumbers/"
FILES = {"train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
         "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")}


def svhn_folder(root=None) -> Path:
    return data_root(root) / "SVHN"


def load_svhn(split: str = "train", root=None, download: bool = True):
    """``(images uint8 (N, 32, 32, 3), labels int64 (N,))`` with digit 0 labelled 0."""
    import scipy.io

    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    name, md5 = FILES[split]
    folder = svhn_folder(root)
    path = folder / name
    if not path.exists():
        from ..config import downloads_allowed

        if not download or not downloads_allowed():
            raise DataError(f"SVHN file {path} is missing. Fix: load_svhn(..., download=True) with a network, "
                            f"or download {URL}{name} into {folder}.")
        import pooch

        folder.mkdir(parents=True, exist_ok=True)
        try:
            path = Path(pooch.retrieve(URL + name, known_hash=f"md5:{md5}", fname=name, path=folder,
                                       progressbar=True))
        except ValueError as err:
            raise DataError(f"Downloaded {path} does not match its published MD5 ({err}). Try again.") from err
        except Exception as err:
            raise DataError(f"SVHN file {path} is missing and could not be downloaded ({type(err).__name__}). "
                            f"Fix: download {URL}{name} by hand into {folder}.") from err
    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several types for a damaged file
        raise DataError(f"{path} is not a readable .mat file ({err}); it may be truncated. "
                        "Fix: delete it and download it again.") from err
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} lacks the SVHN keys 'X' and 'y' (found {sorted(k for k in mat if not k.startswith('__'))}). "
                        "Fix: replace it with the official cropped-digits file.")
    X, y = mat["X"], mat["y"].astype(np.int64).ravel()
    if X.ndim != 4 or X.shape[:3] != (32, 32, 3) or X.shape[3] != len(y):
        raise DataError(f"{path}: X has shape {X.shape} for {len(y)} labels; expected (32, 32, 3, N).")
    images = np.ascontiguousarray(np.transpose(X, (3, 0, 1, 2))).astype(np.uint8)  # (N, 32, 32, 3)
    labels = np.where(y == 10, 0, y)
    return images, labels
