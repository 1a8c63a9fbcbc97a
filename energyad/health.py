"""Health figures: a trained model shows that it works before its numbers are reported.

Formula tests alone cannot tell a working autoencoder from one whose output ignores its input, or a
VAE whose posterior has collapsed onto the prior, or an EBM sampler that is sign-gradient descent
rather than Langevin dynamics. Each fit therefore records a few *health figures* with a rule each:

- :func:`output_dependence` — spread of the outputs across inputs relative to the spread of the
  inputs (0 for a constant-output autoencoder);
- :func:`kl_per_dimension` — mean KL(q(z|x) || N(0, I)) per latent dimension (~0 when collapsed);
- :func:`loss_drop` — relative fall of a training curve.

A :class:`Health` collects them; ``health.to_dict()`` goes into an experiment's
``metrics["health"]``, and ``health.raise_if_failed()`` stops a run with the reason instead of
letting a degenerate model report an AUROC.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


class DegenerateModelError(RuntimeError):
    """A trained model failed a health check; its scores would be meaningless."""


@dataclass
class Health:
    """Health figures of one trained model. ``check(name, value, ok, rule)`` records a figure with
    the rule it must meet; ``note(name, value)`` records a figure without a rule."""

    model: str
    checks: dict = field(default_factory=dict)

    def check(self, name: str, value, ok: bool, rule: str) -> bool:
        self.checks[name] = {"value": _plain(value), "ok": bool(ok), "rule": rule}
        return bool(ok)

    def note(self, name: str, value) -> None:
        self.checks[name] = {"value": _plain(value), "ok": None, "rule": ""}

    @property
    def ok(self) -> bool:
        return all(c["ok"] is not False for c in self.checks.values())

    @property
    def failures(self) -> list[str]:
        return [f"{k} = {c['value']!r} (rule: {c['rule']})" for k, c in self.checks.items() if c["ok"] is False]

    def to_dict(self) -> dict:
        return {"model": self.model, "ok": self.ok, "checks": self.checks}

    def raise_if_failed(self, where: str = "") -> None:
        if not self.ok:
            at = f" ({where})" if where else ""
            raise DegenerateModelError(
                f"{self.model}{at} failed its health checks: " + "; ".join(self.failures)
                + ". Its scores are not reported. Fix: train longer, change the learning rate or width, "
                  "or see the chapter's notes on this model's settings."
            )


def _plain(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def output_dependence(inputs: torch.Tensor, outputs: torch.Tensor) -> float:
    """How much a model's output varies with its input, relative to the input's own variation.

    ``inputs`` (N, ...) and ``outputs`` (N, ...) of the same shape; returns
    ``mean_pixels std_n(outputs) / mean_pixels std_n(inputs)``: 0 for a model whose output is the
    same image for every input, about 1 for a perfect reconstruction. Needs N >= 2 distinct inputs.
    """
    x = inputs.detach().float().flatten(1)              # (N, D)
    y = outputs.detach().float().flatten(1)             # (N, D)
    if x.shape[0] < 2:
        raise ValueError("output_dependence needs at least two inputs")
    sx = x.std(dim=0).mean()
    if sx <= 0:
        raise ValueError("output_dependence: the inputs are all the same; pass distinct inputs")
    return float(y.std(dim=0).mean() / sx)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(N(mu, exp(logvar)) || N(0, 1)) for each latent dimension, (N, Z) -> (Z,).

    A dimension whose KL is ~0 carries no information about x (the posterior equals the prior there);
    all dimensions ~0 is posterior collapse.
    """
    mu, logvar = mu.detach().float().flatten(1), logvar.detach().float().flatten(1)
    return (0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar)).mean(dim=0)


def loss_drop(curve, k: int = 1) -> float:
    """Relative fall of a training curve: ``1 - mean(last k) / mean(first k)`` (0: no progress).

    Only defined for positive curves (losses bounded below by 0); for energies or log-likelihoods
    compare values directly.
    """
    c = np.asarray(curve, dtype=float)
    if c.size < 2:
        raise ValueError("loss_drop needs a curve of at least two values")
    k = max(1, min(k, c.size // 2))
    first, last = c[:k].mean(), c[-k:].mean()
    if first <= 0:
        raise ValueError(f"loss_drop needs a positive curve (first value {first})")
    return float(1.0 - last / first)
