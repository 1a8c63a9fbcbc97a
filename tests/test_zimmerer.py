"""Zimmerer et al.'s single-gradient scores (Dehaene et al., Table 2) against closed forms on a linear VAE,
and Appendix F's statistics recomputed from Table 1; the new Dehaene experiments on tiny settings."""
import dataclasses

import pytest
import torch

from energyad.experiments import dehaene as exp
from energyad.methods import dehaene as dh
from energyad.methods import zimmerer


class LinearVAE(torch.nn.Module):
    """mu = W x, log-variance constant c, decoder V z: every score has a closed form."""
    variational = True

    def __init__(self, d=12, k=3, c=-0.7):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = torch.nn.Parameter(torch.randn(k, d, generator=g, dtype=torch.float64) / d ** 0.5)
        self.V = torch.nn.Parameter(torch.randn(d, k, generator=g, dtype=torch.float64) / k ** 0.5)
        self.c, self.shape = c, (1, 3, 4)

    def encode(self, x):
        mu = x.flatten(1) @ self.W.T
        return mu, torch.full_like(mu, self.c)

    def decode(self, z):
        return (z @ self.V.T).view(-1, *self.shape)

    def forward(self, x):
        return self.decode(self.encode(x)[0])


def test_scores_match_closed_forms_on_a_linear_vae():
    model = dh.AutoencoderModel(LinearVAE(), "vae")
    x = torch.rand(5, 1, 3, 4, dtype=torch.float64)
    maps = zimmerer.score_maps(model, x)
    W, V = model.net.W.detach(), model.net.V.detach()
    xf = x.flatten(1)
    R = torch.eye(12, dtype=torch.float64) - V @ W                       # x - f(x) = R x
    rec = (xf @ R.T) ** 2
    grad_kl = xf @ (W.T @ W).T                                            # d/dx 1/2 |W x|^2
    grad = xf @ (R.T @ R).T + grad_kl                                     # d/dx 1/2 |R x|^2 + KL (L_r of the VAE)
    for k, ref in (("rec", rec), ("grad_kl", grad_kl.abs()), ("grad", grad.abs()),
                   ("rec_x_grad", rec * grad.abs()), ("rec_x_grad_kl", rec * grad_kl.abs())):
        assert torch.allclose(maps[k].flatten(1), ref, atol=1e-10), k
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="VAE"):
        zimmerer.score_maps(dh.AutoencoderModel(torch.nn.Module(), "l2ae"), x)


def test_kl_divergence_against_torch_distributions():
    model = dh.AutoencoderModel(LinearVAE(), "vae")
    x = torch.rand(4, 1, 3, 4, dtype=torch.float64)
    mu, logvar = model.net.encode(x)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    assert torch.allclose(zimmerer.kl_divergence(model, x), torch.distributions.kl_divergence(q, p).sum(1))


def test_improvement_rates_recompute_appendix_f_from_table_1():
    """Appendix F: mean 9.52 %, quartiles 1.86 / 4.33 / 15.86 %, 8.3 % of cells below 0."""
    r = exp.improvement_rates(exp.PAPER_TABLE1)
    assert len(r) == 15 * 4
    q = torch.quantile(r, torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(100 * q, torch.tensor([1.86, 4.33, 15.86]), atol=0.01)
    assert round(100 * r.mean().item(), 2) == 9.52
    assert round(100 * (r < 0).float().mean().item(), 1) == 8.3
    assert set(exp.PAPER_TABLE2["bottle"]) == set(zimmerer.SCORES) | {"projection"}


LAX = dh.HealthRules(min_output_dependence=0.0, min_active_dims=0, min_loss_drop=-float("inf"))


def _tiny(s, health=LAX):
    return dataclasses.replace(s, width=4, train=dh.AETrainSettings(lr=1e-3, epochs=2, n_train=16),
                               projection=dataclasses.replace(s.projection, steps=3), health=health)


def test_zimmerer_and_convergence_experiments_on_a_tiny_category(syn_root, tmp_path, monkeypatch):
    monkeypatch.setattr(exp, "categories_for", lambda s, id="": ({"obj": syn_root}, False))
    monkeypatch.setattr(exp, "ZIMMERER_QUICK", _tiny(exp.ZIMMERER_QUICK))
    res = exp.dehaene_zimmerer("quick", tmp_path, torch.device("cpu"))
    assert set(res["metrics"]["obj"]) == set(exp.TABLE2_COLUMNS) | {"reconstruction_dssim", "health", "test",
                                                                    "ablation_identity_covariance"}
    assert res["metrics"]["stand_in"] is False
    t = res["metrics"]["obj"]["test"]                                     # 3 good + 2 x 3 defect images, masks at the quick 256 px
    assert (t["good"], t["defect"], t["mask_size"]) == (3, 6, 256) and 0 < t["defect_pixel_share"] < 1
    assert res["metrics"]["obj"]["health"]["model"] == "vae on obj"
    monkeypatch.setattr(exp, "CONVERGENCE_QUICK", _tiny(exp.CONVERGENCE_QUICK))
    res = exp.dehaene_convergence("quick", tmp_path, torch.device("cpu"))
    c = res["metrics"]["obj"]
    assert c["steps"] == [0, 2] and len(c["none"]) == len(c["error"]) == 2    # 3 steps, recorded every 2
    assert c["none"][0] == c["error"][0]                                  # both start from x_0
    assert (tmp_path / "dehaene-convergence-obj.png").is_file()


def test_inpaint_keeps_unmasked_pixels_and_reports_missing_celeba(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = dh.AutoencoderModel(LinearVAE(), "vae")
    x = torch.rand(3, 1, 3, 4, dtype=torch.float64)
    mask = torch.zeros(3, 1, 3, 4, dtype=torch.float64)
    mask[:, :, 1, 1:3] = 1
    out = exp.inpaint(model, x, mask, dh.ProjectionSettings(alpha=0.1, steps=5))
    assert torch.equal(out["known"][mask.expand_as(x) == 0], x[mask.expand_as(x) == 0])   # Eq. 7
    assert not torch.equal(out["blind"], x)
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path))
    from energyad.data import DataError
    with pytest.raises(DataError, match="CelebA not found.*Fix"):
        exp.dehaene_inpaint("quick", tmp_path, torch.device("cpu"))


def test_dehaene_mnist_code_path(tmp_path, monkeypatch):
    tiny = dataclasses.replace(exp.MNIST_QUICK, digits=(1,), n_train=32, n_test=40, width=4,
                               train=dh.AETrainSettings(lr=1e-3, epochs=2), projection=dh.ProjectionSettings(steps=2))
    monkeypatch.setattr(exp, "MNIST_QUICK", dataclasses.replace(tiny, health=LAX))
    res = exp.dehaene_mnist("quick", tmp_path, torch.device("cpu"))
    assert set(res["metrics"]["auroc"]["1"]) == {"l2ae", "vae"}
    assert set(res["metrics"]["health"]["1"]) == {"l2ae", "vae"} and "l2ae_sigmoid_digit_1" in res["metrics"]["ablation"]
    assert (tmp_path / "dehaene-mnist-reconstructions-1.png").is_file()
    # with the real rules, a model that cannot have learned (2 epochs on 32 images, lr 1e-9) stops the run
    from energyad.health import DegenerateModelError
    monkeypatch.setattr(exp, "MNIST_QUICK", dataclasses.replace(tiny, train=dh.AETrainSettings(lr=1e-9, epochs=2)))
    with pytest.raises(DegenerateModelError, match="l2ae on digit 1"):
        exp.dehaene_mnist("quick", tmp_path, torch.device("cpu"))
    assert set(res["metrics"]["mean_auroc"]["vae"]) == {"reconstruction", "projection"}


def test_test_tiles_cut_in_raster_order_and_label_tiles():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    m = torch.zeros(2, 1, 4, 4)
    m[1, 0, 3, 0] = 1                                   # bottom-left tile of image 1
    xt, mt, yt, d = exp.test_tiles(x, m, torch.tensor([0, 1]), ["good", "crack"], 2)
    assert xt.shape == (8, 1, 2, 2) and torch.equal(xt[1], x[0, :, 0:2, 2:4]) and torch.equal(xt[6], x[1, :, 2:4, 0:2])
    assert yt.tolist() == [0, 0, 0, 0, 0, 0, 1, 0] and d[4:] == ["crack"] * 4
    from energyad import metrics
    maps = torch.rand(2, 1, 4, 4)
    tiles = exp.test_tiles(maps, m, torch.tensor([0, 1]), ["good", "crack"], 2)[0]
    assert metrics.pixel_auroc(tiles, mt) == pytest.approx(metrics.pixel_auroc(maps, m))
