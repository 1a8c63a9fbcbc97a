"""Matsubara et al.: D + A + M against an independently computed negative ELBO, the GMM split against
scipy's log-density, the patch-wise maximum against a loop, and the SVHN experiment on a tiny .mat."""
import dataclasses

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from energyad.methods import matsubara as mt
from energyad.networks.matsubara_vae import MatsubaraAE, MatsubaraVAE


@pytest.fixture
def tolerate_untrained(monkeypatch):
    """Code-path tests train for one epoch on a few images: record the health figures, do not stop."""
    monkeypatch.setattr(mt.Health, "raise_if_failed", lambda self, where="": None)


def test_decomposition_sums_to_the_negative_elbo():
    torch.manual_seed(0)
    vae = MatsubaraVAE(3, 16, n_conv=2, n_c=4, n_z=5).double().eval()
    x = torch.rand(6, 3, 16, 16, dtype=torch.float64)
    parts = mt.decompose(vae, x, per_pixel=True)
    mu_z, logvar_z = vae.encode(x)
    mu_x, logvar_x = vae.decode(mu_z)
    kl = kl_divergence(Normal(mu_z, (0.5 * logvar_z).exp()), Normal(0.0, 1.0)).sum(1)
    nll = -Normal(mu_x, (0.5 * logvar_x).exp()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(parts["D"], kl, atol=1e-10)
    assert torch.allclose(parts["L"], (kl + nll).detach(), atol=1e-8)
    assert torch.allclose(parts["D"] + parts["A"] + parts["M"], parts["L"])
    assert torch.allclose(parts["M_map"].flatten(1).sum(1), parts["M"], atol=1e-8)
    assert torch.allclose(parts["A_map"].flatten(1).sum(1), parts["A"], atol=1e-8)
    # M = 1/2 |eps|^2 with x = mu_x + sigma_x * eps (Sec. III-C)
    eps = (x - mu_x) / (0.5 * logvar_x).exp()
    assert torch.allclose(parts["M"], 0.5 * eps.pow(2).flatten(1).sum(1))


def test_monte_carlo_negative_elbo_against_the_plug_in():
    """With sigma_z -> 0 the expectation over q collapses onto the plug-in z = mu_z; with a wide q the two
    differ (the chapter's point: L is not the negative ELBO)."""
    torch.manual_seed(0)
    vae = MatsubaraVAE(1, 8, n_conv=1, n_c=4, n_z=3).double().eval()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        vae.fc_enc.bias[3:] = -30.0                                   # log sigma_z^2 = -30 + W h: a point mass
        vae.fc_enc.weight[3:] = 0.0
    plug = mt.decompose(vae, x)["L"]
    assert torch.allclose(mt.negative_elbo_mc(vae, x, 8, torch.Generator().manual_seed(0)), plug, rtol=1e-4)
    with torch.no_grad():
        vae.fc_enc.bias[3:] = 2.0                                     # sigma_z^2 = e^2: a wide posterior
    plug = mt.decompose(vae, x)["L"]
    mc = mt.negative_elbo_mc(vae, x, 256, torch.Generator().manual_seed(0))
    assert (mc - plug).abs().min() > 1e-3


def test_vae_and_ae_shapes_follow_the_paper():
    vae = MatsubaraVAE(3, 32, n_conv=4, n_c=32, n_z=7)
    convs = [m for m in vae.enc if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256] and all(c.kernel_size == (4, 4) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in vae.enc) == 4
    mu_z, logvar_z, mu_x, logvar_x = vae(torch.rand(2, 3, 32, 32))
    assert mu_z.shape == (2, 7) and mu_x.shape == logvar_x.shape == (2, 3, 32, 32)
    assert MatsubaraAE(1, 28, 2, 8, 4)(torch.rand(3, 1, 28, 28)).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="divisible"):
        MatsubaraVAE(1, 28, n_conv=4)


def test_gmm_split_matches_scipy_log_density():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (200, 3)), rng.normal(4, 0.5, (100, 3))]
    g = mt.GMMScorer(2, n_pca=None).fit(x)
    parts = g.decompose(x[:20])
    k = parts["component"].numpy()
    for i in range(20):
        j = k[i]
        direct = -np.log(g.gmm.weights_[j]) - multivariate_normal(g.gmm.means_[j], g.gmm.covariances_[j]).logpdf(x[i])
        assert parts["L"][i].item() == pytest.approx(direct, rel=1e-8)
    assert torch.allclose(parts["D"] + parts["A"] + parts["M"], parts["L"])


def test_gmm_L_at_the_map_component_bounds_the_negative_log_likelihood():
    """L = -log p(x, z=k) at the MAP component is >= -log p(x) = -log sum_j p(x, z=j) (sklearn's
    score_samples), with equality for one component; on raw pixels with a constant pixel it stays finite."""
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(0, 1, (150, 4)), rng.normal(1.5, 0.7, (150, 4))]
    g = mt.GMMScorer(3, n_pca=None, reg_covar=1e-6).fit(x)
    L = g.decompose(x)["L"].numpy()
    nll = -g.gmm.score_samples(x)
    assert (L >= nll - 1e-9).all() and (L - nll).max() > 1e-3         # a bound, and not an identity
    one = mt.GMMScorer(1, n_pca=None, reg_covar=1e-6).fit(x)
    assert np.allclose(one.decompose(x)["L"].numpy(), -one.gmm.score_samples(x))
    img = torch.rand(60, 1, 4, 4)
    img[:, :, 0, 0] = 0.0                                              # a pixel that never varies
    raw = mt.GMMScorer(2, n_pca=None, reg_covar=1e-3).fit(img)
    assert torch.isfinite(raw.decompose(img)["M"]).all()


def test_select_reg_covar_maximises_the_held_out_likelihood():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)) * [1.0, 0.1, 0.01]
    best, scores = mt.select_reg_covar(x, grid=(1e-6, 1e-1, 10.0))
    assert best == max(scores, key=scores.get) and scores[10.0] < scores[1e-6]


def test_patch_max_scores_against_a_loop():
    x = torch.rand(2, 1, 20, 20)
    fn = lambda p: p.flatten(1).mean(1)
    got = mt.patch_max_scores(fn, x, patch=8, stride=4)
    expect = torch.stack([max(x[n, :, i:i + 8, j:j + 8].mean() for i in range(0, 13, 4) for j in range(0, 13, 4))
                          for n in range(2)])
    assert torch.allclose(got, expect)


def test_training_lowers_the_loss_and_isolation_forest_ranks_outliers():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8) * 0.1 + 0.45
    vae = MatsubaraVAE(1, 8, n_conv=1, n_c=4, n_z=2)
    hist = mt.train(vae, x, mt.VAESettings(epochs=15, batch_size=16), mt.negative_elbo_sampled,
                    torch.Generator().manual_seed(0), progress=False)
    assert hist[-1] < hist[0]
    test = torch.cat([x[:10], torch.rand(10, 1, 8, 8)])
    s = mt.isolation_forest_scores(x, test, n_estimators=50)
    assert s[10:].mean() > s[:10].mean()


def test_svhn_experiment_runs_on_a_tiny_mat(tmp_path, monkeypatch, tolerate_untrained):
    import scipy.io

    from energyad.experiments import matsubara as exp

    (tmp_path / "SVHN").mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 12)):
        scipy.io.savemat(tmp_path / "SVHN" / f"{split}_32x32.mat",
                         {"X": rng.integers(0, 255, (32, 32, 3, n)).astype(np.uint8),
                          "y": rng.integers(1, 11, (n, 1))})
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path))
    tiny = dataclasses.replace(exp.SVHN_FULL, n_c=4, n_z=(2,), ae_n_z=(2,), gmm_components=(2,), n_pca=5,
                               if_estimators=10, vae=mt.VAESettings(epochs=1, batch_size=16))
    monkeypatch.setattr(exp, "SVHN_FULL", tiny)
    res = exp.matsubara_svhn_toy("full", tmp_path, torch.device("cpu"))
    assert set(res["metrics"]["auroc"]) == {"L", "D", "A", "M"}
    assert res["data"] == "erased-patch toy (grey squares, value 0.5) on SVHN" and (tmp_path / "matsubara-svhn-toy-nz.png").exists()


def test_patch_decompose_equals_decomposing_each_crop():
    """Entry (i, j) of the Fig. 11 maps is the decomposition of the crop at (i * stride, j * stride)."""
    torch.manual_seed(0)
    vae = MatsubaraVAE(1, 8, n_conv=1, n_c=4, n_z=2).eval()
    x = torch.rand(2, 1, 16, 14)
    maps = mt.patch_decompose(vae, x, patch=8, stride=3)
    assert maps["M"].shape == (2, 3, 3)
    for n, i, j in ((0, 0, 0), (1, 2, 1), (0, 1, 2)):
        crop = x[n:n + 1, :, 3 * i:3 * i + 8, 3 * j:3 * j + 8]
        ref = mt.decompose(vae, crop)
        for p in ("L", "D", "A", "M"):
            assert torch.allclose(maps[p][n, i, j], ref[p][0], rtol=1e-5, atol=1e-4)
    assert torch.allclose(mt.patch_max_scores(lambda p: mt.batched_decompose(vae, p)["M"], x, 8, 3),
                          maps["M"].flatten(1).max(1).values, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="smaller than"):
        mt.patch_grid(torch.rand(1, 1, 6, 6), 8, 2)


def test_matsubara_mvtec_quick_path_on_tiny_categories(syn_root, tmp_path, monkeypatch, tolerate_untrained):
    from energyad.experiments import matsubara as exp

    tiny = dataclasses.replace(exp.PATCH_QUICK, patch=32, image_size=64, mask_size=64, n_crops=32, n_c=4, n_z=2,
                               stride=16, map_stride=16,
                               vae=mt.VAESettings(epochs=1, batch_size=16))
    monkeypatch.setattr(exp, "PATCH_QUICK", tiny)
    monkeypatch.setattr(exp, "patch_categories", lambda s: ({"tex": syn_root, "obj": syn_root}, False))
    res = exp.matsubara_mvtec("quick", tmp_path, torch.device("cpu"))
    assert set(res["metrics"]["auroc"]) == {"tex", "obj"}
    assert all(set(a) == {"L", "D", "A", "M"} for a in res["metrics"]["auroc"].values())
    assert set(res["metrics"]["health"]) == {"tex", "obj"}
    assert "active_latent_dims" in res["metrics"]["health"]["obj"]["checks"]
    assert (tmp_path / "matsubara-mvtec-heatmap-obj.png").is_file()
    assert set(res["metrics"]["pixel_auroc"]["obj"]) == {"L", "D", "A", "M"} and res["metrics"]["stand_in"] is False


def test_matsubara_mnist_toy_full_profile_code_path(tmp_path, monkeypatch, tolerate_untrained):
    """The full profile's grid (N_z 2..500, GMM 2..50, N_c = 32) on a few images with one epoch: the code
    path of the full run, whose training needs a GPU (about 130 s per epoch per VAE on this CPU); the
    registration says so, so that `reproduce all --profile full` skips it on a CPU."""
    from energyad.experiments import REGISTRY
    from energyad.experiments import matsubara as exp

    assert "gpu" in REGISTRY["matsubara-mnist-toy"].needs
    short = dataclasses.replace(exp.TOY_FULL, n_train=64, n_test=20, gmm_components=(2, 5), ae_n_z=(5, 50),
                                if_estimators=10, controls=(("white", 1.0),), vae=mt.VAESettings(epochs=1))
    monkeypatch.setattr(exp, "TOY_FULL", short)
    res = exp.matsubara_mnist_toy("full", tmp_path, torch.device("cpu"))
    m = res["metrics"]
    assert set(m["vae_by_n_z"]) == {str(n) for n in exp.TOY_FULL.n_z} == set(m["controls"]["white"]["vae_by_n_z"])
    assert set(m["auroc"]) == {"L", "D", "A", "M"} and m["erase_value"] == 0.5
    assert m["best_gmm"]["n_components"] in (2, 5) and set(m["best_gmm"]) == {"n_components", "L", "D", "A", "M"}
    assert set(m["ae_by_n_z"]) == {"5", "50"} and m["ae_mse"] == m["ae_by_n_z"][str(m["ae_best_n_z"])]
    assert {f"vae{n}" for n in exp.TOY_FULL.n_z} | {"ae5", "ae50"} <= set(m["health"])
    assert set(m["digit_medians"]) == {f"vae{m['best_n_z']}", f"gmm{m['best_gmm']['n_components']}"}
    assert (tmp_path / "matsubara-mnist-toy-nz.png").is_file() and (tmp_path / "matsubara-mnist-toy-boxes.png").is_file()


# ----------------------------------------------------------------------------- health figures
def _collapsed_vae():
    """A VAE whose encoder ignores x and outputs the prior (mu 0, log-variance 0): a collapsed posterior."""
    vae = MatsubaraVAE(1, 8, n_conv=1, n_c=4, n_z=3).eval()
    with torch.no_grad():
        vae.fc_enc.weight.zero_(); vae.fc_enc.bias.zero_()
    return vae


def test_vae_health_flags_a_collapsed_posterior_and_kl_matches_torch():
    from energyad.health import DegenerateModelError

    x = torch.rand(32, 1, 8, 8)
    h = mt.vae_health(_collapsed_vae(), x, [10.0, 5.0])
    assert not h.ok and h.checks["active_latent_dims"]["value"] == 0
    assert h.checks["output_dependence"]["value"] == pytest.approx(0.0, abs=1e-6)  # same z -> same mu_x
    with pytest.raises(DegenerateModelError, match="active_latent_dims"):
        h.raise_if_failed()
    # the per-dimension KL it records equals torch's KL averaged over the images
    torch.manual_seed(1)
    vae = MatsubaraVAE(1, 8, n_conv=1, n_c=4, n_z=3).eval()
    h = mt.vae_health(vae, x, [1.0, 2.0])
    mu, logvar = vae.encode(x)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).mean(0)
    assert np.allclose(h.checks["kl_per_dimension"]["value"], ref.detach().numpy(), atol=1e-3)
    assert h.checks["loss_first_last"]["ok"] is False                  # the loss rose: flagged


def test_ae_health_flags_a_constant_output():
    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.zeros_like(x) + self.p

    x = torch.rand(16, 1, 8, 8)
    h = mt.ae_health(Constant(), x, [1.0, 0.5])
    assert not h.ok and h.checks["output_dependence"]["ok"] is False and h.checks["loss_drop"]["ok"] is True
    good = mt.ae_health(torch.nn.Identity(), x, [1.0, 0.5])
    assert good.ok and good.checks["output_dependence"]["value"] == pytest.approx(1.0)


def test_training_on_fresh_crops_draws_new_crops_every_epoch(monkeypatch):
    seen = []
    real = mt.random_crops

    def spy(images, n, patch, generator=None):
        c = real(images, n, patch, generator)
        seen.append(c.clone())
        return c

    monkeypatch.setattr(mt, "random_crops", spy)
    torch.manual_seed(0)
    det = mt.MatsubaraVAEDetector(MatsubaraVAE(1, 8, n_conv=1, n_c=4, n_z=2), mt.VAESettings(epochs=3, batch_size=8))
    det.fit_crops(torch.rand(4, 1, 20, 20), n_crops=16, patch=8, generator=torch.Generator().manual_seed(0),
                  progress=False)
    assert len(seen) == 3 and len(det.history) == 3 and all(c.shape == (16, 1, 8, 8) for c in seen)
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


def test_patch_settings_keep_the_paper_ratio():
    from energyad.experiments import matsubara as exp

    s = exp.PATCH_FULL
    lo, hi = exp.PAPER_PATCH_RATIO                                     # 96/640, 96/480
    assert lo <= s.patch / s.image_size <= hi
    assert s.patch // 2 ** s.n_conv == 96 // 2 ** 5                    # the same 3x3 bottleneck as the paper
    assert s.stride / s.patch == 16 / 96
    MatsubaraVAE(3, s.patch, s.n_conv, 4, 2)                           # builds (patch divisible by 2**n_conv)


def test_box_figure_subtracts_one_global_median_and_digit_medians():
    from energyad.experiments import matsubara as exp

    rng = np.random.default_rng(0)
    digits = torch.tensor(np.repeat(np.arange(3), 20))
    y = torch.tensor(np.tile([0, 1], 30))
    parts = {p: torch.tensor(rng.normal(size=60) + digits.numpy() * 10.0) for p in exp.PARTS}
    med = exp.digit_medians(parts, digits, y)
    for p in exp.PARTS:
        for d in range(3):
            assert med[p][d] == pytest.approx(np.median(parts[p].numpy()[(digits.numpy() == d) & (y.numpy() == 0)]))
    fig = exp.box_figure(parts, digits, y, "t")
    ax = fig.axes[0]
    assert len(ax.patches) == 6                                        # 3 digits x (normal, anomalous)
    # horizontal segments: caps and median lines; the normal boxes' medians sit at (digit median - ONE
    # global median), so they keep the digit offsets of 10 (a per-digit median would put them all at 0)
    flat = [float(l.get_ydata()[0]) for l in ax.lines if len(l.get_ydata()) == 2
            and l.get_ydata()[0] == l.get_ydata()[1]]
    glob = np.median(parts["L"].numpy()[y.numpy() == 0])
    for d in range(3):
        assert any(abs(v - (med["L"][d] - glob)) < 1e-9 for v in flat)
    assert med["L"][2] - glob > 5 and med["L"][0] - glob < -5
