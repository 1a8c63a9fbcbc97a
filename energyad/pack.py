"""Pack the code and the data of one device call into a folder to carry to a lent GPU machine.

    python -m energyad pack transistor --out gpu            # code + one MVTec AD category
    python -m energyad pack --mnist --wheels wheels --out gpu

writes ``gpu/energyad`` (the library's source files), ``gpu/data/<as under the data root>``,
``gpu/wheels/*.whl`` (packages the machine lacks, e.g. kornia for Dehaene's DSSIM) and ``gpu/run.sh``.
On the machine, ``bash gpu/run.sh EXPERIMENT [MINUTES]`` installs the wheels, runs
``reproduce EXPERIMENT --profile full --out gpu/out --max-minutes MINUTES`` (``bash gpu/run.sh bench``:
the bench on the GPU, ``gpu/out/bench/bench.json``) and, where ``$OUT`` is set, leaves ``gpu/out``
(results and checkpoints) there as ``out.tar.part-*`` pieces of at most 15 MiB.
Put ``gpu/out`` back (``cat out.tar.part-* | tar -x -C gpu``) and carry ``gpu`` again: exit code 75
means "run the same command again", 0 that the result file is written. See README, "Running the full
profile on a lent GPU".
"""
from __future__ import annotations

import shutil
from pathlib import Path

LIMIT = 64 * 2 ** 20          # what one device call may carry

RUN_SH = """#!/bin/bash
# bash {name}/run.sh EXPERIMENT [MINUTES]: the full profile of EXPERIMENT, stopping before MINUTES (default 8);
# bash {name}/run.sh bench: python -m energyad bench on the GPU.
set -u
here=$(cd "$(dirname "$0")" && pwd)
if compgen -G "$here/wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        "$here"/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$here${{PYTHONPATH:+:$PYTHONPATH}}" ENERGYAD_DATA="$here/data" ENERGYAD_CACHE="$here/cache"
export ENERGYAD_OFFLINE=1
if [ "$1" = bench ]; then                  # the bench on the device: gpu/out/bench/bench.json
    python3 -m energyad bench --device cuda --out "$here/out/bench"
else
    python3 -m energyad reproduce "$1" --profile full --out "$here/out" --max-minutes "${{2:-8}}"
fi
rc=$?
if [ -n "${{OUT:-}}" ] && [ -d "$here/out" ]; then
    tar -C "$here" -cf - out | split -b 15m - "$OUT/out.tar.part-"
fi
echo "exit $rc (75: run the same command again to resume; 0: done)"
exit $rc
"""


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def pack(out, categories=(), mnist: bool = False, wheels=None, limit: int = LIMIT) -> dict:
    """Fill ``out`` with the library, the named MVTec AD categories and/or MNIST (copied from the data
    root, keeping their layout), the ``*.whl`` files of the folder ``wheels`` and ``run.sh``. Returns
    ``{"bytes", "files"}``; raises ValueError naming the largest parts when it exceeds ``limit``."""
    from .config import data_root
    from .data import DataError
    from .data.mnist import mnist_folder
    from .data.mvtec import find_mvtec_root

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    code = Path(__file__).resolve().parent
    shutil.rmtree(out / "energyad", ignore_errors=True)
    shutil.copytree(code, out / "energyad", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    root = data_root()
    parts = {"energyad": out / "energyad"}
    for c in categories:
        src = find_mvtec_root(c) / c
        try:
            rel = src.relative_to(root)
        except ValueError:
            raise DataError(f"MVTec AD category {c!r} was found at {src}, outside the data root {root}; only "
                            "the data root travels. Fix: set ENERGYAD_DATA to the folder that holds it.") from None
        shutil.rmtree(out / "data" / rel, ignore_errors=True)
        shutil.copytree(src, out / "data" / rel)
        parts[c] = out / "data" / rel
    if mnist:
        src = mnist_folder()
        if not src.is_dir():
            raise DataError(f"MNIST not found at {src}. Fix: set ENERGYAD_DATA to a folder that holds MNIST/raw/.")
        (out / "data" / "MNIST").mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out / "data" / "MNIST" / "raw", ignore_errors=True)
        shutil.copytree(src, out / "data" / "MNIST" / "raw")
        parts["MNIST"] = out / "data" / "MNIST"
    if wheels is not None:
        found = sorted(Path(wheels).glob("*.whl"))
        if not found:
            raise FileNotFoundError(f"no *.whl file in {wheels}. Fix: download them first (README: 'Running the "
                                    "full profile on a lent GPU').")
        (out / "wheels").mkdir(exist_ok=True)
        for w in found:
            shutil.copy2(w, out / "wheels" / w.name)
        parts["wheels"] = out / "wheels"
    (out / "run.sh").write_text(RUN_SH.format(name=out.name))
    total = _size(out)
    if total > limit:
        sizes = sorted(((_size(p), k) for k, p in parts.items()), reverse=True)
        listing = ", ".join(f"{k} {b / 2 ** 20:.1f} MiB" for b, k in sizes)
        raise ValueError(f"{out} holds {total / 2 ** 20:.1f} MiB, more than one call may carry "
                         f"({limit / 2 ** 20:.0f} MiB): {listing}. Fix: pack one category a call.")
    return {"bytes": total, "files": sum(1 for f in out.rglob("*") if f.is_file())}
