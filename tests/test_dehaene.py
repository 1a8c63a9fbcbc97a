"""Dehaene et al.: one projection step against the known answer for a linear autoencoder, the masked
and error-weighted updates, the stop criterion, and DSSIM against an independent SSIM computation."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from energyad.methods import dehaene as dh
from energyad.networks.bergmann_ae import BergmannAE


class LinearAE(torch.nn.Module):
    """f(x) = P x with P the orthogonal projection onto span(U): a linear autoencoder."""

    variational = False

    def __init__(self, U):
        super().__init__()
        self.U = torch.nn.Parameter(U)

    def encode(self, x):
        return x.flatten(1) @ self.U, None

    def decode(self, z):
        return (z @ self.U.T).view(-1, 1, 2, 3)

    def forward(self, x):
        return self.decode(self.encode(x)[0])


def linear_model(seed=0):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=torch.float64))
    return dh.AutoencoderModel(LinearAE(U), "l2ae").double(), U


def test_one_plain_step_with_alpha_half_is_the_orthogonal_projection():
    """L_r = |x - Px|^2 has gradient 2(I - P)x; at x_0 the L1 term has zero (sub)gradient, so
    x_1 = x_0 - 0.5 * 2 (I - P) x_0 = P x_0: the closest point of the normal subspace."""
    model, U = linear_model()
    x0 = torch.rand(4, 1, 2, 3, dtype=torch.float64) * 0.3 + 0.3
    s = dh.ProjectionSettings(alpha=0.5, lam=0.05, steps=1, weighting="none")
    x1, info = dh.project(model, x0, s)
    P = U @ U.T
    expect = (x0.flatten(1) @ P).view_as(x0)
    assert torch.allclose(x1, expect.clamp(0, 1), atol=1e-10)
    assert torch.allclose(info["energy"][0], (x0 - expect).flatten(1).pow(2).sum(1))


def test_projection_gradient_matches_autograd_and_finite_differences():
    model, U = linear_model(1)
    x0 = torch.rand(2, 1, 2, 3, dtype=torch.float64)
    x = (x0 + 0.05 * torch.randn_like(x0)).requires_grad_(True)
    (g,) = torch.autograd.grad(dh.energy(model, x, x0, 0.05).sum(), x)
    P = U @ U.T
    r = x.detach().flatten(1) @ (torch.eye(6, dtype=torch.float64) - P)
    analytic = 2 * r @ (torch.eye(6, dtype=torch.float64) - P) + 0.05 * torch.sign(x.detach() - x0).flatten(1)
    assert torch.allclose(g.flatten(1), analytic, atol=1e-10)


def test_masked_update_changes_only_masked_pixels_and_error_weighting():
    model, U = linear_model(2)
    x0 = torch.rand(3, 1, 2, 3, dtype=torch.float64) * 0.5 + 0.25
    mask = torch.zeros_like(x0); mask[:, :, 0, 1] = 1
    x1, _ = dh.project(model, x0, dh.ProjectionSettings(steps=5, weighting="mask"), mask=mask)
    assert torch.equal(x1[mask == 0], x0[mask == 0]) and not torch.equal(x1[mask == 1], x0[mask == 1])
    with pytest.raises(ValueError, match="mask"):
        dh.project(model, x0, dh.ProjectionSettings(steps=1, weighting="mask"))
    # Eq. 8: one step equals the plain gradient times the squared reconstruction error
    x = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(dh.energy(model, x, x0, 0.05).sum(), x)
    w = (x0 - model.reconstruct(x0)).pow(2).detach()
    x1, _ = dh.project(model, x0, dh.ProjectionSettings(alpha=0.3, steps=1, weighting="error"))
    assert torch.allclose(x1, (x0 - 0.3 * g * w).clamp(0, 1), atol=1e-12)


def test_stop_criterion_freezes_each_image_on_its_own():
    model, U = linear_model(3)
    on_manifold = (torch.rand(1, 6, dtype=torch.float64) @ U @ U.T).view(1, 1, 2, 3).clamp(0, 1) * 0 + 0.0
    off = torch.rand(1, 1, 2, 3, dtype=torch.float64)
    x0 = torch.cat([on_manifold, off])
    xt, info = dh.project(model, x0, dh.ProjectionSettings(steps=20, weighting="none", stop_loss=1e-6))
    assert info["stopped_at"][0] == 0 and torch.equal(xt[0], x0[0])
    assert info["stopped_at"][1] > 0


def gaussian_ssim(x, y, size=11, sigma=1.5, c1=0.01 ** 2, c2=0.03 ** 2):
    """SSIM of Wang et al. (2004) written out with a separable Gaussian window ('valid' region)."""
    ax = torch.arange(size, dtype=x.dtype) - size // 2
    g = torch.exp(-ax ** 2 / (2 * sigma ** 2)); g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None].repeat(x.shape[1], 1, 1, 1)
    f = lambda t: F.conv2d(t, w, groups=x.shape[1])
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))


def test_dssim_map_against_an_independent_ssim():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 24, generator=g)
    y = (x + 0.2 * torch.randn(2, 3, 24, 24, generator=g)).clamp(0, 1)
    got = dh.dssim_map(x, y)
    ref = ((1 - gaussian_ssim(x, y)) / 2).mean(1, keepdim=True)   # (N, 1, 14, 14): interior pixels
    assert got.shape == (2, 1, 24, 24)
    assert torch.allclose(got[:, :, 5:-5, 5:-5], ref, atol=1e-4)
    assert torch.allclose(dh.dssim_map(x, x), torch.zeros(2, 1, 24, 24), atol=1e-6)


@pytest.mark.parametrize("kind", dh.KINDS)
def test_baselines_losses_and_network_shapes(kind):
    torch.manual_seed(0)
    net = BergmannAE(1, 32, latent=8, variational=kind in ("vae", "gamma_vae"), width=4)
    m = dh.AutoencoderModel(net, kind)
    x = torch.rand(4, 1, 32, 32)
    assert m.reconstruct(x).shape == x.shape and m.loss_r(x).shape == (4,)
    hist = dh.train_autoencoder(m, x, dh.AETrainSettings(lr=1e-3, epochs=3, batch_size=4), progress=False)
    assert all(math.isfinite(h) for h in hist)
    with pytest.raises(ValueError, match="network"):
        dh.AutoencoderModel(BergmannAE(1, 32, 8, variational=kind in ("l2ae", "dsae"), width=4), kind)


def test_bergmann_encoder_for_128():
    net = BergmannAE(3, 128, latent=100)
    convs = [m for m in net.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size[0], c.stride[0], c.out_channels) for c in convs] == [
        (4, 2, 32), (4, 2, 32), (3, 1, 32), (4, 2, 64), (3, 1, 64), (4, 2, 128), (3, 1, 64), (3, 1, 32), (8, 1, 100)]
    assert net.encode(torch.rand(1, 3, 128, 128))[0].shape == (1, 100)


# --- issue 15: L_r is the reconstruction term; Eq. 8 against Adam; flags; stopped images; health --------
class LinearVAE(torch.nn.Module):
    """mu = W x, constant log-variance, decoder V z (2 x 3 images)."""
    variational = True

    def __init__(self, k=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn(k, 6, generator=g, dtype=torch.float64))
        self.V = torch.nn.Parameter(torch.randn(6, k, generator=g, dtype=torch.float64))

    def encode(self, x):
        mu = x.flatten(1) @ self.W.T
        return mu, torch.full_like(mu, -0.5)

    def decode(self, z):
        return (z @ self.V.T).view(-1, 1, 2, 3)

    def forward(self, x):
        return self.decode(self.encode(x)[0])


@pytest.mark.parametrize("kind", ["vae", "gamma_vae"])
def test_loss_r_is_the_gaussian_negative_log_likelihood_without_kl(kind):
    """Sec. 2.2: L_r(x) = -log p(x | z = mu); identity covariance for the VAE, gamma I for the gamma-VAE,
    up to the constant D/2 log(2 pi). The KL is not part of L_r."""
    model = dh.AutoencoderModel(LinearVAE(), kind).double()
    if kind == "gamma_vae":
        with torch.no_grad():
            model.log_gamma.fill_(math.log(0.3))
    x = torch.rand(4, 1, 2, 3, dtype=torch.float64)
    var = 1.0 if kind == "vae" else 0.3
    nll = -torch.distributions.Normal(model.reconstruct(x), var ** 0.5).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(model.loss_r(x), nll - 3 * math.log(2 * math.pi), atol=1e-10)
    assert (model.kl(x) > 0).all()
    torch.manual_seed(0)
    neg_elbo = model.train_loss(x, beta=1.0)
    torch.manual_seed(0)
    assert torch.allclose(neg_elbo - model.train_loss(x, beta=0.0), model.kl(x), atol=1e-10)


def test_eq8_weighting_changes_the_plain_update_and_adam_divides_it_out():
    """Eq. 8 rescales each pixel's plain step by (x - f(x))^2; Adam's first step is alpha * sign(grad)
    with or without that weight, so under Adam the weighting is lost."""
    model, _ = linear_model(4)
    x0 = torch.rand(3, 1, 2, 3, dtype=torch.float64) * 0.5 + 0.25
    step = lambda w, opt: dh.project(model, x0, dh.ProjectionSettings(alpha=0.01, steps=1, weighting=w, optimizer=opt))[0]
    plain_none, plain_err = step("none", "sgd"), step("error", "sgd")
    assert (plain_none - plain_err).abs().max() > 1e-4
    adam_none, adam_err = step("none", "adam"), step("error", "adam")
    assert torch.allclose(adam_none, adam_err, atol=1e-6)
    assert torch.allclose((x0 - adam_none).abs(), torch.full_like(x0, 0.01), atol=1e-6)   # alpha * sign


@pytest.mark.parametrize("opt", ["sgd", "adam", "ista"])
def test_project_restores_requires_grad_flags_and_frees_no_gradient(opt):
    torch.manual_seed(0)
    net = BergmannAE(1, 32, latent=4, width=4)
    model = dh.AutoencoderModel(net, "l2ae")
    net.encoder[0].weight.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    assert not all(before) and any(before)
    dh.project(model, torch.rand(2, 1, 32, 32), dh.ProjectionSettings(steps=2, optimizer=opt))
    assert [p.requires_grad for p in model.parameters()] == before
    assert all(p.grad is None for p in model.parameters())


def test_adam_does_not_move_an_image_after_it_stopped():
    """With momentum, Adam would go on moving an image whose gradient is zeroed; a stopped image stays."""
    model, U = linear_model(5)
    x0 = torch.rand(2, 1, 2, 3, dtype=torch.float64) * 0.5 + 0.25
    s = dh.ProjectionSettings(alpha=0.05, steps=40, weighting="none", optimizer="adam")
    free, _ = dh.project(model, x0, s)
    stop = 1.5 * model.loss_r(free).max().item()          # reached part-way by both images
    assert (model.loss_r(x0) > stop).all()
    xt, info = dh.project(model, x0, dataclasses.replace(s, stop_loss=stop), return_trajectory=True, record_every=1)
    t = info["stopped_at"]
    assert ((0 < t) & (t < s.steps)).all()
    for i in range(2):
        assert torch.equal(xt[i], info["trajectory"][i, t[i]])   # x_T is the iterate at which it stopped
        assert not torch.equal(xt[i], free[i])


def test_ista_fixed_point_satisfies_the_lasso_condition():
    """The L1 term's minimiser keeps pixel i at x0_i iff |dL_r/dx_i| <= lambda (KKT of the lasso); ISTA
    (optimizer="ista", no weighting) converges to it on the convex L_r = |x - Px|^2."""
    model, _ = linear_model(6)
    x0 = torch.rand(4, 1, 2, 3, dtype=torch.float64) * 0.4 + 0.3
    lam = 0.08
    xt, _ = dh.project(model, x0, dh.ProjectionSettings(alpha=0.2, lam=lam, steps=3000, weighting="none",
                                                        optimizer="ista"))
    x = xt.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model.loss_r(x).sum(), x)
    at_x0 = (xt - x0).abs() < 1e-12
    moved = ~at_x0 & (xt > 0) & (xt < 1)            # pixels on the [0, 1] box have the box's own condition
    assert at_x0.any() and moved.any()
    assert (g[at_x0].abs() <= lam + 1e-8).all()                                # stays: |grad| <= lambda
    assert torch.allclose(g[moved], -lam * torch.sign(xt - x0)[moved], atol=1e-6)   # moved: grad = -lam sign


def test_health_fails_on_a_constant_output_autoencoder_and_passes_a_working_one():
    from energyad.health import DegenerateModelError

    class Constant(torch.nn.Module):
        variational = False

        def __init__(self):
            super().__init__()
            self.img = torch.nn.Parameter(torch.full((1, 1, 2, 3), 0.4, dtype=torch.float64))

        def encode(self, x):
            return x.flatten(1)[:, :1] * 0, None

        def decode(self, z):
            return self.img.expand(len(z), -1, -1, -1)

        def forward(self, x):
            return self.decode(self.encode(x)[0])

    x = torch.rand(16, 1, 2, 3, dtype=torch.float64)
    h = dh.autoencoder_health(dh.AutoencoderModel(Constant(), "l2ae"), x, [1.0, 0.5])
    assert h.checks["output_dependence"]["value"] == 0 and not h.ok
    with pytest.raises(DegenerateModelError, match="output_dependence"):
        h.raise_if_failed()
    model, _ = linear_model(7)
    assert dh.autoencoder_health(model, x, [1.0, 0.5]).ok
    with pytest.raises(DegenerateModelError, match="loss_drop"):
        dh.autoencoder_health(model, x, [1.0, 0.99]).raise_if_failed()


def test_health_fails_on_a_collapsed_posterior():
    from energyad.health import DegenerateModelError

    model = dh.AutoencoderModel(LinearVAE(), "vae").double()
    with torch.no_grad():
        model.net.W.zero_()                        # mu = 0 for every x; log-variance -0.5: KL tiny, no signal
    x = torch.rand(16, 1, 2, 3, dtype=torch.float64)
    h = dh.autoencoder_health(model, x, [1.0, 0.5])
    assert h.checks["active_dims"]["value"] == 0
    with pytest.raises(DegenerateModelError):
        h.raise_if_failed()


def test_bergmann_output_depends_on_its_input_at_initialisation():
    from energyad.health import output_dependence

    torch.manual_seed(0)
    x = torch.rand(32, 1, 32, 32)
    assert output_dependence(x, BergmannAE(1, 32, 100, width=8)(x).detach()) > 1e-3
    assert not isinstance(BergmannAE(1, 32, 8, width=4, out_sigmoid=False).decoder[-1], torch.nn.Sigmoid)
