"""Experiments of the Kinder chapter, part 1: the pixel Bayesian network (Table 1) and hidden layers
(Table 2) on one-class MNIST."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import metrics, plotting
from ..config import seed_everything
from ..health import Health
from ..methods.kinder_bn import BNSettings, HiddenBN, HiddenBNSettings, PixelBN, binarize
from . import experiment
from .runner import unit

# Table 1 (AUROC in %, one-class MNIST, one layer, CPT sideward pass).
PAPER_TABLE1 = {"0": 94.9, "1": 99.9, "2": 82.1, "3": 84.2, "4": 85.0, "5": 89.2, "6": 95.1, "7": 94.8,
                "8": 76.6, "9": 92.5, "mean": 89.4}


@dataclass
class BNExperimentSettings:
    digits: tuple = tuple(range(10))
    n_train: int | None = 1000          # images of the normal digit (the thesis: all, about 6,000)
    n_test: int | None = 2000           # test images (the thesis: all 10,000)
    gibbs_chains: int = 16
    gibbs_iterations: int = 20_000      # the thesis: 100,000 between samples
    bn: BNSettings = field(default_factory=BNSettings)        # parents "code" (Table 1), lambda = 1
    # Comparisons run beside the main model (same data, same split):
    parent_sets: tuple = ("code", "fig9", "none")             # orientations and the Bernoulli baseline
    pseudo_counts: tuple = (1.0, 0.5, 0.01)                   # lambda, with the main model's parents


BN_QUICK = BNExperimentSettings()
BN_FULL = BNExperimentSettings(n_train=None, n_test=None, gibbs_iterations=100_000)


def bn_one_class(digit: int, train, test, s: BNExperimentSettings, seed: int = 0, bn_settings: BNSettings | None = None):
    """Fit the BN on one digit; return (model, energies of the test set, test labels (1 = other digit)).
    ``bn_settings`` overrides ``s.bn`` (another orientation or pseudo-count on the same split)."""
    from ..data import one_class_split

    b = bn_settings or s.bn
    x_tr, x_te, y_te = one_class_split(train, test, digit, s.n_train, s.n_test, seed=seed)
    bn = PixelBN(b).fit(binarize(x_tr, b.threshold))
    return bn, bn.score(x_te), y_te


def bn_health(bn: PixelBN, energies: torch.Tensor, y: torch.Tensor, name: str) -> Health:
    """Health of a counted network: finite energies, energies that depend on the image (spread of E over
    test images relative to its mean), and normal images less surprising than the others on average."""
    h = Health(name)
    e = energies.double()
    h.check("finite_energies", float(torch.isfinite(e).double().mean()), bool(torch.isfinite(e).all()), "== 1")
    spread = float(e.std() / e.abs().mean())
    h.check("energy_spread", spread, spread > 0.01, "std(E) / mean|E| over test images > 0.01")
    gap = float(e[y == 1].mean() - e[y == 0].mean())
    h.check("energy_gap_nats", gap, gap > 0, "mean E(other digits) - mean E(normal digit) > 0")
    h.note("cpt_rows", int(bn.cpt.numel()))
    return h


@experiment("kinder-bn-mnist", chapter="kinder", description="Kinder: pixel Bayesian network on one-class "
            "MNIST, Table 1 (parents NW, W, SW, N as the thesis's code; also Fig. 9's NW, N, NE, W, independent "
            "Bernoulli pixels, and pseudo-counts 1, 0.5, 0.01)")
def kinder_bn_mnist(profile, out, device):
    from ..data import load_mnist_or_standin

    s = BN_QUICK if profile == "quick" else BN_FULL
    tr, te = load_mnist_or_standin("train"), load_mnist_or_standin("test")

    def one_digit(d):
        r = {"parents": {}, "pseudo_count": {}}
        for par in s.parent_sets:
            b = dataclasses.replace(s.bn, parents=par)
            bn, energies, y = bn_one_class(d, tr[:2], te[:2], s, bn_settings=b)
            r["parents"][par] = 100 * metrics.image_auroc(energies, y)
            if par == s.bn.parents:
                h = bn_health(bn, energies, y, f"pixel BN ({par}), digit {d}")
                h.raise_if_failed(f"digit {d}")
                r["health"] = h.to_dict()
                main = bn
        for lam in s.pseudo_counts:
            b = dataclasses.replace(s.bn, pseudo_count=lam)
            _, energies, y = bn_one_class(d, tr[:2], te[:2], s, bn_settings=b)
            r["pseudo_count"][str(lam)] = 100 * metrics.image_auroc(energies, y)
        if d in (1, 8):
            g = seed_everything(d)
            samples = main.gibbs(s.gibbs_chains, s.gibbs_iterations, g)
            fig = plotting.image_grid(samples.float(), nrow=8)
            fig.suptitle(f"Gibbs samples, digit {d}, {s.gibbs_iterations} iterations (cf. Fig. 10)")
            plotting.save(fig, out / f"kinder-bn-mnist-samples-{d}.png")
        return r

    per_digit = {}
    for d in s.digits:   # one resumable unit per digit
        per_digit[str(d)] = unit(f"digit-{d}-bn-v2", lambda: one_digit(d))

    def table(key, variant):
        t = {d: r[key][variant] for d, r in per_digit.items()}
        return {**t, "mean": float(np.mean(list(t.values())))}

    by_parents = {p: table("parents", p) for p in s.parent_sets}
    by_lambda = {str(lam): table("pseudo_count", str(lam)) for lam in s.pseudo_counts}
    main = by_parents[s.bn.parents]
    return {"metrics": {"auroc": {d: main[d] for d in per_digit}, "mean_auroc": main["mean"],
                        "parents": s.bn.parents, "pseudo_count": s.bn.pseudo_count,
                        "auroc_by_parents": by_parents, "auroc_by_pseudo_count": by_lambda,
                        "health": {d: r["health"] for d, r in per_digit.items()}, "unit": "percent"},
            "paper": PAPER_TABLE1, "config": s, "data": tr[2]}


# --- Sec. 3.2: hidden layers (Table 2) ---------------------------------------------------------------

# Table 2 (AUROC in %, one-class MNIST, CPT sideward pass, 3 layers).
PAPER_TABLE2 = {"0": 98.9, "1": 99.3, "2": 91.3, "3": 89.2, "4": 90.9, "5": 86.7, "6": 98.0, "7": 94.3,
                "8": 87.7, "9": 93.8, "mean": 93.0}


@dataclass
class HiddenBNExperimentSettings:
    digits: tuple = tuple(range(10))
    n_train: int | None = 1000          # the thesis: all images of the digit (about 6,000)
    n_test: int | None = 2000           # the thesis: all 10,000
    gibbs_chains: int = 16
    gibbs_iterations: int = 5000        # the thesis: 100,000
    bn: HiddenBNSettings = field(default_factory=lambda: HiddenBNSettings(em_iterations=10))


HIDDEN_QUICK = HiddenBNExperimentSettings()
HIDDEN_FULL = HiddenBNExperimentSettings(n_train=None, n_test=None, gibbs_iterations=100_000,
                                         bn=HiddenBNSettings())


def hidden_bn_one_class(digit: int, train, test, s: HiddenBNExperimentSettings, seed: int = 0, progress=False):
    """Fit the pixel BN + hidden layers on one digit; return (model, per-layer log-probs of the test
    set (N, 3), test labels (1 = other digit))."""
    from ..data import one_class_split

    x_tr, x_te, y_te = one_class_split(train, test, digit, s.n_train, s.n_test, seed=seed)
    torch.manual_seed(seed)                                      # the kernels' random initialisation
    bn = HiddenBN(s.bn).fit(binarize(x_tr, s.bn.threshold), progress=progress)
    return bn, bn.layer_log_probs(binarize(x_te, s.bn.threshold)), y_te


@experiment("kinder-bn-hidden-mnist", chapter="kinder", description="Kinder: Bayesian network with two hidden "
            "layers (convolution + threshold, BIC structure search, EM with the Eq. 9 surrogate), Table 2")
def kinder_bn_hidden_mnist(profile, out, device):
    from ..data import load_mnist_or_standin

    s = HIDDEN_QUICK if profile == "quick" else HIDDEN_FULL
    tr, te = load_mnist_or_standin("train"), load_mnist_or_standin("test")
    aurocs, per_layer, structures = {}, {}, {}
    def one_digit(d):
        bn, lp, y = hidden_bn_one_class(d, tr[:2], te[:2], s, progress=True)
        if d in (1, 8):
            samples = bn.gibbs(s.gibbs_chains, s.gibbs_iterations, seed_everything(d))
            fig = plotting.image_grid(samples.float(), nrow=8)
            fig.suptitle(f"Gibbs samples with hidden layers, digit {d}, {s.gibbs_iterations} flips (cf. Fig. 13)")
            plotting.save(fig, out / f"kinder-bn-hidden-mnist-samples-{d}.png")
        return (100 * metrics.image_auroc(-lp.sum(1), y),
                [100 * metrics.image_auroc(-lp[:, l], y) for l in range(lp.shape[1])],
                [[[k2, dr] for k2, dr in p] for layer in bn.layers for p in layer.structure])

    for d in s.digits:   # one resumable unit per digit
        aurocs[str(d)], per_layer[str(d)], structures[str(d)] = unit(f"digit-{d}", lambda: one_digit(d))
    mean = float(np.mean(list(aurocs.values())))
    return {"metrics": {"auroc": aurocs, "mean_auroc": mean, "auroc_per_layer": per_layer,
                        "structures": structures, "unit": "percent"},
            "paper": PAPER_TABLE2, "config": s, "data": tr[2]}


# --- Sec. 4: the neural introspective energy model ---------------------------------------------------

# Table 5 (AUROC in %, IEM trained from scratch) and Table 7 (AlexNet kernels).
