"""Packing one device call (energyad.pack) and running the experiments without what the GPU machines lack."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from energyad.__main__ import main
from energyad.pack import pack

REPO = Path(__file__).resolve().parents[1]


def test_pack_copies_the_code_one_category_and_the_wheels(carpet_data_root, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "kornia-0.0-py3-none-any.whl").write_bytes(b"x" * 10)
    out = tmp_path / "gpu"
    info = pack(out, ["carpet"], wheels=wheels)
    assert (out / "energyad" / "experiments" / "runner.py").is_file()
    assert not list((out / "energyad").rglob("__pycache__"))
    assert sorted(p.name for p in (out / "data" / "mvtec_ad" / "carpet").iterdir()) == ["ground_truth", "test", "train"]
    assert (out / "wheels" / "kornia-0.0-py3-none-any.whl").is_file()
    run_sh = (out / "run.sh").read_text()
    assert "reproduce \"$1\" --profile full --out \"$here/out\" --max-minutes" in run_sh
    assert 'ENERGYAD_DATA="$here/data"' in run_sh and "split -b 15m" in run_sh
    assert 'bench --device cuda --out "$here/out/bench"' in run_sh
    assert info["bytes"] == sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    # the packed code runs on its own, pointed at the packed data
    env = {**os.environ, "PYTHONPATH": str(out), "ENERGYAD_DATA": str(out / "data")}
    listing = subprocess.run([sys.executable, "-m", "energyad", "list"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, check=True).stdout
    assert "genc-mvtec" in listing


def test_pack_refuses_what_one_call_cannot_carry_and_a_missing_category(carpet_data_root, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"more than one call may carry .*carpet .* MiB"):
        pack(tmp_path / "gpu", ["carpet"], limit=10_000)
    assert main(["pack", "grid", "--out", str(tmp_path / "gpu2")]) == 2
    assert "'grid' not found" in capsys.readouterr().err


BLOCK = '''import importlib.machinery, sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pooch", "pandas"):
            return importlib.machinery.ModuleSpec(name, None)     # found, but cannot be loaded
        return None
sys.meta_path.insert(0, _Block())
'''


def test_the_mvtec_experiments_run_without_pooch_and_pandas(tmp_path):
    """The GPU machines lack pooch (and we do not rely on their pandas): every MVTec experiment, quick
    and stopped-and-resumed, runs with both impossible to import (the chapters' own tests, rerun so)."""
    (tmp_path / "gpu_env.py").write_text(BLOCK)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    blocked = subprocess.run([sys.executable, "-c", "import gpu_env\ntry:\n import pooch\nexcept ImportError:\n"
                              " print('blocked')"], env=env, capture_output=True, text=True)
    assert blocked.stdout.strip() == "blocked"
    tests = [f"tests/test_{n}.py" for n in ("genc_mvtec_real", "matsubara_mvtec", "kinder_iem_mvtec", "dehaene_mvtec")]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "gpu_env", "-p", "no:cacheprovider", *tests,
                        "-k", "unseen or resume"], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "\n9 passed" in r.stdout
