"""The reproduction contract: every experiment of the book, runnable by id.

``python -m energyad reproduce <id> --profile quick|full --out DIR`` writes ``DIR/<id>.json``::

    {"experiment", "profile", "metrics", "paper", "config", "provenance"}

where ``paper`` holds the paper's numbers for the same cells and ``provenance`` the commit, date,
device, torch version, data source and wall-clock seconds, plus the experiment's figures (PNG) in
``DIR``. An experiment is a function registered with :func:`experiment`; it receives the profile,
the output folder and the device, and returns ``{"metrics", "config", "paper"}`` (and optionally
``"data"``: a description of the data actually used).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Callable

# Experiment modules, one per chapter. Each registers its experiments on import.
MODULES = ("foundations", "genc", "dehaene", "matsubara", "kinder", "compare")


@dataclass
class Experiment:
    id: str
    fn: Callable
    chapter: str
    description: str
    profiles: tuple = ("quick", "full")
    needs: tuple = field(default_factory=tuple)  # e.g. ("gpu",) or ("svhn",): shown by `list`


REGISTRY: dict[str, Experiment] = {}


def experiment(id: str, *, chapter: str, description: str, profiles=("quick", "full"), needs=()):
    """Register ``fn(profile, out, device) -> {"metrics", "config", "paper"}`` under ``id``."""

    def wrap(fn):
        if id in REGISTRY and REGISTRY[id].fn is not fn:
            raise ValueError(f"experiment id {id!r} registered twice")
        REGISTRY[id] = Experiment(id, fn, chapter, description, tuple(profiles), tuple(needs))
        return fn

    return wrap


def load_all() -> dict[str, Experiment]:
    """Import every experiment module that exists and return the registry."""
    for name in MODULES:
        full = f"{__name__}.{name}"
        if importlib.util.find_spec(full) is not None:
            importlib.import_module(full)
    return REGISTRY


def get(id: str) -> Experiment:
    reg = load_all()
    if id not in reg:
        known = ", ".join(sorted(reg)) or "(none)"
        raise KeyError(f"Unknown experiment {id!r}. Known experiments: {known}. See `python -m energyad list`.")
    return reg[id]


def mvtec_categories(categories=None, synthetic: bool = False, need_masks: bool = False) -> dict:
    """``{category: root}`` an MVTec experiment runs on: the synthetic categories (the quick profile)
    or the real ones present under the data root (those with masks if ``need_masks``)."""
    from ..data import DataError
    from ..data.mvtec import available_categories
    from ..data.synthetic import synthetic_mvtec_root

    if synthetic:
        root = synthetic_mvtec_root()
        return {c: root for c in (categories or ("synthetic_texture", "synthetic_object"))}
    cats = available_categories(categories, need_masks=need_masks)
    if not cats:
        what = "with ground_truth/ masks (pixel metrics need them) " if need_masks else ""
        raise DataError(f"No MVTec AD category {what}found under the data root. "
                        "Fix: energyad.data.mvtec.download_mvtec(), or set ENERGYAD_DATA.")
    return cats


STAND_IN_NOTICE = ("notice: no real MVTec AD category with ground-truth masks under the data root; {id} runs "
                   "on the synthetic stand-ins (energyad.data.synthetic)")


def real_or_stand_in(categories=None, *, need_masks: bool = True, max_real: int | None = None,
                     image_level=(), fallback: bool = False, stand_in=None, id: str = "this experiment",
                     announce: bool = True) -> tuple[dict, bool]:
    """``({category: root}, stand_in)`` of an MVTec experiment: the real categories under the data root
    (``categories``, those with masks if ``need_masks``; at most ``max_real``, in MVTec AD's order), then
    those of ``image_level`` present (image AUROC only, no masks needed). When there is none and
    ``fallback``, the synthetic categories ``stand_in`` (default: all) and ``stand_in`` True, with a
    printed notice (if ``announce``); when there is none and no fallback, a DataError naming the fix."""
    from ..data.mvtec import available_categories

    cats = available_categories(categories, need_masks=need_masks)
    if max_real is not None:
        cats = dict(list(cats.items())[:max_real])
    if image_level:
        cats.update({c: r for c, r in available_categories(image_level).items() if c not in cats})
    if cats:
        return cats, False
    if not fallback:
        mvtec_categories(categories, need_masks=need_masks)        # raises the DataError with the fix
    if announce:
        print(STAND_IN_NOTICE.format(id=id))
    return mvtec_categories(stand_in, synthetic=True), True


def mvtec_and_synthetic(categories=None, synthetic: bool = False) -> dict:
    """The real categories present (``categories``; none is fine when ``synthetic``) plus, if
    ``synthetic``, the synthetic ones: quick profiles that show the shared copy beside the stand-ins."""
    from ..data import DataError

    cats = {}
    try:
        cats.update(mvtec_categories(categories))
    except DataError:
        if not synthetic:
            raise
    if synthetic:
        cats.update(mvtec_categories(synthetic=True))
    return cats
