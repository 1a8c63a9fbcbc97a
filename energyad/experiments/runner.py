"""Run a registered experiment and write its result file with provenance."""
from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from .. import __version__
from ..config import get_device, get_profile, seed_everything
from . import get


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        commit = out.stdout.strip()
        if not commit:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def to_jsonable(obj):
    """Turn dataclasses, tensors, numpy scalars and paths into plain JSON values."""
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def run(id: str, profile: str | None = None, out: str | Path = "runs", device=None, seed: int = 0) -> dict:
    """Run experiment ``id`` and write ``out/<id>.json``; return the result dict."""
    exp = get(id)
    profile = get_profile(profile)
    if profile not in exp.profiles:
        raise ValueError(f"Experiment {id!r} has no {profile!r} profile (it has: {', '.join(exp.profiles)}).")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = get_device(device)
    seed_everything(seed)
    t0 = time.perf_counter()
    res = exp.fn(profile=profile, out=out, device=device)
    seconds = time.perf_counter() - t0
    result = {
        "experiment": id,
        "profile": profile,
        "metrics": res.get("metrics", {}),
        "paper": res.get("paper", {}),
        "config": res.get("config", {}),
        "provenance": {
            "commit": _git_commit(),
            "energyad": __version__,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "device": _device_name(device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "seed": seed,
            "seconds": round(seconds, 2),
            "data": res.get("data", ""),
            "figures": sorted(p.name for p in out.glob(f"{id}*.png")),
        },
    }
    result = to_jsonable(result)
    path = out / f"{id}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def load_result(id: str, profile: str, folders=None) -> dict | None:
    """Find a result file for ``id`` in ``profile`` (committed results first); ``None`` if absent.

    Committed results live in ``book/results/<profile>/<id>.json`` (runs that really happened,
    with their provenance); chapters show them only with the profile and provenance beside them.
    """
    folders = list(folders or [])
    repo = Path(__file__).resolve().parents[2]
    folders.append(repo / "book" / "results" / profile)
    for folder in folders:
        p = Path(folder) / f"{id}.json"
        if p.exists():
            data = json.loads(p.read_text())
            if data.get("profile") == profile:
                return data
    return None
