"""Experiments of the Kinder chapter: :mod:`.kinder_bn` (the Bayesian networks, Tables 1 and 2) and
:mod:`.kinder_iem` (the neural introspective energy model, Tables 5 and 7), importable together."""
from .kinder_bn import *  # noqa: F401,F403
from .kinder_iem import *  # noqa: F401,F403
