"""Experiments of the Dehaene et al. chapter: Table 1 cells (4 baselines x reconstruction/projection),
convergence (Fig. 5) and inpainting (Fig. 4)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .. import metrics
from ..config import seed_everything
from ..methods import dehaene as dh
from ..networks.bergmann_ae import BergmannAE
from . import experiment, mvtec_categories

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
    width: int = 32                     # Bergmann et al.'s channels
    latent: int = 100                   # Sec. 4.1
    kinds: tuple = dh.KINDS
    categories: tuple | None = None     # None: every category present (with masks)
    synthetic: bool = False
    train: dh.AETrainSettings = field(default_factory=dh.AETrainSettings)
    projection: dh.ProjectionSettings = field(default_factory=dh.ProjectionSettings)


MVTEC_QUICK = MVTecSettings(image_size=32, width=8, synthetic=True, categories=("synthetic_object",),
                            train=dh.AETrainSettings(lr=1e-3, epochs=10, n_train=500),
                            projection=dh.ProjectionSettings(steps=60))
MVTEC_FULL = MVTecSettings()


def training_images(x_train: torch.Tensor, n: int, texture: bool, size: int, generator) -> torch.Tensor:
    """Sec. 4.1: textures -> random crops of the images resized to 4x the crop; objects -> rotations
    and translations; n training images in all."""
    from ..data.mvtec import object_augment, texture_random_crops

    if texture:
        return texture_random_crops(x_train, n, crop=size, resize=4 * size, generator=generator)
    idx = torch.randint(len(x_train), (n,), generator=generator)
    return object_augment(x_train[idx], max_rotation_deg=5, max_translation=0.03, generator=generator)


def run_category(root, category: str, s: MVTecSettings, device, progress: bool = True, seed: int = 0):
    """Train each baseline on one category; return ({kind: model}, test tensors, results)."""
    from ..data.mvtec import TEXTURES, MVTecAD, load_split

    texture = category in TEXTURES or "texture" in category
    load_size = 4 * s.image_size if texture else s.image_size
    x_tr = load_split(MVTecAD(root, category, "train", image_size=load_size), progress)[0]
    test = MVTecAD(root, category, "test", image_size=s.image_size)
    x_te, m_te, y_te, defects = load_split(test, progress)
    models, res = {}, {}
    for kind in s.kinds:
        g = seed_everything(seed)
        x_aug = training_images(x_tr, s.train.n_train, texture, s.image_size, g)
        net = BergmannAE(x_tr.shape[1], s.image_size, s.latent, kind in ("vae", "gamma_vae"), s.width)
        model = dh.AutoencoderModel(net, kind).to(device)
        dh.train_autoencoder(model, x_aug, s.train, g, progress)
        with torch.no_grad():
            stop = torch.cat([model.loss_r(x_aug[i:i + 256].to(device)) for i in range(0, len(x_aug), 256)]).min().item()
        proj_s = replace(s.projection, stop_loss=stop)
        xd = x_te.to(device)
        with torch.no_grad():
            recon_map = dh.dssim_map(xd, model.reconstruct(xd)).cpu()
        xt, info = dh.project(model, xd, proj_s)
        proj_map = dh.dssim_map(xd, xt).cpu()
        res[kind] = {"reconstruction": metrics.pixel_auroc(recon_map, m_te), "projection": metrics.pixel_auroc(proj_map, m_te),
                     "aupro_reconstruction": metrics.aupro(recon_map, m_te), "aupro_projection": metrics.aupro(proj_map, m_te),
                     "mean_iterations": info["stopped_at"].float().mean().item()}
        models[kind] = (model, proj_s)
    return models, (x_te, m_te, y_te, defects), res


@experiment("dehaene-mvtec", chapter="dehaene", description="Dehaene et al.: Table 1 cells, 4 baselines x "
            "{reconstruction, projection}, pixel AUROC and AUPRO (quick: a synthetic category at 32 px)")
def dehaene_mvtec(profile, out, device):
    s = MVTEC_QUICK if profile == "quick" else MVTEC_FULL
    cats = mvtec_categories(s.categories, s.synthetic, need_masks=True)
    results = {}
    for c, root in cats.items():
        _, _, results[c] = run_category(root, c, s, device)
    return {"metrics": results, "paper": PAPER_TABLE1, "config": s,
            "data": "synthetic MVTec-layout categories" if s.synthetic else f"MVTec AD: {', '.join(cats)}"}
