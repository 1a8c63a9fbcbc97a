r"""Energy-based anomaly detection and localization (Genc et al., 2021).

A convolutional network :math:`E_\theta(x)` defines :math:`p_\theta(x) = e^{-E_\theta(x)}/Z_\theta`.
Since :math:`\nabla_\theta\log Z_\theta = -\mathbb E_{p_\theta}[\nabla_\theta E_\theta]`, the gradient of
the negative mean log-likelihood is

.. math::  \nabla_\theta \mathcal L = \mathbb E_{x\sim\text{data}}[\nabla_\theta E_\theta(x)]
           - \mathbb E_{x'\sim p_\theta}[\nabla_\theta E_\theta(x')],

and the paper calls training with it contrastive divergence (Hinton, 2002; Sec. 3.1). Its second
term needs samples of the model. They come from short-run, non-persistent SGLD (Welling & Teh, 2011;
Nijkamp et al., 2019): chains start from uniform noise (not from the data, as in Hinton's CD-k) and
take a fixed number of Langevin steps (paper: 100)

.. math::  x_{t+1} = x_t - \eta\,\nabla_x E_\theta(x_t) + \sigma\,\epsilon_t,\quad \epsilon_t\sim\mathcal N(0, I),

with no parameter gradients accumulated while sampling (the samples are detached).

**The sampler's regime.** Without a clamp this is the unadjusted Langevin algorithm at temperature
:math:`T = \sigma^2/(2\eta)`: writing :math:`E = T E'`, it is the :math:`T = 1` Langevin chain of
:math:`E'` with step :math:`\eta T`, whose stationary law approaches :math:`p \propto e^{-E/T}` as the step
goes to 0. Our defaults (:class:`SGLDSettings`: eta = 1, sigma = 0.005, so T = 1.25e-5) are a
*low-temperature, short-run* Langevin chain: 20-100 steps from noise do not converge to anything
(Nijkamp et al., 2019), and the learned energy is tuned so that this particular chain produces
data-like images. The per-pixel clamp of :math:`\eta\,\partial E/\partial x` is a safety rail only: with
the defaults it touches well under 20 % of pixel updates (recorded in ``TrainLog.clamped`` and checked
by :func:`ebm_health`). An earlier default (eta = 10, clamp 0.03) clamped 60-95 % of updates, which made
the chain sign-gradient descent, not Langevin dynamics.

Scores (Sec. 2): the energy; the gradient map :math:`g(x) = \partial\log p_\theta(x)/\partial x
= -\partial E_\theta/\partial x` (Eq. 1); its per-pixel, per-channel standardisation
:math:`l_k(x) = (g_k(x) - \mu_k(x))/\sigma_k(x)` with the mean and standard deviation of the
training gradient maps; pixel scores :math:`a(x) = (\sum_k |g_k|^r)^{1/r}` or with :math:`l_k`
(Eq. 2, r = 1, 2); image scores :math:`A = (\sum_x |a(x)|^r)^{1/r}` (Eq. 3). For a short-run model,
:math:`-\partial E/\partial x` is the input gradient of a learned energy, read as "the gradient of the log
density" only heuristically (the model matches moments of the short-run distribution, not of
:math:`p_\theta`).

The paper names neither step size, noise, learning rate nor regulariser; our defaults (marked
"not in the paper") are named settings, so the chapter can show what each does.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..health import Health


# ----------------------------------------------------------------------------- settings
@dataclass
class SGLDSettings:
    steps: int = 100                 # Sec. 3.1: "a fixed number of MCMC steps (100)"
    step_size: float = 1.0           # eta, multiplies -dE/dx (not in the paper)
    noise_std: float = 0.005         # sigma (not in the paper); temperature sigma^2 / (2 eta) = 1.25e-5
    grad_clamp: float | None = 0.1   # safety clamp of eta * dE/dx per pixel (not in the paper; None = off);
    #                                  rarely reached with these defaults (see ebm_health)
    clip: tuple | None = (0.0, 1.0)  # keep samples in the image range (None = off)
    init: str = "uniform"            # Sec. 3.1: chains start from a uniform distribution

    @property
    def temperature(self) -> float:
        """T = sigma^2 / (2 eta): the unclamped chain is the Langevin chain of exp(-E / T)."""
        return self.noise_std ** 2 / (2 * self.step_size)


@dataclass
class TrainSettings:
    iterations: int = 2000           # parameter updates (not in the paper)
    batch_size: int = 64             # (not in the paper)
    lr: float = 1e-4                 # Adam (not in the paper)
    betas: tuple = (0.0, 0.999)      # Adam betas common for EBMs (not in the paper)
    energy_reg: float = 0.01         # alpha * (E(x)^2 + E(x')^2), bounds energies by ~1/(2 alpha) (not in the paper)
    persistent: bool = False         # the paper reports non-persistent training only
    buffer_size: int = 10_000        # replay buffer (the paper tried one; not in its results)
    reinit_prob: float = 0.05        # fraction of buffer chains restarted from noise each iteration
    spike_factor: float = 20.0       # |loss| above spike_factor * running scale counts as a spike
    snapshot_every: int = 50         # keep a "last good" copy of model and optimiser this often
    step_decay: float = 0.5          # on a spike: restore the last good state, multiply eta by this
    max_recoveries: int = 10
    sgld: SGLDSettings = field(default_factory=SGLDSettings)
    # speed on CUDA (no-ops on the CPU, where results are bit-identical either way)
    tf32: bool = True                # TF32 matmuls/convolutions on CUDA
    channels_last: bool = True       # channels_last memory format on CUDA
    autocast_bf16: bool = False      # bfloat16 autocast of the energy on CUDA. Off: its effect on the
    #                                  AUROCs and health figures must be shown on a GPU before turning it on


# ----------------------------------------------------------------------------- sampler
def uniform_noise(n: int, shape, generator=None, device=None) -> torch.Tensor:
    return torch.rand(n, *shape, generator=generator, device=device)


@dataclass
class SGLDStats:
    """What a sampler did: how many pixel updates hit the clamp, and how large drift and noise were.

    ``clamped_fraction`` near 1 means the chain is sign-gradient descent (every pixel moves by the
    clamp), not Langevin dynamics; ``drift_per_step`` is the mean |eta dE/dx| before the clamp.
    """
    updates: int = 0          # pixel updates counted (pixels x steps)
    clamped: int = 0          # of these, how many hit the clamp
    drift_sum: float = 0.0    # sum of |eta dE/dx| before the clamp

    @property
    def clamped_fraction(self) -> float:
        return self.clamped / max(self.updates, 1)

    @property
    def drift_per_step(self) -> float:
        return self.drift_sum / max(self.updates, 1)


def sgld_sample(energy_fn, x0: torch.Tensor, s: SGLDSettings, generator: torch.Generator | None = None,
                return_chain: bool = False, record_every: int = 10, stats: SGLDStats | None = None,
                autocast_bf16: bool = False):
    """Run ``s.steps`` Langevin steps from ``x0``; return the samples (and the chain if asked).

    Only the input receives gradients (``torch.autograd.grad`` with ``inputs=x``): parameters of
    ``energy_fn`` never accumulate ``.grad`` here (Sec. 3.1). The noise is drawn from ``generator``
    (the run's generator, so that a seeded run is reproducible). If ``stats`` is given, it counts the
    pixel updates that hit the clamp; the counts accumulate on the device and are read once per call
    (no host-device synchronisation inside the loop). ``autocast_bf16`` runs the energy in bfloat16
    autocast on CUDA (see :class:`TrainSettings`; off by default, a no-op on the CPU).
    """
    x = x0.detach().clone()
    chain = [x.clone()] if return_chain else None
    count = stats is not None
    if count:
        clamped = torch.zeros((), dtype=torch.int64, device=x.device)
        drift = torch.zeros((), dtype=torch.float64, device=x.device)
    noise_device = generator.device if generator is not None else x.device
    use_autocast = autocast_bf16 and x.device.type == "cuda"
    for t in range(s.steps):
        x.requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_autocast):
            e = energy_fn(x).float().sum()
        (grad,) = torch.autograd.grad(e, x)                                # dE/dx, (N, C, H, W)
        step = s.step_size * grad
        if count:
            drift += step.abs().sum().double()                             # stays on the device
            if s.grad_clamp is not None:
                clamped += (step.abs() > s.grad_clamp).sum()
        if s.grad_clamp is not None:
            step = step.clamp(-s.grad_clamp, s.grad_clamp)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=noise_device)
        if noise.device != x.device:
            noise = noise.to(x.device, non_blocking=True)
        x = x.detach() - step + s.noise_std * noise
        if s.clip is not None:
            x = x.clamp(*s.clip)
        if return_chain and ((t + 1) % record_every == 0 or t + 1 == s.steps):
            chain.append(x.clone())
    if count:                                                              # one read per call
        stats.updates += x.numel() * s.steps
        stats.drift_sum += float(drift)
        stats.clamped += int(clamped)
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
    clamped: list = field(default_factory=list)    # fraction of SGLD pixel updates clamped, per iteration
    drift: list = field(default_factory=list)      # mean |eta dE/dx| per pixel and step, per iteration
    sgld: SGLDSettings | None = None               # the sampler's settings at the end (the guard may lower eta)
    seconds: float = 0.0


def contrastive_divergence_loss(e_data: torch.Tensor, e_sample: torch.Tensor, energy_reg: float) -> torch.Tensor:
    """E[E(x)] - E[E(x')] + alpha * E[E(x)^2 + E(x')^2]: its gradient is the CD gradient plus a
    small penalty that keeps energies bounded. The penalty alone would hold the data energy at the
    minimum of E + alpha E^2, -1/(2 alpha), and the sample energy at +1/(2 alpha); a healthy run keeps
    both well inside (``ebm_health``)."""
    return e_data.mean() - e_sample.mean() + energy_reg * (e_data.pow(2).mean() + e_sample.pow(2).mean())


def configure_device(net: nn.Module, s: "TrainSettings") -> None:
    """CUDA-only speed settings (no-ops on the CPU): TF32 matmuls and convolutions, channels_last."""
    device = next(net.parameters()).device
    if device.type != "cuda":
        return
    if s.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if s.channels_last:
        net.to(memory_format=torch.channels_last)


class EBMTrainer:
    """One parameter update at a time (:meth:`step`), with everything a resumed run needs in
    :meth:`state_dict`: network, optimiser, the guard's last good copy, running loss scale,
    recoveries, the sampler's (possibly lowered) step size, the replay buffer, the device generator
    and the log. :func:`train_ebm` runs ``s.iterations`` steps; an experiment can run them through
    ``energyad.experiments.resume.resumable_loop`` instead (``loop=``).

    The guard: a non-finite loss, or one whose size exceeds ``spike_factor`` times its running scale,
    is an energy spike. Training then restores the last good copy of the network and optimiser,
    multiplies the SGLD step size by ``step_decay`` and the noise by its square root (same temperature,
    smaller steps) and goes on; every event is logged.

    The batches are indexed with ``generator`` (a CPU generator). The SGLD noise is drawn from it too
    on the CPU; on CUDA from a device generator seeded once from it, so no noise crosses the bus.
    """

    def __init__(self, net: nn.Module, images: torch.Tensor, s: "TrainSettings",
                 generator: torch.Generator | None = None, inject_spike_at: int | None = None):
        self.net, self.s, self.generator, self.inject_spike_at = net, s, generator, inject_spike_at
        configure_device(net, s)
        self.device = next(net.parameters()).device
        self.images = images.to(self.device)                       # data on the device once
        if self.device.type == "cuda" and s.channels_last:
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(net.parameters(), lr=s.lr, betas=s.betas)
        self.sgld = copy.deepcopy(s.sgld)
        self.noise_gen = generator
        if generator is not None and generator.device != self.device:
            seed = int(torch.randint(2 ** 62, (1,), generator=generator))
            self.noise_gen = torch.Generator(self.device).manual_seed(seed)
        self.buffer = ReplayBuffer(images.shape[1:], s.buffer_size, s.reinit_prob, generator) \
            if s.persistent else None
        self.log = TrainLog()
        self.good = (copy.deepcopy(net.state_dict()), copy.deepcopy(self.opt.state_dict()))
        self.scale, self.recoveries, self.seconds = None, 0, 0.0

    def step(self, it: int) -> None:
        """One parameter update (iteration ``it``)."""
        import time

        t0 = time.perf_counter()
        s, net, sgld = self.s, self.net, self.sgld
        idx = torch.randint(len(self.images), (s.batch_size,), generator=self.generator)
        x = self.images[idx.to(self.device)]
        if self.buffer is not None:
            x0, slots = self.buffer.start(s.batch_size)
        else:
            x0 = uniform_noise(s.batch_size, self.images.shape[1:], self.noise_gen, device=self.device)
        x0 = x0.to(self.device)
        if self.device.type == "cuda" and s.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        net.eval()
        st = SGLDStats()
        x_neg = sgld_sample(net, x0, sgld, generator=self.noise_gen, stats=st, autocast_bf16=s.autocast_bf16)
        net.train()
        if self.buffer is not None:
            self.buffer.store(x_neg, slots)
        if self.inject_spike_at is not None and it == self.inject_spike_at:
            with torch.no_grad():
                for p in net.parameters():
                    p.mul_(1e4)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=s.autocast_bf16 and self.device.type == "cuda"):
            e_data, e_sample = net(x).float(), net(x_neg).float()   # x_neg is detached: grad_theta E(x') at fixed x'
        loss = contrastive_divergence_loss(e_data, e_sample, s.energy_reg)
        value, m_data, m_sample = torch.stack([loss.detach(), e_data.detach().mean(),
                                               e_sample.detach().mean()]).tolist()   # one read per update
        spike = not math.isfinite(value) or (self.scale is not None and abs(value) > s.spike_factor * self.scale)
        if spike:
            if self.recoveries >= s.max_recoveries:
                raise RuntimeError(f"EBM training diverged {self.recoveries} times (last at iteration {it}); "
                                   "lower TrainSettings.lr or SGLDSettings.step_size.")
            net.load_state_dict(self.good[0])
            self.opt.load_state_dict(self.good[1])
            sgld.step_size *= s.step_decay                   # eta -> decay * eta and sigma -> sqrt(decay) *
            sgld.noise_std *= math.sqrt(s.step_decay)        # sigma keep the temperature sigma^2 / (2 eta)
            self.recoveries += 1
            self.log.events.append((it, f"energy spike (loss {value:.3g}): restored the last good state, "
                                        f"SGLD step size -> {sgld.step_size:.3g}, noise -> {sgld.noise_std:.3g}"))
            self.seconds += time.perf_counter() - t0
            return
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.scale = abs(value) + 1e-3 if self.scale is None else 0.95 * self.scale + 0.05 * (abs(value) + 1e-3)
        log = self.log
        log.e_data.append(m_data)
        log.e_sample.append(m_sample)
        log.loss.append(value)
        log.clamped.append(st.clamped_fraction)
        log.drift.append(st.drift_per_step)
        if (it + 1) % s.snapshot_every == 0:
            self.good = (copy.deepcopy(net.state_dict()), copy.deepcopy(self.opt.state_dict()))
        self.seconds += time.perf_counter() - t0

    def finish(self) -> TrainLog:
        self.log.seconds = self.seconds
        self.log.sgld = self.sgld
        self.net.eval()
        return self.log

    # a resumed run restores all of this (resumable_loop calls these)
    def state_dict(self) -> dict:
        log = {k: copy.deepcopy(getattr(self.log, k)) for k in ("e_data", "e_sample", "loss", "events", "clamped", "drift")}
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "good": self.good,
                "scale": self.scale, "recoveries": self.recoveries, "seconds": self.seconds,
                "sgld": (self.sgld.step_size, self.sgld.noise_std), "log": log,
                "buffer": None if self.buffer is None else self.buffer.data.clone(),
                "noise_gen": None if self.noise_gen is None or self.noise_gen is self.generator
                else self.noise_gen.get_state()}

    def load_state_dict(self, d: dict) -> None:
        self.net.load_state_dict(d["net"])
        self.opt.load_state_dict(d["opt"])
        self.good = d["good"]
        self.scale, self.recoveries, self.seconds = d["scale"], d["recoveries"], d["seconds"]
        self.sgld.step_size, self.sgld.noise_std = d["sgld"]
        for k, v in d["log"].items():
            setattr(self.log, k, list(v))
        if self.buffer is not None and d["buffer"] is not None:
            self.buffer.data = d["buffer"].clone()
        if d["noise_gen"] is not None and self.noise_gen is not None and self.noise_gen is not self.generator:
            self.noise_gen.set_state(d["noise_gen"])


def train_ebm(net: nn.Module, images: torch.Tensor, s: TrainSettings, generator: torch.Generator | None = None,
              progress: bool = True, inject_spike_at: int | None = None, loop=None) -> TrainLog:
    """Train ``net`` on normal ``images`` (N, C, H, W) by contrastive divergence with SGLD samples
    (:class:`EBMTrainer`: the guard, the sampler's statistics, the device settings).

    ``loop(total, step, trainer)``, if given, runs ``step(i)`` for ``i`` in ``range(total)`` itself, e.g.
    ``lambda total, step, tr: resumable_loop(key, total, {"trainer": tr}, step, generator)``, which
    checkpoints and resumes a long run; without it a plain loop (with a progress bar) runs. The log
    records, per iteration, the fraction of pixel updates that hit the clamp.
    ``inject_spike_at`` corrupts the weights at that iteration (used to show and test the guard).
    """
    from tqdm.auto import tqdm

    trainer = EBMTrainer(net, images, s, generator, inject_spike_at)
    if loop is not None:
        loop(s.iterations, trainer.step, trainer)
    else:
        bar = tqdm(range(s.iterations), desc="EBM training", disable=not progress, leave=False)
        for it in bar:
            trainer.step(it)
            if progress and it % 20 == 0 and trainer.log.e_data:
                bar.set_postfix(E_data=f"{trainer.log.e_data[-1]:.3f}", E_sample=f"{trainer.log.e_sample[-1]:.3f}")
    return trainer.finish()


# ----------------------------------------------------------------------------- health
@dataclass
class HealthRules:
    """What a trained EBM must show before its scores are reported (our rules, not the paper's)."""
    max_clamped_fraction: float = 0.2    # at most this share of SGLD pixel updates hit the clamp (Langevin, not sign descent)
    max_energy_vs_reg: float = 0.5       # final |mean energy| at most this fraction of 1/(2 alpha), where the regulariser alone would hold it
    min_noise_gap: float = 0.0           # E(uniform noise) - E(training images) must exceed this
    tail: float = 0.1                    # "final" = mean over the last 10% of iterations


def ebm_health(model: "GencEBM", images: torch.Tensor, generator: torch.Generator | None = None,
               rules: HealthRules | None = None, name: str = "Genc EBM") -> Health:
    """Health figures of a trained EBM (``energyad.health.Health``).

    - ``sgld_clamped_fraction``: share of all SGLD pixel updates during training that hit the clamp;
      near 1 the "Langevin" chain is sign-gradient descent.
    - ``final_energy_data`` / ``final_energy_samples``: mean energies over the last iterations. The
      penalty alpha (E^2 + E'^2) alone would hold them at -/+ 1/(2 alpha) (the minimum of
      E + alpha E^2); if they sit near that bound, the regulariser, not the data, sets them.
    - ``energy_noise_minus_data``: E(uniform noise) - E(training images) > 0, the energy depends on its
      input and tells the training data from the sampler's starting point.
    - ``guard_events``: spikes the guard caught (recorded; a run that keeps spiking raises in training).
    - ``sgld_temperature``, ``sgld_drift_per_step``: sigma^2 / (2 eta) and mean |eta dE/dx| (recorded).
    """
    rules = rules or HealthRules()
    log, s = model.log, model.settings
    h = Health(name)
    if log is None or not log.loss:
        h.check("trained_iterations", 0, False, "at least one parameter update")
        return h
    n = max(1, int(round(rules.tail * len(log.loss))))
    tail = lambda v: float(sum(v[-n:]) / n)
    h.check("loss_finite", all(math.isfinite(v) for v in log.loss), all(math.isfinite(v) for v in log.loss),
            "every recorded loss is finite")
    clamped = float(sum(log.clamped) / len(log.clamped))
    h.check("sgld_clamped_fraction", clamped, clamped <= rules.max_clamped_fraction,
            f"<= {rules.max_clamped_fraction} of SGLD pixel updates clamped")
    h.note("sgld_clamped_fraction_final", tail(log.clamped))
    h.note("sgld_drift_per_step", tail(log.drift))
    h.note("sgld_temperature", (log.sgld or s.sgld).temperature)    # the guard keeps it when it lowers eta
    bound = 1.0 / (2 * s.energy_reg) if s.energy_reg > 0 else math.inf
    for key, v in (("final_energy_data", tail(log.e_data)), ("final_energy_samples", tail(log.e_sample))):
        h.check(key, v, math.isfinite(v) and abs(v) <= rules.max_energy_vs_reg * bound,
                f"|E| <= {rules.max_energy_vs_reg} * 1/(2 alpha) = {rules.max_energy_vs_reg * bound:.3g}")
    with torch.no_grad():
        x = images[:64]                                  # 64 images suffice for a mean; keeps the check cheap at 128 px
        noise = uniform_noise(len(x), x.shape[1:], generator).to(x.device)
        gap = float(energy(model.net, noise).mean() - energy(model.net, x).mean())
    h.check("energy_noise_minus_data", gap, gap > rules.min_noise_gap,
            f"E(uniform noise) - E(training images) > {rules.min_noise_gap}")
    h.note("guard_events", len(log.events))
    return h


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
        self.health: Health | None = None     # set by fit(); callers stop on health.raise_if_failed()

    def fit(self, images: torch.Tensor, generator=None, progress: bool = True, rules: HealthRules | None = None,
            **kw) -> "GencEBM":
        """Train (``train_ebm``; ``loop=`` and ``inject_spike_at=`` pass through), fit the standardiser on the training gradient maps, record ``self.health``."""
        self.log = train_ebm(self.net, images, self.settings, generator, progress, **kw)
        self.standardizer.fit(gradient_map(self.net, images))
        self.health = ebm_health(self, images, generator, rules)
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
