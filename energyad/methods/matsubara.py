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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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


def _loader(images: torch.Tensor, batch_size: int, generator):
    order = torch.randperm(len(images), generator=generator)
    for i in range(0, len(images), batch_size):
        yield images[order[i:i + batch_size]]


def train(model: nn.Module, images: torch.Tensor, s: VAESettings, loss_fn, generator=None, progress: bool = True,
          desc: str = "training") -> list:
    """Adam on ``loss_fn(model, batch)`` for ``s.epochs`` epochs; returns the mean loss per epoch."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
    history = []
    for _ in tqdm(range(s.epochs), desc=desc, disable=not progress, leave=False):
        model.train()
        total, n = 0.0, 0
        for xb in _loader(images, s.batch_size, generator):
            if len(xb) < 2:  # batch norm needs two samples
                continue
            xb = xb.to(device)
            loss = loss_fn(model, xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(xb), n + len(xb)
        history.append(total / max(n, 1))
    model.eval()
    return history


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


# ----------------------------------------------------------------------------- GMM (Eqs. 7-8)
class GMMScorer:
    """PCA features, then a full-covariance GMM (scikit-learn); D/A/M of Eq. 8 at the MAP component."""

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
        w, mu, cov = self.gmm.weights_[k], self.gmm.means_[k], self.gmm.covariances_[k]
        d = f.shape[1]
        D = -np.log(w)
        _, logdet = np.linalg.slogdet(cov)
        A = 0.5 * (d * LOG2PI + logdet)
        diff = f - mu                                             # (N, d)
        M = 0.5 * np.einsum("ni,nij,nj->n", diff, np.linalg.inv(cov), diff)
        out = {"D": D, "A": A, "M": M, "L": D + A + M, "component": k}
        return {key: torch.as_tensor(v) for key, v in out.items()}

    def reconstruct(self, x) -> np.ndarray:
        """The mean of each sample's MAP component, mapped back to pixels (Fig. 8)."""
        f = self._features(x)
        mu = self.gmm.means_[self.gmm.predict(f)]
        return self.pca.inverse_transform(mu) if self.pca is not None else mu


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


def random_crops(images: torch.Tensor, n: int, patch: int = 96, generator=None) -> torch.Tensor:
    """``n`` random ``patch`` x ``patch`` training crops (Sec. V: random 96x96 crops)."""
    from ..data.mvtec import texture_random_crops

    return texture_random_crops(images, n, crop=patch, resize=None, generator=generator)


class MatsubaraVAEDetector:
    """The shared interface: ``fit`` trains the VAE; ``score`` returns M(x) (or L, D, A)."""

    def __init__(self, vae, settings: VAESettings | None = None, score_kind: str = "M"):
        self.vae, self.settings, self.score_kind = vae, settings or VAESettings(), score_kind
        self.history: list = []

    def fit(self, images: torch.Tensor, generator=None, progress: bool = True) -> "MatsubaraVAEDetector":
        self.history = train(self.vae, images, self.settings, negative_elbo_sampled, generator, progress, "VAE")
        return self

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return batched_decompose(self.vae, images.to(next(self.vae.parameters()).device))[self.score_kind].cpu()

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        return decompose(self.vae, images.to(next(self.vae.parameters()).device), per_pixel=True)["M_map"].cpu()
