"""`reproduce all`: resumable units, skipping of finished runs and unmet needs, failures reported."""
import json

import pytest

from energyad import experiments
from energyad.__main__ import main
from energyad.experiments import runner


@pytest.fixture
def registry(monkeypatch):
    """Replace the registry by three toy experiments: units, a need, a failure."""
    calls = {"units": [], "interrupt": True}

    def with_units(profile, out, device):
        def work(d):
            calls["units"].append(d)
            if d == 2 and calls["interrupt"]:
                raise KeyboardInterrupt                      # the machine went away mid-run
            return {"auroc": 0.5 + d / 10}
        per = {str(d): runner.unit(f"digit-{d}", lambda: work(d)) for d in (1, 2, 3)}
        return {"metrics": per, "paper": {}, "config": {}}

    def boom(profile, out, device):
        raise RuntimeError("deliberate")

    reg = {"a-units": experiments.Experiment("a-units", with_units, "t", "units", ("quick", "full")),
           "b-svhn": experiments.Experiment("b-svhn", with_units, "t", "needs svhn", ("quick",), ("svhn",)),
           "c-boom": experiments.Experiment("c-boom", boom, "t", "fails", ("quick",)),
           "d-full": experiments.Experiment("d-full", boom, "t", "full only", ("full",))}
    monkeypatch.setattr(experiments, "REGISTRY", reg)
    monkeypatch.setattr(experiments, "load_all", lambda: reg)
    return calls


def test_an_interrupted_run_resumes_its_finished_units(tmp_path, registry):
    with pytest.raises(KeyboardInterrupt):
        runner.run("a-units", "quick", tmp_path, "cpu")
    assert registry["units"] == [1, 2]
    assert (tmp_path / "checkpoints" / "a-units-quick-seed0" / "digit-1.pt").is_file()
    assert not (tmp_path / "a-units.json").exists()
    registry["interrupt"] = False
    res = runner.run("a-units", "quick", tmp_path, "cpu")
    assert registry["units"] == [1, 2, 2, 3]                  # digit 1 was not recomputed
    assert res["provenance"]["resumed_units"] == ["digit-1"]
    assert res["metrics"]["1"] == {"auroc": 0.6} and res["metrics"]["3"] == {"auroc": 0.8}
    assert not (tmp_path / "checkpoints" / "a-units-quick-seed0").exists()   # cleared once the result is written


def test_a_unit_file_cut_short_is_recomputed(tmp_path):
    ck = runner.Checkpoints(tmp_path / "ck")
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "u.pt").write_bytes(b"\x80\x02truncated")
    assert ck.unit("u", lambda: 41 + 1) == 42 and ck.loaded == []
    assert runner.Checkpoints(tmp_path / "ck").unit("u", lambda: 0) == 42


def test_run_all_skips_finished_and_unmet_and_reports_failures(tmp_path, registry, monkeypatch, capsys):
    registry["interrupt"] = False
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path / "empty"))
    status = runner.run_all("quick", tmp_path, "cpu")
    assert set(status) == {"a-units", "b-svhn", "c-boom"}                      # d-full has no quick profile
    assert status["a-units"].startswith("done")
    assert status["b-svhn"].startswith("skipped: svhn: no SVHN under")
    assert status["c-boom"] == "failed: RuntimeError: deliberate"
    n = len(registry["units"])
    again = runner.run_all("quick", tmp_path, "cpu")
    assert again["a-units"].startswith("skipped: finished") and len(registry["units"]) == n
    assert runner.run_all("quick", tmp_path, "cpu", force=True)["a-units"].startswith("done")
    assert main(["reproduce", "all", "--profile", "quick", "--out", str(tmp_path)]) == 1   # c-boom failed
    assert "1 failed" in capsys.readouterr().out
    assert json.loads((tmp_path / "a-units.json").read_text())["profile"] == "quick"


def test_a_unit_from_another_configuration_is_refused(tmp_path, one_thread):
    from dataclasses import dataclass

    from energyad.config import settings_for

    @dataclass
    class S:
        epochs: int

    def once(epochs):
        runner._ACTIVE = ck = runner.Checkpoints(tmp_path / "ck", "c1", context=("x", "quick", 0))
        try:
            s = settings_for("quick", S(epochs), S(100))          # recorded into the run's configuration
            return ck, ck.unit("digit-1", lambda: s.epochs)
        finally:
            runner._ACTIVE = None

    assert once(3)[1] == 3
    ck, value = once(3)                                            # same configuration: reused
    assert value == 3 and ck.loaded == ["digit-1"]
    with pytest.raises(runner.CheckpointMismatch, match=r"another configuration.*Fix: delete"):
        once(4)


def test_a_unit_from_other_code_is_refused_unless_reuse_is_asked(tmp_path, monkeypatch):
    runner.Checkpoints(tmp_path / "ck", "old").unit("u", lambda: 1)
    monkeypatch.setattr(runner, "code_hash", lambda: "changed-code")
    with pytest.raises(runner.CheckpointMismatch, match=r"other code \(commit old.*--reuse-checkpoints"):
        runner.Checkpoints(tmp_path / "ck", "new").unit("u", lambda: 2)
    assert runner.Checkpoints(tmp_path / "ck", "new", reuse=True).unit("u", lambda: 2) == 1


def test_results_name_data_relative_to_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ENERGYAD_CACHE", str(tmp_path / "cache"))
    out = runner.relative_paths({"data": [f"MNIST ({tmp_path / 'data'}/MNIST/raw)", str(tmp_path / "cache" / "x")],
                                 "n": 3})
    assert out == {"data": ["MNIST ($ENERGYAD_DATA/MNIST/raw)", "$ENERGYAD_CACHE/x"], "n": 3}
