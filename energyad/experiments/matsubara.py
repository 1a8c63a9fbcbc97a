"""Experiments of the Matsubara et al. chapter: the erased-patch toy (MNIST, SVHN) and MVTec patches."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from .. import metrics, plotting
from ..config import seed_everything
from ..data import toy
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
    n_z: tuple = (2, 5, 10, 20, 50)           # paper sweeps {2, 5, 10, 20, 50, 100, 200, 500} (Fig. 9)
    ae_n_z: tuple = (5, 50)                   # the AE's N_z is selected too (Table I picks 50 and 5)
    gmm_components: tuple = (1, 2, 5)         # paper sweeps {2, 5, 10, ...}; best at 2 on the toy
    n_pca: int | None = None      # the toy's GMM runs on raw pixels; PCA is for the patch data (Sec. V-B)
    # Added to the GMM covariances' diagonals (a pixel variance floor); None: chosen from reg_grid by the
    # held-out log-likelihood of training images (no anomaly labels), see mt.select_reg_covar.
    reg_covar: float | None = None
    reg_grid: tuple = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    if_estimators: int = 1000     # Sec. V-B
    erase_value: float = toy.GREY             # "the gray squares" (Sec. VI-A)
    controls: tuple = (("black", 0.0), ("white", 1.0))   # other erased values, same grid
    vae: mt.VAESettings = field(default_factory=lambda: mt.VAESettings(epochs=8))


TOY_QUICK = ToySettings()
TOY_FULL = ToySettings(n_train=None, n_test=None, n_c=32, n_z=(2, 5, 10, 20, 50, 100, 200, 500),
                       ae_n_z=(2, 5, 10, 20, 50, 100, 200, 500), gmm_components=(2, 5, 10, 20, 50),
                       vae=mt.VAESettings(epochs=50))
SVHN_FULL = ToySettings(n_train=None, n_test=None, image_size=32, n_conv=4, n_c=32,
                        n_z=(2, 5, 10, 20, 50, 100, 200, 500), ae_n_z=(2, 5, 10, 20, 50, 100, 200, 500),
                        gmm_components=(2, 5, 10, 20, 50), vae=mt.VAESettings(epochs=50), controls=())


def run_toy(data: dict, s: ToySettings, device, progress: bool = True, seed: int = 0) -> dict:
    """Train the VAE(s), the AE(s), the GMM(s) and the Isolation Forest on ``data``; return AUROCs,
    health figures, the decomposition of the test set and the trained models (for the chapter's figures).

    Every VAE and AE proves that it works before its AUROC is kept: a failed health check raises
    :class:`energyad.health.DegenerateModelError`."""
    x_tr, x_te, y = data["x_train"], data["x_test"], data["y_test"]
    C = x_tr.shape[1]
    out = {"vae": {}, "ae": {}, "gmm": {}, "health": {}, "models": {}, "parts": {}, "history": {}, "y": y}
    for nz in s.n_z:
        g = seed_everything(seed)
        vae = MatsubaraVAE(C, s.image_size, s.n_conv, s.n_c, nz).to(device)
        hist = mt.train(vae, x_tr, s.vae, mt.negative_elbo_sampled, g, progress, f"VAE N_z={nz}")
        h = mt.vae_health(vae, x_te, hist, f"VAE N_z={nz}")
        out["health"][f"vae{nz}"] = h.to_dict()
        h.raise_if_failed(data.get("source", ""))
        parts = {k: v.cpu() for k, v in mt.batched_decompose(vae, x_te.to(device)).items()}
        out["vae"][str(nz)] = {k: metrics.image_auroc(parts[k], y) for k in PARTS}
        out["models"][f"vae{nz}"], out["parts"][f"vae{nz}"], out["history"][f"vae{nz}"] = vae, parts, hist
    for nz in s.ae_n_z:
        g = seed_everything(seed)
        ae = MatsubaraAE(C, s.image_size, s.n_conv, s.n_c, nz).to(device)
        hist = mt.train(ae, x_tr, s.vae, mt.ae_loss, g, progress, f"AE N_z={nz}")
        h = mt.ae_health(ae, x_te, hist, f"AE N_z={nz}")
        out["health"][f"ae{nz}"] = h.to_dict()
        h.raise_if_failed(data.get("source", ""))
        out["ae"][str(nz)] = metrics.image_auroc(mt.ae_scores(ae, x_te.to(device)).cpu(), y)
        out["models"][f"ae{nz}"] = ae
    reg = s.reg_covar
    if reg is None:
        reg, out["reg_covar_heldout_loglik"] = mt.select_reg_covar(x_tr, s.reg_grid, 1, s.n_pca, seed)
    out["reg_covar"] = reg
    for k in s.gmm_components:
        gmm = mt.GMMScorer(k, s.n_pca, seed, reg_covar=reg).fit(x_tr)
        parts = gmm.decompose(x_te)
        out["gmm"][str(k)] = {p: metrics.image_auroc(parts[p], y) for p in PARTS}
        out["health"][f"gmm{k}"] = {"model": f"GMM {k}", "converged": bool(gmm.gmm.converged_),
                                    "em_iterations": int(gmm.gmm.n_iter_)}
        out["models"][f"gmm{k}"], out["parts"][f"gmm{k}"] = gmm, parts
    out["isolation_forest"] = metrics.image_auroc(
        mt.isolation_forest_scores(x_tr, x_te, s.if_estimators, seed=seed), y)
    return out


def _summary(res: dict) -> dict:
    """What a result file keeps of :func:`run_toy`: every AUROC, the best VAE (by L, as the paper
    selects) and the best GMM (by L) with their L, D, A, M side by side, and the health figures."""
    best_nz = max(res["vae"], key=lambda k: res["vae"][k]["L"])
    best_k = max(res["gmm"], key=lambda k: res["gmm"][k]["L"])
    best_ae = max(res["ae"], key=lambda k: res["ae"][k])
    return {"auroc": res["vae"][best_nz], "best_n_z": int(best_nz), "vae_by_n_z": res["vae"],
            "best_vae": {"n_z": int(best_nz), **res["vae"][best_nz]},
            "best_gmm": {"n_components": int(best_k), **res["gmm"][best_k]},
            "gmm_by_components": res["gmm"], "ae_by_n_z": res["ae"], "ae_best_n_z": int(best_ae),
            "ae_mse": res["ae"][best_ae], "isolation_forest": res["isolation_forest"], "health": res["health"],
            "gmm_reg_covar": res["reg_covar"],
            "part_means": {key: part_means(res["parts"][key], res["y"]) for key in (f"vae{best_nz}", f"gmm{best_k}")},
            "gmm_reg_covar_heldout_loglik": {str(k): v for k, v in res.get("reg_covar_heldout_loglik", {}).items()}}


def part_means(parts: dict, y) -> dict:
    """{part: {"normal": mean over normal test images, "anomalous": mean over erased ones}}."""
    return {p: {"normal": float(parts[p][y == 0].double().mean()), "anomalous": float(parts[p][y == 1].double().mean())}
            for p in PARTS}


def digit_medians(parts: dict, digits, y) -> dict:
    """{part: {digit: median over the normal test images of that digit}} (what Fig. 5's boxes show
    relative to one global median)."""
    import numpy as np

    normal = (y == 0).numpy()
    return {p: {int(d): float(np.median(parts[p].numpy()[normal & (digits == d).numpy()]))
                for d in np.unique(digits.numpy())} for p in PARTS}


def box_figure(parts: dict, digits, y, title: str):
    """Figs. 5 and 6: box plots of L, D, A, M per digit (quartile boxes, 5-95 % whiskers), normal in
    blue and anomalous in red, after subtracting ONE median (that of all normal test images), so a
    score that depends on the digit shows as boxes at different heights."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, p in zip(axes, PARTS):
        v = parts[p].numpy()
        med = np.median(v[(y == 0).numpy()])
        data, pos = [], []
        for d in range(10):
            for lab, off in ((0, -0.18), (1, 0.18)):
                sel = (digits == d) & (y == lab)
                if sel.any():
                    data.append(v[sel.numpy()] - med)
                    pos.append(d + off)
        bp = ax.boxplot(data, positions=pos, widths=0.3, whis=(5, 95), showfliers=False, patch_artist=True)
        for i, box in enumerate(bp["boxes"]):
            box.set_facecolor("tab:blue" if i % 2 == 0 else "tab:red")
        ax.set_xticks(range(10), [str(d) for d in range(10)])
        ax.set_title(f"{p}(x) − median of all normal"); ax.set_xlabel("digit")
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


def _toy_profile(profile: str) -> ToySettings:
    return TOY_QUICK if profile == "quick" else TOY_FULL


@experiment("matsubara-mnist-toy", chapter="matsubara", needs=("gpu",), description="Matsubara et al.: "
            "erased-patch toy on MNIST (grey squares; black and white as controls); AUROC of L, D, A, M of "
            "the VAE (N_z sweep) and of a raw-pixel GMM (component sweep), AE, Isolation Forest; health figures")
def matsubara_mnist_toy(profile, out, device):
    from ..data.toy import mnist_erased_patch_toy

    s = _toy_profile(profile)
    data = mnist_erased_patch_toy(n_train=s.n_train, n_test=s.n_test, value=s.erase_value)
    res = run_toy(data, s, device)
    m = _summary(res)
    m["erase_value"] = s.erase_value
    m["digit_medians"] = {f"vae{m['best_n_z']}": digit_medians(res["parts"][f"vae{m['best_n_z']}"],
                                                               data["test_digits"], data["y_test"]),
                          f"gmm{m['best_gmm']['n_components']}": digit_medians(
                              res["parts"][f"gmm{m['best_gmm']['n_components']}"], data["test_digits"],
                              data["y_test"])}
    plotting.save(box_figure(res["parts"][f"vae{m['best_n_z']}"], data["test_digits"], data["y_test"],
                             f"VAE (N_z = {m['best_n_z']}) on the MNIST toy, grey squares (cf. Fig. 5)"),
                  out / "matsubara-mnist-toy-boxes.png")
    plotting.save(sweep_figure(m, "MNIST toy, grey squares"), out / "matsubara-mnist-toy-nz.png")
    m["controls"] = {}
    for name, value in s.controls:
        ctrl = mnist_erased_patch_toy(n_train=s.n_train, n_test=s.n_test, value=value)
        m["controls"][name] = {"erase_value": value, **_summary(run_toy(ctrl, s, device))}
    return {"metrics": m, "paper": {"svhn_toy": PAPER_SVHN, "note": "the paper runs the toy on SVHN only"},
            "config": s, "data": data["source"]}


@experiment("matsubara-svhn-toy", chapter="matsubara", profiles=("full",), needs=("svhn",),
            description="Matsubara et al.: the paper's SVHN toy, N_z sweep of VAE and GMM (Fig. 9)")
def matsubara_svhn_toy(profile, out, device):
    from ..data.toy import svhn_erased_patch_toy

    s = SVHN_FULL
    data = svhn_erased_patch_toy(n_train=s.n_train, n_test=s.n_test, value=s.erase_value)
    res = run_toy(data, s, device)
    summary = _summary(res)
    plotting.save(sweep_figure(summary, "SVHN toy"), out / "matsubara-svhn-toy-nz.png")
    return {"metrics": summary, "paper": PAPER_SVHN, "config": s, "data": data["source"]}


# Sec. V: 96 x 96 crops of 640 x 480 images, i.e. a patch of 15 % of the width and 20 % of the height.
PAPER_PATCH_RATIO = (96 / 640, 96 / 480)


@dataclass
class PatchSettings:
    patch: int = 48               # keeps the paper's patch-to-image ratio: 48/256 = 0.19, between 0.15 and 0.20
    stride: int = 8               # paper: stride 16 for 96 px patches; scaled with the patch
    image_size: int = 256
    # Pixel metrics against the ground truth at this size (the shared copy's 256 px; None: the files' own
    # size); the patch-score maps are upsampled to it (energyad.metrics).
    mask_size: int | None = 256
    n_crops: int = 10_000         # fresh random crops drawn every epoch
    n_conv: int = 4               # paper: five convolutions on 96 px (96 / 2**5 = 3); 48 / 2**4 = 3 likewise
    n_c: int = 32                 # selected from {16, 32, 64}
    n_z: int = 100
    categories: tuple | None = None         # real categories with masks to use; None: every one found
    max_real_categories: int | None = None  # at most this many of them (in MVTec AD's order)
    synthetic_fallback: bool = False        # no real category with masks: the synthetic ones, with a notice
    map_stride: int = 2           # Fig. 11: heat maps with a stride of 4 on 96 px patches; scaled
    vae: mt.VAESettings = field(default_factory=lambda: mt.VAESettings(epochs=30))


PATCH_FULL = PatchSettings()
# Quick: the real categories with masks (at most two) at 128 px with 24 px patches, the full profile's
# patch-to-image ratio (0.19) at half its size; a 3-convolution VAE (24 / 2**3 = 3, the paper's bottleneck).
# Without real data, the synthetic categories.
PATCH_QUICK = PatchSettings(patch=24, stride=8, image_size=128, n_crops=4000, n_conv=3, n_c=16, n_z=20,
                            max_real_categories=2, synthetic_fallback=True, map_stride=4,
                            vae=mt.VAESettings(epochs=10))

# The chapter's live teaching run on a synthetic category (large defects): 32 px patches on 64 px images,
# half the image (a departure from the paper's ratio, which the real categories keep).
PATCH_STAND_IN = PatchSettings(patch=32, stride=8, image_size=64, mask_size=64, n_crops=3000, n_conv=3, n_c=16,
                               n_z=20, synthetic_fallback=True, map_stride=4, vae=mt.VAESettings(epochs=6))

def patch_categories(s: PatchSettings) -> tuple[dict, bool]:
    """``({category: root}, stand_in)``: the real MVTec AD categories with masks under the data root
    (``s.categories``, at most ``s.max_real_categories``), or, when there is none and
    ``s.synthetic_fallback``, the synthetic categories (``stand_in`` True, a notice printed)."""
    from . import real_or_stand_in

    return real_or_stand_in(s.categories, max_real=s.max_real_categories, fallback=s.synthetic_fallback,
                            id="matsubara-mvtec")


@dataclass
class PatchRun:
    """One category's patch-wise run: the trained detector, the test set (images at ``image_size``,
    masks at ``mask_size``), the image AUROC of each part's worst patch and the patch-score maps."""
    detector: mt.MatsubaraVAEDetector
    images: torch.Tensor          # (N, C, image_size, image_size)
    masks: torch.Tensor           # (N, 1, mask_size, mask_size)
    labels: torch.Tensor          # (N,)
    defects: list
    auroc: dict                   # {part: image AUROC of the patches' maximum}
    maps: dict                    # {part: (N, nh, nw) patch scores, stride s.stride}
    has_masks: bool


def run_patch_category(root, category: str, s: PatchSettings, device, progress: bool = True, seed: int = 0,
                       loop=None) -> PatchRun:
    """Train the VAE on fresh random crops of one category's good images (health-checked: a failing
    model raises; the figures are in ``detector.health_figures``), then score every test patch.
    ``loop``: the training loop (:func:`energyad.methods.matsubara.train`; a resumable one in a run)."""
    import torch.nn.functional as F

    from ..data.mvtec import MVTecAD, load_split

    x_tr = load_split(MVTecAD(root, category, "train", image_size=s.image_size), progress)[0]
    test = MVTecAD(root, category, "test", image_size=s.mask_size)
    x_full, m_te, y_te, defects = load_split(test, progress)
    x_te = x_full if x_full.shape[-1] == s.image_size else F.interpolate(
        x_full, size=(s.image_size, s.image_size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    g = seed_everything(seed)
    det = mt.MatsubaraVAEDetector(MatsubaraVAE(x_tr.shape[1], s.patch, s.n_conv, s.n_c, s.n_z).to(device), s.vae)
    det.fit_crops(x_tr, s.n_crops, s.patch, g, progress, loop=loop)
    health = det.health(mt.random_crops(x_tr, min(s.n_crops, 1000), s.patch, g))
    health.model = f"VAE on {category} crops"
    det.health_figures = health.to_dict()
    health.raise_if_failed(category)
    maps = mt.patch_decompose(det.vae, x_te, s.patch, s.stride)
    aurocs = {p: metrics.image_auroc(maps[p].flatten(1).max(1).values, y_te) for p in PARTS}
    return PatchRun(det, x_te, m_te, y_te, defects, aurocs, maps, test.has_masks)


def pixel_metrics(run: PatchRun, s: PatchSettings) -> dict:
    """Pixel AUROC of each part's map and AUPRO of L and M (FPR up to 0.3), against the masks at their
    resolution; the patch scores become pixel maps by :func:`energyad.methods.matsubara.patch_pixel_map`
    (at the image size; the metrics upsample them to the masks'). Image level: the paired bootstrap
    interval of AUROC(M) - AUROC(L) over the test images.

    ``controls``: what scores that know nothing of the model reach on the same test set: the image's
    mean intensity (image AUROC), and the standard deviation of each patch's pixels (image AUROC of the
    worst patch; pixel AUROC of its map, a map that marks where the image has structure), and the rank
    correlation (Spearman) of each part's patch scores with that standard deviation over all test patches."""
    from scipy.stats import spearmanr

    out = {"pixel_auroc": {}, "aupro": {}, "controls": {}}
    for p in PARTS:
        px = mt.patch_pixel_map(run.maps[p], s.patch, s.stride, s.image_size)
        if run.has_masks:
            out["pixel_auroc"][p] = metrics.pixel_auroc(px, run.masks)
            if p in ("L", "M"):
                out["aupro"][p] = metrics.aupro(px, run.masks)
    worst = {p: run.maps[p].flatten(1).max(1).values for p in ("L", "M")}
    out["m_minus_l"] = metrics.paired_auroc_difference(worst["M"], worst["L"], run.labels)
    patches, (nh, nw) = mt.patch_grid(run.images, s.patch, s.stride)
    std = patches.flatten(1).std(1).view(len(run.images), nh, nw)
    out["controls"]["image_mean_intensity"] = metrics.image_auroc(run.images.flatten(1).mean(1), run.labels)
    out["controls"]["image_patch_std"] = metrics.image_auroc(std.flatten(1).max(1).values, run.labels)
    if run.has_masks:
        out["controls"]["pixel_patch_std"] = metrics.pixel_auroc(
            mt.patch_pixel_map(std, s.patch, s.stride, s.image_size), run.masks)
    # how closely each part's patch scores follow the image's structure, over every test patch
    out["controls"]["spearman_with_patch_std"] = {
        p: float(spearmanr(run.maps[p].flatten().numpy(), std.flatten().numpy())[0]) for p in PARTS}
    return out


def heatmap_figure(det, image: torch.Tensor, mask, s: PatchSettings, title: str = ""):
    """Fig. 11 style: the image, its ground truth, and the patch-score maps of L, D, A and M (stride
    ``s.map_stride``), each normalised to [0, 1], with the ground truth's outline; the raw range is in
    the panel title."""
    from matplotlib.figure import Figure

    maps = mt.patch_decompose(det.vae, image[None], s.patch, s.map_stride)
    fig = Figure(figsize=(13, 2.6), layout="constrained")
    axes = fig.subplots(1, 6)
    H, W = image.shape[1:]
    axes[0].imshow(image.permute(1, 2, 0).squeeze(-1).clamp(0, 1), cmap="gray")
    axes[0].set_title("image")
    axes[1].imshow(mask[0] if mask is not None else torch.zeros(image.shape[1:]), cmap="gray")
    axes[1].set_title("ground truth" if mask is not None else "no mask")
    nh, nw = maps["L"].shape[1:]
    c, st = s.patch / 2, s.map_stride                       # each score drawn at its patch's centre
    extent = (c - st / 2, c + (nw - 0.5) * st, c + (nh - 0.5) * st, c - st / 2)
    for ax, p in zip(axes[2:], PARTS):
        m = maps[p][0]
        ax.imshow(image.mean(0), cmap="gray", extent=(0, W, H, 0))
        ax.imshow((m - m.min()) / (m.max() - m.min()).clamp_min(1e-12), cmap="magma", extent=extent, alpha=0.75)
        if mask is not None and mask.sum() > 0:             # the mask's pixel centres in image coordinates
            hm, wm = mask.shape[-2:]
            ax.contour((torch.arange(wm) + 0.5) * W / wm, (torch.arange(hm) + 0.5) * H / hm, mask[0],
                       levels=[0.5], colors="cyan", linewidths=0.7)
        ax.set_xlim(0, W); ax.set_ylim(H, 0)
        ax.set_title(f"{p} ({m.min():.0f} to {m.max():.0f})", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title or f"patch scores, {s.patch} px patches, stride {s.map_stride} (cf. Fig. 11)")
    return fig


def _patch_settings(profile: str) -> PatchSettings:
    return PATCH_QUICK if profile == "quick" else PATCH_FULL


@experiment("matsubara-mvtec", chapter="matsubara", description="Matsubara et al.: patch-wise VAE detection "
            "(an image's score is its worst patch) on every real MVTec AD category with masks under the data "
            "root: image AUROC of L, D, A, M, pixel AUROC of each heat map, AUPRO of L and M, Fig. 11 heat "
            "maps (quick: at most two categories at 128 px, 24 px patches, synthetic stand-ins if none; full: "
            "48 px patches at 256 px, the paper's patch-to-image ratio, resumable training)")
def matsubara_mvtec(profile, out, device):
    from . import resume
    from .runner import record_settings, unit

    s = _patch_settings(profile)
    record_settings(s)
    cats, stand_in = patch_categories(s)
    per_cat = {}
    for cat, root in cats.items():
        def one_category(cat=cat, root=root):
            t0 = time.perf_counter()

            def loop(total, state, step, generator):      # saves model, optimiser, history, RNG states
                resume.resumable_loop(f"vae-{cat}", total, state, step, generator=generator)

            run = run_patch_category(root, cat, s, device, loop=loop)
            res = {"auroc": run.auroc, "health": run.detector.health_figures, **pixel_metrics(run, s),
                   "test_images": {"good": int((run.labels == 0).sum()), "defect": int(run.labels.sum())},
                   "mask_size": int(run.masks.shape[-1]) if run.has_masks else None}
            i = int(torch.nonzero(run.labels == 1)[0, 0])
            plotting.save(heatmap_figure(run.detector, run.images[i], run.masks[i] if run.has_masks else None, s,
                                         f"{cat}: a defective test image ({run.defects[i]}) and its patch scores "
                                         "(cf. Fig. 11)"),
                          out / f"matsubara-mvtec-heatmap-{cat}.png")
            res["seconds"] = time.perf_counter() - t0
            return res
        per_cat[cat] = unit(f"category-{cat}", one_category)
    keys = ("auroc", "pixel_auroc", "aupro", "m_minus_l", "controls", "health", "test_images", "mask_size")
    m = {k: {c: r[k] for c, r in per_cat.items()} for k in keys}
    m["seconds_per_category"] = {c: r["seconds"] for c, r in per_cat.items()}
    m["stand_in"] = stand_in
    m["sizes"] = {"image": s.image_size, "patch": s.patch, "stride": s.stride, "masks": s.mask_size}
    data = ("stand-in: synthetic MVTec-layout categories (energyad.data.synthetic); no real category with "
            "masks was found") if stand_in else \
        "MVTec AD: " + ", ".join(f"{c} at {r}/{c}" for c, r in cats.items())
    return {"metrics": m,
            "paper": {"note": "the paper's real-world data (screw holes, gears) are not public; no paper "
                      "number applies to MVTec AD. Fig. 11 is qualitative."}, "config": s, "data": data}
