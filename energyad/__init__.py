"""energyad: energy-based anomaly detection, the library behind the course.

Modules: :mod:`energyad.config` (profile, device, data root, seed), :mod:`energyad.data`,
:mod:`energyad.metrics`, :mod:`energyad.plotting`, the methods in :mod:`energyad.methods`
(one module per paper), their networks in :mod:`energyad.networks`, and the reproducible
experiments in :mod:`energyad.experiments` (``python -m energyad list``).
"""
__version__ = "0.1.0"

from .config import data_root, get_device, get_profile, seed_everything  # noqa: E402,F401
