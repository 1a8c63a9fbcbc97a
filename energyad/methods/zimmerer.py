r"""Single-gradient pixel scores of a VAE (Zimmerer et al., 2018; 2019), the comparison of Dehaene et
al.'s Table 2 (appendix A).

For a VAE :math:`f` with encoder :math:`q(z|x) = \mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))` and the
loss :math:`\mathcal L(x) = L_r(x) + D_{KL}(q(z|x)\,\|\,p(z))` (the negative ELBO evaluated at :math:`z = \mu`;
:math:`L_r = \tfrac12\|x - f(x)\|^2` for the VAE, :func:`energyad.methods.dehaene.AutoencoderModel.loss_r`),
the five columns of Table 2 are, per pixel (summed over colour channels):

==========================  ===========================================================
``rec``                     :math:`(x - f(x))^2`
``grad``                    :math:`|\nabla_x \mathcal L(x)|`
``rec_x_grad``              :math:`(x - f(x))^2 \odot |\nabla_x \mathcal L(x)|` ("combination of both")
``grad_kl``                 :math:`|\nabla_x D_{KL}(q(z|x)\,\|\,p(z))|`
``rec_x_grad_kl``           :math:`(x - f(x))^2 \odot |\nabla_x D_{KL}|` (Zimmerer et al., 2019)
==========================  ===========================================================

Each is one evaluation of a gradient, where Dehaene et al. iterate (Eqs. 5 and 8); Table 2's last column
("VAE-grad") is their projection with the same VAE.
"""
from __future__ import annotations

import torch

SCORES = ("rec", "grad", "rec_x_grad", "grad_kl", "rec_x_grad_kl")


def kl_divergence(model, x: torch.Tensor) -> torch.Tensor:
    """:math:`D_{KL}(q(z|x)\\,\\|\\,\\mathcal N(0, I))` per image, shape (N,)."""
    mu, logvar = model.net.encode(x)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def _input_grad(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x).sum(), x)
    return g


def score_maps(model, x: torch.Tensor, batch_size: int = 64) -> dict:
    """The five maps of Table 2 for a VAE ``model`` (an ``AutoencoderModel`` of kind "vae"), each
    (N, 1, H, W) on the CPU. Model parameters receive no gradient."""
    if getattr(model, "kind", None) not in ("vae", "gamma_vae"):
        raise ValueError("Zimmerer's scores need a VAE (AutoencoderModel of kind 'vae' or 'gamma_vae')")
    model.eval()
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    out = {k: [] for k in SCORES}
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            with torch.no_grad():
                rec = (xb - model.reconstruct(xb)).pow(2).sum(1, keepdim=True)
            g = _input_grad(lambda v: model.loss_r(v) + kl_divergence(model, v), xb).abs().sum(1, keepdim=True)
            gk = _input_grad(lambda v: kl_divergence(model, v), xb).abs().sum(1, keepdim=True)
            for k, v in zip(SCORES, (rec, g, rec * g, gk, rec * gk)):
                out[k].append(v.cpu())
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
    return {k: torch.cat(v) for k, v in out.items()}
