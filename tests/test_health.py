"""Health figures against independent computations, and a degenerate model caught."""
import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from energyad import health


def test_output_dependence_is_zero_for_a_constant_output_and_one_for_identity():
    x = torch.rand(16, 1, 8, 8)
    assert health.output_dependence(x, x) == pytest.approx(1.0)
    assert health.output_dependence(x, x.mean(0, keepdim=True).expand_as(x)) == pytest.approx(0.0, abs=1e-6)
    assert health.output_dependence(x, 0.5 * x) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least two"):
        health.output_dependence(x[:1], x[:1])


def test_kl_per_dimension_against_torch_distributions():
    mu, logvar = torch.randn(32, 4), torch.randn(32, 4)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).mean(0)
    assert torch.allclose(health.kl_per_dimension(mu, logvar), ref, atol=1e-5)
    assert health.kl_per_dimension(torch.zeros(3, 2), torch.zeros(3, 2)).abs().max() < 1e-7   # collapsed


def test_loss_drop():
    assert health.loss_drop([4.0, 3.0, 2.0, 1.0]) == pytest.approx(0.75)
    assert health.loss_drop([4.0, 3.0, 2.0, 1.0], k=2) == pytest.approx(1 - 1.5 / 3.5)
    assert health.loss_drop(np.ones(5)) == 0.0
    with pytest.raises(ValueError, match="positive"):
        health.loss_drop([-1.0, -2.0])


def test_a_degenerate_model_fails_loudly_with_the_reason():
    x = torch.rand(8, 1, 4, 4)
    h = health.Health("l2ae")
    h.check("output_dependence", health.output_dependence(x, torch.zeros_like(x)), False, ">= 0.1")
    h.note("epochs", 3)
    assert not h.ok and h.to_dict()["checks"]["epochs"]["ok"] is None
    with pytest.raises(health.DegenerateModelError, match=r"l2ae \(digit 1\) failed.*output_dependence = 0.0"):
        h.raise_if_failed("digit 1")
    ok = health.Health("vae")
    ok.check("loss_drop", 0.5, True, "> 0.1")
    ok.raise_if_failed()
    assert ok.to_dict() == {"model": "vae", "ok": True,
                            "checks": {"loss_drop": {"value": 0.5, "ok": True, "rule": "> 0.1"}}}
