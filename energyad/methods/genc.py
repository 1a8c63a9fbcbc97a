r"""Energy-based anomaly detection and localization (Genc et al., 2021).

A convolutional network :math:`E_\theta(x)` defines :math:`p_\theta(x) = e^{-E_\theta(x)}/Z_\theta`.
Maximum likelihood gives the contrastive-divergence gradient (Hinton, 2002)

.. math::  \nabla_\theta \mathcal L = \mathbb E_{x\sim\text{data}}[\nabla_\theta E_\theta(x)]
           - \mathbb E_{x'\sim p_\theta}[\nabla_\theta E_\theta(x')],

whose second term needs samples of the model. They come from short-run, non-persistent SGLD
(Welling & Teh, 2011; Nijkamp et al., 2019): chains start from uniform noise and take a fixed number
of Langevin steps (paper: 100)

.. math::  x_{t+1} = x_t - \eta\,\nabla_x E_\theta(x_t) + \sigma\,\epsilon_t,\quad \epsilon_t\sim\mathcal N(0, I),

with no parameter gradients accumulated while sampling. (With :math:`\sigma^2 = 2\eta` this is the
unadjusted Langevin algorithm, whose stationary law approaches :math:`p_\theta` as :math:`\eta\to 0`;
short-run EBMs use a much smaller noise, which the model learns to compensate.)

Scores (Sec. 2): the energy; the gradient map :math:`g(x) = \partial\log p_\theta(x)/\partial x
= -\partial E_\theta/\partial x` (Eq. 1); its per-pixel, per-channel standardisation
:math:`l_k(x) = (g_k(x) - \mu_k(x))/\sigma_k(x)` with the mean and standard deviation of the
training gradient maps; pixel scores :math:`a(x) = (\sum_k |g_k|^r)^{1/r}` or with :math:`l_k`
(Eq. 2, r = 1, 2); image scores :math:`A = (\sum_x |a(x)|^r)^{1/r}` (Eq. 3).

The paper names neither step size, noise, learning rate nor regulariser; our defaults (marked
"not in the paper") follow common short-run practice and are named settings, so the chapter can
show what each does.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn


# ----------------------------------------------------------------------------- settings
@dataclass
class SGLDSettings:
    steps: int = 100                 # Sec. 3.1: "a fixed number of MCMC steps (100)"
    step_size: float = 10.0          # eta, multiplies -dE/dx (not in the paper)
    noise_std: float = 0.005         # sigma (not in the paper)
    grad_clamp: float | None = 0.03  # per-pixel clamp of eta * dE/dx (not in the paper; None = off)
    clip: tuple | None = (0.0, 1.0)  # keep samples in the image range (None = off)
    init: str = "uniform"            # Sec. 3.1: chains start from a uniform distribution


@dataclass
class TrainSettings:
    iterations: int = 2000           # parameter updates (not in the paper)
    batch_size: int = 64             # (not in the paper)
    lr: float = 1e-4                 # Adam (not in the paper)
    betas: tuple = (0.0, 0.999)      # Adam betas common for EBMs (not in the paper)
    energy_reg: float = 0.1          # alpha * (E(x)^2 + E(x')^2), keeps energies near 0 (not in the paper)
    persistent: bool = False         # the paper reports non-persistent training only
    buffer_size: int = 10_000        # replay buffer (the paper tried one; not in its results)
    reinit_prob: float = 0.05        # fraction of buffer chains restarted from noise each iteration
    spike_factor: float = 20.0       # |loss| above spike_factor * running scale counts as a spike
    snapshot_every: int = 50         # keep a "last good" copy of model and optimiser this often
    step_decay: float = 0.5          # on a spike: restore the last good state, multiply eta by this
    max_recoveries: int = 10
    sgld: SGLDSettings = field(default_factory=SGLDSettings)


# ----------------------------------------------------------------------------- sampler
def uniform_noise(n: int, shape, generator=None, device=None) -> torch.Tensor:
    return torch.rand(n, *shape, generator=generator, device=device)


def sgld_sample(energy_fn, x0: torch.Tensor, s: SGLDSettings, generator: torch.Generator | None = None,
                return_chain: bool = False, record_every: int = 10):
    """Run ``s.steps`` Langevin steps from ``x0``; return the samples (and the chain if asked).

    Only the input receives gradients (``torch.autograd.grad`` with ``inputs=x``): parameters of
    ``energy_fn`` never accumulate ``.grad`` here (Sec. 3.1).
    """
    x = x0.detach().clone()
    chain = [x.clone()] if return_chain else None
    for t in range(s.steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(energy_fn(x).sum(), x)              # dE/dx, (N, C, H, W)
        step = s.step_size * grad
        if s.grad_clamp is not None:
            step = step.clamp(-s.grad_clamp, s.grad_clamp)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x.detach() - step + s.noise_std * noise
        if s.clip is not None:
            x = x.clamp(*s.clip)
        if return_chain and ((t + 1) % record_every == 0 or t + 1 == s.steps):
            chain.append(x.clone())
    return (x, torch.stack(chain, 1)) if return_chain else x             # chain: (N, T, C, H, W)


class ReplayBuffer:
    """Persistent chains (Tieleman, 2008): samples start from the buffer, a fraction from noise."""

    def __init__(self, shape, size: int, reinit_prob: float, generator=None):
        self.shape, self.reinit_prob, self.generator = tuple(shape), reinit_prob, generator
        self.data = uniform_noise(size, shape, generator)

    def start(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.data), (n,), generator=self.generator)
        x = self.data[idx].clone()
        fresh = torch.rand(n, generator=self.generator) < self.reinit_prob
        x[fresh] = uniform_noise(int(fresh.sum()), self.shape, self.generator)
        return x, idx

    def store(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        self.data[idx] = x.detach().cpu()


# ----------------------------------------------------------------------------- training
@dataclass
class TrainLog:
    e_data: list = field(default_factory=list)     # mean energy of the data batch, per iteration
    e_sample: list = field(default_factory=list)   # mean energy of the SGLD samples, per iteration
    loss: list = field(default_factory=list)
    events: list = field(default_factory=list)     # (iteration, what happened)
    seconds: float = 0.0


def contrastive_divergence_loss(e_data: torch.Tensor, e_sample: torch.Tensor, energy_reg: float) -> torch.Tensor:
    """E[E(x)] - E[E(x')] + alpha * E[E(x)^2 + E(x')^2]: its gradient is the CD gradient plus a
    small penalty that keeps energies bounded."""
    return e_data.mean() - e_sample.mean() + energy_reg * (e_data.pow(2).mean() + e_sample.pow(2).mean())


def train_ebm(net: nn.Module, images: torch.Tensor, s: TrainSettings, generator: torch.Generator | None = None,
              progress: bool = True, inject_spike_at: int | None = None) -> TrainLog:
    """Train ``net`` on normal ``images`` (N, C, H, W) by contrastive divergence with SGLD samples.

    The guard: a non-finite loss, or one whose size exceeds ``spike_factor`` times its running scale,
    is an energy spike. Training then restores the last good copy of the network and optimiser,
    multiplies the SGLD step size by ``step_decay`` and goes on; every event is logged.
    ``inject_spike_at`` corrupts the weights at that iteration (used to show and test the guard).
    """
    import time

    from tqdm.auto import tqdm

    device = next(net.parameters()).device
    opt = torch.optim.Adam(net.parameters(), lr=s.lr, betas=s.betas)
    sgld = copy.deepcopy(s.sgld)
    buffer = ReplayBuffer(images.shape[1:], s.buffer_size, s.reinit_prob, generator) if s.persistent else None
    log = TrainLog()
    good = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()))
    scale, recoveries, t0 = None, 0, time.perf_counter()
    bar = tqdm(range(s.iterations), desc="EBM training", disable=not progress, leave=False)
    for it in bar:
        idx = torch.randint(len(images), (s.batch_size,), generator=generator)
        x = images[idx].to(device)
        if buffer is not None:
            x0, slots = buffer.start(s.batch_size)
        else:
            x0 = uniform_noise(s.batch_size, images.shape[1:], generator)
        net.eval()
        x_neg = sgld_sample(net, x0.to(device), sgld, generator=None)
        net.train()
        if buffer is not None:
            buffer.store(x_neg, slots)
        if inject_spike_at is not None and it == inject_spike_at:
            with torch.no_grad():
                for p in net.parameters():
                    p.mul_(1e4)
        e_data, e_sample = net(x), net(x_neg)
        loss = contrastive_divergence_loss(e_data, e_sample, s.energy_reg)
        value = loss.item()
        spike = not math.isfinite(value) or (scale is not None and abs(value) > s.spike_factor * scale)
        if spike:
            if recoveries >= s.max_recoveries:
                raise RuntimeError(f"EBM training diverged {recoveries} times (last at iteration {it}); "
                                   "lower TrainSettings.lr or SGLDSettings.step_size.")
            net.load_state_dict(good[0])
            opt.load_state_dict(good[1])
            sgld.step_size *= s.step_decay
            recoveries += 1
            log.events.append((it, f"energy spike (loss {value:.3g}): restored the last good state, "
                                   f"SGLD step size -> {sgld.step_size:.3g}"))
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        scale = abs(value) + 1e-3 if scale is None else 0.95 * scale + 0.05 * (abs(value) + 1e-3)
        log.e_data.append(e_data.mean().item())
        log.e_sample.append(e_sample.mean().item())
        log.loss.append(value)
        if (it + 1) % s.snapshot_every == 0:
            good = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()))
        if progress and it % 20 == 0:
            bar.set_postfix(E_data=f"{log.e_data[-1]:.3f}", E_sample=f"{log.e_sample[-1]:.3f}")
    log.seconds = time.perf_counter() - t0
    net.eval()
    return log


# ----------------------------------------------------------------------------- scores
def energy(net: nn.Module, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """E_theta(x) for every image, (N,)."""
    with torch.no_grad():
        return torch.cat([net(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def gradient_map(net: nn.Module, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """g(x) = d log p(x) / dx = -dE/dx (Eq. 1), same shape as ``images``."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(x).sum(), x)
        out.append(-g)
    return torch.cat(out)


class GradientStandardizer:
    """Per-pixel, per-channel mean and std of training gradient maps: l_k(x) = (g_k - mu_k) / sigma_k."""

    def __init__(self, eps: float = 1e-8):
        self.eps = eps
        self.mean = self.std = None

    def fit(self, train_maps: torch.Tensor) -> "GradientStandardizer":
        self.mean = train_maps.mean(0)                  # (C, H, W)
        self.std = train_maps.std(0)                    # (C, H, W)
        return self

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            raise RuntimeError("GradientStandardizer.fit must be called on training gradient maps first")
        return (maps - self.mean) / (self.std + self.eps)


def pixel_scores(maps: torch.Tensor, r: int = 2) -> torch.Tensor:
    """a(x) = (sum_k |m_k(x)|^r)^(1/r) over channels (Eq. 2): (N, C, H, W) -> (N, 1, H, W)."""
    return maps.abs().pow(r).sum(1, keepdim=True).pow(1.0 / r)


def image_scores(pixel_maps: torch.Tensor, r: int = 2) -> torch.Tensor:
    """A = (sum_x |a(x)|^r)^(1/r) over pixels (Eq. 3): (N, 1, H, W) -> (N,)."""
    return pixel_maps.abs().pow(r).flatten(1).sum(1).pow(1.0 / r)


# ----------------------------------------------------------------------------- the method
class GencEBM:
    """The method behind the shared interface: ``fit``, ``score`` and ``anomaly_map``.

    ``kind`` selects the score: "energy", "raw" (A_raw) or "std" (A_std, the paper's choice).
    """

    def __init__(self, net: nn.Module, settings: TrainSettings | None = None, kind: str = "std", r: int = 2):
        self.net, self.settings, self.kind, self.r = net, settings or TrainSettings(), kind, r
        self.standardizer = GradientStandardizer()
        self.log: TrainLog | None = None

    def fit(self, images: torch.Tensor, generator=None, progress: bool = True, **kw) -> "GencEBM":
        self.log = train_ebm(self.net, images, self.settings, generator, progress, **kw)
        self.standardizer.fit(gradient_map(self.net, images))
        return self

    def maps(self, images: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        g = gradient_map(self.net, images)
        return pixel_scores(self.standardizer(g) if (kind or self.kind) == "std" else g, self.r)

    def score(self, images: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        kind = kind or self.kind
        if kind == "energy":
            return energy(self.net, images)
        return image_scores(self.maps(images, kind), self.r)

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.maps(images, "std" if self.kind == "energy" else self.kind)

    # checkpoints: refuse a file written for another network
    def save(self, path) -> None:
        torch.save({"method": "genc", "net": type(self.net).__name__, "config": getattr(self.net, "widths", None),
                    "image_size": getattr(self.net, "image_size", None), "state_dict": self.net.state_dict(),
                    "std_mean": self.standardizer.mean, "std_std": self.standardizer.std,
                    "settings": asdict(self.settings)}, path)

    def load(self, path) -> "GencEBM":
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        expect = (type(self.net).__name__, getattr(self.net, "widths", None), getattr(self.net, "image_size", None))
        found = (ckpt.get("net"), tuple(ckpt["config"]) if ckpt.get("config") else None, ckpt.get("image_size"))
        if ckpt.get("method") != "genc" or found != expect:
            raise ValueError(f"Checkpoint {Path(path)} was written for {ckpt.get('method')}/{found}, not for "
                             f"genc/{expect}. Fix: build the network it was trained with, or retrain and save again.")
        self.net.load_state_dict(ckpt["state_dict"])
        self.standardizer.mean, self.standardizer.std = ckpt["std_mean"], ckpt["std_std"]
        return self
