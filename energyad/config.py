"""Run-wide settings: the profile, the device, the data root, the seed.

Every notebook and the ``python -m energyad`` command read the same three environment
variables, so one setting switches the whole course:

``ENERGYAD_PROFILE``
    ``quick`` (default): small models and data subsets that run in minutes on a laptop CPU.
    ``full``: the papers' settings, meant for a GPU and the real data sets.
``ENERGYAD_DATA``
    Where data sets live (read and downloaded). Default: a per-user cache folder
    (``pooch.os_cache("energyad")``). Nothing in the library hard-codes any other path.
``ENERGYAD_CACHE``
    A writable folder for generated data and checkpoints (default: the per-user cache folder).
``ENERGYAD_DEVICE``
    Overrides the automatic choice (``cuda``, then ``mps``, then ``cpu``).

Device and dtype otherwise follow the inputs: no module keeps a global device.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

PROFILES = ("quick", "full")


def get_profile(profile: str | None = None) -> str:
    """Return the active profile: the argument, else ``$ENERGYAD_PROFILE``, else ``"quick"``."""
    name = (profile or os.environ.get("ENERGYAD_PROFILE") or "quick").strip().lower()
    if name not in PROFILES:
        raise ValueError(
            f"Unknown profile {name!r}: choose one of {PROFILES} "
            "(set ENERGYAD_PROFILE=quick or ENERGYAD_PROFILE=full)."
        )
    return name


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Folder holding the data sets: ``root``, else ``$ENERGYAD_DATA``, else a user cache dir."""
    if root is None:
        root = os.environ.get("ENERGYAD_DATA")
    if root is None or str(root) == "":
        import pooch

        root = pooch.os_cache("energyad")
    return Path(root).expanduser().resolve()


def cache_root() -> Path:
    """A writable folder for things the library generates (synthetic data, checkpoints):
    ``$ENERGYAD_CACHE``, else a per-user cache folder."""
    root = os.environ.get("ENERGYAD_CACHE")
    if not root:
        import pooch

        root = pooch.os_cache("energyad")
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def downloads_allowed() -> bool:
    """False when ``$ENERGYAD_OFFLINE`` is 1/true/yes: loaders then never touch the network and fall
    back at once to what is on disk or to their stand-ins (with the usual visible notice)."""
    return os.environ.get("ENERGYAD_OFFLINE", "").strip().lower() not in ("1", "true", "yes")


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Pick a device: the argument, else ``$ENERGYAD_DEVICE``, else cuda, then mps, then cpu."""
    name = device or os.environ.get("ENERGYAD_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way.

    On the CPU the same seed gives the same numbers run after run (torch's CPU kernels are
    deterministic for the operations this library uses).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def settings_for(profile: str | None, quick, full):
    """Return ``quick`` or ``full`` (two settings objects) for the active profile. Inside a
    ``reproduce`` run the choice joins the run's configuration (resumable units are keyed by it)."""
    chosen = quick if get_profile(profile) == "quick" else full
    from .experiments.runner import record_settings

    record_settings(chosen)
    return chosen
