"""Run a registered experiment and write its result file with provenance."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import re
import shutil
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


class CheckpointMismatch(RuntimeError):
    """A checkpoint was written by other code or another configuration than the run that finds it."""


def code_hash() -> str:
    """A short hash of the library's source (every ``energyad/**/*.py``): two runs with the same hash
    ran the same code, whether or not it was committed."""
    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        h.update(str(f.relative_to(pkg)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def source_hashes() -> dict:
    """``{path relative to the package: short sha256}`` of every source file of the library: the report
    compares them with the files of today to flag a result whose code has changed since it ran."""
    pkg = Path(__file__).resolve().parents[1]
    return {str(f.relative_to(pkg)): hashlib.sha256(f.read_bytes()).hexdigest()[:12]
            for f in sorted(pkg.rglob("*.py"))}


class Checkpoints:
    """Finished units of work (a digit, a category) of one run, kept in ``out/checkpoints/<id>-<profile>/``
    so that an interrupted run resumes where it stopped. A unit's value must be picklable (metrics, not
    models); figures a unit writes stay in ``out``.

    Each unit file records the code that wrote it (:func:`code_hash` and the commit) and a hash of the
    configuration (the settings the experiment chose through :func:`energyad.config.settings_for`, plus
    anything passed to :meth:`record`). A unit written under another configuration is refused; one
    written by other code is refused unless ``reuse`` is set (``--reuse-checkpoints``): the error
    names the file and the fix. Nothing is reused silently."""

    def __init__(self, folder: Path, commit: str = "unknown", reuse: bool = False, context=()):
        self.folder = Path(folder)
        self.loaded: list[str] = []
        self.commit, self.code, self.reuse = commit, code_hash(), reuse
        self.settings: list[str] = [repr(c) for c in context]

    def record(self, settings) -> None:
        """Add ``settings`` (any object with a stable repr, e.g. a dataclass) to the configuration."""
        self.settings.append(repr(settings))

    @property
    def config_hash(self) -> str:
        return hashlib.sha256("\n".join(self.settings).encode()).hexdigest()[:16]

    def _path(self, key: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + ".pt")

    def _check(self, path: Path, meta: dict) -> None:
        fix = f"delete {self.folder} to recompute"
        if meta.get("config") != self.config_hash:
            raise CheckpointMismatch(
                f"Checkpoint {path} was written with another configuration (hash {meta.get('config')}, "
                f"this run's is {self.config_hash}). Fix: {fix}, or rerun with another --out.")
        if meta.get("code") != self.code and not self.reuse:
            raise CheckpointMismatch(
                f"Checkpoint {path} was written by other code (commit {meta.get('commit')}, code hash "
                f"{meta.get('code')}; this run: commit {self.commit}, code hash {self.code}). Fix: {fix}, or "
                "pass --reuse-checkpoints (reuse=True) to reuse it deliberately.")

    def unit(self, key: str, fn):
        path = self._path(key)
        if path.exists():
            try:
                saved = torch.load(path, weights_only=False)
            except Exception as err:   # a file cut short by the interruption: compute the unit again
                print(f"checkpoint {path} unreadable ({err}); recomputing {key}")
            else:
                meta = saved.get("meta", {}) if isinstance(saved, dict) and "meta" in saved else {}
                self._check(path, meta)
                self.loaded.append(key)
                return saved["value"]
        from .resume import StopForResume, deadline_reached

        if deadline_reached():
            raise StopForResume(f"stopped before unit {key}; run the same command again to resume")
        value = fn()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        meta = {"code": self.code, "commit": self.commit, "config": self.config_hash}
        torch.save({"meta": meta, "value": value}, tmp)
        tmp.replace(path)                          # atomic: a unit is either saved whole or not at all
        return value

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


_ACTIVE: Checkpoints | None = None


def unit(key: str, fn):
    """Run ``fn()`` as a resumable unit of the experiment being run (plain ``fn()`` outside ``run``)."""
    return _ACTIVE.unit(key, fn) if _ACTIVE is not None else fn()


def record_settings(settings) -> None:
    """Add ``settings`` to the configuration of the run in progress (no-op outside ``run``)."""
    if _ACTIVE is not None:
        _ACTIVE.record(settings)


def relative_paths(obj):
    """Replace the data root, the cache root and the home folder in every string of ``obj`` by
    ``$ENERGYAD_DATA``, ``$ENERGYAD_CACHE`` and ``~``: a committed result names no machine's paths."""
    from ..config import cache_root, data_root

    roots = [(str(data_root()), "$ENERGYAD_DATA"), (str(cache_root()), "$ENERGYAD_CACHE"),
             (str(Path.home()), "~")]

    def fix(v):
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, str):
            for root, name in roots:
                if root and root != "/" and root in v:
                    v = v.replace(root, name)
        return v

    return fix(obj)


def run(id: str, profile: str | None = None, out: str | Path = "runs", device=None, seed: int = 0,
        reuse_checkpoints: bool = False, max_minutes: float | None = None) -> dict:
    """Run experiment ``id`` and write ``out/<id>.json``; return the result dict. Units finished by an
    interrupted earlier run (``out/checkpoints/<id>-<profile>/``) are loaded instead of recomputed; the
    checkpoints are removed once the result file is written. A checkpoint from other code is refused
    unless ``reuse_checkpoints`` (see :class:`Checkpoints`). With ``max_minutes`` the run stops cleanly
    at that time, saving its progress, and raises :class:`~energyad.experiments.resume.StopForResume`;
    the same call again continues (:mod:`energyad.experiments.resume`). ``seconds`` in the provenance
    add up the time of every call."""
    global _ACTIVE
    exp = get(id)
    profile = get_profile(profile)
    if profile not in exp.profiles:
        raise ValueError(f"Experiment {id!r} has no {profile!r} profile (it has: {', '.join(exp.profiles)}).")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = get_device(device)
    seed_everything(seed)
    commit = _git_commit()                         # the code that runs, read before the run, not after
    sources = source_hashes()
    ckpt = Checkpoints(out / "checkpoints" / f"{id}-{profile}-seed{seed}", commit, reuse_checkpoints,
                       context=(id, profile, seed))
    from .resume import StopForResume, set_deadline

    elapsed_file = ckpt.folder / "elapsed.json"
    before = json.loads(elapsed_file.read_text())["seconds"] if elapsed_file.exists() else 0.0
    calls = json.loads(elapsed_file.read_text())["calls"] + 1 if elapsed_file.exists() else 1
    t0 = time.perf_counter()
    _ACTIVE = ckpt
    set_deadline(max_minutes)
    try:
        res = exp.fn(profile=profile, out=out, device=device)
    except StopForResume:
        ckpt.folder.mkdir(parents=True, exist_ok=True)
        elapsed_file.write_text(json.dumps({"seconds": before + time.perf_counter() - t0, "calls": calls}))
        raise
    finally:
        _ACTIVE = None
        set_deadline(None)
    seconds = before + time.perf_counter() - t0
    result = {
        "experiment": id,
        "profile": profile,
        "metrics": res.get("metrics", {}),
        "paper": res.get("paper", {}),
        "config": res.get("config", {}),
        "provenance": {
            "commit": commit,
            "energyad": __version__,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "device": _device_name(device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "seed": seed,
            "seconds": round(seconds, 2),
            "code_hash": ckpt.code,
            "sources": sources,
            "resumed_units": ckpt.loaded,
            "calls": calls,
            "data": res.get("data", ""),
            "figures": sorted(p.name for p in out.glob(f"{id}*.png")),
        },
    }
    result = relative_paths(to_jsonable(result))
    path = out / f"{id}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    ckpt.clear()
    return result


def load_result(id: str, profile: str, folders=None, committed: bool = True) -> dict | None:
    """Find a result file for ``id`` in ``profile`` in ``folders``, then (if ``committed``) among the
    committed results; ``None`` if absent.

    Committed results live in ``book/results/<profile>/<id>.json`` (runs that really happened,
    with their provenance); chapters show them only with the profile and provenance beside them.
    """
    folders = list(folders or [])
    repo = Path(__file__).resolve().parents[2]
    if committed:
        folders.append(repo / "book" / "results" / profile)
    for folder in folders:
        p = Path(folder) / f"{id}.json"
        if p.exists():
            data = json.loads(p.read_text())
            if data.get("profile") == profile:
                return data
    return None


def unmet_needs(exp, profile: str) -> list[str]:
    """What ``exp`` needs that this machine lacks, with the reason (``reproduce all`` skips those)."""
    from ..config import data_root

    missing = []
    for need in exp.needs:
        if need == "gpu" and profile == "full" and not torch.cuda.is_available():
            missing.append("gpu: the full profile needs a GPU (none found)")
        elif need == "svhn" and not (data_root() / "SVHN" / "train_32x32.mat").exists():
            missing.append(f"svhn: no SVHN under {data_root() / 'SVHN'} (energyad.data.svhn downloads it)")
        elif need == "celeba" and not (data_root() / "celeba_64").exists():
            missing.append(f"celeba: no faces under {data_root() / 'celeba_64'}")
        elif need == "alexnet-weights":
            from ..networks.kinder import find_alexnet_weights
            try:
                find_alexnet_weights()
            except Exception:
                missing.append("alexnet-weights: torchvision's AlexNet weights not found (see find_alexnet_weights)")
        elif need == "mvtec":
            from ..data.mvtec import available_categories
            if not available_categories():
                missing.append("mvtec: no MVTec AD category under the data root")
    return missing


def run_all(profile: str | None = None, out: str | Path = "runs", device=None, seed: int = 0,
            force: bool = False, only=None, log=print, reuse_checkpoints: bool = False,
            max_minutes: float | None = None) -> dict:
    """Run every experiment that has ``profile``: skip those whose result file is already in ``out``
    (unless ``force``) and those whose needs are unmet (with the reason); units of an interrupted run
    resume from their checkpoints. Returns ``{id: "done" | "skipped: ..." | "failed: ..."}``. With
    ``max_minutes`` (for the whole call) a run that reaches the limit stops all with StopForResume."""
    from .resume import StopForResume

    t_end = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    from tqdm.auto import tqdm

    from . import load_all

    profile = get_profile(profile)
    out = Path(out)
    todo = [e for i, e in sorted(load_all().items()) if profile in e.profiles and (only is None or i in only)]
    status = {}
    bar = tqdm(todo, desc=f"reproduce all ({profile})", unit="experiment")
    for exp in bar:
        bar.set_postfix_str(exp.id)
        done = out / f"{exp.id}.json"
        if done.exists() and not force and json.loads(done.read_text()).get("profile") == profile:
            status[exp.id] = "skipped: finished (result file present; --force reruns it)"
        elif missing := unmet_needs(exp, profile):
            status[exp.id] = "skipped: " + "; ".join(missing)
        else:
            t0 = time.perf_counter()
            left = None if t_end is None else max(0.0, (t_end - time.monotonic()) / 60)
            try:
                run(exp.id, profile, out, device, seed, reuse_checkpoints, left)
                status[exp.id] = f"done in {time.perf_counter() - t0:.0f} s"
            except StopForResume:
                log(f"{exp.id}: stopped at --max-minutes (progress saved)")
                raise
            except Exception as err:   # one failure must not stop the others; it is reported
                status[exp.id] = f"failed: {type(err).__name__}: {err}"
        log(f"{exp.id}: {status[exp.id]}")
    return status
