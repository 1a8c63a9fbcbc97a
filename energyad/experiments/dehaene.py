"""Experiments of the Dehaene et al. chapter: Table 1 cells (4 baselines x reconstruction/projection),
the improvement rates of Fig. 10, Table 2 (Zimmerer et al.'s scores), convergence (Fig. 5), inpainting
(Fig. 4), and one-class MNIST."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .. import metrics, plotting
from ..config import seed_everything
from ..methods import dehaene as dh
from ..methods import zimmerer
from ..networks.bergmann_ae import BergmannAE
from . import experiment, mvtec_categories, real_or_stand_in

# Table 1 (pixel AUROC): per category, (baseline reconstruction, projection "grad") for each autoencoder.
_TABLE1 = """
carpet      0.539 0.734 0.545 0.774 0.580 0.735 0.648 0.727
grid        0.960 0.981 0.960 0.980 0.888 0.961 0.950 0.979
leather     0.751 0.921 0.710 0.602 0.834 0.925 0.818 0.897
tile        0.476 0.575 0.496 0.626 0.465 0.654 0.491 0.581
wood        0.630 0.805 0.641 0.738 0.695 0.838 0.665 0.809
bottle      0.909 0.916 0.933 0.951 0.902 0.922 0.913 0.931
cable       0.732 0.864 0.790 0.859 0.828 0.910 0.777 0.880
capsule     0.786 0.952 0.769 0.884 0.862 0.917 0.814 0.917
hazelnut    0.976 0.984 0.966 0.966 0.977 0.976 0.977 0.988
metal_nut   0.880 0.899 0.881 0.920 0.881 0.907 0.883 0.914
pill        0.885 0.912 0.895 0.927 0.888 0.930 0.897 0.935
screw       0.979 0.980 0.983 0.925 0.958 0.945 0.976 0.972
toothbrush  0.971 0.983 0.973 0.984 0.971 0.985 0.971 0.983
transistor  0.906 0.921 0.904 0.934 0.894 0.919 0.896 0.931
zipper      0.680 0.889 0.828 0.887 0.814 0.869 0.706 0.871
"""
PAPER_TABLE1 = {
    row.split()[0]: {kind: {"reconstruction": float(v[2 * i]), "projection": float(v[2 * i + 1])}
                     for i, kind in enumerate(dh.KINDS)}
    for row in _TABLE1.strip().splitlines() for v in [row.split()[1:]]
}


@dataclass
class MVTecSettings:
    image_size: int = 128
    # Pixel metrics against the ground truth at this size (the shared copy's 256 px; None: the image size);
    # the DSSIM maps are upsampled to it (energyad.metrics).
    mask_size: int | None = 256
    width: int = 32                     # Bergmann et al.'s channels
    latent: int = 100                   # Sec. 4.1
    kinds: tuple = dh.KINDS
    categories: tuple | None = None     # real categories with masks to use; None: every one found
    max_real_categories: int | None = None   # at most this many of them (in MVTec AD's order)
    synthetic: bool = False             # the synthetic stand-ins only (the chapter's live teaching run)
    synthetic_fallback: bool = False    # no real category with masks: the stand-ins, with a notice
    stand_in_categories: tuple = ("synthetic_texture", "synthetic_object")
    decoder_var: float = 0.01           # ours: VAE decoder variance, gamma-VAE's initial gamma (paper: not given)
    health: dh.HealthRules = field(default_factory=dh.HealthRules)
    train: dh.AETrainSettings = field(default_factory=dh.AETrainSettings)
    projection: dh.ProjectionSettings = field(default_factory=dh.ProjectionSettings)


# Quick: every real category with masks under the data root (at most two: transistor and screw in the
# shared copy) at 32 px with width 8; pixel metrics at the masks' 256 px. Without real data, the synthetic
# stand-in (with a notice). Full: 128 px and the paper's training (300 epochs over 10,000 images).
MVTEC_QUICK = MVTecSettings(image_size=32, width=8, max_real_categories=2, synthetic_fallback=True,
                            stand_in_categories=("synthetic_object",),
                            train=dh.AETrainSettings(lr=1e-3, epochs=10, n_train=500, kl_warmup=5),
                            projection=dh.ProjectionSettings(steps=60))
MVTEC_FULL = MVTecSettings(train=dh.AETrainSettings(kl_warmup=10))
# The chapter's live teaching run: the synthetic object category (large defects), 32 px.
MVTEC_STAND_IN = replace(MVTEC_QUICK, synthetic=True, mask_size=None, max_real_categories=None)

def categories_for(s: MVTecSettings, id: str = "this experiment") -> tuple[dict, bool]:
    """``({category: root}, stand_in)``: the real MVTec AD categories with masks under the data root
    (``s.categories``, at most ``s.max_real_categories``), or the synthetic ones (``stand_in`` True) when
    ``s.synthetic``, or when there is no real one and ``s.synthetic_fallback`` (a notice is printed)."""
    if s.synthetic:
        return mvtec_categories(s.stand_in_categories, synthetic=True), True
    return real_or_stand_in(s.categories, max_real=s.max_real_categories, fallback=s.synthetic_fallback,
                            stand_in=s.stand_in_categories, id=id)


def data_description(cats: dict, stand_in: bool, s: MVTecSettings) -> str:
    """The data a result used, named relative to the data root (the runner rewrites the root)."""
    size = f"{s.image_size} px, masks at {s.mask_size or s.image_size} px"
    if stand_in:
        return f"stand-in: synthetic MVTec-layout categories ({', '.join(cats)}), {size}"
    return f"MVTec AD ({', '.join(f'{root}/{c}' for c, root in cats.items())}), {size}"


def training_images(x_train: torch.Tensor, n: int, texture: bool, size: int, generator) -> torch.Tensor:
    """Sec. 4.1: textures -> random crops of the images resized to 4x the crop; objects -> rotations
    and translations; n training images in all. The paper does not give the augmentation's ranges: the
    ±5° rotations and 3 % shifts are ours."""
    from ..data.mvtec import object_augment, texture_random_crops

    if texture:
        return texture_random_crops(x_train, n, crop=size, resize=4 * size, generator=generator)
    idx = torch.randint(len(x_train), (n,), generator=generator)
    return object_augment(x_train[idx], max_rotation_deg=5, max_translation=0.03, generator=generator)


def test_tiles(x, m, y, defects, size: int):
    """Cut test images (N, C, k*size, k*size) and their masks into k*k tiles of ``size`` (raster order), so
    that textures are scored at the scale of their training crops (Sec. 4.1). A tile is labelled anomalous
    when its mask has defect pixels (masks of another resolution are cut into the same k x k grid) (or, without masks, when its image is). Pixel AUROC over the tiles equals
    pixel AUROC over the whole images; AUPRO sees defects cut at tile borders as separate regions."""
    k = x.shape[-1] // size

    def cut(t, n):
        return t.unfold(2, n, n).unfold(3, n, n).permute(0, 2, 3, 1, 4, 5).reshape(-1, t.shape[1], n, n)

    xt, mt = cut(x, size), cut(m, m.shape[-1] // k)   # masks may be finer than the images (same k x k grid)
    yt = (mt.flatten(1).amax(1) > 0).long() if m.sum() > 0 else y.repeat_interleave(k * k)
    return xt, mt, yt, [d for d in defects for _ in range(k * k)]


def stop_threshold(model, x_train: torch.Tensor) -> float:
    """Sec. 4.1: the minimum of L_r over the training images (L_r: the reconstruction term only)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model.loss_r(x_train[i:i + 256].to(device)) for i in range(0, len(x_train), 256)]).min().item()


def segmentation_threshold(model, x_train: torch.Tensor, q: float = 0.99) -> float:
    """A DSSIM threshold from normal *training* images: the q-quantile of DSSIM(x, f(x)) over their pixels
    (ours; the paper's Fig. 3 uses a fixed 0.2). Test pixels are never used to choose it."""
    device = next(model.parameters()).device
    with torch.no_grad():
        maps = torch.cat([dh.dssim_map(xb, model.reconstruct(xb)).cpu()
                          for xb in (x_train[i:i + 256].to(device) for i in range(0, len(x_train), 256))])
    return metrics.quantile_threshold(maps, q)


def fit_baseline(kind: str, x_train: torch.Tensor, x_check: torch.Tensor, s, device, generator, progress=True,
                 name: str | None = None, out_sigmoid: bool = False, strict: bool = True, loop=None):
    """Train one baseline and check its health on ``x_check`` (distinct images); raises
    :class:`energyad.health.DegenerateModelError` when the model ignores its input or its posterior
    collapsed (``strict=False``: only record it, for ablations whose point is a failing model).
    ``loop``: the training loop (see :func:`energyad.methods.dehaene.train_autoencoder`).
    Returns ``(model, health_dict, training_curve)``."""
    net = BergmannAE(x_train.shape[1], s.image_size, s.latent, kind in ("vae", "gamma_vae"), s.width, out_sigmoid)
    model = dh.AutoencoderModel(net, kind, getattr(s, "decoder_var", 1.0)).to(device)
    hist = dh.train_autoencoder(model, x_train, s.train, generator, progress, loop=loop)
    h = dh.autoencoder_health(model, x_check.to(device), hist, getattr(s, "health", None), name=name or kind)
    if strict:
        h.raise_if_failed(name or kind)
    return model, h.to_dict(), hist


def resumable(key: str):
    """A training loop for :func:`fit_baseline` that saves model, optimiser, history and every random
    state under ``key`` and stops cleanly at ``reproduce --max-minutes`` (:mod:`.resume`); outside a
    ``reproduce`` run it simply runs."""
    from . import resume

    def loop(total, state, step, generator):
        resume.resumable_loop(key, total, state, step, generator=generator)

    return loop


def load_category(root, category: str, s: MVTecSettings, progress: bool = True):
    """``(texture, x_train, (x_test, m_test, y_test, defects))``: training images at the training scale
    (textures: resized to 4x the crop size), test images at ``s.image_size`` (textures: the 4 x 4 tiles
    of the image at 4x the crop size, :func:`test_tiles`) and masks at ``s.mask_size`` (None: the
    images' size; never coarser than the images that are cut into tiles)."""
    import torch.nn.functional as F

    from ..data.mvtec import TEXTURES, MVTecAD, load_split

    texture = category in TEXTURES or "texture" in category
    load_size = 4 * s.image_size if texture else s.image_size
    x_tr = load_split(MVTecAD(root, category, "train", image_size=load_size), progress)[0]
    mask_size = max(s.mask_size or load_size, load_size)   # never coarser than the maps (texture tiles)
    x_te, m_te, y_te, defects = load_split(MVTecAD(root, category, "test", image_size=mask_size), progress)
    if x_te.shape[-1] != load_size:
        x_te = F.interpolate(x_te, size=(load_size, load_size), mode="bilinear", antialias=True,
                             align_corners=False).clamp(0, 1)
    if texture:   # test at the training scale: the 4 x 4 tiles of the image resized to 4x the crop size
        x_te, m_te, y_te, defects = test_tiles(x_te, m_te, y_te, defects, s.image_size)
    return texture, x_tr, (x_te, m_te, y_te, defects)


def project_in_chunks(model, x: torch.Tensor, s: dh.ProjectionSettings, chunk: int = 256):
    """``(x_T, stopped_at)`` of :func:`energyad.methods.dehaene.project` over ``x`` in chunks of ``chunk``
    images (each image is projected on its own: a chunk bounds the memory of a tiled texture's test set,
    ~1,900 tiles at 128 px in the full profile)."""
    out = [dh.project(model, x[i:i + chunk], s) for i in range(0, len(x), chunk)]
    return torch.cat([xt for xt, _ in out]), torch.cat([info["stopped_at"] for _, info in out])


def run_category(root, category: str, s: MVTecSettings, device, progress: bool = True, seed: int = 0,
                 key: str | None = None):
    """Train each baseline on one category; return ({kind: (model, projection settings)}, test tensors,
    results). Each result carries the model's health figures. Texture test images are cut into tiles at
    the training crops' scale (:func:`test_tiles`). ``key``: train through resumable loops saved under
    ``<key>-<kind>`` (:func:`resumable`)."""
    texture, x_tr, (x_te, m_te, y_te, defects) = load_category(root, category, s, progress)
    models, res = {}, {}
    for kind in s.kinds:
        g = seed_everything(seed)
        x_aug = training_images(x_tr, s.train.n_train, texture, s.image_size, g)
        model, health, _ = fit_baseline(kind, x_aug, x_te[:256], s, device, g, progress, f"{kind} on {category}",
                                        loop=resumable(f"{key}-{kind}") if key else None)
        proj_s = replace(s.projection, stop_loss=stop_threshold(model, x_aug))
        xd = x_te.to(device)
        with torch.no_grad():
            recon_map = dh.dssim_map(xd, model.reconstruct(xd)).cpu()
        xt, stopped_at = project_in_chunks(model, xd, proj_s)
        proj_map = dh.dssim_map(xd, xt).cpu()
        res[kind] = {"reconstruction": metrics.pixel_auroc(recon_map, m_te), "projection": metrics.pixel_auroc(proj_map, m_te),
                     "aupro_reconstruction": metrics.aupro(recon_map, m_te), "aupro_projection": metrics.aupro(proj_map, m_te),
                     "mean_iterations": stopped_at.float().mean().item(), "health": health}
        models[kind] = (model, proj_s)
    return models, (x_te, m_te, y_te, defects), res


def test_counts(m_te: torch.Tensor, y_te: torch.Tensor) -> dict:
    """How many test images (or tiles) and defect pixels the pixel metrics saw, and at what mask size."""
    return {"good": int((y_te == 0).sum()), "defect": int((y_te == 1).sum()), "mask_size": int(m_te.shape[-1]),
            "defect_pixel_share": float(m_te.float().mean())}


@experiment("dehaene-mvtec", chapter="dehaene", description="Dehaene et al.: Table 1 cells, 4 baselines x "
            "{reconstruction, projection}, pixel AUROC and AUPRO on every real MVTec AD category with masks "
            "under the data root (quick: at most two at 32 px, masks at 256 px; synthetic stand-in if none)")
def dehaene_mvtec(profile, out, device):
    from .runner import unit

    s = MVTEC_QUICK if profile == "quick" else MVTEC_FULL
    cats, stand_in = categories_for(s, "dehaene-mvtec")
    results = {}
    for c, root in cats.items():   # one resumable unit per category; inside it, resumable training loops
        def one(c=c, root=root):
            _, (_, m_te, y_te, _), res = run_category(root, c, s, device, key=f"train-{c}")
            counts = test_counts(m_te, y_te)
            return {k: {**v, "test": counts} for k, v in res.items()}
        results[c] = unit(f"category-{c}", one)
    return {"metrics": {**results, "stand_in": stand_in}, "paper": PAPER_TABLE1, "config": s,
            "data": data_description(cats, stand_in, s)}


def improvement_rates(cells) -> torch.Tensor:
    """Appendix F (Fig. 10): (AUC_grad - AUC_base) / AUC_base for every (category, baseline) cell of a
    ``{category: {kind: {"reconstruction", "projection"}}}`` table (Table 1's layout)."""
    return torch.tensor([(v["projection"] - v["reconstruction"]) / v["reconstruction"]
                         for row in cells.values() if isinstance(row, dict) for v in row.values()
                         if isinstance(v, dict) and "projection" in v])


# --- Table 2 (appendix A): single-gradient scores of Zimmerer et al. with the same VAE ------------------
_TABLE2 = """
carpet      0.537 0.580 0.566 0.553 0.555 0.735
grid        0.823 0.635 0.812 0.507 0.790 0.961
leather     0.783 0.650 0.792 0.627 0.791 0.925
tile        0.547 0.606 0.581 0.623 0.588 0.654
wood        0.686 0.691 0.726 0.643 0.713 0.838
bottle      0.831 0.762 0.832 0.629 0.830 0.922
cable       0.831 0.796 0.846 0.674 0.841 0.910
capsule     0.765 0.754 0.772 0.642 0.795 0.917
hazelnut    0.907 0.831 0.908 0.468 0.885 0.976
metal_nut   0.833 0.831 0.870 0.710 0.834 0.907
pill        0.869 0.833 0.872 0.480 0.826 0.930
screw       0.851 0.726 0.842 0.412 0.795 0.945
toothbrush  0.942 0.798 0.943 0.619 0.939 0.985
transistor  0.788 0.843 0.834 0.801 0.836 0.919
zipper      0.725 0.674 0.729 0.562 0.727 0.869
"""
TABLE2_COLUMNS = zimmerer.SCORES + ("projection",)   # the last column is "VAE-grad"
PAPER_TABLE2 = {row.split()[0]: dict(zip(TABLE2_COLUMNS, map(float, row.split()[1:])))
                for row in _TABLE2.strip().splitlines()}

ZIMMERER_QUICK = replace(MVTEC_QUICK, kinds=("vae",))   # stand-ins if no real data: both synthetic categories
ZIMMERER_FULL = replace(MVTEC_FULL, kinds=("vae",))


def zimmerer_category(root, category: str, s: MVTecSettings, device, progress: bool = True,
                      ablate_identity: bool = False, key: str | None = None) -> dict:
    """Pixel AUROC of the five Table 2 scores and of the projection, with one VAE (and its health).
    ``ablate_identity``: also train the same VAE with the identity decoder covariance (decoder_var = 1)
    and record its health under ``"ablation_identity_covariance"`` (no AUROC: it is not checked to work).
    ``key``: train through resumable loops (:func:`resumable`)."""
    models, (x_te, m_te, y_te, _), res = run_category(root, category, s, device, progress, key=key)
    maps = zimmerer.score_maps(models["vae"][0], x_te.to(device))
    out = {k: metrics.pixel_auroc(v, m_te) for k, v in maps.items()}
    out["projection"], out["reconstruction_dssim"] = res["vae"]["projection"], res["vae"]["reconstruction"]
    out["health"], out["test"] = res["vae"]["health"], test_counts(m_te, y_te)
    if ablate_identity:
        texture, x_tr, _ = load_category(root, category, s, progress)
        g = seed_everything(0)
        x_aug = training_images(x_tr, s.train.n_train, texture, s.image_size, g)
        _, h, _ = fit_baseline("vae", x_aug, x_te[:256], replace(s, decoder_var=1.0), device, g, progress,
                               f"vae (identity covariance) on {category}", strict=False,
                               loop=resumable(f"{key}-vae-identity") if key else None)
        out["ablation_identity_covariance"] = h
    return out


@experiment("dehaene-zimmerer", chapter="dehaene", description="Dehaene et al., Table 2: Zimmerer et al.'s "
            "single-gradient VAE scores against the projection, pixel AUROC on every real MVTec AD category with "
            "masks (quick: at most two at 32 px, masks at 256 px; the synthetic stand-ins if none)")
def dehaene_zimmerer(profile, out, device):
    from .runner import unit

    s = ZIMMERER_QUICK if profile == "quick" else ZIMMERER_FULL
    cats, stand_in = categories_for(s, "dehaene-zimmerer")
    results = {c: unit(f"category-{c}", lambda c=c, root=root: zimmerer_category(
        root, c, s, device, ablate_identity=True, key=f"train-{c}")) for c, root in cats.items()}
    return {"metrics": {**results, "stand_in": stand_in}, "paper": PAPER_TABLE2, "config": s,
            "data": data_description(cats, stand_in, s)}


# --- Fig. 5 (appendix B): convergence of Eq. 5 against Eq. 8 ----------------------------------------------
def mean_image_pixel_auroc(maps: torch.Tensor, masks: torch.Tensor) -> float:
    """Fig. 5's measure: the pixel AUROC of each image that has defect and good pixels, averaged."""
    vals = [metrics.pixel_auroc(mp[None], mk[None]) for mp, mk in zip(maps, masks) if 0 < mk.sum() < mk.numel()]
    return float(sum(vals) / len(vals))


def convergence_curves(model, x: torch.Tensor, masks: torch.Tensor, s: dh.ProjectionSettings,
                       record_every: int = 2, chunk: int = 128) -> dict:
    """Mean per-image pixel AUROC (Fig. 5) of DSSIM(x_0, x_t) every ``record_every`` iterations, no stop
    criterion, for plain steps (Eq. 5) and error-weighted ones (Eq. 8):
    ``{"steps": [...], "none": [...], "error": [...], "pixel_none": [...], "pixel_error": [...]}``
    (``pixel_*``: the pixel AUROC over all pixels of all images, Table 1's measure). The images are
    projected ``chunk`` at a time, each chunk's iterates turned into DSSIM maps on the host before the
    next (the iterates of a whole texture test set at 128 px would not fit in a GPU's memory)."""
    out = {}
    for w in ("none", "error"):
        per_chunk = []
        for i in range(0, len(x), chunk):
            xc = x[i:i + chunk]
            _, info = dh.project(model, xc, replace(s, weighting=w, stop_loss=None, tol=0.0),
                                 return_trajectory=True, record_every=record_every)
            tr = info["trajectory"]
            per_chunk.append([dh.dssim_map(xc, tr[:, k]).cpu() for k in range(tr.shape[1])])
        maps = [torch.cat(step_maps) for step_maps in zip(*per_chunk)]
        out[w] = [mean_image_pixel_auroc(mp, masks) for mp in maps]
        out[f"pixel_{w}"] = [metrics.pixel_auroc(mp, masks) for mp in maps]
    out["steps"] = [record_every * k for k in range(len(out["none"]))]
    return out


# Quick: the first real category with masks (screw in the shared copy), masks at 64 px (the curves take 2 x 31
# pixel AUROCs over the test set); stand-in: the synthetic texture. Full: every real category with masks
# (the paper's Fig. 5 is grid).
CONVERGENCE_QUICK = replace(MVTEC_QUICK, kinds=("gamma_vae",), mask_size=64, max_real_categories=1,
                            stand_in_categories=("synthetic_texture",), projection=dh.ProjectionSettings(steps=60))
CONVERGENCE_FULL = replace(MVTEC_FULL, kinds=("gamma_vae",), projection=dh.ProjectionSettings(steps=300))


@experiment("dehaene-convergence", chapter="dehaene", description="Dehaene et al., Fig. 5: pixel AUROC per "
            "iteration, Eq. 5 against Eq. 8, gamma-VAE (quick: the first real category with masks, 32 px; "
            "synthetic texture if none; full: every real category with masks, 128 px)")
def dehaene_convergence(profile, out, device):
    from .runner import unit

    s = CONVERGENCE_QUICK if profile == "quick" else CONVERGENCE_FULL
    cats, stand_in = categories_for(s, "dehaene-convergence")
    results = {}
    for c, root in cats.items():
        def one(c=c, root=root):
            models, (x_te, m_te, y_te, _), res = run_category(root, c, s, device, key=f"train-{c}")
            model, proj_s = models["gamma_vae"]
            r = convergence_curves(model, x_te.to(device), m_te, proj_s)
            r["health"], r["test"] = res["gamma_vae"]["health"], test_counts(m_te, y_te)
            return r
        results[c] = unit(f"category-{c}", one)
        fig = plotting.line_plot(results[c]["steps"], {"Eq. 5 (plain)": results[c]["none"],
                                 "Eq. 8 (error-weighted)": results[c]["error"]}, "iteration",
                                 "mean per-image pixel AUROC", f"gamma-VAE on {c} (cf. Fig. 5)")
        plotting.save(fig, out / f"dehaene-convergence-{c}.png")
    return {"metrics": {**results, "stand_in": stand_in},
            "paper": {"note": "Fig. 5 (grid, gamma-VAE): mean per-image pixel AUROC; the error-weighted update "
                              "reaches the plain update's AUROC in far fewer iterations"},
            "config": s, "data": data_description(cats, stand_in, s)}


# --- Fig. 4: inpainting on CelebA ------------------------------------------------------------------------
@dataclass
class InpaintSettings:
    """Sec. 4.2 uses a gamma-VAE with the ResNet of Dai & Wipf (2019). We have no implementation of that
    ResNet: both profiles use Bergmann et al.'s network; the full profile uses the gamma-VAE, the quick
    profile the plain VAE (whose L_r = 1/2 ||x - f||^2 keeps the paper's step size meaningful: the
    gamma-VAE's gradient is scaled by 1/gamma). The projection takes the paper's plain steps."""
    n_faces: int | None = 1200          # None: every face in the data root (the shared copy has 12,000)
    n_test: int = 8
    size: int = 64                      # Sec. 4.2: CelebA at 64 x 64
    width: int = 8
    kind: str = "vae"
    decoder_var: float = 0.01           # ours, as in MVTecSettings
    health: dh.HealthRules = field(default_factory=dh.HealthRules)
    band: tuple = (20, 36, 14, 50)      # rows and columns of the damaged band (over the eyes)
    control_alpha: float | None = 0.2   # control run: Eq. 7 with this smaller step (None: no control)
    train: dh.AETrainSettings = field(default_factory=lambda: dh.AETrainSettings(lr=1e-3, epochs=10, n_train=1200,
                                                                                 kl_warmup=5))
    projection: dh.ProjectionSettings = field(default_factory=lambda: dh.ProjectionSettings(
        alpha=0.5, lam=0.05, steps=100, optimizer="sgd", weighting="mask"))


INPAINT_QUICK = InpaintSettings()
INPAINT_FULL = InpaintSettings(n_faces=None, width=32, kind="gamma_vae",
                               train=dh.AETrainSettings(n_train=10_000, kl_warmup=10))


def inpaint(model, damaged: torch.Tensor, mask: torch.Tensor, s: dh.ProjectionSettings,
            control_alpha: float | None = None) -> dict:
    """Known-mask inpainting (Eq. 7) and blind inpainting (Eq. 8) of ``damaged`` images; ``blind_adam``:
    Eq. 8 with Adam (Sec. 3.4), which divides the Eq. 8 weight out again; ``known_control``: Eq. 7 with the
    step ``control_alpha`` (a control run on the step size). ``energy``: mean E at the first and last step."""
    runs = {"known": (replace(s, weighting="mask"), mask), "blind": (replace(s, weighting="error"), None),
            "blind_adam": (replace(s, weighting="error", optimizer="adam", alpha=0.02), None)}
    if control_alpha is not None:
        runs["known_control"] = (replace(s, weighting="mask", alpha=control_alpha), mask)
    out, energy = {}, {}
    for k, (ps, m) in runs.items():
        out[k], info = dh.project(model, damaged, ps, mask=m)
        energy[k] = {"first": info["energy"][0].mean().item(), "last": info["energy"][-1].mean().item(), "alpha": ps.alpha}
    with torch.no_grad():
        out["reconstruction"] = model.reconstruct(damaged)
    out["energy"] = energy
    return out


def inpaint_faces(s: InpaintSettings, device, progress: bool = True, seed: int = 0) -> dict:
    """Train a (gamma-)VAE on faces, damage a band of held-out faces with noise, inpaint; return images,
    the mean squared errors inside and outside the band, and the model's health."""
    from ..data import load_celeba

    faces = load_celeba(n=s.n_faces, size=s.size, progress=progress)
    g = seed_everything(seed)
    train_f, test_f = faces[:-s.n_test], faces[-s.n_test:]
    n = min(s.train.n_train, len(train_f))
    net_s = MVTecSettings(image_size=s.size, width=s.width, train=s.train, decoder_var=s.decoder_var, health=s.health)
    model, health, _ = fit_baseline(s.kind, train_f[:n], train_f[-256:], net_s, device, g, progress, f"{s.kind} on faces")
    r0, r1, c0, c1 = s.band
    mask = torch.zeros_like(test_f[:, :1])
    mask[:, :, r0:r1, c0:c1] = 1
    damaged = test_f * (1 - mask) + mask * torch.rand(test_f.shape, generator=g)
    out = inpaint(model, damaged.to(device), mask.to(device), s.projection, s.control_alpha)
    energy = out.pop("energy")
    res = {k: v.cpu() for k, v in out.items()}
    res.update(original=test_f, damaged=damaged, mask=mask, health=health, model=model, energy=energy)

    def mse(x, region):
        w = region.expand_as(x)
        return float(((x - test_f) ** 2 * w).sum() / w.sum())

    res["mse"] = {k: {"inside": mse(res[k], mask), "outside": mse(res[k], 1 - mask)}
                  for k in ("damaged", "reconstruction", "known", "blind", "blind_adam", "known_control") if k in res}
    return res


@experiment("dehaene-inpaint", chapter="dehaene", description="Dehaene et al., Fig. 4: inpainting of CelebA "
            "faces at 64 px, known mask (Eq. 7) against blind (Eq. 8); needs CelebA under the data root",
            needs=("celeba",))
def dehaene_inpaint(profile, out, device):
    s = INPAINT_QUICK if profile == "quick" else INPAINT_FULL
    res = inpaint_faces(s, device)
    keys = ("original", "damaged", "reconstruction", "known", "blind", "blind_adam")
    fig = plotting.image_grid(torch.cat([res[k] for k in keys]), nrow=s.n_test)
    fig.suptitle("original; damaged; reconstruction; known mask (Eq. 7); blind (Eq. 8); blind with Adam (cf. Fig. 4)")
    plotting.save(fig, out / "dehaene-inpaint.png")
    return {"metrics": {"mse": res["mse"], "energy": res["energy"], "health": res["health"]}, "paper": {"note": "Fig. 4 and Fig. 8 are qualitative"},
            "config": s, "data": f"CelebA, {s.n_faces or 'all'} faces at {s.size} px"}


# --- One-class MNIST (not in the paper) ------------------------------------------------------------------
@dataclass
class MnistSettings:
    digits: tuple = (1, 7)
    kinds: tuple = ("l2ae", "vae")
    n_train: int | None = 1000
    n_test: int | None = 500
    width: int = 8
    image_size: int = 32                # MNIST padded from 28 to 32 px
    latent: int = 100
    decoder_var: float = 0.01           # ours: VAE decoder variance, gamma-VAE's initial gamma
    health: dh.HealthRules = field(default_factory=dh.HealthRules)
    train: dh.AETrainSettings = field(default_factory=lambda: dh.AETrainSettings(lr=1e-3, epochs=10, kl_warmup=5))
    projection: dh.ProjectionSettings = field(default_factory=lambda: dh.ProjectionSettings(steps=60))


MNIST_QUICK = MnistSettings()
MNIST_FULL = MnistSettings(digits=tuple(range(10)), kinds=dh.KINDS, n_train=None, n_test=None, width=32,
                           train=dh.AETrainSettings(epochs=100, kl_warmup=10))


def mnist_digit(digit: int, s: MnistSettings, data, device, progress: bool = True, seed: int = 0,
                keep_models: bool = False) -> dict:
    """One-class MNIST (padded to 32 px): image AUROC of the mean DSSIM map, reconstruction vs projection,
    with each model's health figures under ``"health"`` and the mean number of projection steps."""
    from ..data import one_class_split

    x_tr, x_te, y_te = one_class_split(data[0], data[1], digit, s.n_train, s.n_test, seed=seed)
    pad = lambda x: torch.nn.functional.pad(x, (2, 2, 2, 2))
    x_tr, x_te = pad(x_tr), pad(x_te).to(device)
    res, models = {"health": {}}, {}
    for kind in s.kinds:
        g = seed_everything(seed)
        model, health, _ = fit_baseline(kind, x_tr, x_te[:256], replace(s, train=replace(s.train, n_train=len(x_tr))),
                                        device, g, progress, f"{kind} on digit {digit}")
        with torch.no_grad():
            rec = dh.dssim_map(x_te, model.reconstruct(x_te)).flatten(1).mean(1).cpu()
        xt, info = dh.project(model, x_te, replace(s.projection, stop_loss=stop_threshold(model, x_tr)))
        proj = dh.dssim_map(x_te, xt).flatten(1).mean(1).cpu()
        res[kind] = {"reconstruction": metrics.image_auroc(rec, y_te), "projection": metrics.image_auroc(proj, y_te),
                     "mean_iterations": info["stopped_at"].float().mean().item()}
        res["health"][kind] = health
        models[kind] = model
    if keep_models:
        res["_models"], res["_test"] = models, (x_te.cpu(), y_te)
    return res


def reconstruction_figure(models: dict, x: torch.Tensor, title: str):
    """Inputs in the first row, each model's reconstruction below: a model that ignores its input shows
    the same image across a row."""
    rows = [x]
    with torch.no_grad():
        rows += [m.reconstruct(x.to(next(m.parameters()).device)).cpu() for m in models.values()]
    fig = plotting.image_grid(torch.cat(rows), nrow=len(x), titles=[("input" if r == 0 else list(models)[r - 1])
                                                                   for r in range(len(rows)) for _ in range(len(x))])
    fig.suptitle(title)
    return fig


@experiment("dehaene-mnist", chapter="dehaene", description="Dehaene et al. on one-class MNIST (our set-up, not "
            "in the paper): image AUROC of the mean DSSIM, reconstruction against projection")
def dehaene_mnist(profile, out, device):
    from ..data import load_mnist_or_standin

    s = MNIST_QUICK if profile == "quick" else MNIST_FULL
    tr, te = load_mnist_or_standin("train"), load_mnist_or_standin("test")
    per_digit, figures = {}, []
    for d in s.digits:
        r = mnist_digit(d, s, (tr[:2], te[:2]), device, keep_models=True)
        x_te, y_te = r.pop("_test")
        fig = reconstruction_figure(r.pop("_models"), x_te[:8], f"digit {d}: test inputs and reconstructions")
        plotting.save(fig, out / f"dehaene-mnist-reconstructions-{d}.png")
        per_digit[str(d)] = r
    health = {d: per_digit[d].pop("health") for d in per_digit}
    # ablation: the L2AE of the first digit with a sigmoid after the decoder (our earlier network)
    from ..data import one_class_split

    d0 = s.digits[0]
    x_tr, x_te, _ = one_class_split(tr[:2], te[:2], d0, s.n_train, s.n_test, seed=0)
    x_tr, x_te = (torch.nn.functional.pad(v, (2, 2, 2, 2)) for v in (x_tr, x_te))
    g = seed_everything(0)
    _, h_sig, _ = fit_baseline("l2ae", x_tr, x_te[:256], replace(s, train=replace(s.train, n_train=len(x_tr))), device, g,
                               True, f"l2ae with output sigmoid on digit {d0}", out_sigmoid=True, strict=False)
    mean = {k: {m: sum(r[k][m] for r in per_digit.values()) / len(per_digit) for m in ("reconstruction", "projection")}
            for k in s.kinds}
    return {"metrics": {"auroc": per_digit, "mean_auroc": mean, "health": health,
                        "ablation": {f"l2ae_sigmoid_digit_{d0}": h_sig}},
            "paper": {"note": "the paper reports no MNIST results"}, "config": s, "data": tr[2]}
