"""Experiments of the Genc et al. chapter: one-class MNIST and MVTec AD (detection + localization)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from .. import metrics, plotting
from ..config import seed_everything
from ..methods.genc import GencEBM, HealthRules, SGLDSettings, TrainSettings
from ..networks.genc import TABLE3_WIDTHS, EnergyNet
from . import experiment, mvtec_categories
from .runner import unit

# The paper's numbers (AUROC). Table 4: detection averaged over MVTec AD; Tables 2 and 5: localization.
PAPER_DETECTION_AVERAGE = {"energy": 0.56, "raw": 0.69, "std": 0.72}
PAPER_LOCALIZATION = {  # category: (raw, standardized), Table 5
    "carpet": (0.53, 0.63), "grid": (0.86, 0.86), "leather": (0.43, 0.86), "tile": (0.50, 0.57),
    "wood": (0.73, 0.74), "bottle": (0.70, 0.72), "cable": (0.46, 0.56), "capsule": (0.44, 0.64),
    "hazelnut": (0.73, 0.78), "metal_nut": (0.71, 0.65), "pill": (0.71, 0.74), "screw": (0.88, 0.87),
    "toothbrush": (0.82, 0.68), "transistor": (0.74, 0.74), "zipper": (0.64, 0.55),
}
# Table 2's EBM column is the standardised score too, but two cells differ from Table 5's by 0.01
PAPER_TABLE2_DIFFERS = {"leather": 0.87, "pill": 0.75}
KINDS = ("energy", "raw", "std")


@dataclass
class MnistSettings:
    digits: tuple = (1, 7)
    n_train: int | None = 2000
    n_test: int | None = 1000
    widths: tuple = (8, 16, 32, 32)
    train: TrainSettings = field(default_factory=lambda: TrainSettings(
        iterations=150, batch_size=32, sgld=SGLDSettings(steps=20)))
    health: HealthRules = field(default_factory=HealthRules)   # a model that fails them reports no number


MNIST_QUICK = MnistSettings()
MNIST_FULL = MnistSettings(digits=tuple(range(10)), n_train=None, n_test=None, widths=(32, 64, 128, 256),
                           train=TrainSettings(iterations=2000, batch_size=64, sgld=SGLDSettings(steps=100)))


@dataclass
class MVTecSettings:
    image_size: int = 128                    # Sec. 3.2: images downsized to 128 x 128
    mask_size: int | None = 256              # pixel metrics at the masks' size (256: our copy's); maps are upsampled
    widths: tuple = TABLE3_WIDTHS            # Table 3
    categories: tuple | None = None          # None: every category present
    need_masks: bool = False                 # only categories with ground_truth/ masks
    max_real_categories: int | None = None   # at most this many real categories (None: all found)
    synthetic: bool = False                  # the synthetic categories only
    synthetic_fallback: bool = False         # no real category found: run on the synthetic ones (with a notice)
    max_train_images: int | None = None      # train on the first this many images (None: all; tests cut it)
    train: TrainSettings = field(default_factory=lambda: TrainSettings(iterations=3000, batch_size=32))
    health: HealthRules = field(default_factory=HealthRules)   # a model that fails them reports no number


# quick: the real categories with masks found under the data root (at most two), at 64 px with a
# small network and short training; the synthetic categories when none is found (with a notice)
MVTEC_QUICK = MVTecSettings(image_size=64, widths=(8, 16, 32, 32, 32), need_masks=True, max_real_categories=2,
                            synthetic_fallback=True,
                            train=TrainSettings(iterations=150, batch_size=32, sgld=SGLDSettings(steps=20)))


def standin_settings(s: MVTecSettings) -> MVTecSettings:
    """The synthetic stand-in's settings: 32 px (the synthetic defects are drawn at that scale), same training."""
    return dataclasses.replace(s, image_size=32, mask_size=None, widths=(8, 16, 32, 32), synthetic=True,
                               need_masks=False, max_real_categories=None)

MVTEC_FULL = MVTecSettings()             # every category present (bottle: detection only, it has no masks)


def _curves(log, points: int = 30) -> dict:
    """Mean energies of data and samples and the clamped fraction at about ``points`` iterations."""
    n = len(log.e_data)
    idx = sorted({round(i * (n - 1) / max(points - 1, 1)) for i in range(points)}) if n else []
    return {"iteration": idx, "e_data": [log.e_data[i] for i in idx], "e_sample": [log.e_sample[i] for i in idx],
            "clamped": [log.clamped[i] for i in idx]}


def run_mnist_digit(digit: int, s: MnistSettings, device, data=None, progress: bool = True, seed: int = 0):
    """Train on one digit; return (model, x_test, y_test, {kind: AUROC})."""
    from ..data import load_mnist_or_standin, one_class_split

    if data is None:
        tr, te = load_mnist_or_standin("train"), load_mnist_or_standin("test")
        data = (tr[:2], te[:2])
    x_tr, x_te, y_te = one_class_split(data[0], data[1], digit, s.n_train, s.n_test, seed=seed)
    g = seed_everything(seed)
    model = GencEBM(EnergyNet(1, 28, s.widths).to(device), s.train)
    model.fit(x_tr.to(device), generator=g, progress=progress, rules=s.health)
    model.health.model = f"Genc EBM, digit {digit}"
    model.health.raise_if_failed(f"genc-mnist, digit {digit}")   # a degenerate model reports no AUROC
    x_te = x_te.to(device)
    aurocs = {k: metrics.image_auroc(model.score(x_te, k).cpu(), y_te) for k in KINDS}
    return model, x_te, y_te, aurocs


@experiment("genc-mnist", chapter="genc", description="Genc et al.: one-class MNIST, energy vs raw vs "
            "standardised gradient scores")
def genc_mnist(profile, out, device):
    from ..data import load_mnist_or_standin

    s = MNIST_QUICK if profile == "quick" else MNIST_FULL
    tr, te = load_mnist_or_standin("train"), load_mnist_or_standin("test")
    per_digit, events, health, curves = {}, {}, {}, {}
    def one_digit(d):
        model, _, _, aurocs = run_mnist_digit(d, s, device, (tr[:2], te[:2]))
        fig = plotting.line_plot(range(len(model.log.e_data)), {"data": model.log.e_data,
                                 "SGLD samples": model.log.e_sample}, "iteration", "mean energy",
                                 f"digit {d}: energies during training")
        plotting.save(fig, out / f"genc-mnist-energies-{d}.png")
        return aurocs, model.log.events, model.health.to_dict(), _curves(model.log)

    for d in s.digits:   # one resumable unit per digit
        per_digit[str(d)], events[str(d)], health[str(d)], curves[str(d)] = unit(f"digit-{d}", lambda: one_digit(d))
    mean = {k: sum(v[k] for v in per_digit.values()) / len(per_digit) for k in KINDS}
    return {"metrics": {"auroc": per_digit, "mean_auroc": mean, "guard_events": events, "health": health,
                        "training_curves": curves},
            "paper": {"note": "the paper reports no MNIST results"},
            "config": s, "data": tr[2]}


def select_categories(s: MVTecSettings) -> tuple[dict, MVTecSettings, str]:
    """``({category: root}, settings, data description)`` of an MVTec run. Real categories (those with
    masks if ``s.need_masks``, at most ``s.max_real_categories``, in alphabetical order) when any is
    found; otherwise, if ``s.synthetic_fallback`` (the quick profile), the synthetic stand-in
    (:func:`standin_settings`) with a printed notice."""
    from . import real_or_stand_in

    if not s.synthetic:
        cats, stand_in = real_or_stand_in(s.categories, need_masks=s.need_masks, max_real=s.max_real_categories,
                                          fallback=s.synthetic_fallback, id="genc-mvtec")
        if not stand_in:
            return cats, s, (f"MVTec AD (real), categories {', '.join(cats)} at {s.image_size} px"
                             + (f", masks at {s.mask_size} px" if s.mask_size else ""))
        s = standin_settings(s)
    return mvtec_categories(s.categories, True), s, \
        f"stand-in: synthetic MVTec-layout categories (energyad.data.synthetic) at {s.image_size} px"


def _training_loop(key: str, generator):
    """Run the training steps through ``resumable_loop`` (checkpointed; stops at ``--max-minutes``)."""
    from .resume import resumable_loop

    return lambda total, step, trainer: resumable_loop(key, total, {"trainer": trainer}, step, generator=generator)


def run_mvtec_category(root, category: str, s: MVTecSettings, device, progress: bool = True, seed: int = 0):
    """Train on one category; return (model, test tensors, metrics dict). The test masks are loaded at
    ``s.mask_size`` (the maps are upsampled to it by the pixel metrics); the training loop is resumable
    inside a ``reproduce`` run."""
    from ..data.mvtec import MVTecAD, load_split

    train = MVTecAD(root, category, "train", image_size=s.image_size)
    test = MVTecAD(root, category, "test", image_size=s.image_size)
    if s.max_train_images is not None:
        train.items = train.items[:s.max_train_images]
    x_tr = load_split(train, progress)[0]
    x_te, m_te, y_te, defects = load_split(test, progress)
    if test.has_masks and s.mask_size and s.mask_size != s.image_size:
        m_te = load_split(MVTecAD(root, category, "test", image_size=s.mask_size), progress)[1]
    g = seed_everything(seed)
    model = GencEBM(EnergyNet(x_tr.shape[1], s.image_size, s.widths).to(device), s.train)
    model.fit(x_tr.to(device), generator=g, progress=progress, rules=s.health,
              loop=_training_loop(f"genc-{category}-training", g))
    model.health.model = f"Genc EBM, {category}"
    model.health.raise_if_failed(f"genc-mvtec, {category}")       # a degenerate model reports no AUROC
    x_dev = x_te.to(device)
    res = {"detection": {k: metrics.image_auroc(model.score(x_dev, k).cpu(), y_te) for k in KINDS}}
    if test.has_masks:
        maps = {k: model.maps(x_dev, k).cpu() for k in ("raw", "std")}
        res["localization"] = {k: metrics.pixel_auroc(maps[k], m_te) for k in maps}
        res["aupro"] = {k: metrics.aupro(maps[k], m_te) for k in maps}
    else:
        res["localization"] = None  # no ground-truth masks in this copy: pixel metrics unavailable
    res["train_seconds"] = model.log.seconds
    res["guard_events"] = model.log.events
    res["health"] = model.health.to_dict()
    return model, (x_te, m_te, y_te, defects), res


@experiment("genc-mvtec", chapter="genc", description="Genc et al.: MVTec AD detection and localization "
            "(quick: up to two real categories with masks at 64 px, synthetic stand-in without them; "
            "full: every category present at 128 px, Table 3 network)")
def genc_mvtec(profile, out, device):
    s = MVTEC_QUICK if profile == "quick" else MVTEC_FULL
    cats, s, data = select_categories(s)
    results = {}
    def one_category(c, root):
        model, (x_te, m_te, y_te, _), res = run_mvtec_category(root, c, s, device)
        if res["localization"] is not None:
            idx = torch.nonzero(y_te == 1)[:6, 0]
            masks = torch.nn.functional.interpolate(m_te[idx], size=x_te.shape[-2:], mode="nearest")
            fig = plotting.overlay_grid(x_te[idx], model.maps(x_te[idx].to(device), "std").cpu(), masks, ncol=6)
            plotting.save(fig, out / f"genc-mvtec-{c}.png")
        return res

    health = {}
    for c, root in cats.items():   # one resumable unit per category
        results[c] = dict(unit(f"category-{c}", lambda: one_category(c, root)))
        health[c] = results[c].pop("health")
    results["health"] = health     # metrics["health"][category]: the health figures of each model
    paper = {c: {"localization": {"raw": PAPER_LOCALIZATION[c][0], "std": PAPER_LOCALIZATION[c][1]}}
             for c in cats if c in PAPER_LOCALIZATION}
    for c in paper:
        if c in PAPER_TABLE2_DIFFERS:
            paper[c]["table2_std"] = PAPER_TABLE2_DIFFERS[c]   # Table 2 prints another value than Table 5
    paper["detection_average"] = PAPER_DETECTION_AVERAGE
    return {"metrics": results, "paper": paper, "config": s, "data": data}
