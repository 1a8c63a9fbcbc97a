"""Resumable loops inside a unit: a long training run stops cleanly before a time limit and continues
in the next call where it stopped, with the same numbers as an uninterrupted run.

A GPU here is lent in calls of at most ten minutes. ``reproduce ... --max-minutes N`` sets a deadline;
a training loop written as

    resumable_loop("genc-transistor", total=3000, state={"net": net, "opt": opt}, step=one_update,
                   generator=g)

runs ``step(i)`` for ``i`` from its saved progress to ``total``. Every ``every_seconds`` and when the
deadline is reached it saves, atomically, the ``state_dict`` of every object in ``state``, the
progress, and every random state the loop may draw from (Python's, NumPy's, torch's CPU and CUDA
generators, and ``generator``). At the deadline it raises :class:`StopForResume`; the command line
exits with :data:`EXIT_RESUME` ("resume me"), and the same command with the same ``--out`` continues.
Outside a ``reproduce`` run the loop simply runs.
"""
from __future__ import annotations

import random
import time

import numpy as np
import torch

EXIT_RESUME = 75          # EX_TEMPFAIL: "stopped at --max-minutes; run the same command again to resume"


class StopForResume(Exception):
    """The run reached its ``--max-minutes`` deadline; its progress is saved under ``--out/checkpoints``."""


_DEADLINE: float | None = None


def set_deadline(max_minutes: float | None) -> None:
    """Stop resumable loops ``max_minutes`` from now (None: no limit)."""
    global _DEADLINE
    _DEADLINE = None if max_minutes is None else time.monotonic() + 60.0 * max_minutes


def deadline_reached() -> bool:
    return _DEADLINE is not None and time.monotonic() >= _DEADLINE


def _rng_state(generator) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def _set_rng_state(state: dict, generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def resumable_loop(key: str, total: int, state: dict, step, generator: torch.Generator | None = None,
                   every_seconds: float = 180.0) -> int:
    """Run ``step(i)`` for ``i`` in ``[start, total)``, ``start`` being the progress saved by an earlier,
    stopped call (0 if none). ``state``: ``{name: object with state_dict/load_state_dict}`` (networks,
    optimisers, schedulers). Returns the number of steps run in this call."""
    from . import runner

    ck = runner._ACTIVE
    path = ck.folder / (runner.re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + ".partial.pt") if ck is not None else None
    start = 0
    if path is not None and path.exists():
        saved = torch.load(path, weights_only=False)
        ck._check(path, saved.get("meta", {}))
        for name, obj in state.items():
            obj.load_state_dict(saved["state"][name])
        _set_rng_state(saved["rng"], generator)
        start = saved["progress"]
        ck.loaded.append(f"{key}@{start}")

    def save(progress: int) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"code": ck.code, "commit": ck.commit, "config": ck.config_hash}
        blob = {"meta": meta, "progress": progress, "rng": _rng_state(generator),
                "state": {name: obj.state_dict() for name, obj in state.items()}}
        tmp = path.with_suffix(".tmp")
        torch.save(blob, tmp)
        tmp.replace(path)

    last = time.monotonic()
    for i in range(start, total):
        if deadline_reached():
            save(i)
            raise StopForResume(f"{key}: stopped at step {i} of {total}; run the same command again to resume")
        step(i)
        if path is not None and time.monotonic() - last >= every_seconds:
            save(i + 1)
            last = time.monotonic()
    if path is not None and path.exists():
        path.unlink()                                  # finished: the unit's own checkpoint takes over
    return total - start
