"""The default training loop and the loss history that resumable loops save.

A method's training function takes ``loop(total, state, step, generator)``, which runs ``step(i)`` for
``i`` in ``range(total)``. :func:`plain_loop` (the default) just runs them; a full-profile experiment
passes :func:`energyad.experiments.resume.resumable_loop`, which also saves ``state`` (objects with
``state_dict`` / ``load_state_dict``) and every random state, and stops at ``--max-minutes``.
"""
from __future__ import annotations


class History(list):
    """A per-epoch curve (a list) with ``state_dict`` / ``load_state_dict``, so that a resumable loop
    saves and restores it together with the model and the optimiser."""

    def state_dict(self) -> dict:
        return {"values": list(self)}

    def load_state_dict(self, state: dict) -> None:
        self[:] = state["values"]


def plain_loop(total: int, state: dict, step, generator=None) -> None:
    """Run ``step(i)`` for ``i`` in ``range(total)``."""
    for i in range(total):
        step(i)
