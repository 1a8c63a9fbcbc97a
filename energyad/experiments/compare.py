"""The comparison chapter: every method of the book through the shared interface (fit on normal images,
``score`` per image, ``anomaly_map`` per pixel) on the same data and the same metrics.

No paper compares these four methods on common ground. Each method runs here in a small configuration
of its own chapter's design (named below); the point is the comparison under equal conditions, not
the best number each method can reach.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics, plotting
from ..config import seed_everything
from . import experiment, mvtec_and_synthetic
from .runner import unit

METHODS = ("genc", "dehaene", "matsubara", "kinder-bn", "kinder-iem")
LABELS = {"genc": "Genc: EBM, standardised gradients", "dehaene": "Dehaene: VAE + projection (DSSIM)",
          "matsubara": "Matsubara: VAE, M(x)", "kinder-bn": "Kinder: pixel Bayesian network",
          "kinder-iem": "Kinder: introspective energy model"}

# Outside reference numbers, quoted from the papers (not run here).
REFERENCES = {
    "mnist": {"Deep SVDD (one-class), mean AUROC over the ten digits": (94.8, "ruff2018deepsvdd")},
    "mvtec": {"PatchCore, image AUROC (MVTec AD mean, best configuration)": (99.6, "roth2022patchcore"),
              "PaDiM, pixel AUROC (MVTec AD mean)": (97.5, "defard2021padim")},
}


@dataclass
class MethodSettings:
    """Small configurations of each chapter's method (same for every data set of a profile)."""
    genc_iterations: int = 80
    genc_sgld_steps: int = 10
    ae_epochs: int = 8
    projection_steps: int = 40
    vae_epochs: int = 8
    iem_epochs: int = 2


class _Padded:
    """Run a detector that needs 32, 64 or 128 px on smaller images by zero padding; maps are cropped back."""

    def __init__(self, inner, size: int, pad: int):
        self.inner, self.size, self.pad = inner, size, pad

    def _p(self, x):
        return F.pad(x, (self.pad,) * 4)

    def fit(self, x, generator=None):
        self.inner.fit(self._p(x), generator)
        return self

    def score(self, x):
        return self.inner.score(self._p(x))

    def health(self, x):
        return self.inner.health(self._p(x))

    def anomaly_map(self, x):
        p = self.pad
        return self.inner.anomaly_map(self._p(x))[..., p:p + x.shape[-2], p:p + x.shape[-1]]


class _Dehaene:
    """The VAE with the Dehaene chapter's healthy settings (decoder variance 0.01, KL warm-up), scored by
    the mean DSSIM map after the Eq. 8 projection. Dehaene et al. define no image-level score: the mean
    of the DSSIM map is ours (the map's own scale, no threshold to choose)."""

    def __init__(self, channels, size, s: MethodSettings, device):
        from ..methods import dehaene as dh
        from ..networks.bergmann_ae import BergmannAE

        self.dh, self.s, self.device = dh, s, device
        self.model = dh.AutoencoderModel(BergmannAE(channels, size, 100, True, 8), "vae", decoder_var=0.01).to(device)
        self.hist = []

    def fit(self, x, generator=None):
        dh = self.dh
        self.hist = dh.train_autoencoder(self.model, x, dh.AETrainSettings(
            lr=1e-3, epochs=self.s.ae_epochs, n_train=len(x), kl_warmup=max(1, self.s.ae_epochs // 2)),
            generator, progress=False)
        with torch.no_grad():
            stop = min(self.model.loss_r(x[i:i + 256].to(self.device)).min().item() for i in range(0, len(x), 256))
        self.proj = dh.DehaeneProjection(self.model, dh.ProjectionSettings(steps=self.s.projection_steps, stop_loss=stop))
        return self

    def health(self, x):
        return self.dh.autoencoder_health(self.model, x[:256].to(self.device), self.hist, name="dehaene-vae")

    def anomaly_map(self, x):
        return torch.cat([self.proj.anomaly_map(x[i:i + 256].to(self.device)).cpu() for i in range(0, len(x), 256)])

    def score(self, x):
        return self.anomaly_map(x).flatten(1).mean(1)


class _Genc:
    def __init__(self, channels, size, s: MethodSettings, device):
        from ..methods.genc import GencEBM, SGLDSettings, TrainSettings
        from ..networks.genc import EnergyNet

        self.m = GencEBM(EnergyNet(channels, size, (8, 16, 32, 32)).to(device), TrainSettings(
            iterations=s.genc_iterations, batch_size=32, sgld=SGLDSettings(steps=s.genc_sgld_steps)))
        self.device = device

    def fit(self, x, generator=None):
        self.m.fit(x.to(self.device), generator=generator, progress=False)
        return self

    def health(self, x):
        return self.m.health                     # recorded by GencEBM.fit on the training images

    def score(self, x):
        return self.m.score(x.to(self.device)).cpu()

    def anomaly_map(self, x):
        return self.m.anomaly_map(x.to(self.device)).cpu()


class _Matsubara:
    def __init__(self, channels, size, s: MethodSettings, device):
        from ..methods import matsubara as mt
        from ..networks.matsubara_vae import MatsubaraVAE

        n_conv = 2 if size == 28 else 3
        self.m = mt.MatsubaraVAEDetector(MatsubaraVAE(channels, size, n_conv, 16, 10).to(device),
                                         mt.VAESettings(epochs=s.vae_epochs))

    def fit(self, x, generator=None):
        self.m.fit(x, generator, progress=False)
        return self

    def health(self, x):
        return self.m.health(x[:256])

    def score(self, x):
        return self.m.score(x)

    def anomaly_map(self, x):
        return torch.cat([self.m.anomaly_map(x[i:i + 256]) for i in range(0, len(x), 256)])


class _PixelBN:
    def __init__(self, channels, size, s, device):
        from ..methods.kinder_bn import PixelBN, binarize

        if channels != 1:
            raise ValueError("the pixel Bayesian network models binary grayscale images")
        self.m, self.binarize = PixelBN(), binarize

    def fit(self, x, generator=None):
        self.m.fit(self.binarize(x[:, 0]))
        return self

    def score(self, x):
        return self.m.score(x[:, 0])

    anomaly_map = None


class _IEM:
    def __init__(self, channels, size, s: MethodSettings, device):
        from ..methods.kinder_iem import IEMSettings, IntrospectiveEnergyModel
        from ..networks.kinder import IEMForward, Transition

        self.m = IntrospectiveEnergyModel(IEMForward(channels, (Transition(8, 3), Transition(16, 3))), IEMSettings(
            distances=(1, 2, 2), hidden=((32, 16),) * 3, image_size=size, epochs=s.iem_epochs, batch_size=32)).to(device)
        self.device = device

    def fit(self, x, generator=None):
        self.m.fit(x.to(self.device), generator, progress=False)
        return self

    def health(self, x):
        return self.m.health(x[:256].to(self.device), name="kinder-iem")

    def score(self, x):
        return self.m.score(x)

    def anomaly_map(self, x):
        return self.m.anomaly_map(x)


def build(method: str, channels: int, size: int, s: MethodSettings, device="cpu"):
    """A detector with ``fit(x, generator)``, ``score(x)`` and (None where the method has none) ``anomaly_map(x)``."""
    if method == "dehaene" and size not in (32, 64, 128):
        pad = (32 - size) // 2 if size < 32 else None
        if pad is None:
            raise ValueError(f"the Bergmann autoencoder needs 32, 64 or 128 px, not {size}")
        return _Padded(_Dehaene(channels, 32, s, device), size, pad)
    cls = {"genc": _Genc, "dehaene": _Dehaene, "matsubara": _Matsubara, "kinder-bn": _PixelBN, "kinder-iem": _IEM}
    if method not in cls:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    return cls[method](channels, size, s, device)


def evaluate(method, x_tr, x_te, y_te, m_te, s: MethodSettings, device, seed: int = 0, m_full=None,
             require_health: bool = True) -> dict:
    """Fit one method and score the test set: image AUROC with its bootstrap interval, and with masks
    pixel AUROC (interval over images) and AUPRO at the masks' resolution (``m_full``, else ``m_te``:
    the maps are upsampled, the masks never shrunk), times, the detector's health figures, and the
    per-image scores (kept for the paired intervals of the summary, dropped before the result is written).
    A model that fails its health checks stops the run (``require_health=False``: only recorded)."""
    g = seed_everything(seed)
    det = build(method, x_tr.shape[1], x_tr.shape[-1], s, device)
    t0 = time.perf_counter()
    det.fit(x_tr, g)
    t1 = time.perf_counter()
    scores = det.score(x_te).detach().cpu().double()
    t2 = time.perf_counter()
    out = {"image_auroc": metrics.image_auroc(scores, y_te), "image_ci": metrics.auroc_ci(scores, y_te),
           "fit_seconds": t1 - t0, "score_seconds_per_image": (t2 - t1) / len(x_te), "scores": scores.tolist()}
    health = getattr(det, "health", None)
    if callable(health):
        h = health(x_tr)
        out["health"] = h.to_dict()
        if require_health:
            h.raise_if_failed(f"{method} in the comparison, seed {seed}")
    masks = m_full if m_full is not None else m_te
    if masks is not None and masks.sum() > 0 and det.anomaly_map is not None:
        maps = det.anomaly_map(x_te).detach().cpu()
        ci = metrics.pixel_auroc_ci(maps, masks, n_boot=200)
        out["pixel_auroc"], out["pixel_ci"], out["aupro"] = ci["auroc"], ci, metrics.aupro(maps, masks)
    return out


def worst_cases(scores: torch.Tensor, y: torch.Tensor, k: int = 4):
    """Indices of the k highest-scored normal images (false positives first) and the k lowest-scored
    anomalies (the misses)."""
    normal, anomal = torch.nonzero(y == 0)[:, 0], torch.nonzero(y == 1)[:, 0]
    fp = normal[scores[normal].argsort(descending=True)[:k]]
    fn = anomal[scores[anomal].argsort()[:k]]
    return fp, fn


def gallery(x, scores, y, title: str, k: int = 4):
    fp, fn = worst_cases(scores, y, k)
    titles = [f"normal, {scores[i]:.3g}" for i in fp] + [f"anomaly, {scores[i]:.3g}" for i in fn]
    fig = plotting.image_grid(torch.cat([x[fp], x[fn]]), nrow=2 * k, titles=titles)
    fig.suptitle(title + ": its most anomalous normal images (left) and least anomalous anomalies (right)")
    return fig


def budget(s: MethodSettings, n_train) -> dict:
    """What each method got to learn from: the same images, and its own number of passes."""
    n = "all" if n_train is None else n_train
    return {"genc": f"{s.genc_iterations} updates of batch 32, {s.genc_sgld_steps} SGLD steps each",
            "dehaene": f"{s.ae_epochs} epochs over {n} images; {s.projection_steps} projection steps per test image",
            "matsubara": f"{s.vae_epochs} epochs over {n} images",
            "kinder-bn": f"one counting pass over {n} images",
            "kinder-iem": f"{s.iem_epochs} epochs per layer over {n} images"}


def _summarise(per_unit: dict, methods, key: str) -> dict:
    """{method: {"mean": ..., "std_over_seeds": ..., "by_unit": {unit: mean over seeds}}}."""
    out = {}
    for m in methods:
        runs = {u: [r[key] for r in per_unit[u][m] if key in r] for u in per_unit}
        runs = {u: v for u, v in runs.items() if v}
        if not runs:
            continue
        n_seeds = min(len(v) for v in runs.values())
        per_seed = [np.mean([v[i] for v in runs.values()]) for i in range(n_seeds)]
        out[m] = {"mean": float(np.mean(per_seed)), "std_over_seeds": float(np.std(per_seed)),
                  "by_unit": {u: float(np.mean(v)) for u, v in runs.items()},
                  "missing_units": sorted(set(per_unit) - set(runs))}
    return out


# --- one-class MNIST -----------------------------------------------------------------------------------
@dataclass
class CompareMnistSettings:
    digits: tuple = tuple(range(10))
    n_train: int | None = 500
    n_test: int | None = 400
    seeds: tuple = (0,)
    methods: tuple = METHODS
    gallery_digit: int = 8
    method_settings: MethodSettings = field(default_factory=MethodSettings)


COMPARE_MNIST_QUICK = CompareMnistSettings(seeds=(0, 1))
COMPARE_MNIST_FULL = CompareMnistSettings(n_train=None, n_test=None, seeds=(0, 1, 2), method_settings=MethodSettings(
    genc_iterations=2000, genc_sgld_steps=60, ae_epochs=50, projection_steps=100, vae_epochs=50, iem_epochs=5))


def _run(method, *args, **kw) -> dict:
    """``evaluate``, except that a model failing its health checks is recorded (``failed_health``, the
    reason) instead of stopping the other methods: that cell of the tables reports no number."""
    from ..health import DegenerateModelError

    try:
        return evaluate(method, *args, **kw)
    except DegenerateModelError as err:
        return {"failed_health": str(err)}


def failures(per_unit: dict) -> dict:
    """``{method: {unit: reason}}`` of the models that failed their health checks."""
    out = {}
    for u, res in per_unit.items():
        for m, rs in res.items():
            for r in rs:
                if "failed_health" in r:
                    out.setdefault(m, {})[u] = r["failed_health"]
    return out


def _intervals(per_unit: dict, labels: dict, methods) -> dict:
    """Paired bootstrap intervals of the mean image AUROC over the units, per method and per pair; a
    method with a failed model on any unit is left out (``excluded``, with the reason)."""
    failed = failures(per_unit)
    ok = [m for m in methods if m not in failed]
    scores = {m: {u: [r["scores"] for r in per_unit[u][m]] for u in per_unit} for m in ok}
    out = metrics.mean_auroc_intervals(scores, labels, n_boot=500) if ok else {"methods": {}, "differences": {}}
    out["excluded"] = {m: failed[m] for m in methods if m in failed}
    return out


def _drop_scores(per_unit: dict) -> None:
    for res in per_unit.values():
        for rs in res.values():
            for r in rs:
                r.pop("scores", None)


def run_mnist(s: CompareMnistSettings, device, out=None, data=None) -> dict:
    from ..data import load_mnist_or_standin, one_class_split

    if data is None:
        data = (load_mnist_or_standin("train")[:2], load_mnist_or_standin("test")[:2])
    per_digit, labels = {}, {}
    for d in s.digits:
        def one_digit(d=d):
            x_tr, x_te, y_te = one_class_split(data[0], data[1], d, s.n_train, s.n_test, seed=0)
            res = {m: [_run(m, x_tr, x_te, y_te, None, s.method_settings, device, seed) for seed in s.seeds]
                   for m in s.methods}
            if out is not None and d == s.gallery_digit:
                for m in s.methods:
                    if "scores" in res[m][0]:
                        plotting.save(gallery(x_te, torch.tensor(res[m][0]["scores"]), y_te, f"{LABELS[m]}, digit {d}"),
                                      out / f"compare-mnist-gallery-{m}-{d}.png")
            return res, y_te.tolist()
        per_digit[str(d)], labels[str(d)] = unit(f"digit-{d}", one_digit)
    intervals = _intervals(per_digit, labels, s.methods)
    health = {d: {m: [r["health"] for r in rs if "health" in r] for m, rs in res.items()} for d, res in per_digit.items()}
    by_digit_ci = {m: {d: per_digit[d][m][0]["image_ci"] for d in per_digit if "image_ci" in per_digit[d][m][0]}
                   for m in s.methods}
    _drop_scores(per_digit)
    return {"auroc": _summarise(per_digit, s.methods, "image_auroc"), "intervals": intervals,
            "failed_health": failures(per_digit),
            "auroc_ci_seed0": by_digit_ci, "health": health,
            "fit_seconds": _summarise(per_digit, s.methods, "fit_seconds"),
            "score_seconds_per_image": _summarise(per_digit, s.methods, "score_seconds_per_image"),
            "budget": budget(s.method_settings, s.n_train)}


@experiment("compare-mnist", chapter="compare", description="All methods of the book on one-class MNIST: "
            "mean image AUROC over the digits, times, worst cases (quick: 500 training images per digit)")
def compare_mnist(profile, out, device):
    from ..data import load_mnist_or_standin

    s = COMPARE_MNIST_QUICK if profile == "quick" else COMPARE_MNIST_FULL
    tr, te = load_mnist_or_standin("train"), load_mnist_or_standin("test")
    res = run_mnist(s, device, out, (tr[:2], te[:2]))
    return {"metrics": res, "paper": {"references": REFERENCES["mnist"]}, "config": s, "data": tr[2]}


# --- MVTec AD (and the synthetic categories) --------------------------------------------------------------
@dataclass
class CompareMvtecSettings:
    image_size: int = 32
    synthetic: bool = True               # add the synthetic categories (they have masks)
    categories: tuple | None = None      # real categories: None = every one present
    seeds: tuple = (0,)
    methods: tuple = ("genc", "dehaene", "matsubara", "kinder-iem")   # the pixel BN models binary digits only
    n_train: int = 500        # every method gets the same augmented training set (small rotations and shifts)
    mask_size: int = 256      # pixel metrics at the masks' resolution (the shared copy's 256 px); maps upsampled
    method_settings: MethodSettings = field(default_factory=MethodSettings)


# At 32 px on the real categories the VAE needs 20 epochs to pass its health checks (8 leave its output
# nearly constant on transistor: output dependence 0.22)
COMPARE_MVTEC_QUICK = CompareMvtecSettings(seeds=(0, 1), method_settings=MethodSettings(ae_epochs=20))
COMPARE_MVTEC_FULL = CompareMvtecSettings(image_size=128, synthetic=False, seeds=(0, 1, 2),
                                          method_settings=COMPARE_MNIST_FULL.method_settings)


def run_mvtec(s: CompareMvtecSettings, device, out=None) -> dict:
    from ..data.mvtec import MVTecAD, load_split, object_augment

    cats = mvtec_and_synthetic(s.categories, s.synthetic)
    per_cat, labels = {}, {}
    for c, root in cats.items():
        def one_category(c=c, root=root):
            x_good = load_split(MVTecAD(root, c, "train", image_size=s.image_size), False)[0]
            g = seed_everything(0)
            idx = torch.randint(len(x_good), (s.n_train,), generator=g)
            x_tr = object_augment(x_good[idx], max_rotation_deg=5, max_translation=0.03, generator=g)
            x_te, m_te, y_te, _ = load_split(MVTecAD(root, c, "test", image_size=s.image_size), False)
            test_full = MVTecAD(root, c, "test", image_size=s.mask_size)
            m_full = load_split(test_full, False)[1] if test_full.has_masks else None
            res = {m: [_run(m, x_tr, x_te, y_te, m_te if m_full is not None else None, s.method_settings,
                            device, seed, m_full) for seed in s.seeds] for m in s.methods}
            if out is not None:
                for m in s.methods:
                    if "scores" in res[m][0]:
                        plotting.save(gallery(x_te, torch.tensor(res[m][0]["scores"]), y_te, f"{LABELS[m]}, {c}", k=3),
                                      out / f"compare-mvtec-gallery-{m}-{c}.png")
            return res, y_te.tolist()
        per_cat[c], labels[c] = unit(f"category-{c}", one_category)
    intervals = {c: _intervals({c: per_cat[c]}, {c: labels[c]}, s.methods) for c in per_cat}
    pixel_ci = {m: {c: per_cat[c][m][0]["pixel_ci"] for c in per_cat if "pixel_ci" in per_cat[c][m][0]}
                for m in s.methods}
    health = {c: {m: [r["health"] for r in rs if "health" in r] for m, rs in res.items()} for c, res in per_cat.items()}
    _drop_scores(per_cat)
    out_ = {k: _summarise(per_cat, s.methods, k)
            for k in ("image_auroc", "pixel_auroc", "aupro", "fit_seconds", "score_seconds_per_image")}
    out_.update(image_intervals=intervals, pixel_ci_seed0=pixel_ci, health=health, failed_health=failures(per_cat),
                budget=budget(s.method_settings, s.n_train),
                masks={c: ("ground truth at %d px" % s.mask_size) if c in cats else "" for c in per_cat})
    return out_


@experiment("compare-mvtec", chapter="compare", description="All methods of the book on MVTec AD categories "
            "present and the synthetic ones: image AUROC, pixel AUROC, AUPRO, times (quick: 32 px)")
def compare_mvtec(profile, out, device):
    s = COMPARE_MVTEC_QUICK if profile == "quick" else COMPARE_MVTEC_FULL
    res = run_mvtec(s, device, out)
    return {"metrics": res, "paper": {"references": REFERENCES["mvtec"]}, "config": s,
            "data": "MVTec-layout categories: " + ", ".join(sorted(res["image_auroc"].get("genc", {}).get("by_unit", {})))}
