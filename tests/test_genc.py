"""Genc et al.: the SGLD step against a quadratic energy with a known stationary law, the gradient map
against finite differences, the standardisation and the Eq. (2)/(3) norms against direct formulas,
the guard, and the network's shapes."""
import math

import pytest
import torch

from energyad.methods import genc
from energyad.networks.genc import EnergyNet, table3_net


class Quadratic(torch.nn.Module):
    """E(x) = |x - mu|^2 / (2 s^2) per sample: p(x) = N(mu, s^2 I)."""

    def __init__(self, mu=0.3, s=0.5):
        super().__init__()
        self.mu, self.s = mu, s
        self.w = torch.nn.Parameter(torch.ones(1))  # a parameter that must not receive gradients

    def forward(self, x):
        return self.w * ((x - self.mu) ** 2).flatten(1).sum(1) / (2 * self.s ** 2)


def test_sgld_stationary_law_of_a_quadratic_energy():
    """x' = x - eta (x - mu)/s^2 + sqrt(2 eta) eps is an AR(1) chain with stationary mean mu and
    variance 2 eta / (1 - (1 - eta/s^2)^2): check both, and that parameters got no gradient."""
    E = Quadratic(mu=0.3, s=0.5)
    eta = 0.02
    s = genc.SGLDSettings(steps=400, step_size=eta, noise_std=math.sqrt(2 * eta), grad_clamp=None, clip=None)
    g = torch.Generator().manual_seed(0)
    x = genc.sgld_sample(E, torch.rand(4000, 1, 2, 2, generator=g) * 4 - 2, s, generator=g)
    a = 1 - eta / 0.25
    expected_var = 2 * eta / (1 - a * a)
    assert x.mean().item() == pytest.approx(0.3, abs=0.01)
    assert x.var().item() == pytest.approx(expected_var, rel=0.05)
    assert abs(expected_var - 0.25) < 0.02           # close to the true variance s^2 for a small step
    assert E.w.grad is None


def test_sgld_clamp_clip_and_chain():
    E = Quadratic(mu=5.0, s=0.1)                     # a huge gradient pulling out of [0, 1]
    s = genc.SGLDSettings(steps=7, step_size=1.0, noise_std=0.0, grad_clamp=0.03, clip=(0.0, 1.0))
    x0 = torch.full((2, 1, 3, 3), 0.5)
    x, chain = genc.sgld_sample(E, x0, s, return_chain=True, record_every=1)
    assert torch.allclose(x, torch.full_like(x, 0.5 + 7 * 0.03))   # each step moves by the clamp
    assert chain.shape == (2, 8, 1, 3, 3)
    s2 = genc.SGLDSettings(steps=100, step_size=1.0, noise_std=0.0, grad_clamp=0.03, clip=(0.0, 1.0))
    assert genc.sgld_sample(E, x0, s2).max() == 1.0


def test_gradient_map_is_minus_dE_dx_by_finite_differences():
    torch.manual_seed(0)
    net = EnergyNet(2, 8, (4, 6)).double()
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    g = genc.gradient_map(net, x)
    eps = 1e-6
    for idx in [(0, 0, 1, 2), (1, 1, 7, 7), (2, 0, 4, 0)]:
        d = torch.zeros_like(x); d[idx] = eps
        fd = -(net(x + d) - net(x - d))[idx[0]] / (2 * eps)
        assert g[idx].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-9)


def test_standardisation_and_norms_match_the_formulas():
    torch.manual_seed(1)
    train = torch.randn(50, 3, 4, 4) * torch.rand(3, 4, 4) + torch.randn(3, 4, 4)
    st = genc.GradientStandardizer().fit(train)
    l = st(train)
    assert torch.allclose(l.mean(0), torch.zeros(3, 4, 4), atol=1e-5)
    assert torch.allclose(l.std(0), torch.ones(3, 4, 4), atol=1e-4)
    m = torch.randn(2, 3, 4, 4)
    for r in (1, 2):
        a = genc.pixel_scores(m, r)
        n, i, j = 1, 2, 3
        direct = sum(abs(m[n, k, i, j].item()) ** r for k in range(3)) ** (1 / r)
        assert a.shape == (2, 1, 4, 4) and a[n, 0, i, j].item() == pytest.approx(direct, rel=1e-5)
        A = genc.image_scores(a, r)
        assert A[0].item() == pytest.approx(torch.linalg.vector_norm(a[0].flatten(), ord=r).item(), rel=1e-5)
    with pytest.raises(RuntimeError, match="fit"):
        genc.GradientStandardizer()(m)


def test_table3_network_shapes():
    net = table3_net(3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size[0], c.stride[0], c.padding[0], c.in_channels, c.out_channels) for c in convs] == [
        (3, 1, 1, 3, 32), (4, 2, 1, 32, 64), (4, 2, 1, 64, 128), (4, 2, 1, 128, 256), (4, 2, 1, 256, 256),
        (4, 2, 1, 256, 256), (4, 1, 0, 256, 1)]
    assert sum(isinstance(m, torch.nn.ELU) for m in net.modules()) == 6
    assert EnergyNet(1, 28, (4, 8, 8, 8))(torch.rand(5, 1, 28, 28)).shape == (5,)


def test_training_lowers_data_energy_and_the_guard_recovers(tmp_path):
    torch.manual_seed(0)
    data = torch.rand(64, 1, 8, 8) * 0.2 + 0.4          # normal data: grey images
    s = genc.TrainSettings(iterations=40, batch_size=16, lr=1e-3, snapshot_every=5,
                           sgld=genc.SGLDSettings(steps=5))
    model = genc.GencEBM(EnergyNet(1, 8, (4, 8)), s)
    model.fit(data, generator=torch.Generator().manual_seed(0), progress=False, inject_spike_at=20)
    assert any("energy spike" in e for _, e in model.log.events)
    assert all(math.isfinite(v) for v in model.log.loss)
    noise = torch.rand(64, 1, 8, 8)
    assert model.score(data, "energy").mean() < model.score(noise, "energy").mean()
    assert model.anomaly_map(noise).shape == (64, 1, 8, 8)
    model.save(tmp_path / "ebm.pt")
    other = genc.GencEBM(EnergyNet(1, 8, (4, 8)), s).load(tmp_path / "ebm.pt")
    assert torch.equal(other.score(data, "std"), model.score(data, "std"))
    with pytest.raises(ValueError, match="ebm.pt.*Fix"):
        genc.GencEBM(EnergyNet(1, 8, (4, 16)), s).load(tmp_path / "ebm.pt")


def test_persistent_buffer_restarts_a_fraction_from_noise():
    buf = genc.ReplayBuffer((1, 2, 2), size=100, reinit_prob=0.0, generator=torch.Generator().manual_seed(0))
    buf.data.fill_(0.5)
    x, idx = buf.start(10)
    assert torch.all(x == 0.5)
    buf.reinit_prob = 1.0
    x, idx = buf.start(10)
    assert not torch.any(x == 0.5)
    buf.store(torch.zeros(10, 1, 2, 2), idx)
    assert torch.all(buf.data[idx] == 0)


def _short(train: genc.TrainSettings) -> genc.TrainSettings:
    """The same settings with 2 parameter updates of 2 Langevin steps: the code path, not the result."""
    import dataclasses
    return dataclasses.replace(train, iterations=2, sgld=dataclasses.replace(train.sgld, steps=2))


@pytest.mark.skipif(not __import__("energyad.config", fromlist=["data_root"]).data_root()
                    .joinpath("mvtec_ad_256/bottle").is_dir(), reason="no MVTec bottle copy under ENERGYAD_DATA")
def test_genc_mvtec_full_profile_runs_on_the_bottle_copy(tmp_path, monkeypatch):
    """The full profile (Table 3 network at 128 px) on the real bottle copy, training cut to 2 updates:
    detection AUROCs for the three scores; no localization, as the copy has no masks."""
    import dataclasses

    from energyad.experiments import genc as exp
    from energyad.experiments.runner import run

    monkeypatch.setattr(exp, "MVTEC_FULL", dataclasses.replace(exp.MVTEC_FULL, train=_short(exp.MVTEC_FULL.train)))
    res = run("genc-mvtec", "full", tmp_path, "cpu")
    m = res["metrics"]["bottle"]
    assert res["config"]["image_size"] == 128 and res["config"]["widths"] == list(exp.TABLE3_WIDTHS)
    assert set(m["detection"]) == {"energy", "raw", "std"}
    assert all(0.0 <= v <= 1.0 for v in m["detection"].values())
    assert m["localization"] is None
    assert res["paper"]["bottle"]["localization"] == {"raw": 0.70, "std": 0.72}


def test_genc_mnist_full_profile_code_path(tmp_path, monkeypatch):
    """The full profile's network (widths 32..256) and all training images of a digit, training cut short."""
    import dataclasses

    from energyad.experiments import genc as exp
    from energyad.experiments.runner import run

    monkeypatch.setattr(exp, "MNIST_FULL", dataclasses.replace(exp.MNIST_FULL, digits=(1,), n_test=300,
                                                               train=_short(exp.MNIST_FULL.train)))
    res = run("genc-mnist", "full", tmp_path, "cpu")
    assert res["profile"] == "full" and res["config"]["n_train"] is None
    assert set(res["metrics"]["auroc"]["1"]) == {"energy", "raw", "std"}
    assert (tmp_path / "genc-mnist-energies-1.png").is_file()
