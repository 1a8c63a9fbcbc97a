r"""Iterative energy-based projection onto the normal manifold (Dehaene et al., ICLR 2020).

An autoencoder f trained on normal images defines a reconstruction loss :math:`L_r(x)`. Instead of
comparing an image with its reconstruction, which loses the high frequencies the bottleneck cannot
carry, the method *moves the input* towards the normal manifold by gradient descent on (Eq. 4)

.. math::  E(x_t) = L_r(x_t) + \lambda\,\|x_t - x_0\|_1,

.. math::  x_{t+1} = x_t - \alpha\,\nabla_x E(x_t)                              \quad\text{(Eq. 5)}

starting from the input :math:`x_0`. The L1 term keeps the projection close to the input (a
surrogate of L0: "the smallest number of pixels are modified"), so normal regions, high frequencies
included, stay as they are and only the anomalous pixels move. Variants: a known mask :math:`\Omega`
(inpainting) restricts the update, :math:`\nabla_x E \odot \Omega` (Eq. 7); without a mask the
pixel-wise reconstruction error serves as a soft one, :math:`\nabla_x E \odot (x_t - f(x_t))^2`
(Eq. 8); Adam may replace plain steps (Sec. 3.4). The anomaly map is DSSIM(x_0, x_T). Defaults
(Sec. 4.1): :math:`\alpha = 0.5`, :math:`\lambda = 0.05`; stop when an image's reconstruction loss
falls below the minimum reconstruction loss over the training set.

Baselines (Sec. 4.1): L2AE (squared error), DSAE (DSSIM loss), VAE, and gamma-VAE (Dai & Wipf, 2019:
a learned decoder variance gamma), all on the encoder/decoder of Bergmann et al. (2018).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

KINDS = ("l2ae", "dsae", "vae", "gamma_vae")


def dssim_map(x: torch.Tensor, y: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Structural dissimilarity (1 - SSIM) / 2 per pixel, averaged over channels: (N, 1, H, W).

    SSIM from kornia (Gaussian window of size 11, sigma 1.5, as in Wang et al., 2004)."""
    from kornia.metrics import ssim

    return ((1 - ssim(x, y, window_size, max_val=1.0)) / 2).mean(1, keepdim=True)


class AutoencoderModel(nn.Module):
    """One of the four baselines: ``kind`` in ``KINDS`` decides the loss; ``net`` is a BergmannAE
    (variational for "vae" and "gamma_vae")."""

    def __init__(self, net: nn.Module, kind: str = "l2ae"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if (kind in ("vae", "gamma_vae")) != bool(getattr(net, "variational", False)):
            raise ValueError(f"{kind} needs a {'variational' if kind in ('vae', 'gamma_vae') else 'plain'} network")
        self.net, self.kind = net, kind
        self.log_gamma = nn.Parameter(torch.zeros(())) if kind == "gamma_vae" else None

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss_r(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """The per-image loss the model is trained with, L_r(x), shape (N,). Deterministic (z = mu)
        unless ``sample`` (training of the VAEs)."""
        mu, logvar = self.net.encode(x)
        if self.kind in ("l2ae", "dsae"):
            rec = self.net.decode(mu)
            if self.kind == "l2ae":
                return (x - rec).pow(2).flatten(1).sum(1)
            return dssim_map(x, rec).flatten(1).sum(1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        rec = self.net.decode(z)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        se = (x - rec).pow(2).flatten(1).sum(1)
        if self.kind == "vae":
            return se + kl
        D = x[0].numel()
        return se / (2 * self.log_gamma.exp()) + 0.5 * D * (self.log_gamma + math.log(2 * math.pi)) + kl


@dataclass
class AETrainSettings:
    lr: float = 1e-4          # Sec. 4.1
    epochs: int = 300         # Sec. 4.1
    batch_size: int = 32      # not in the paper
    n_train: int = 10_000     # Sec. 4.1: "for all datasets we train on 10000 images"


def train_autoencoder(model: AutoencoderModel, images: torch.Tensor, s: AETrainSettings, generator=None,
                      progress: bool = True) -> list:
    """Adam on the mean of L_r; returns the mean loss per epoch."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    hist = []
    for _ in tqdm(range(s.epochs), desc=f"{model.kind}", disable=not progress, leave=False):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        tot = 0.0
        for i in range(0, len(images), s.batch_size):
            xb = images[order[i:i + s.batch_size]].to(device)
            loss = model.loss_r(xb, sample=True).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(xb)
        hist.append(tot / len(images))
    model.eval()
    return hist


@dataclass
class ProjectionSettings:
    alpha: float = 0.5              # step size (Sec. 4.1)
    lam: float = 0.05               # weight of the L1 term (Sec. 4.1)
    steps: int = 100                # maximum number of iterations (not in the paper)
    weighting: str = "error"        # "none" (Eq. 5), "mask" (Eq. 7), "error" (Eq. 8)
    optimizer: str = "sgd"          # "sgd" (plain steps) or "adam" (Sec. 3.4)
    stop_loss: float | None = None  # stop an image when L_r < this (Sec. 4.1: min training loss)
    tol: float = 0.0                # or when its energy changes by less than this (0 = off)


def energy(model: AutoencoderModel, x: torch.Tensor, x0: torch.Tensor, lam: float) -> torch.Tensor:
    """E(x_t) = L_r(x_t) + lam * ||x_t - x_0||_1 per image (Eq. 4)."""
    return model.loss_r(x) + lam * (x - x0).abs().flatten(1).sum(1)


def project(model: AutoencoderModel, x0: torch.Tensor, s: ProjectionSettings, mask: torch.Tensor | None = None,
            return_trajectory: bool = False, record_every: int = 10):
    """Gradient descent on E from x_0 (Eqs. 5, 7, 8), batched; each image stops on its own criterion.

    Returns ``(x_T, info)`` with ``info["energy"]`` (steps+1, N), ``info["stopped_at"]`` (N,) and,
    if asked, ``info["trajectory"]`` (N, K, C, H, W)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x0 = x0.detach()
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=s.alpha) if s.optimizer == "adam" else None
    active = torch.ones(len(x0), dtype=torch.bool, device=x0.device)
    stopped_at = torch.full((len(x0),), s.steps, dtype=torch.long)
    energies, traj = [], [x0.clone()] if return_trajectory else None
    prev = None
    try:
        for t in range(s.steps):
            e = energy(model, x, x0, s.lam)
            energies.append(e.detach().cpu())
            (grad,) = torch.autograd.grad(e.sum(), x)
            if s.weighting == "mask":
                if mask is None:
                    raise ValueError("weighting='mask' (Eq. 7) needs the inpainting mask")
                grad = grad * mask
            elif s.weighting == "error":
                with torch.no_grad():
                    grad = grad * (x - model.reconstruct(x)).pow(2)
            with torch.no_grad():
                lr_now = model.loss_r(x)
                done = torch.zeros_like(active)
                if s.stop_loss is not None:
                    done |= lr_now < s.stop_loss
                if s.tol > 0 and prev is not None:
                    done |= (prev - e.detach()).abs() < s.tol
                newly = active & done
                stopped_at[newly.cpu()] = t
                active &= ~done
                prev = e.detach()
                if not active.any():
                    break
                grad = grad * active.view(-1, *[1] * (x.ndim - 1))
            if opt is not None:
                opt.zero_grad(set_to_none=True)
                x.grad = grad
                opt.step()
            else:
                with torch.no_grad():
                    x -= s.alpha * grad
            with torch.no_grad():
                x.clamp_(0, 1)
            if return_trajectory and (t + 1) % record_every == 0:
                traj.append(x.detach().clone())
        energies.append(energy(model, x, x0, s.lam).detach().cpu())
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    info = {"energy": torch.stack(energies), "stopped_at": stopped_at}
    if return_trajectory:
        info["trajectory"] = torch.stack(traj, 1)
    return x.detach(), info


class DehaeneProjection:
    """The shared interface: ``anomaly_map`` = DSSIM(x_0, projection); ``score`` = its mean."""

    def __init__(self, model: AutoencoderModel, settings: ProjectionSettings | None = None):
        self.model, self.settings = model, settings or ProjectionSettings()

    def anomaly_map(self, images: torch.Tensor, projected: bool = True) -> torch.Tensor:
        if projected:
            xt, _ = project(self.model, images, self.settings)
        else:
            with torch.no_grad():
                xt = self.model.reconstruct(images)
        return dssim_map(images, xt).detach()

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return self.anomaly_map(images).flatten(1).mean(1)
