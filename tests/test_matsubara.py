"""Matsubara et al.: D + A + M against an independently computed negative ELBO, the GMM split against
scipy's log-density, the patch-wise maximum against a loop, and the SVHN experiment on a tiny .mat."""
import dataclasses

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from energyad.methods import matsubara as mt
from energyad.networks.matsubara_vae import MatsubaraAE, MatsubaraVAE


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


def test_svhn_experiment_runs_on_a_tiny_mat(tmp_path, monkeypatch):
    import scipy.io

    from energyad.experiments import matsubara as exp

    (tmp_path / "SVHN").mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 12)):
        scipy.io.savemat(tmp_path / "SVHN" / f"{split}_32x32.mat",
                         {"X": rng.integers(0, 255, (32, 32, 3, n)).astype(np.uint8),
                          "y": rng.integers(1, 11, (n, 1))})
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path))
    tiny = dataclasses.replace(exp.SVHN_FULL, n_c=4, n_z=(2,), gmm_components=(2,), n_pca=5, if_estimators=10,
                               vae=mt.VAESettings(epochs=1, batch_size=16))
    monkeypatch.setattr(exp, "SVHN_FULL", tiny)
    res = exp.matsubara_svhn_toy("full", tmp_path, torch.device("cpu"))
    assert set(res["metrics"]["auroc"]) == {"L", "D", "A", "M"}
    assert res["data"] == "erased-patch toy on SVHN" and (tmp_path / "matsubara-svhn-toy-nz.png").exists()


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


def test_matsubara_mvtec_quick_path_on_tiny_categories(syn_root, tmp_path, monkeypatch):
    from energyad.experiments import matsubara as exp

    tiny = dataclasses.replace(exp.PATCH_QUICK, n_crops=32, n_c=4, n_z=2, stride=16, map_stride=16,
                               vae=mt.VAESettings(epochs=1, batch_size=16))
    monkeypatch.setattr(exp, "PATCH_QUICK", tiny)
    monkeypatch.setattr("energyad.experiments.mvtec_categories",
                        lambda categories=None, synthetic=False: {"tex": syn_root, "obj": syn_root})
    res = exp.matsubara_mvtec("quick", tmp_path, torch.device("cpu"))
    assert set(res["metrics"]["auroc"]) == {"tex", "obj"}
    assert all(set(a) == {"L", "D", "A", "M"} for a in res["metrics"]["auroc"].values())
    assert (tmp_path / "matsubara-mvtec-heatmap-obj.png").is_file()


def test_matsubara_mnist_toy_full_profile_code_path(tmp_path, monkeypatch):
    """The full profile's grid (N_z 2..500, GMM 2..50, N_c = 32) on a few images with one epoch: the code
    path of the full run, whose training needs a GPU (about 130 s per epoch per VAE on this CPU)."""
    from energyad.experiments import matsubara as exp

    short = dataclasses.replace(exp.TOY_FULL, n_train=120, n_test=40, gmm_components=(2, 5), n_pca=10,
                                if_estimators=10, vae=mt.VAESettings(epochs=1))
    monkeypatch.setattr(exp, "TOY_FULL", short)
    res = exp.matsubara_mnist_toy("full", tmp_path, torch.device("cpu"))
    m = res["metrics"]
    assert set(m["vae_by_n_z"]) == {str(n) for n in exp.TOY_FULL.n_z} == set(m["white_patch"]["vae_by_n_z"])
    assert set(m["auroc"]) == {"L", "D", "A", "M"}
    assert (tmp_path / "matsubara-mnist-toy-nz.png").is_file()
