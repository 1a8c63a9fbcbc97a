r"""The unregularised score of a VAE (Matsubara et al.), with AE, GMM and Isolation Forest baselines.

With the MAP latent :math:`z = \mu_z` the negative ELBO splits into three parts (Eqs. 5-6):

.. math::
    \mathcal L(x) = D_{KL}(q(z|x)\,\|\,p(z)) - \log p(x|\mu_z) = D(x) + A(x) + M(x),\\
    D = \sum_j \tfrac12(-\log\sigma_{z_j}^2 - 1 + \sigma_{z_j}^2 + \mu_{z_j}^2),\quad
    A = \sum_i \tfrac12 \log 2\pi\sigma_{x_i}^2,\quad
    M = \sum_i \tfrac12 (\mu_{x_i} - x_i)^2/\sigma_{x_i}^2 .

D is the regulariser, A the log-normalising constant of the Gaussian decoder, M the "unregularised
score". Writing :math:`x = \mu_x + S\epsilon` with :math:`SS^T = \mathrm{diag}(\sigma_x^2)` gives
:math:`M = \tfrac12\|\epsilon\|^2`: the decoder's variance absorbs how *complex* an image is (A),
and M measures how unusual the residual is *given* that complexity (Sec. III-C).

For a GMM with MAP component :math:`k` (Eqs. 7-8): :math:`D = -\log w_k`,
:math:`A = \tfrac12\log (2\pi)^{N_x}|\Sigma_k|`, :math:`M = \tfrac12 (x-\mu_k)^T\Sigma_k^{-1}(x-\mu_k)`.

Two facts the chapter derives: the VAE's L is a *plug-in* (the decoder evaluated at q's mode
:math:`\mu_z`), not the negative ELBO, whose reconstruction term is an expectation over q; and the
GMM's L is :math:`-\log p(x, z=k) \ge -\log p(x)`. Under a calibrated decoder,
:math:`2M \sim \chi^2_{N_x}` whatever :math:`\sigma_x`, so :math:`E[M] = N_x/2`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..health import Health, kl_per_dimension, loss_drop, output_dependence
from ..loops import History, plain_loop

LOG2PI = math.log(2 * math.pi)


@dataclass
class VAESettings:
    """Sec. V-A: Adam with lr 1e-3, betas (0.9, 0.999), weight decay 1e-4."""
    lr: float = 1e-3
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 1e-4
    epochs: int = 50                 # not in the paper
    batch_size: int = 64             # not in the paper


# ----------------------------------------------------------------------------- VAE decomposition
def decompose(vae, x: torch.Tensor, per_pixel: bool = False) -> dict:
    """D, A, M and L = D + A + M per image at z = mu_z (Eqs. 5-6); with ``per_pixel``, also the maps
    ``A_map`` and ``M_map`` (N, 1, H, W) summed over channels (for heat maps; D has no pixels)."""
    vae.eval()
    with torch.no_grad():
        mu_z, logvar_z = vae.encode(x)
        mu_x, logvar_x = vae.decode(mu_z)
    D = 0.5 * (-logvar_z - 1 + logvar_z.exp() + mu_z.pow(2)).sum(1)            # (N,)
    a = 0.5 * (LOG2PI + logvar_x)                                                # (N, C, H, W)
    m = 0.5 * (mu_x - x).pow(2) / logvar_x.exp()                                 # (N, C, H, W)
    out = {"D": D, "A": a.flatten(1).sum(1), "M": m.flatten(1).sum(1)}
    out["L"] = out["D"] + out["A"] + out["M"]
    if per_pixel:
        out["A_map"], out["M_map"] = a.sum(1, keepdim=True), m.sum(1, keepdim=True)
        out["recon"] = mu_x
    return out


def negative_elbo_sampled(vae, x: torch.Tensor) -> torch.Tensor:
    """The training objective: KL + Gaussian NLL with a reparameterised sample of z, mean per image."""
    mu_z, logvar_z, mu_x, logvar_x = vae(x, sample=True)
    kl = 0.5 * (-logvar_z - 1 + logvar_z.exp() + mu_z.pow(2)).sum(1)
    nll = 0.5 * (LOG2PI + logvar_x + (x - mu_x).pow(2) / logvar_x.exp()).flatten(1).sum(1)
    return (kl + nll).mean()


def negative_elbo_mc(vae, x: torch.Tensor, n_samples: int = 64, generator=None) -> torch.Tensor:
    """The negative ELBO itself (Eq. 4), per image: KL + E_q[-log p(x|z)], the expectation estimated
    with ``n_samples`` draws z ~ q(z|x). :func:`decompose`'s L is the plug-in that puts z = mu_z instead."""
    vae.eval()
    with torch.no_grad():
        mu_z, logvar_z = vae.encode(x)                                            # (N, N_z)
        kl = 0.5 * (-logvar_z - 1 + logvar_z.exp() + mu_z.pow(2)).sum(1)
        nll = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for _ in range(n_samples):
            eps = torch.randn(mu_z.shape, generator=generator, dtype=mu_z.dtype).to(mu_z.device)
            mu_x, logvar_x = vae.decode(mu_z + eps * (0.5 * logvar_z).exp())
            nll += 0.5 * (LOG2PI + logvar_x + (x - mu_x).pow(2) / logvar_x.exp()).flatten(1).sum(1)
    return kl + nll / n_samples


def _loader(images: torch.Tensor, batch_size: int, generator):
    order = torch.randperm(len(images), generator=generator)
    for i in range(0, len(images), batch_size):
        yield images[order[i:i + batch_size]]


def train(model: nn.Module, images, s: VAESettings, loss_fn, generator=None, progress: bool = True,
          desc: str = "training", loop=None) -> list:
    """Adam on ``loss_fn(model, batch)`` for ``s.epochs`` epochs; returns the mean loss per epoch.

    ``images`` is a tensor (the same images every epoch, reshuffled) or a callable ``draw(epoch)``
    returning that epoch's images (fresh random crops every epoch, Sec. V: "a training sample was
    randomly cropped").

    ``loop(total, state, step, generator)`` runs ``step(epoch)`` for the epochs; ``state`` holds the
    model, the optimiser and the loss history (objects with ``state_dict``), ``generator`` is the one
    the epochs draw from. The default runs them all; an experiment passes a resumable loop
    (``energyad.experiments.resume.resumable_loop``) that saves ``state`` and every random state, and
    stops and resumes at a time limit."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
    history = History()
    bar = tqdm(total=s.epochs, desc=desc, disable=not progress, leave=False)

    def epoch_step(epoch: int) -> None:
        model.train()
        total, n = torch.zeros((), dtype=torch.float64, device=device), 0   # no sync per batch
        data = (images(epoch) if callable(images) else images).to(device)   # on the device once an epoch
        for xb in _loader(data, s.batch_size, generator):
            if len(xb) < 2:  # batch norm needs two samples
                continue
            loss = loss_fn(model, xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.detach().double() * len(xb), n + len(xb)
        history.append(float(total) / max(n, 1))
        bar.update(1)

    (loop or plain_loop)(s.epochs, {"model": model, "optimizer": opt, "history": history}, epoch_step, generator)
    bar.close()
    model.eval()
    return list(history)


def ae_loss(ae, x: torch.Tensor) -> torch.Tensor:
    """AE objective and score: mean squared error (Sec. V-A)."""
    return F.mse_loss(ae(x), x)


def ae_scores(ae, x: torch.Tensor) -> torch.Tensor:
    ae.eval()
    with torch.no_grad():
        return (ae(x) - x).pow(2).flatten(1).mean(1)


def batched_decompose(vae, x: torch.Tensor, batch_size: int = 256) -> dict:
    parts = [decompose(vae, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


# ----------------------------------------------------------------------------- health figures
KL_ACTIVE = 0.01          # nats: a latent dimension with a mean KL above this carries information about x
MIN_OUTPUT_DEPENDENCE = 0.1   # 0 for a constant output; blurry N_z = 2 reconstructions of MNIST reach ~0.2


def vae_health(vae, x: torch.Tensor, history: list, model: str = "VAE") -> Health:
    """Health figures of a trained VAE on images ``x`` (energyad.health): the mean KL per latent
    dimension (not all ~0: the posterior has not collapsed onto the prior), how much mu_x at
    z = mu_z depends on x, and whether the training loss (the negative ELBO, which can be negative
    with a learned variance, so compared directly) fell."""
    device = next(vae.parameters()).device
    vae.eval()
    mus, logvars, recons = [], [], []
    with torch.no_grad():
        for i in range(0, len(x), 256):
            mu_z, logvar_z = vae.encode(x[i:i + 256].to(device))
            mus.append(mu_z.cpu()); logvars.append(logvar_z.cpu()); recons.append(vae.decode(mu_z)[0].cpu())
    kl = kl_per_dimension(torch.cat(mus), torch.cat(logvars))                     # (N_z,)
    h = Health(model)
    h.check("active_latent_dims", int((kl > KL_ACTIVE).sum()), bool((kl > KL_ACTIVE).any()),
            f"at least one latent dimension with mean KL > {KL_ACTIVE} nats (else the posterior collapsed)")
    h.note("kl_per_dimension", [round(float(v), 4) for v in kl])
    dep = output_dependence(x.cpu(), torch.cat(recons))
    h.check("output_dependence", round(dep, 4), dep > MIN_OUTPUT_DEPENDENCE,
            f"std of mu_x across images / std of x > {MIN_OUTPUT_DEPENDENCE}")
    h.check("loss_first_last", [round(history[0], 2), round(history[-1], 2)],
            len(history) >= 2 and history[-1] < history[0],
            "the negative ELBO per image fell from the first to the last epoch (at least two epochs)")
    return h


def ae_health(ae, x: torch.Tensor, history: list, model: str = "AE") -> Health:
    """Health figures of a trained AE: output depends on input, the MSE fell (energyad.health)."""
    device = next(ae.parameters(), x).device
    ae.eval()
    with torch.no_grad():
        out = torch.cat([ae(x[i:i + 256].to(device)).cpu() for i in range(0, len(x), 256)])
    h = Health(model)
    dep = output_dependence(x.cpu(), out)
    h.check("output_dependence", round(dep, 4), dep > MIN_OUTPUT_DEPENDENCE,
            f"std of the reconstruction across images / std of x > {MIN_OUTPUT_DEPENDENCE}")
    drop = loss_drop(history) if len(history) >= 2 else float("nan")
    h.check("loss_drop", round(drop, 4), drop > 0.1, "the MSE fell by more than 10 % during training "
            "(at least two epochs)")
    return h


# ----------------------------------------------------------------------------- GMM (Eqs. 7-8)
class GMMScorer:
    """A full-covariance GMM (scikit-learn) on raw pixels (``n_pca=None``, the toy) or on PCA
    features (the patch data, Sec. V-B: N_h from {20, ..., 500}); D/A/M of Eq. 8 at the MAP component.

    ``reg_covar`` is added to every covariance's diagonal: on raw pixels a pixel that never varies
    (MNIST's border) would otherwise have zero variance and an infinite M for any change there."""

    def __init__(self, n_components: int = 2, n_pca: int | None = 50, seed: int = 0, reg_covar: float = 1e-4):
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        self.pca = PCA(n_pca, random_state=seed) if n_pca else None
        self.gmm = GaussianMixture(n_components, covariance_type="full", random_state=seed, reg_covar=reg_covar)

    def _features(self, x) -> np.ndarray:
        f = (x.flatten(1).cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)
        return self.pca.transform(f) if self.pca is not None else f

    def fit(self, x) -> "GMMScorer":
        f = (x.flatten(1).cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)
        if self.pca is not None:
            f = self.pca.fit_transform(f)
        self.gmm.fit(f)
        return self

    def decompose(self, x) -> dict:
        f = self._features(x)
        k = self.gmm.predict(f)                                   # MAP component
        D = -np.log(self.gmm.weights_[k])
        A, M = np.empty(len(f)), np.empty(len(f))
        for j in np.unique(k):                                    # one component at a time: (d, d) not (N, d, d)
            sel = k == j
            chol = np.linalg.cholesky(self.gmm.covariances_[j])   # Sigma = L L^T
            _, logdet = np.linalg.slogdet(self.gmm.covariances_[j])
            A[sel] = 0.5 * (f.shape[1] * LOG2PI + logdet)
            u = np.linalg.solve(chol, (f[sel] - self.gmm.means_[j]).T)   # L^{-1} (x - mu_k), (d, n)
            M[sel] = 0.5 * (u ** 2).sum(0)
        out = {"D": D, "A": A, "M": M, "L": D + A + M, "component": k}
        return {key: torch.as_tensor(v) for key, v in out.items()}

    def reconstruct(self, x) -> np.ndarray:
        """The mean of each sample's MAP component, mapped back to pixels (Fig. 8)."""
        f = self._features(x)
        mu = self.gmm.means_[self.gmm.predict(f)]
        return self.pca.inverse_transform(mu) if self.pca is not None else mu


def select_reg_covar(x, grid=(1e-3, 1e-2, 1e-1), n_components: int = 1, n_pca: int | None = None,
                     seed: int = 0, held_out: float = 0.2) -> tuple[float, dict]:
    """Choose the GMM's diagonal regulariser without anomaly labels: fit on (1 - ``held_out``) of the
    training images and keep the value with the highest mean log-likelihood on the rest.
    Returns ``(best, {value: held-out mean log-likelihood})``."""
    f = (x.flatten(1).cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)
    order = np.random.default_rng(seed).permutation(len(f))
    n_val = max(1, int(held_out * len(f)))
    val, fit = f[order[:n_val]], f[order[n_val:]]
    scores = {}
    for r in grid:
        g = GMMScorer(n_components, n_pca, seed, reg_covar=r).fit(fit)
        v = g.pca.transform(val) if g.pca is not None else val
        scores[r] = float(g.gmm.score(v))
    return max(scores, key=scores.get), scores


# ----------------------------------------------------------------------------- Isolation Forest
def isolation_forest_scores(train_x, test_x, n_estimators: int = 1000, max_samples: int = 256,
                            contamination="auto", seed: int = 0) -> torch.Tensor:
    """Isolation Forest (Sec. V-B: 1000 trees, 256 samples each); higher = more anomalous."""
    from sklearn.ensemble import IsolationForest

    f_tr = train_x.flatten(1).cpu().numpy()
    f_te = test_x.flatten(1).cpu().numpy()
    forest = IsolationForest(n_estimators=n_estimators, max_samples=min(max_samples, len(f_tr)),
                             contamination=contamination, random_state=seed, n_jobs=1).fit(f_tr)
    return torch.as_tensor(-forest.score_samples(f_te))


# ----------------------------------------------------------------------------- patch-wise detection
def patch_grid(images: torch.Tensor, patch: int = 96, stride: int = 16):
    """Every ``patch`` x ``patch`` crop taken with ``stride`` (Sec. V), as a batch
    (N * nh * nw, C, patch, patch) in raster order, and the grid size (nh, nw)."""
    N, C, H, W = images.shape
    if H < patch or W < patch:
        raise ValueError(f"images of {H}x{W} are smaller than the {patch}x{patch} patches")
    patches = images.unfold(2, patch, stride).unfold(3, patch, stride)          # (N, C, nh, nw, p, p)
    nh, nw = patches.shape[2:4]
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(N * nh * nw, C, patch, patch), (nh, nw)


def patch_max_scores(score_fn, images: torch.Tensor, patch: int = 96, stride: int = 16) -> torch.Tensor:
    """Score every ``patch`` x ``patch`` crop taken with ``stride``; an image's score is its patches'
    maximum (Sec. V: an image is anomalous if any patch exceeds the threshold). (N,) scores."""
    patches, (nh, nw) = patch_grid(images, patch, stride)
    scores = torch.cat([score_fn(patches[i:i + 256]) for i in range(0, len(patches), 256)])
    return scores.view(len(images), nh * nw).max(1).values


def patch_decompose(vae, images: torch.Tensor, patch: int = 96, stride: int = 16) -> dict:
    """L, D, A and M of every patch (Eqs. 5-6), arranged as maps (N, nh, nw): entry (i, j) scores the
    patch whose top-left corner is (i * stride, j * stride). The heat maps of Fig. 11 (stride 4 there)."""
    patches, (nh, nw) = patch_grid(images, patch, stride)
    device = next(vae.parameters()).device
    parts = batched_decompose(vae, patches.to(device))
    return {k: parts[k].cpu().view(len(images), nh, nw) for k in ("L", "D", "A", "M")}


def patch_pixel_map(maps: torch.Tensor, patch: int, stride: int, size) -> torch.Tensor:
    """Patch scores (N, nh, nw) from :func:`patch_decompose` as pixel maps (N, 1, H, W): each pixel gets
    the mean score of the patches that contain it (for pixel AUROC and AUPRO against the masks; the
    paper shows the patch scores only as heat maps). Pixels no patch reaches (the right and bottom
    edges when ``stride`` does not divide ``size - patch``) take the nearest covered pixel's value."""
    H, W = (size, size) if isinstance(size, int) else tuple(size)
    N, nh, nw = maps.shape
    h, w = patch + (nh - 1) * stride, patch + (nw - 1) * stride          # the covered region
    if h > H or w > W:
        raise ValueError(f"a {nh}x{nw} grid of {patch} px patches with stride {stride} does not fit {H}x{W}")
    m = maps.double().reshape(N, 1, nh * nw).expand(N, patch * patch, nh * nw)
    summed = F.fold(m, (h, w), patch, stride=stride)                      # (N, 1, h, w)
    count = F.fold(torch.ones_like(m[:1]), (h, w), patch, stride=stride)  # patches per pixel
    return F.pad(summed / count, (0, W - w, 0, H - h), mode="replicate").float()


def random_crops(images: torch.Tensor, n: int, patch: int = 96, generator=None) -> torch.Tensor:
    """``n`` random ``patch`` x ``patch`` training crops (Sec. V: random 96x96 crops of 640x480 images);
    :meth:`MatsubaraVAEDetector.fit_crops` draws fresh ones every epoch."""
    from ..data.mvtec import texture_random_crops

    return texture_random_crops(images, n, crop=patch, resize=None, generator=generator)


class MatsubaraVAEDetector:
    """The shared interface: ``fit`` trains the VAE; ``score`` returns M(x) (or L, D, A)."""

    def __init__(self, vae, settings: VAESettings | None = None, score_kind: str = "M"):
        self.vae, self.settings, self.score_kind = vae, settings or VAESettings(), score_kind
        self.history: list = []

    def fit(self, images: torch.Tensor, generator=None, progress: bool = True, loop=None) -> "MatsubaraVAEDetector":
        self.history = train(self.vae, images, self.settings, negative_elbo_sampled, generator, progress, "VAE",
                             loop)
        return self

    def fit_crops(self, images: torch.Tensor, n_crops: int, patch: int, generator=None,
                  progress: bool = True, loop=None) -> "MatsubaraVAEDetector":
        """Train on ``n_crops`` fresh random ``patch`` x ``patch`` crops of ``images`` every epoch (Sec. V);
        ``loop``: see :func:`train` (a resumable loop in the experiments)."""
        draw = lambda epoch: random_crops(images, n_crops, patch, generator)
        self.history = train(self.vae, draw, self.settings, negative_elbo_sampled, generator, progress, "VAE",
                             loop)
        return self

    def health(self, images: torch.Tensor) -> Health:
        return vae_health(self.vae, images, self.history)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return batched_decompose(self.vae, images.to(next(self.vae.parameters()).device))[self.score_kind].cpu()

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        return decompose(self.vae, images.to(next(self.vae.parameters()).device), per_pixel=True)["M_map"].cpu()
