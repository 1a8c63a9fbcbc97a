"""Experiments of the Matsubara et al. chapter: the erased-patch toy (MNIST, SVHN) and MVTec patches."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from .. import metrics, plotting
from ..config import seed_everything
from ..methods import matsubara as mt
from ..networks.matsubara_vae import MatsubaraAE, MatsubaraVAE
from . import experiment

# Sec. V-C: SVHN toy, best VAE at N_z = 500: L 0.745, M 0.943; best GMM (N_z = 2): L 0.878.
PAPER_SVHN = {"vae_nz500": {"L": 0.745, "M": 0.943}, "gmm_best": {"L": 0.878, "n_components": 2}}
PARTS = ("L", "D", "A", "M")


@dataclass
class ToySettings:
    n_train: int | None = 2000
    n_test: int | None = 500
    image_size: int = 28
    n_conv: int = 2               # paper: 4 on 32x32 SVHN; 28x28 MNIST allows 2 (28 -> 14 -> 7)
    n_c: int = 16                 # paper: 32
    n_z: tuple = (10,)            # paper sweeps {2, 5, 10, 20, 50, 100, 200, 500}
    gmm_components: tuple = (2,)  # paper sweeps the same grid; best at 2
    n_pca: int = 50               # PCA features for the GMM
    if_estimators: int = 1000     # Sec. V-B
    vae: mt.VAESettings = field(default_factory=lambda: mt.VAESettings(epochs=8))
    white_variant: bool = True    # also run the toy with white (always visible) squares
    # The white-square run sweeps these (Fig. 9); None: the same as n_z / gmm_components.
    sweep_n_z: tuple | None = (2, 5, 10, 20, 50)
    sweep_components: tuple | None = (1, 2, 5, 10)


TOY_QUICK = ToySettings()
TOY_FULL = ToySettings(n_train=None, n_test=None, n_c=32, n_z=(2, 5, 10, 20, 50, 100, 200, 500),
                       gmm_components=(2, 5, 10, 20, 50), vae=mt.VAESettings(epochs=50),
                     sweep_n_z=None, sweep_components=None)
SVHN_FULL = ToySettings(n_train=None, n_test=None, image_size=32, n_conv=4, n_c=32,
                        n_z=(2, 5, 10, 20, 50, 100, 200, 500), gmm_components=(2, 5, 10, 20, 50), n_pca=100,
                        vae=mt.VAESettings(epochs=50), white_variant=False)


def run_toy(data: dict, s: ToySettings, device, progress: bool = True, seed: int = 0) -> dict:
    """Train the VAE(s), the AE, the GMM(s) and the Isolation Forest on ``data``; return AUROCs,
    the decomposition of the test set and the trained models (for the chapter's figures)."""
    x_tr, x_te, y = data["x_train"], data["x_test"], data["y_test"]
    C = x_tr.shape[1]
    out = {"vae": {}, "gmm": {}, "models": {}, "parts": {}}
    for nz in s.n_z:
        g = seed_everything(seed)
        vae = MatsubaraVAE(C, s.image_size, s.n_conv, s.n_c, nz).to(device)
        mt.train(vae, x_tr, s.vae, mt.negative_elbo_sampled, g, progress, f"VAE N_z={nz}")
        parts = {k: v.cpu() for k, v in mt.batched_decompose(vae, x_te.to(device)).items()}
        out["vae"][str(nz)] = {k: metrics.image_auroc(parts[k], y) for k in PARTS}
        out["models"][f"vae{nz}"], out["parts"][f"vae{nz}"] = vae, parts
    g = seed_everything(seed)
    ae = MatsubaraAE(C, s.image_size, s.n_conv, s.n_c, s.n_z[0]).to(device)
    mt.train(ae, x_tr, s.vae, mt.ae_loss, g, progress, "AE")
    out["ae"] = metrics.image_auroc(mt.ae_scores(ae, x_te.to(device)).cpu(), y)
    out["models"]["ae"] = ae
    for k in s.gmm_components:
        gmm = mt.GMMScorer(k, s.n_pca, seed).fit(x_tr)
        parts = gmm.decompose(x_te)
        out["gmm"][str(k)] = {p: metrics.image_auroc(parts[p], y) for p in PARTS}
        out["models"][f"gmm{k}"], out["parts"][f"gmm{k}"] = gmm, parts
    out["isolation_forest"] = metrics.image_auroc(
        mt.isolation_forest_scores(x_tr, x_te, s.if_estimators, seed=seed), y)
    return out


def _summary(res: dict) -> dict:
    best_nz = max(res["vae"], key=lambda k: res["vae"][k]["L"])
    return {"auroc": res["vae"][best_nz], "best_n_z": int(best_nz), "vae_by_n_z": res["vae"],
            "gmm_by_components": res["gmm"], "ae_mse": res["ae"], "isolation_forest": res["isolation_forest"]}


def _box_figure(parts: dict, digits, y, title: str):
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, p in zip(axes, PARTS):
        v = parts[p].numpy()
        data, pos = [], []
        for d in range(10):
            for lab, off in ((0, -0.18), (1, 0.18)):
                sel = (digits == d) & (y == lab)
                if sel.any():
                    data.append(v[sel.numpy()] - np.median(v[((digits == d) & (y == 0)).numpy()]))
                    pos.append(d + off)
        bp = ax.boxplot(data, positions=pos, widths=0.3, whis=(5, 95), showfliers=False, patch_artist=True)
        for i, box in enumerate(bp["boxes"]):
            box.set_facecolor("tab:blue" if i % 2 == 0 else "tab:red")
        ax.set_xticks(range(10), [str(d) for d in range(10)])
        ax.set_title(f"{p}(x) − median of normal"); ax.set_xlabel("digit")
    fig.suptitle(title)
    return fig


def sweep_figure(summary: dict, title: str):
    """Fig. 9: ROC-AUC of L, D, A, M against N_z for the VAE (left) and against the number of
    components for the GMM (right), from a result's ``vae_by_n_z`` and ``gmm_by_components``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, xlabel in ((axes[0], "vae_by_n_z", "latent size N_z (VAE)"),
                            (axes[1], "gmm_by_components", "hidden classes N_z (GMM)")):
        grid = sorted(summary[key], key=int)
        for p in PARTS:
            ax.plot([int(n) for n in grid], [summary[key][n][p] for n in grid], "o-", label=p)
        ax.set_xscale("log"); ax.minorticks_off(); ax.set_xticks([int(n) for n in grid], grid)
        ax.set_xlabel(xlabel); ax.set_ylabel("ROC-AUC"); ax.axhline(0.5, color="grey", lw=0.5)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title} (cf. Fig. 9)")
    return fig


@experiment("matsubara-mnist-toy", chapter="matsubara", description="Matsubara et al.: erased-patch toy on "
            "MNIST; AUROC of L, D, A, M (VAE), AE, GMM, Isolation Forest")
def matsubara_mnist_toy(profile, out, device):
    from ..data.toy import mnist_erased_patch_toy

    s = TOY_QUICK if profile == "quick" else TOY_FULL
    data = mnist_erased_patch_toy(n_train=s.n_train, n_test=s.n_test)
    res = run_toy(data, s, device)
    metrics_out = _summary(res)
    key = f"vae{metrics_out['best_n_z']}"
    plotting.save(_box_figure(res["parts"][key], data["test_digits"], data["y_test"],
                              "VAE on the MNIST toy (black patches)"), out / "matsubara-mnist-toy-boxes.png")
    if s.white_variant:
        white = mnist_erased_patch_toy(n_train=s.n_train, n_test=s.n_test, value=1.0)
        sweep = dataclasses.replace(s, n_z=s.sweep_n_z or s.n_z, gmm_components=s.sweep_components or s.gmm_components)
        metrics_out["white_patch"] = _summary(run_toy(white, sweep, device))
        plotting.save(sweep_figure(metrics_out["white_patch"], "MNIST toy, white squares"),
                      out / "matsubara-mnist-toy-nz.png")
    return {"metrics": metrics_out, "paper": {"svhn_toy": PAPER_SVHN, "note": "the paper runs the toy on SVHN only"},
            "config": s, "data": data["source"]}


@experiment("matsubara-svhn-toy", chapter="matsubara", profiles=("full",), needs=("svhn",),
            description="Matsubara et al.: the paper's SVHN toy, N_z sweep of VAE and GMM (Fig. 9)")
def matsubara_svhn_toy(profile, out, device):
    from ..data.toy import svhn_erased_patch_toy

    s = SVHN_FULL
    data = svhn_erased_patch_toy(n_train=s.n_train, n_test=s.n_test)
    res = run_toy(data, s, device)
    summary = _summary(res)
    plotting.save(sweep_figure(summary, "SVHN toy"), out / "matsubara-svhn-toy-nz.png")
    return {"metrics": summary, "paper": PAPER_SVHN, "config": s, "data": data["source"]}


@dataclass
class PatchSettings:
    patch: int = 96               # Sec. V: random 96 x 96 training crops
    stride: int = 16              # test crops with stride 16
    image_size: int = 256
    n_crops: int = 10_000
    n_conv: int = 5               # Sec. V-A: five convolutions for the real-world data
    n_c: int = 32                 # selected from {16, 32, 64}
    n_z: int = 100
    categories: tuple | None = ("screw", "metal_nut", "bottle")   # those present under the data root
    synthetic: bool = False       # the synthetic MVTec-layout categories instead (quick profile)
    map_stride: int = 4           # Fig. 11: heat maps with a stride of 4 x 4
    vae: mt.VAESettings = field(default_factory=lambda: mt.VAESettings(epochs=30))


PATCH_FULL = PatchSettings()
# Quick: the synthetic categories (with masks) at 64 px, 32 px patches; a 3-convolution VAE.
PATCH_QUICK = PatchSettings(patch=32, stride=8, image_size=64, n_crops=3000, n_conv=3, n_c=16, n_z=20,
                            categories=None, synthetic=True, map_stride=4, vae=mt.VAESettings(epochs=6))


def run_patch_category(root, category: str, s: PatchSettings, device, progress: bool = True, seed: int = 0):
    """Train the VAE on random crops of one category's good images; return (detector, test tensors,
    {part: image AUROC of the patch maximum})."""
    from ..data.mvtec import MVTecAD, load_split

    x_tr = load_split(MVTecAD(root, category, "train", image_size=s.image_size), progress)[0]
    x_te, m_te, y_te, defects = load_split(MVTecAD(root, category, "test", image_size=s.image_size), progress)
    g = seed_everything(seed)
    crops = mt.random_crops(x_tr, s.n_crops, s.patch, g)
    det = mt.MatsubaraVAEDetector(MatsubaraVAE(x_tr.shape[1], s.patch, s.n_conv, s.n_c, s.n_z).to(device), s.vae)
    det.fit(crops, g, progress)
    maps = mt.patch_decompose(det.vae, x_te, s.patch, s.stride)
    aurocs = {p: metrics.image_auroc(maps[p].flatten(1).max(1).values, y_te) for p in PARTS}
    return det, (x_te, m_te, y_te, defects), aurocs


def heatmap_figure(det, image: torch.Tensor, mask, s: PatchSettings, title: str = ""):
    """Fig. 11 style: the image, its ground truth, and the patch-score maps of L, D, A and M (stride
    ``s.map_stride``), each normalised to [0, 1]; the raw range is in the panel title."""
    from matplotlib.figure import Figure

    maps = mt.patch_decompose(det.vae, image[None], s.patch, s.map_stride)
    fig = Figure(figsize=(13, 2.6), layout="constrained")
    axes = fig.subplots(1, 6)
    axes[0].imshow(image.permute(1, 2, 0).squeeze(-1).clamp(0, 1), cmap="gray")
    axes[0].set_title("image")
    axes[1].imshow(mask[0] if mask is not None else torch.zeros(image.shape[1:]), cmap="gray")
    axes[1].set_title("ground truth" if mask is not None else "no mask")
    H, W = image.shape[1:]
    nh, nw = maps["L"].shape[1:]
    c, st = s.patch / 2, s.map_stride                       # each score drawn at its patch's centre
    extent = (c - st / 2, c + (nw - 0.5) * st, c + (nh - 0.5) * st, c - st / 2)
    for ax, p in zip(axes[2:], PARTS):
        m = maps[p][0]
        ax.imshow(image.mean(0), cmap="gray", extent=(0, W, H, 0))
        ax.imshow((m - m.min()) / (m.max() - m.min()).clamp_min(1e-12), cmap="magma", extent=extent, alpha=0.75)
        ax.set_xlim(0, W); ax.set_ylim(H, 0)
        ax.set_title(f"{p} ({m.min():.0f} to {m.max():.0f})", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title or f"patch scores, {s.patch} px patches, stride {s.map_stride} (cf. Fig. 11)")
    return fig


@experiment("matsubara-mvtec", chapter="matsubara", description="Matsubara et al.: patch-wise VAE detection "
            "(an image's score is its worst patch) on MVTec AD, and Fig. 11 heat maps (quick: the synthetic "
            "categories at 64 px, 32 px patches; full: 96 px patches at 256 px, screw/metal_nut/bottle if present)")
def matsubara_mvtec(profile, out, device):
    from . import mvtec_categories

    s = PATCH_QUICK if profile == "quick" else PATCH_FULL
    cats = mvtec_categories(s.categories, s.synthetic)
    results, seconds = {}, {}
    for cat, root in cats.items():
        t0 = time.perf_counter()
        det, (x_te, m_te, y_te, _), aurocs = run_patch_category(root, cat, s, device)
        results[cat] = aurocs
        seconds[cat] = time.perf_counter() - t0
        i = int(torch.nonzero(y_te == 1)[0, 0])
        plotting.save(heatmap_figure(det, x_te[i], m_te[i] if m_te.sum() > 0 else None, s,
                                     f"{cat}: a defective image and its patch scores (cf. Fig. 11)"),
                      out / f"matsubara-mvtec-heatmap-{cat}.png")
    data = "synthetic MVTec-layout categories (energyad.data.synthetic)" if s.synthetic else \
        "MVTec AD: " + ", ".join(f"{c} at {r}" for c, r in cats.items())
    return {"metrics": {"auroc": results, "seconds_per_category": seconds},
            "paper": {"note": "the paper's real-world data (screw holes, gears) are not public; no paper "
                      "number applies to MVTec AD. Fig. 11 is qualitative."}, "config": s, "data": data}
