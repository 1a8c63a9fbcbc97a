"""The erased-patch toy of Matsubara et al. (Sec. V-B): small anomalies on images of heterogeneous
complexity.

The paper's words: "We randomly selected 1 % of samples as anomalous samples by randomly erasing
their 4 x 4 subregions. We duplicated 26,032 test samples, keeping half as normal samples and
randomly erasing subregions of the other half to obtain anomalous samples."

The paper does not give the value of an erased pixel, but Sec. VI-A calls the erased regions
"the gray squares"; the toy therefore sets them to mid grey, :data:`GREY` = 0.5 on images in
[0, 1] (every channel, so an RGB square is grey too). Black (0, the usual meaning of "erasing" in
image augmentation) and white (1) squares are kept as controls (``value=``). The erased box of every
image is recorded.
The training set keeps its 1% of erased images (the paper trains on the contaminated set; the
flag ``train_is_erased`` lets a chapter show them).
"""
from __future__ import annotations

import numpy as np
import torch

PATCH = 4             # side of the erased square (paper: 4 x 4)
CONTAMINATION = 0.01  # fraction of erased training images (paper: 1 %)
GREY = 0.5            # the erased value: "the gray squares" (Sec. VI-A); mid grey on images in [0, 1]
VALUE_NAMES = {GREY: "grey", 0.0: "black", 1.0: "white"}


def describe_value(value: float) -> str:
    """How a result file names the erased value: ``"grey squares, value 0.5"``."""
    return f"{VALUE_NAMES.get(float(value), 'custom')} squares, value {value}"


def erase_patches(images: torch.Tensor, patch: int = PATCH, n_patches: int = 1, value: float = 0.0,
                  generator: torch.Generator | None = None):
    """Erase ``n_patches`` random ``patch`` x ``patch`` squares per image (set them to ``value``).

    ``images`` float (N, C, H, W). Returns ``(erased (N, C, H, W), boxes)`` with ``boxes`` (N, 2) of
    ``(top, left)`` when ``n_patches == 1``, else (N, n_patches, 2). Squares may overlap.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    N, C, H, W = images.shape
    if not 1 <= patch <= min(H, W):
        raise ValueError(f"patch {patch} does not fit in images of {H}x{W}")
    tops = torch.randint(0, H - patch + 1, (N, n_patches), generator=generator)
    lefts = torch.randint(0, W - patch + 1, (N, n_patches), generator=generator)
    out = images.clone()
    ar = torch.arange(patch)
    for k in range(n_patches):
        rows = tops[:, k, None] + ar                         # (N, patch)
        cols = lefts[:, k, None] + ar                        # (N, patch)
        n_idx = torch.arange(N)[:, None, None]
        out.permute(0, 2, 3, 1)[n_idx, rows[:, :, None], cols[:, None, :]] = value  # (N, patch, patch, C)
    boxes = torch.stack([tops, lefts], -1)                   # (N, n_patches, 2)
    return out, (boxes[:, 0] if n_patches == 1 else boxes)


def make_erased_patch_toy(train_images: torch.Tensor, test_images: torch.Tensor, patch: int = PATCH,
                          contamination: float = CONTAMINATION, seed: int = 0, value: float = GREY) -> dict:
    """Build the toy from float images (N, C, H, W) in [0, 1].

    Returns ``x_train`` (with ``contamination`` of its images erased), ``train_is_erased`` (bool),
    ``x_test`` = the test images followed by an erased copy of each, ``y_test`` (1 = erased),
    ``test_boxes`` ((top, left) of each erased square, -1 for intact images), ``erase_mask``
    (N_test, 1, H, W): the pixels that were erased. ``value`` is what an erased pixel becomes.
    """
    g = torch.Generator().manual_seed(seed)
    n = len(train_images)
    k = int(round(contamination * n))
    chosen = torch.randperm(n, generator=g)[:k]
    x_train = train_images.clone()
    x_train[chosen], _ = erase_patches(train_images[chosen], patch, value=value, generator=g)
    train_is_erased = torch.zeros(n, dtype=torch.bool)
    train_is_erased[chosen] = True

    erased, boxes = erase_patches(test_images, patch, value=value, generator=g)
    m = len(test_images)
    x_test = torch.cat([test_images, erased])
    y_test = torch.cat([torch.zeros(m, dtype=torch.long), torch.ones(m, dtype=torch.long)])
    test_boxes = torch.cat([torch.full((m, 2), -1), boxes])
    H, W = test_images.shape[-2:]
    mask = torch.zeros(2 * m, 1, H, W)
    for i, (t, l) in enumerate(boxes.tolist()):
        mask[m + i, 0, t:t + patch, l:l + patch] = 1
    return {"x_train": x_train, "train_is_erased": train_is_erased, "x_test": x_test, "y_test": y_test,
            "test_boxes": test_boxes, "erase_mask": mask}


def _subset_idx(n_all: int, n: int | None, rng) -> np.ndarray:
    if n is None or n >= n_all:
        return np.arange(n_all)
    return np.sort(rng.choice(n_all, n, replace=False))


def mnist_erased_patch_toy(root=None, n_train: int | None = None, n_test: int | None = None, seed: int = 0,
                           allow_standin: bool = True, value: float = GREY, download: bool = True) -> dict:
    """The toy on MNIST (1 x 28 x 28), for machines without SVHN; adds ``source``.

    ``value`` is the erased value: :data:`GREY` (the paper's "gray squares", the default), or the
    controls 0.0 (black: on MNIST's black background it often changes nothing) and 1.0 (white)."""
    from .mnist import load_mnist, load_mnist_or_standin

    rng = np.random.default_rng(seed)
    if allow_standin:
        tr, _, source = load_mnist_or_standin("train", root, download)
        te, te_y, _ = load_mnist_or_standin("test", root, download)
    else:
        (tr, _), (te, te_y) = load_mnist("train", root, download), load_mnist("test", root, download)
        source = "MNIST"
    i_tr, i_te = _subset_idx(len(tr), n_train, rng), _subset_idx(len(te), n_test, rng)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float().div(255)[:, None]  # (N, 1, 28, 28)
    out = make_erased_patch_toy(to_t(tr[i_tr]), to_t(te[i_te]), seed=seed, value=value)
    out["test_digits"] = torch.from_numpy(np.tile(te_y[i_te], 2))
    out["source"] = f"erased-patch toy ({describe_value(value)}) on {source}"
    return out


def svhn_erased_patch_toy(root=None, n_train: int | None = None, n_test: int | None = None, seed: int = 0,
                          download: bool = True, value: float = GREY) -> dict:
    """The paper's toy on SVHN (3 x 32 x 32); raises DataError when SVHN is unavailable."""
    from .svhn import load_svhn

    rng = np.random.default_rng(seed)
    tr = load_svhn("train", root, download)[0]
    te, te_y = load_svhn("test", root, download)
    i_tr, i_te = _subset_idx(len(tr), n_train, rng), _subset_idx(len(te), n_test, rng)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float().div(255).permute(0, 3, 1, 2)  # (N, 3, 32, 32)
    out = make_erased_patch_toy(to_t(tr[i_tr]), to_t(te[i_te]), seed=seed, value=value)
    out["test_digits"] = torch.from_numpy(np.tile(te_y[i_te], 2))
    out["source"] = f"erased-patch toy ({describe_value(value)}) on SVHN"
    return out
