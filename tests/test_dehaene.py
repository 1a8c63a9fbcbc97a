"""Dehaene et al.: one projection step against the known answer for a linear autoencoder, the masked
and error-weighted updates, the stop criterion, and DSSIM against an independent SSIM computation."""
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
