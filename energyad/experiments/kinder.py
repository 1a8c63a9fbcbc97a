"""Experiments of the Kinder chapter: the pixel Bayesian network on one-class MNIST (Table 1)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import metrics, plotting
from ..config import seed_everything
from ..methods.kinder_bn import BNSettings, PixelBN, binarize
from . import experiment

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
    bn: BNSettings = field(default_factory=BNSettings)


BN_QUICK = BNExperimentSettings()
BN_FULL = BNExperimentSettings(n_train=None, n_test=None, gibbs_iterations=100_000)


def bn_one_class(digit: int, train, test, s: BNExperimentSettings, seed: int = 0):
    """Fit the BN on one digit; return (model, energies of the test set, test labels (1 = other digit))."""
    from ..data import one_class_split

    x_tr, x_te, y_te = one_class_split(train, test, digit, s.n_train, s.n_test, seed=seed)
    bn = PixelBN(s.bn).fit(binarize(x_tr, s.bn.threshold))
    return bn, bn.score(x_te), y_te


@experiment("kinder-bn-mnist", chapter="kinder", description="Kinder: pixel Bayesian network (NW, N, NE, W "
            "parents) on one-class MNIST, Table 1")
def kinder_bn_mnist(profile, out, device):
    from ..data import load_mnist_or_standin

    s = BN_QUICK if profile == "quick" else BN_FULL
    tr, te = load_mnist_or_standin("train"), load_mnist_or_standin("test")
    aurocs = {}
    for d in s.digits:
        bn, energies, y = bn_one_class(d, tr[:2], te[:2], s)
        aurocs[str(d)] = 100 * metrics.image_auroc(energies, y)
        if d in (1, 8):
            g = seed_everything(d)
            samples = bn.gibbs(s.gibbs_chains, s.gibbs_iterations, g)
            fig = plotting.image_grid(samples.float(), nrow=8)
            fig.suptitle(f"Gibbs samples, digit {d}, {s.gibbs_iterations} iterations (cf. Fig. 10)")
            plotting.save(fig, out / f"kinder-bn-mnist-samples-{d}.png")
    mean = float(np.mean(list(aurocs.values())))
    return {"metrics": {"auroc": aurocs, "mean_auroc": mean, "unit": "percent"},
            "paper": PAPER_TABLE1, "config": s, "data": tr[2]}
