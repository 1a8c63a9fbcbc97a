import json

import pytest

from energyad import experiments
from energyad.__main__ import main
from energyad.experiments import runner


@pytest.fixture
def toy_experiment(monkeypatch):
    calls = []

    def fn(profile, out, device):
        calls.append((profile, device.type))
        import matplotlib.figure

        fig = matplotlib.figure.Figure()
        fig.add_subplot().plot([0, 1])
        fig.savefig(out / "toy-exp-curve.png")
        return {"metrics": {"auroc": 0.75}, "paper": {"auroc": 0.8}, "config": {"n": 3}, "data": "none"}

    monkeypatch.setitem(experiments.REGISTRY, "toy-exp",
                        experiments.Experiment("toy-exp", fn, "test", "a toy", ("quick",)))
    return calls


def test_reproduce_writes_the_contract(tmp_path, toy_experiment):
    res = runner.run("toy-exp", "quick", tmp_path, device="cpu")
    on_disk = json.loads((tmp_path / "toy-exp.json").read_text())
    assert on_disk == res
    assert set(res) == {"experiment", "profile", "metrics", "paper", "config", "provenance"}
    assert res["metrics"] == {"auroc": 0.75} and res["paper"] == {"auroc": 0.8}
    prov = res["provenance"]
    for key in ("commit", "date", "device", "torch", "seconds", "data", "figures"):
        assert key in prov
    assert prov["figures"] == ["toy-exp-curve.png"]
    assert toy_experiment == [("quick", "cpu")]


def test_unknown_profile_and_id(tmp_path, toy_experiment):
    with pytest.raises(ValueError, match="no 'full' profile"):
        runner.run("toy-exp", "full", tmp_path, device="cpu")
    with pytest.raises(KeyError, match="Unknown experiment"):
        experiments.get("no-such-experiment")


def test_cli_list_and_reproduce(tmp_path, toy_experiment, capsys):
    assert main(["list"]) == 0
    assert "toy-exp" in capsys.readouterr().out
    assert main(["reproduce", "toy-exp", "--profile", "quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert (tmp_path / "toy-exp.json").exists()
    assert main(["reproduce", "nope", "--out", str(tmp_path)]) == 2
    assert "Unknown experiment" in capsys.readouterr().err


def test_to_jsonable_handles_nan_and_tensors():
    import numpy as np
    import torch

    out = runner.to_jsonable({"a": float("nan"), "b": torch.tensor([1.5]), "c": np.float32(2.0)})
    assert out == {"a": None, "b": [1.5], "c": 2.0}


def test_committed_results_carry_provenance():
    """Every committed result file follows the contract and names its profile and provenance."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "book" / "results"
    paths = [p for profile in ("quick", "full") for p in (root / profile).glob("*.json")]
    assert len(paths) >= 15
    for path in paths:
        data = json.loads(path.read_text())
        assert data["profile"] == path.parent.name, path
        assert data["experiment"] == path.stem, path
        for key in ("commit", "date", "device", "seconds"):
            assert data["provenance"].get(key), (path, key)


def test_the_committed_bench_names_its_machine_and_code():
    from energyad import bench

    res = bench.load()
    for key in ("device", "torch", "commit", "threads", "matmul_peak", "methods", "precision"):
        assert res.get(key), key
    assert res["size"] == "full" and "-dirty" not in res["commit"]
    assert set(res["methods"]) == {"genc", "dehaene", "matsubara", "kinder"}


def test_mvtec_categories_synthetic_and_missing(tmp_path, monkeypatch):
    from energyad.data import DataError

    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ENERGYAD_CACHE", str(tmp_path / "cache"))
    cats = experiments.mvtec_categories(synthetic=True)
    assert set(cats) == {"synthetic_texture", "synthetic_object"}
    assert all((root / c / "ground_truth").is_dir() for c, root in cats.items())
    with pytest.raises(DataError, match="with ground_truth"):
        experiments.mvtec_categories(["bottle"], need_masks=True)
