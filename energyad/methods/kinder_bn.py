r"""A Bayesian network over binarised image pixels (Kinder, 2023, Sec. 3.1), its energy and Gibbs sampling.

Every pixel :math:`X_{h,w}\in\{0,1\}` (MNIST grey value above 0.3) has the four parents north-west,
north, north-east and west (Fig. 9): parents come before the pixel in raster order, so the graph is
acyclic and the joint factorises without a normalising constant,

.. math::  p(x) = \prod_{h,w} P(x_{h,w}\mid x_{h-1,w-1}, x_{h-1,w}, x_{h-1,w+1}, x_{h,w-1}),

with parents outside the image read as 0. Each pixel has a conditional probability table (CPT) of
:math:`2^4 = 16` rows, estimated by counting with a Laplace pseudo-count :math:`\lambda` (Eq. 2):

.. math::  P(X_i = x_i\mid P = p) = \frac{\#(X_i = x_i, P = p) + \lambda}{\#(P = p) + n\lambda},\quad n = 2 .

The energy of an image is its negative log-likelihood, :math:`E(x) = -\log p(x)`. Samples come from
single-site Gibbs updates (Algorithm 1): flip a random pixel to get :math:`x'` and keep the flip with
probability :math:`p(x')/(p(x) + p(x'))`. Everything is vectorised: fitting is one ``bincount``,
scoring one gather, and Gibbs sampling runs many chains at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

N_PARENTS = 4
N_CONFIGS = 2 ** N_PARENTS


@dataclass
class BNSettings:
    threshold: float = 0.3       # Sec. 3.1: pixels above 0.3 (of 1) are on
    pseudo_count: float = 1.0    # Sec. 3.1: "pseudo-counts of 1 were used for each row"
    gibbs_iterations: int = 100_000  # Sec. 3.1: 100,000 iterations between samples


def binarize(images, threshold: float = 0.3) -> torch.Tensor:
    """uint8 (N, H, W) or float in [0, 1] (N, [1,] H, W) -> uint8 {0, 1} (N, H, W)."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if x.ndim == 4:
        x = x[:, 0]
    return (x > threshold).to(torch.uint8)


def parent_configs(x: torch.Tensor) -> torch.Tensor:
    """Index 0..15 of each pixel's parent state NW*8 + N*4 + NE*2 + W, zeros outside: (N, H, W)."""
    p = torch.nn.functional.pad(x.long(), (1, 1, 1, 0))          # (N, H+1, W+2): a zero row on top, columns both sides
    H, W = x.shape[-2:]
    nw = p[:, :H, :W]
    n = p[:, :H, 1:W + 1]
    ne = p[:, :H, 2:W + 2]
    w = p[:, 1:H + 1, :W]
    return nw * 8 + n * 4 + ne * 2 + w


class PixelBN:
    """The fixed-structure Bayesian network of Sec. 3.1 with one CPT per pixel: ``cpt`` (H, W, 16) = P(X=1 | parents)."""

    def __init__(self, settings: BNSettings | None = None):
        self.s = settings or BNSettings()
        self.cpt: torch.Tensor | None = None

    def fit(self, x: torch.Tensor) -> "PixelBN":
        """``x``: binary uint8 (N, H, W). Counting with a pseudo-count (Eq. 2)."""
        N, H, W = x.shape
        cfg = parent_configs(x)                                  # (N, H, W)
        pix = torch.arange(H * W).view(1, H, W)
        idx = ((pix * N_CONFIGS + cfg) * 2 + x.long()).flatten()
        counts = torch.bincount(idx, minlength=H * W * N_CONFIGS * 2).view(H, W, N_CONFIGS, 2).double()
        lam = self.s.pseudo_count
        self.cpt = (counts[..., 1] + lam) / (counts.sum(-1) + 2 * lam)   # (H, W, 16)
        return self

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for binary images (N, H, W), shape (N,)."""
        if self.cpt is None:
            raise RuntimeError("PixelBN.fit must be called first")
        cfg = parent_configs(x)                                  # (N, H, W)
        H, W = x.shape[-2:]
        p1 = self.cpt[torch.arange(H).view(1, H, 1), torch.arange(W).view(1, 1, W), cfg]  # (N, H, W)
        p = torch.where(x.bool(), p1, 1 - p1)
        return p.log().flatten(1).sum(1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = -log p(x): the anomaly score."""
        return -self.log_prob(x)

    # -- the shared interface (images as floats in [0, 1])
    def score(self, images) -> torch.Tensor:
        return self.energy(binarize(images, self.s.threshold)).float()

    def gibbs(self, n_chains: int, iterations: int, generator: torch.Generator | None = None,
              x0: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
        """Algorithm 1, vectorised over chains: each iteration flips one random pixel per chain and keeps
        the flip with probability p(x') / (p(x) + p(x')). Returns binary images (n_chains, H, W)."""
        from tqdm.auto import tqdm

        H, W = self.cpt.shape[:2]
        x = torch.randint(0, 2, (n_chains, H, W), generator=generator, dtype=torch.uint8) if x0 is None else x0.clone()
        rows = torch.arange(n_chains)
        lp = self.log_prob(x)
        for _ in tqdm(range(iterations), desc="Gibbs", disable=not progress, leave=False):
            i = torch.randint(0, H * W, (n_chains,), generator=generator)
            x_new = x.clone()
            flat = x_new.view(n_chains, -1)
            flat[rows, i] = 1 - flat[rows, i]
            lp_new = self.log_prob(x_new)
            accept = torch.rand(n_chains, generator=generator, dtype=torch.float64) < torch.sigmoid(lp_new - lp)
            x = torch.where(accept.view(-1, 1, 1), x_new, x)
            lp = torch.where(accept, lp_new, lp)
        return x
