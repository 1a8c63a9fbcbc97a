"""Data sets of the course, offline-first.

Every loader reads from the data root (``ENERGYAD_DATA``, see :mod:`energyad.config`), downloads
with checksums where it may, and otherwise fails with a :class:`DataError` that names the file and
the fix. Where a chapter must run without the real data, ``*_or_standin`` loaders fall back to an
embedded stand-in and say so with a :class:`StandInWarning`.
"""
from .errors import DataError, StandInWarning  # noqa: F401
from .mnist import load_mnist, load_mnist_or_standin, one_class_split, standin_digits  # noqa: F401
