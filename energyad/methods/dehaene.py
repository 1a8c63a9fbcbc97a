r"""Iterative energy-based projection onto the normal manifold (Dehaene et al., ICLR 2020).

An autoencoder f trained on normal images defines a reconstruction loss :math:`L_r(x)`, the
reconstruction term only (Sec. 2.2: :math:`L_r(x) = -\mathbb E_{q(z|x)} \log p(x|z)`; no KL). Instead of
comparing an image with its reconstruction, the method *moves the input* towards the normal manifold by
gradient descent on (Eq. 4)

.. math::  E(x_t) = L_r(x_t) + \lambda\,\|x_t - x_0\|_1,

.. math::  x_{t+1} = x_t - \alpha\,\nabla_x E(x_t)                              \quad\text{(Eq. 5)}

starting from the input :math:`x_0`. The L1 term keeps the projection close to the input (a
surrogate of L0: "the smallest number of pixels are modified"). Variants: a known mask :math:`\Omega`
(inpainting) restricts the update, :math:`\nabla_x E \odot \Omega` (Eq. 7); without a mask the
pixel-wise reconstruction error serves as a soft one, :math:`\nabla_x E \odot (x_t - f(x_t))^2`
(Eq. 8). The anomaly map is DSSIM(x_0, x_T). Defaults (Sec. 4.1): :math:`\alpha = 0.5`,
:math:`\lambda = 0.05`; stop when an image's :math:`L_r` falls below the minimum :math:`L_r` over the
training set.

Three optimisers (``ProjectionSettings.optimizer``):

- ``"sgd"`` (default): the paper's plain update, Eqs. 5/7/8.
- ``"adam"``: Sec. 3.4 says Adam "is beneficial"; it is an option only. Adam divides each pixel's step
  by a running estimate of its own gradient size, so a per-pixel weight such as Eq. 8's is (up to
  Adam's epsilon and the drift of the running averages) divided out again: its first step is
  :math:`\alpha\,\mathrm{sign}(\nabla_x E)` with or without the weight.
- ``"ista"`` (ours, not the paper's): the proximal-gradient (ISTA) solver of the same lasso problem,
  :math:`x \leftarrow x_0 + S_{\alpha w\lambda}(x - \alpha w \nabla L_r(x) - x_0)` with the soft
  threshold :math:`S`. Its fixed points satisfy the lasso condition: pixel i stays exactly at
  :math:`x_{0,i}` iff :math:`|\partial L_r / \partial x_i| \le \lambda`.

Step size (ours): with ``scale_alpha`` (default) α is given in the L2AE's units and multiplied by
:meth:`AutoencoderModel.step_scale` (2 s2 for the VAE, 2 gamma for the gamma-VAE), so that α = 0.5 is
one exact projection step on a linear autoencoder for every model; without it, a VAE with decoder
variance 0.01 would take steps 50 times too large and oscillate. Adam's steps are not rescaled (Adam
is invariant to the gradient's scale).

What λ means depends on the model, because :math:`L_r` is a *sum* over pixels whose scale differs per
loss: the L2AE's :math:`\|x - f\|^2` has pixel gradient about :math:`2(x_i - f_i)`, the VAE's
:math:`\tfrac12\|x - f\|^2` about :math:`(x_i - f_i)`, the gamma-VAE's :math:`\|x - f\|^2 / 2\gamma`
about :math:`(x_i - f_i)/\gamma`, the DSAE's DSSIM sum a gradient of its own scale. The same λ = 0.05
is therefore a different threshold on the reconstruction error per model.

Baselines (Sec. 4.1): L2AE (squared error), DSAE (DSSIM loss), VAE, and gamma-VAE (Dai & Wipf, 2019:
a learned decoder variance gamma), all on the encoder/decoder of Bergmann et al. (2018).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..loops import History, plain_loop

KINDS = ("l2ae", "dsae", "vae", "gamma_vae")


def dssim_map(x: torch.Tensor, y: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Structural dissimilarity (1 - SSIM) / 2 per pixel, averaged over channels: (N, 1, H, W).

    SSIM from kornia (Gaussian window of size 11, sigma 1.5, as in Wang et al., 2004)."""
    from kornia.metrics import ssim

    return ((1 - ssim(x, y, window_size, max_val=1.0)) / 2).mean(1, keepdim=True)


class AutoencoderModel(nn.Module):
    """One of the four baselines: ``kind`` in ``KINDS`` decides the loss; ``net`` is a BergmannAE
    (variational for "vae" and "gamma_vae"). ``decoder_var``: the VAE's fixed decoder variance, and the
    gamma-VAE's initial gamma (the paper gives neither; 1 = identity covariance)."""

    def __init__(self, net: nn.Module, kind: str = "l2ae", decoder_var: float = 1.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if (kind in ("vae", "gamma_vae")) != bool(getattr(net, "variational", False)):
            raise ValueError(f"{kind} needs a {'variational' if kind in ('vae', 'gamma_vae') else 'plain'} network")
        self.net, self.kind, self.decoder_var = net, kind, decoder_var
        self.log_gamma = nn.Parameter(torch.tensor(math.log(decoder_var))) if kind == "gamma_vae" else None

    @property
    def variational(self) -> bool:
        return self.kind in ("vae", "gamma_vae")

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _rec_term(self, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per image up to the constant D/2 log(2 pi), for the decoder output ``rec``."""
        if self.kind == "l2ae":
            return (x - rec).pow(2).flatten(1).sum(1)
        if self.kind == "dsae":
            return dssim_map(x, rec).flatten(1).sum(1)
        se = (x - rec).pow(2).flatten(1).sum(1)
        if self.kind == "vae":                       # decoder covariance fixed to decoder_var * I (identity: 1)
            return 0.5 * se / self.decoder_var
        D = x[0].numel()                             # gamma-VAE: covariance gamma I, gamma learned
        return se / (2 * self.log_gamma.exp()) + 0.5 * D * self.log_gamma

    def loss_r(self, x: torch.Tensor) -> torch.Tensor:
        """L_r(x), the reconstruction term only (Sec. 2.2), per image, shape (N,); deterministic (z = mu).

        l2ae: ||x - f(x)||^2; dsae: sum of the DSSIM map; vae: ||x - f(x)||^2 / (2 s2), decoder
        covariance fixed to s2 I (``decoder_var``; 1: the identity, 1/2 ||x - f(x)||^2); gamma_vae: ||x - f(x)||^2 / (2 gamma) + D/2 log gamma. Constants D/2 log 2 pi are
        dropped. This is what the projection descends (Eq. 4) and what the stop threshold compares."""
        return self._rec_term(x, self.net(x))

    def step_scale(self) -> float:
        """Factor that puts a step size given in the L2AE's units into this model's units (ours): the
        inverse ratio of the curvature of L_r in f, i.e. 1 (L2AE, DSAE), 2 s2 (VAE), 2 gamma (gamma-VAE).
        With it, one plain step of alpha = 0.5 on a linear autoencoder lands on P x_0 for every model."""
        if self.kind == "vae":
            return 2.0 * self.decoder_var
        if self.kind == "gamma_vae":
            return 2.0 * float(self.log_gamma.detach().exp())
        return 1.0

    def kl(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per image (0 for the plain autoencoders), shape (N,)."""
        if not self.variational:
            return x.new_zeros(len(x))
        mu, logvar = self.net.encode(x)
        return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)

    def train_loss(self, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        """The per-image training objective: L_r for the autoencoders; for the VAEs the negative ELBO with
        a sampled z, -log p(x|z) + beta KL (beta = 1 is the ELBO; beta < 1 only during a warm-up)."""
        mu, logvar = self.net.encode(x)
        if not self.variational:
            return self._rec_term(x, self.net.decode(mu))
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return self._rec_term(x, self.net.decode(z)) + beta * kl


@dataclass
class AETrainSettings:
    lr: float = 1e-4          # Sec. 4.1
    epochs: int = 300         # Sec. 4.1
    batch_size: int = 32      # not in the paper
    n_train: int = 10_000     # Sec. 4.1: "for all datasets we train on 10000 images"
    kl_warmup: int = 0        # ours: epochs over which the KL weight rises linearly from 0 to 1 (VAEs)


def train_autoencoder(model: AutoencoderModel, images: torch.Tensor, s: AETrainSettings, generator=None,
                      progress: bool = True, loop=None) -> list:
    """Adam on the mean training loss (:meth:`AutoencoderModel.train_loss`); returns, after each epoch,
    the reconstruction error per pixel that the model is trained to lower: the squared error for the
    L2AE, the VAE and the γ-VAE, DSSIM for the DSAE (a positive curve for every kind, for the health
    check :func:`energyad.health.loss_drop`). The DSAE is checked on DSSIM because its squared error
    need not fall: on transistor at the quick settings (32 px, 10 epochs) it rose from 0.26 to 0.36
    per pixel while DSSIM fell from 0.39 to 0.10.

    ``loop(total, state, step, generator)`` runs ``step(epoch)`` for the ``s.epochs`` epochs; ``state``
    holds the model, the optimiser and the history (objects with ``state_dict``), ``generator`` is the
    one the epochs draw from. The default (:func:`energyad.loops.plain_loop`) runs them all; a full-profile experiment
    passes :func:`energyad.experiments.resume.resumable_loop`, which saves ``state`` and every random
    state and stops at ``--max-minutes``."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    images = images.to(device)                       # on the device once (a no-op on the CPU)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    hist = History()

    def epoch(ep: int) -> None:
        model.train()
        beta = min(1.0, (ep + 1) / s.kl_warmup) if s.kl_warmup > 0 else 1.0
        order = torch.randperm(len(images), generator=generator)
        se = torch.zeros((), dtype=torch.float64, device=device)   # summed on the device: no sync per batch
        for i in tqdm(range(0, len(images), s.batch_size), desc=f"{model.kind} {ep + 1}/{s.epochs}",
                      disable=not progress, leave=False):
            xb = images[order[i:i + s.batch_size]]
            loss = model.train_loss(xb, beta).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(images), 256):
                xb = images[i:i + 256]
                rec = model.reconstruct(xb)
                err = dssim_map(xb, rec) * xb.shape[1] if model.kind == "dsae" else (xb - rec).pow(2)
                se += err.sum()
        hist.append(float(se) / images.numel())

    (loop or plain_loop)(s.epochs, {"model": model, "optimizer": opt, "history": hist}, epoch, generator)
    model.eval()
    return list(hist)


@dataclass
class HealthRules:
    """Thresholds of :func:`autoencoder_health` (ours)."""
    min_output_dependence: float = 0.3   # std of outputs across inputs / std of inputs; 0 = constant output
    min_active_dims: int = 1             # VAEs: latent dimensions with KL >= active_kl nats
    active_kl: float = 0.1
    min_loss_drop: float = 0.2           # relative fall of the per-epoch squared error


def autoencoder_health(model: AutoencoderModel, x: torch.Tensor, hist, rules: HealthRules | None = None,
                       name: str | None = None):
    """Health figures of a trained baseline on images ``x`` (N >= 2, e.g. held-out normal ones):
    output dependence, loss drop, and for the VAEs the KL per latent dimension and gamma."""
    from .. import health as H

    r = rules or HealthRules()
    h = H.Health(name or model.kind)
    model.eval()
    with torch.no_grad():
        rec = torch.cat([model.reconstruct(x[i:i + 256]) for i in range(0, len(x), 256)])
        h.check("output_dependence", H.output_dependence(x, rec), H.output_dependence(x, rec) >= r.min_output_dependence,
                f">= {r.min_output_dependence}")
        if len(hist) >= 2:
            h.check("loss_drop", H.loss_drop(hist), H.loss_drop(hist) >= r.min_loss_drop, f">= {r.min_loss_drop}")
        else:
            h.check("loss_drop", None, False, "needs a training curve of >= 2 epochs")
        h.note("final_mse" if model.kind != "dsae" else "final_dssim", hist[-1])
        if model.variational:
            mus, lvs = zip(*[model.net.encode(x[i:i + 256]) for i in range(0, len(x), 256)])
            kl = H.kl_per_dimension(torch.cat(mus), torch.cat(lvs))
            active = int((kl >= r.active_kl).sum())
            h.check("active_dims", active, active >= r.min_active_dims, f">= {r.min_active_dims} dims with KL >= {r.active_kl}")
            h.note("kl_total", kl.sum())
            if model.kind == "gamma_vae":
                h.note("gamma", model.log_gamma.exp())
    return h


@dataclass
class ProjectionSettings:
    """Settings of :func:`project`. ``lam`` multiplies the L1 *sum* over pixels and is weighed against
    each model's own L_r (see the module docstring): its meaning differs per model."""
    alpha: float = 0.5              # step size (Sec. 4.1)
    lam: float = 0.05               # weight of the L1 term (Sec. 4.1)
    steps: int = 100                # maximum number of iterations (not in the paper)
    weighting: str = "error"        # "none" (Eq. 5), "mask" (Eq. 7), "error" (Eq. 8)
    optimizer: str = "sgd"          # "sgd" (the paper's plain steps), "adam" (Sec. 3.4, an option), "ista" (ours)
    stop_loss: float | None = None  # stop an image when L_r < this (Sec. 4.1: min training L_r)
    tol: float = 0.0                # or when its energy changes by less than this (0 = off)
    scale_alpha: bool = True        # ours: alpha in the L2AE's units, times model.step_scale() (see there)


def energy(model: AutoencoderModel, x: torch.Tensor, x0: torch.Tensor, lam: float) -> torch.Tensor:
    """E(x_t) = L_r(x_t) + lam * ||x_t - x_0||_1 per image (Eq. 4)."""
    return model.loss_r(x) + lam * (x - x0).abs().flatten(1).sum(1)


def project(model: AutoencoderModel, x0: torch.Tensor, s: ProjectionSettings, mask: torch.Tensor | None = None,
            return_trajectory: bool = False, record_every: int = 10):
    """Descent on E from x_0 (Eqs. 5, 7, 8), batched; each image stops on its own criterion and stays
    where it stopped (Adam's momentum does not move it on). Model parameters get no gradient; their
    ``requires_grad`` flags are restored afterwards.

    Returns ``(x_T, info)`` with ``info["energy"]`` (steps+1, N), ``info["stopped_at"]`` (N,) and,
    if asked, ``info["trajectory"]`` (N, K, C, H, W), x_0 and every ``record_every``-th iterate."""
    if s.optimizer not in ("sgd", "adam", "ista"):
        raise ValueError(f"optimizer must be 'sgd', 'adam' or 'ista', not {s.optimizer!r}")
    if s.weighting == "mask" and mask is None:
        raise ValueError("weighting='mask' (Eq. 7) needs the inpainting mask")
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    x0 = x0.detach()
    x = x0.clone().requires_grad_(True)
    alpha = s.alpha * model.step_scale() if (s.scale_alpha and s.optimizer != "adam") else s.alpha
    opt = torch.optim.Adam([x], lr=alpha) if s.optimizer == "adam" else None
    active = torch.ones(len(x0), dtype=torch.bool, device=x0.device)
    stopped_at = torch.full((len(x0),), s.steps, dtype=torch.long, device=x0.device)
    stops = s.stop_loss is not None or s.tol > 0     # without a criterion no image stops: no check, no sync
    energies, traj = [], [x0.clone()] if return_trajectory else None
    prev = None
    try:
        for t in range(s.steps):
            rec = model.reconstruct(x)
            lr_now = model._rec_term(x, rec)                 # L_r(x_t)
            e = lr_now + s.lam * (x - x0).abs().flatten(1).sum(1)          # Eq. 4
            energies.append(e.detach())                      # kept on the device until the end
            if stops:
                with torch.no_grad():
                    done = torch.zeros_like(active)
                    if s.stop_loss is not None:
                        done |= lr_now < s.stop_loss
                    if s.tol > 0 and prev is not None:
                        done |= (prev - e.detach()).abs() < s.tol
                    stopped_at = torch.where(active & done, t, stopped_at)
                    active &= ~done
                    prev = e.detach()
                if not active.any():                         # one sync a step, only with a stopping rule
                    break
            # ISTA takes the gradient of L_r only (its proximal step handles the L1 term)
            (grad,) = torch.autograd.grad((lr_now if s.optimizer == "ista" else e).sum(), x)
            with torch.no_grad():
                w = torch.ones_like(x)
                if s.weighting == "mask":
                    w = mask.expand_as(x).to(x.dtype)
                elif s.weighting == "error":
                    w = (x - rec).pow(2)                     # Eq. 8: (x_t - f(x_t))^2
                keep = x.detach().clone() if stops else None
                if opt is not None:                          # Adam (Sec. 3.4)
                    opt.zero_grad(set_to_none=True)
                    x.grad = grad * w
                    opt.step()
                elif s.optimizer == "ista":                  # proximal step of lam * |x - x0|_1, weighted
                    y = x - alpha * w * grad - x0
                    x.copy_(x0 + y.sign() * (y.abs() - alpha * w * s.lam).clamp_min(0))
                else:                                        # Eqs. 5, 7, 8
                    x -= alpha * w * grad
                x.clamp_(0, 1)
                if stops:
                    still = active.view(-1, *[1] * (x.ndim - 1))
                    x.copy_(torch.where(still, x, keep))     # stopped images stay where they stopped
            if return_trajectory and (t + 1) % record_every == 0:
                traj.append(x.detach().clone())
        energies.append(energy(model, x, x0, s.lam).detach())
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    info = {"energy": torch.stack(energies).cpu(), "stopped_at": stopped_at.cpu()}
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
