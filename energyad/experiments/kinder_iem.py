"""Experiments of the Kinder chapter, part 2: the neural introspective energy model on MNIST (our
set-up), on MVTec AD (Table 5) and with AlexNet's kernels (Table 7)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import metrics, plotting
from ..data.mvtec import CATEGORIES
from ..health import DegenerateModelError
from ..methods.kinder_iem import ALEXNET_SETTINGS, IEMSettings, IntrospectiveEnergyModel
from ..networks.kinder import TABLE4, IEMForward, Transition, alexnet_forward
from . import experiment
from .runner import unit

PAPER_TABLE5 = {"bottle": 99.0, "cable": 78.5, "capsule": 72.1, "hazelnut": 94.8, "metal_nut": 53.6, "pill": 82.8,
                "screw": 100.0, "toothbrush": 95.8, "transistor": 95.7, "zipper": 97.8, "carpet": 94.1, "grid": 93.1,
                "leather": 96.8, "tile": 87.2, "wood": 97.0, "mean": 87.9}
PAPER_TABLE7 = {"bottle": 98.9, "cable": 89.5, "capsule": 78.3, "hazelnut": 98.9, "metal_nut": 79.2, "pill": 85.5,
                "screw": 88.7, "toothbrush": 96.9, "transistor": 89.3, "zipper": 90.8, "carpet": 91.0, "grid": 80.1,
                "leather": 96.8, "tile": 99.1, "wood": 99.2, "mean": 90.8}


@dataclass
class IEMMnistSettings:
    """Our set-up: the thesis runs the neural IEM on MVTec only. A small Table-4-shaped model for 28x28."""
    digits: tuple = tuple(range(10))
    n_train: int | None = 1000
    n_test: int | None = 2000
    transitions: tuple = (Transition(8, 3), Transition(16, 3))              # 28 -> 14 -> 7 nodes
    iem: IEMSettings = field(default_factory=lambda: IEMSettings(
        distances=(1, 2, 2), hidden=((32, 16), (32, 16), (32, 16)), image_size=28, epochs=3, batch_size=32))


IEM_MNIST_QUICK = IEMMnistSettings()
IEM_MNIST_FULL = IEMMnistSettings(n_train=None, n_test=None, iem=IEMSettings(
    distances=(1, 2, 2), hidden=((32, 16), (32, 16), (32, 16)), image_size=28, epochs=5, batch_size=8))


NORMALISATIONS = ("relative", "drop", "absolute", "none")   # Eq. 14 with each std floor (STD_FLOORS), and without


@torch.no_grad()
def energy_variants(model: IntrospectiveEnergyModel, x: torch.Tensor, batch_size: int = 256) -> dict:
    """Layer energies (N, L) of ``x`` under every normalisation of :data:`NORMALISATIONS` ("none": Eq. 15
    on the raw |err|, Fig. 16's comparison)."""
    out = {}
    for v in NORMALISATIONS:
        out[v] = torch.cat([model.layer_energies(x[i:i + batch_size], normalise=v != "none",
                                                 floor=None if v == "none" else v).cpu()
                            for i in range(0, len(x), batch_size)])
    return out


def iem_one_class(digit: int, train, test, s: IEMMnistSettings, device="cpu", seed: int = 0, progress=False):
    """Fit an IEM on one digit; return (model, layer energies of the test set with Eq. 14 (N, L) under the
    settings' std floor, the same without normalisation, test labels)."""
    from ..data import one_class_split

    x_tr, x_te, y_te = one_class_split(train, test, digit, s.n_train, s.n_test, seed=seed)
    torch.manual_seed(seed)
    model = IntrospectiveEnergyModel(IEMForward(1, s.transitions), s.iem).to(device)
    model.fit(x_tr.to(device), torch.Generator().manual_seed(seed), progress=progress)
    le = torch.cat([model.layer_energies(x_te[i:i + 256]).cpu() for i in range(0, len(x_te), 256)])
    raw = torch.cat([model.layer_energies(x_te[i:i + 256], normalise=False).cpu() for i in range(0, len(x_te), 256)])
    model.x_test = x_te                                    # kept for health figures and variants
    return model, le, raw, y_te


@experiment("kinder-iem-mnist", chapter="kinder", description="Kinder: neural introspective energy model "
            "(sideward MLPs, design (b), Eqs. 10-16) on one-class MNIST (our set-up; the thesis has no MNIST IEM)")
def kinder_iem_mnist(profile, out, device):
    from ..data import load_mnist_or_standin

    s = IEM_MNIST_QUICK if profile == "quick" else IEM_MNIST_FULL
    tr, te = load_mnist_or_standin("train"), load_mnist_or_standin("test")
    by_norm = {v: {} for v in NORMALISATIONS}
    per_layer, health, constant = {}, {}, {}

    def one_digit(d):
        model, le, raw, y = iem_one_class(d, tr[:2], te[:2], s, device, progress=True)
        h = model.health(model.x_test[:500], f"IEM, digit {d}")
        h.raise_if_failed(f"digit {d}")
        return (torch.tensor(model.weights_l), energy_variants(model, model.x_test), y, h.to_dict(),
                [model.constant_nodes(l) for l in range(model.n_layers)])

    for d in s.digits:   # one resumable unit per digit (energies kept, the model is not)
        w, var, y, health[str(d)], constant[str(d)] = unit(f"digit-{d}-iem-v2", lambda: one_digit(d))
        for v, le in var.items():
            by_norm[v][str(d)] = 100 * metrics.image_auroc(le @ w, y)
        le = var[s.iem.std_floor]
        per_layer[str(d)] = [100 * metrics.image_auroc(le[:, l], y) for l in range(le.shape[1])]
        if d == 8:
            fig = plotting.score_histogram(le @ w, y, title=f"IEM energy (Eq. 16), digit {d}")
            plotting.save(fig, out / f"kinder-iem-mnist-energy-{d}.png")
    for t in by_norm.values():
        t["mean"] = float(np.mean([v for k, v in t.items()]))
    main, none = by_norm[s.iem.std_floor], by_norm["none"]
    return {"metrics": {"auroc": {k: v for k, v in main.items() if k != "mean"}, "mean_auroc": main["mean"],
                        "std_floor": s.iem.std_floor,
                        "auroc_without_normalisation": {k: v for k, v in none.items() if k != "mean"},
                        "mean_auroc_without_normalisation": none["mean"],
                        "auroc_by_normalisation": by_norm, "constant_nodes_per_layer": constant,
                        "auroc_per_layer": per_layer, "health": health, "unit": "percent"},
            "paper": {"note": "no neural IEM on MNIST in the thesis; its CPT models: Table 1 mean 89.4, "
                              "Table 2 mean 93.0", "table1_mean": 89.4, "table2_mean": 93.0},
            "config": s, "data": tr[2]}


@dataclass
class IEMMvtecSettings:
    categories: tuple | None = None     # None: every MVTec AD category with masks found under the data root
    max_real_categories: int | None = None   # at most this many of them (in MVTec AD's order)
    image_level: tuple = ()             # real categories run for image AUROC only when present (no masks needed)
    synthetic: bool = False             # add the synthetic categories (they have masks): the teaching stand-in
    synthetic_fallback: bool = True     # no real category with masks: run on the synthetic ones, with a notice
    mask_size: int | None = 256         # test masks at this size (pixel metrics); None: the model's size
    figure_size: int = 128              # energy-map figures at most this size (masks max-pooled: no defect lost)
    transitions: tuple = TABLE4
    iem: IEMSettings = field(default_factory=IEMSettings)   # Table 4 at 300 x 300
    alexnet: bool = False
    alexnet_path: str | None = None


IEM_MVTEC_QUICK = IEMMvtecSettings(max_real_categories=2, image_level=("bottle",), synthetic=True,
                                   transitions=(Transition(8, 3), Transition(12, 5)),
                                   iem=IEMSettings(distances=(1, 3, 3), hidden=((32, 12), (32, 16), (32, 16)),
                                                   image_size=64, epochs=4))
IEM_MVTEC_FULL = IEMMvtecSettings(image_level=CATEGORIES, synthetic_fallback=False, mask_size=None)   # every category
IEM_ALEXNET_FULL = IEMMvtecSettings(image_level=CATEGORIES, synthetic_fallback=False, mask_size=None, alexnet=True,
                                    iem=ALEXNET_SETTINGS)

def _mvtec_categories(s: IEMMvtecSettings, announce: bool = False) -> dict:
    """``{category: root}``: the real categories with masks under the data root (``s.categories``, at most
    ``s.max_real_categories``), then those of ``s.image_level`` present (image AUROC only), then, with
    ``s.synthetic``, the synthetic ones. No real category with masks and ``s.synthetic_fallback``: the
    synthetic ones (a notice printed if ``announce``)."""
    from . import mvtec_categories, real_or_stand_in

    cats, stand_in = real_or_stand_in(s.categories, max_real=s.max_real_categories, image_level=s.image_level,
                                      fallback=s.synthetic_fallback or s.synthetic, id="kinder-iem-mvtec",
                                      announce=announce)
    if s.synthetic and not stand_in:
        cats.update(mvtec_categories(synthetic=True))
    return cats


def build_iem(s: IEMMvtecSettings, channels: int) -> IntrospectiveEnergyModel:
    """The IEM of Table 4 (from scratch) or Table 6 (AlexNet kernels, frozen; weights must be present)."""
    if s.alexnet:
        from ..networks.kinder import find_alexnet_weights, load_alexnet_convs

        if channels != 3:
            raise ValueError("AlexNet needs RGB images: load the category with grayscale=False")
        net = load_alexnet_convs(alexnet_forward(), find_alexnet_weights(s.alexnet_path))
    else:
        net = IEMForward(channels, s.transitions)
    return IntrospectiveEnergyModel(net, s.iem)


def data_controls(x_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor) -> dict:
    """Model-free controls of a category's test split (percent): the image AUROC of the mean brightness
    and of the pixel distance to the nearest training image. An AUROC far from 50 here means that the
    good and the defective test images differ in a way any score can pick up (or be misled by), whatever
    the model (below 50: the good ones score higher); the mean brightness of each part is kept beside."""
    bright = x_te.mean((1, 2, 3))
    nn_dist = torch.cdist(x_te.flatten(1), x_tr.flatten(1)).min(1).values
    return {"mean_brightness": {"train": float(x_tr.mean()), "test_good": float(bright[y_te == 0].mean()),
                                "test_defect": float(bright[y_te == 1].mean())},
            "auroc_brightness": 100 * metrics.image_auroc(bright, y_te),
            "auroc_nearest_train_distance": 100 * metrics.image_auroc(nn_dist, y_te)}


def run_iem_mvtec(s: IEMMvtecSettings, out, device, tag: str, max_train: int | None = None, progress=True,
                  strict: bool = True) -> dict:
    """Train one IEM per category and evaluate image AUROC (Eq. 16 energy, with Eq. 14 under each std floor
    and without), and pixel AUROC / AUPRO of the energy maps where masks exist, at the masks' size
    (``s.mask_size``: the maps are upsampled to it); save energy-map figures. Training runs through
    :func:`~energyad.experiments.resume.resumable_loop` (one key per category), so a ``--max-minutes`` run
    stops inside a category and continues there. Health figures are recorded per category; with
    ``strict`` (default) a category whose model fails them reports no number: its entry in ``withheld``
    says why."""
    from ..data.mvtec import MVTecAD, load_split
    from .resume import resumable_loop

    res = {"image_auroc": {}, "image_auroc_without_normalisation": {}, "image_auroc_by_normalisation": {},
           "pixel_auroc": {}, "aupro": {}, "health": {}, "constant_nodes_per_layer": {}, "input_channels": {},
           "withheld": {}, "seconds_per_category": {}, "test_images": {}, "mask_size": {}, "controls": {}}
    S = s.iem.image_size

    def one_category(cat, root):
        t0 = time.perf_counter()
        gray = False if s.alexnet else None
        x_tr = load_split(MVTecAD(root, cat, "train", S, gray), progress)[0][:max_train]
        x_te, _, y_te, _ = load_split(MVTecAD(root, cat, "test", S, gray), progress)   # as the training images
        big = MVTecAD(root, cat, "test", s.mask_size or S, gray)      # masks at their size, figures from them
        x_big, m_te, _, _ = load_split(big, progress)
        torch.manual_seed(0)
        model = build_iem(s, x_tr.shape[1]).to(device)
        loop = lambda key, *a, **k: resumable_loop(f"{cat}-{key}", *a, **k)   # noqa: E731
        model.fit(x_tr.to(device), torch.Generator().manual_seed(0), progress=progress, loop=loop)
        h = model.health(x_te, f"IEM, {cat}")
        common = {"test_images": len(y_te), "input_channels": int(x_tr.shape[1])}
        if strict:
            try:
                h.raise_if_failed(cat)
            except DegenerateModelError as err:      # loud, and no number for this category; the others go on
                print(f"HEALTH FAILURE: {err}")
                return {"health": h.to_dict(), "withheld": str(err), **common,
                        "seconds_per_category": time.perf_counter() - t0}
        scores = model.score(x_te)
        w = torch.tensor(model.weights_l)
        by_norm = {v: 100 * metrics.image_auroc(le @ w, y_te) for v, le in energy_variants(model, x_te, 32).items()}
        r = {"image_auroc": 100 * metrics.image_auroc(scores, y_te),
             "image_auroc_without_normalisation": by_norm["none"], "image_auroc_by_normalisation": by_norm,
             "health": h.to_dict(), "constant_nodes_per_layer": [model.constant_nodes(l) for l in range(model.n_layers)],
             **common}
        r["controls"] = data_controls(x_tr, x_te, y_te)
        maps = model.anomaly_map(x_te)
        has_masks = big.has_masks and m_te.sum() > 0
        if has_masks:
            r["pixel_auroc"] = 100 * metrics.pixel_auroc(maps, m_te)     # maps upsampled to the masks' size
            r["aupro"] = 100 * metrics.aupro(maps, m_te)
            r["mask_size"] = int(m_te.shape[-1])
        idx = torch.cat([torch.nonzero(y_te == 0)[:2, 0], torch.nonzero(y_te == 1)[:4, 0]])
        F, size = torch.nn.functional, (min(x_big.shape[-1], s.figure_size),) * 2   # figures at most figure_size px
        fig = plotting.overlay_grid(F.interpolate(x_big[idx], size=size, mode="bilinear", antialias=True).clamp(0, 1),
                                    F.interpolate(maps[idx], size=size, mode="bilinear", align_corners=False),
                                    F.adaptive_max_pool2d(m_te[idx], size) if has_masks else None,
                                    titles=[f"{'defect' if y_te[i] else 'good'}, E={scores[i]:.0f}" for i in idx], ncol=6)
        plotting.save(fig, out / f"{tag}-maps-{cat}.png")
        r["seconds_per_category"] = time.perf_counter() - t0
        return r

    cats = _mvtec_categories(s, announce=True)
    for cat, root in cats.items():   # one resumable unit per category
        for k, v in unit(f"category-{cat}-v3", lambda: one_category(cat, root)).items():
            res[k][cat] = v
    real = [v for c, v in res["image_auroc"].items() if not c.startswith("synthetic")]
    res["mean_image_auroc_real_categories"] = float(np.mean(real)) if real else None
    res["real_categories_with_masks"] = [c for c in res["pixel_auroc"] if not c.startswith("synthetic")]
    res["stand_in_only"] = all(c.startswith("synthetic") for c in cats)
    res["sizes"] = {"image": S, "masks": s.mask_size or S}
    res["unit"] = "percent"
    return res


@experiment("kinder-iem-mvtec", chapter="kinder", description="Kinder: neural IEM trained from scratch on MVTec AD, "
            "Table 5 (quick: the real categories with masks (at most 2) plus bottle and the synthetic "
            "categories at 64 px, masks at 256 px, a 3-layer model; full: Table 4 at 300 px)")
def kinder_iem_mvtec(profile, out, device):
    s = IEM_MVTEC_QUICK if profile == "quick" else IEM_MVTEC_FULL
    res = run_iem_mvtec(s, out, device, "kinder-iem-mvtec")
    cats = _mvtec_categories(s)
    data = ", ".join(f"{c} ({r})" for c, r in cats.items())
    return {"metrics": res, "paper": PAPER_TABLE5, "config": s, "data": f"MVTec-layout categories: {data}"}


@experiment("kinder-iem-alexnet", chapter="kinder", description="Kinder: IEM on AlexNet's first four "
            "convolutions (frozen), Table 7; needs torchvision's AlexNet weights", profiles=("full",),
            needs=("alexnet-weights", "gpu"))
def kinder_iem_alexnet(profile, out, device):
    s = IEM_ALEXNET_FULL
    res = run_iem_mvtec(s, out, device, "kinder-iem-alexnet")
    cats = _mvtec_categories(s)
    return {"metrics": res, "paper": PAPER_TABLE7, "config": s,
            "data": "MVTec-layout categories: " + ", ".join(f"{c} ({r})" for c, r in cats.items())}
