"""Genc et al.: the SGLD step against a quadratic energy with a known stationary law, the gradient map
against finite differences, the standardisation and the Eq. (2)/(3) norms against direct formulas,
the guard, and the network's shapes."""
import dataclasses
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
    return dataclasses.replace(train, iterations=2, sgld=dataclasses.replace(train.sgld, steps=2))


# 2 updates cannot teach the energy to tell noise from data; every other health rule stays as it is
UNTRAINED = genc.HealthRules(min_noise_gap=-math.inf)


@pytest.mark.skipif(not __import__("energyad.config", fromlist=["data_root"]).data_root()
                    .joinpath("mvtec_ad_256/bottle").is_dir(), reason="no MVTec bottle copy under ENERGYAD_DATA")
def test_genc_mvtec_full_profile_runs_on_the_bottle_copy(tmp_path, monkeypatch):
    """The full profile (Table 3 network at 128 px, its resumable training loop) on the real bottle copy,
    training cut to 2 updates on 32 images (all test images scored): detection AUROCs for the three
    scores; no localization, as the copy has no masks."""
    from energyad.experiments import genc as exp
    from energyad.experiments.runner import run

    monkeypatch.setattr(exp, "MVTEC_FULL", dataclasses.replace(exp.MVTEC_FULL, train=_short(exp.MVTEC_FULL.train),
                                                               health=UNTRAINED, categories=("bottle",),
                                                               max_train_images=32))
    res = run("genc-mvtec", "full", tmp_path, "cpu")
    m = res["metrics"]["bottle"]
    assert res["config"]["image_size"] == 128 and res["config"]["widths"] == list(exp.TABLE3_WIDTHS)
    assert set(m["detection"]) == {"energy", "raw", "std"}
    assert all(0.0 <= v <= 1.0 for v in m["detection"].values())
    assert m["localization"] is None and list(res["metrics"]) == ["bottle", "health"]
    h = res["metrics"]["health"]["bottle"]
    assert h["checks"]["sgld_clamped_fraction"]["ok"] and "final_energy_data" in h["checks"]
    assert res["paper"]["bottle"]["localization"] == {"raw": 0.70, "std": 0.72}


def test_genc_mnist_full_profile_code_path(tmp_path, monkeypatch):
    """The full profile's network (widths 32..256) and all training images of a digit, training cut short."""
    from energyad.experiments import genc as exp
    from energyad.experiments.runner import run

    monkeypatch.setattr(exp, "MNIST_FULL", dataclasses.replace(exp.MNIST_FULL, digits=(1,), n_test=300,
                                                               train=_short(exp.MNIST_FULL.train), health=UNTRAINED))
    res = run("genc-mnist", "full", tmp_path, "cpu")
    assert res["profile"] == "full" and res["config"]["n_train"] is None
    assert set(res["metrics"]["auroc"]["1"]) == {"energy", "raw", "std"}
    assert res["metrics"]["health"]["1"]["ok"] and res["config"]["train"]["sgld"]["step_size"] == 1.0
    assert (tmp_path / "genc-mnist-energies-1.png").is_file()


def test_sgld_at_temperature_T_samples_exp_minus_E_over_T():
    """Clamp off, sigma^2 = 2 eta T: the chain is the Langevin chain of exp(-E/T), here N(mu, T s^2)
    (AR(1) variance 2 eta T / (1 - a^2), a = 1 - eta / s^2)."""
    E = Quadratic(mu=0.3, s=0.5)
    eta, T = 0.02, 0.1
    s = genc.SGLDSettings(steps=400, step_size=eta, noise_std=math.sqrt(2 * eta * T), grad_clamp=None, clip=None)
    assert s.temperature == pytest.approx(T)
    g = torch.Generator().manual_seed(1)
    x = genc.sgld_sample(E, torch.rand(4000, 1, 2, 2, generator=g), s, generator=g)
    a = 1 - eta / 0.25
    assert x.var().item() == pytest.approx(2 * eta * T / (1 - a * a), rel=0.05)
    assert x.var().item() == pytest.approx(T * 0.25, rel=0.1)


def test_sgld_counts_clamped_updates():
    """E = |x - mu|^2 / (2 s^2): at the first step eta dE/dx = eta (x - mu) / s^2 per pixel; count by hand."""
    E = Quadratic(mu=0.0, s=1.0)
    x0 = torch.linspace(-1, 1, 50).reshape(2, 1, 5, 5)
    s = genc.SGLDSettings(steps=1, step_size=0.1, noise_std=0.0, grad_clamp=0.05, clip=None)
    st = genc.SGLDStats()
    genc.sgld_sample(E, x0, s, stats=st)
    expected = (0.1 * x0.abs() > 0.05).sum().item()
    assert st.updates == 50 and st.clamped == expected and 0 < expected < 50
    assert st.clamped_fraction == pytest.approx(expected / 50)
    assert st.drift_per_step == pytest.approx((0.1 * x0.abs()).mean().item(), rel=1e-6)
    st_off = genc.SGLDStats()
    genc.sgld_sample(E, x0, dataclasses.replace(s, grad_clamp=None), stats=st_off)
    assert st_off.clamped == 0


def test_sgld_noise_comes_from_the_runs_generator():
    """Same generator seed, different global seeds: the same samples, and the global stream is untouched."""
    E = Quadratic()
    s = genc.SGLDSettings(steps=5, step_size=0.01, noise_std=0.1)
    outs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        outs.append(genc.sgld_sample(E, torch.full((3, 1, 4, 4), 0.5), s, generator=torch.Generator().manual_seed(0)))
        assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(outs[0], outs[1])


def test_training_is_reproducible_from_its_generator_alone():
    data = torch.rand(64, 1, 8, 8) * 0.2 + 0.4
    s = genc.TrainSettings(iterations=5, batch_size=8, sgld=genc.SGLDSettings(steps=3))
    logs = []
    for global_seed in (3, 4):
        torch.manual_seed(0)
        net = EnergyNet(1, 8, (4, 8))                  # same initial weights
        torch.manual_seed(global_seed)                 # different global stream during training
        logs.append(genc.train_ebm(net, data, s, torch.Generator().manual_seed(0), progress=False))
    assert logs[0].loss == logs[1].loss


def test_guard_halves_the_step_and_keeps_the_temperature():
    torch.manual_seed(0)
    data = torch.rand(64, 1, 8, 8) * 0.2 + 0.4
    s = genc.TrainSettings(iterations=30, batch_size=16, lr=1e-3, snapshot_every=5, step_decay=0.5,
                           sgld=genc.SGLDSettings(steps=3))
    log = genc.train_ebm(EnergyNet(1, 8, (4, 8)), data, s, torch.Generator().manual_seed(0), progress=False,
                         inject_spike_at=20)
    k = len(log.events)
    assert k >= 1
    assert log.sgld.step_size == pytest.approx(s.sgld.step_size * 0.5 ** k)
    assert log.sgld.temperature == pytest.approx(s.sgld.temperature)


def test_health_passes_a_working_ebm_and_fails_a_sign_descent_sampler():
    """The defaults on grey images: few clamped updates, energies inside the regulariser's bound, data
    below noise. The old defaults (eta = 10, clamp 0.03) clamp most updates: DegenerateModelError."""
    from energyad.health import DegenerateModelError

    torch.manual_seed(0)
    data = torch.rand(128, 1, 8, 8) * 0.2 + 0.4
    good = genc.GencEBM(EnergyNet(1, 8, (4, 8)), genc.TrainSettings(iterations=40, batch_size=16, lr=1e-3,
                                                                    sgld=genc.SGLDSettings(steps=10)))
    good.fit(data, generator=torch.Generator().manual_seed(0), progress=False)
    c = good.health.checks
    assert good.health.ok, good.health.failures
    assert c["sgld_clamped_fraction"]["value"] <= 0.2 and c["energy_noise_minus_data"]["value"] > 0
    assert c["sgld_temperature"]["value"] == pytest.approx(0.005 ** 2 / 2)
    torch.manual_seed(0)
    bad = genc.GencEBM(EnergyNet(1, 8, (4, 8)), genc.TrainSettings(
        iterations=40, batch_size=16, lr=1e-3, sgld=genc.SGLDSettings(steps=10, step_size=10.0, grad_clamp=0.03)))
    bad.fit(data, generator=torch.Generator().manual_seed(0), progress=False)
    assert bad.health.checks["sgld_clamped_fraction"]["value"] > 0.2
    with pytest.raises(DegenerateModelError, match="sgld_clamped_fraction"):
        bad.health.raise_if_failed()


def test_health_fails_energies_held_by_the_regulariser():
    """A log whose energies sit at -/+ 1/(2 alpha), the minimum the penalty alone sets, fails."""
    m = genc.GencEBM(EnergyNet(1, 8, (4, 8)), genc.TrainSettings(energy_reg=0.1))
    m.log = genc.TrainLog(e_data=[-5.0] * 10, e_sample=[5.0] * 10, loss=[-7.5] * 10, clamped=[0.0] * 10,
                          drift=[0.01] * 10)
    h = genc.ebm_health(m, torch.rand(8, 1, 8, 8), torch.Generator().manual_seed(0))
    assert not h.checks["final_energy_data"]["ok"] and not h.checks["final_energy_samples"]["ok"]
    m.log.e_data, m.log.e_sample = [-1.0] * 10, [1.0] * 10
    h = genc.ebm_health(m, torch.rand(8, 1, 8, 8), torch.Generator().manual_seed(0))
    assert h.checks["final_energy_data"]["ok"] and h.checks["final_energy_samples"]["ok"]


def test_a_degenerate_mnist_run_fails_loudly_instead_of_reporting():
    """run_mnist_digit with a sign-descent sampler (eta = 100, clamp 0.03): DegenerateModelError, no AUROC."""
    import numpy as np

    from energyad.experiments import genc as exp
    from energyad.health import DegenerateModelError

    rng = np.random.default_rng(0)
    imgs = (rng.random((60, 28, 28)) * 255).astype(np.uint8)
    labels = np.repeat(np.arange(3), 20)
    s = exp.MnistSettings(digits=(1,), n_train=None, n_test=None, widths=(4, 8, 8, 8), train=genc.TrainSettings(
        iterations=5, batch_size=8, sgld=genc.SGLDSettings(steps=3, step_size=100.0, grad_clamp=0.03)))
    with pytest.raises(DegenerateModelError, match="digit 1.*sgld_clamped_fraction"):
        exp.run_mnist_digit(1, s, "cpu", ((imgs, labels), (imgs, labels)), progress=False)
