"""Data sets of the course, offline-first.

Every loader reads from the data root (``ENERGYAD_DATA``, see :mod:`energyad.config`), downloads
with checksums where it may, and otherwise fails with a :class:`DataError` that names the file and
the fix. Where a chapter must run without the real data, ``*_or_standin`` loaders fall back to an
embedded stand-in and say so with a :class:`StandInWarning`.
"""
from .errors import DataError, StandInWarning  # noqa: F401
from .mnist import load_mnist, load_mnist_or_standin, one_class_split, standin_digits  # noqa: F401
from . import celeba, mvtec, svhn, synthetic, toy  # noqa: F401,E402
from .celeba import load_celeba  # noqa: F401,E402
from .mvtec import MVTecAD, find_mvtec_root, load_split  # noqa: F401,E402
from .svhn import load_svhn  # noqa: F401,E402
from .synthetic import synthetic_mvtec_root, write_synthetic_mvtec  # noqa: F401,E402
from .toy import make_erased_patch_toy, mnist_erased_patch_toy, svhn_erased_patch_toy  # noqa: F401,E402
