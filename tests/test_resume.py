"""--max-minutes: a run stopped inside a unit resumes where it stopped and ends with the numbers of an
uninterrupted run (model, optimiser and every random state restored)."""
import json

import numpy as np
import pytest
import torch

from energyad import experiments
from energyad.__main__ import main
from energyad.experiments import resume, runner


def _toy(profile, out, device):
    def one_category():
        g = torch.Generator().manual_seed(3)
        net = torch.nn.Linear(4, 1)
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        x = torch.randn(64, 4, generator=g)
        y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(64, generator=g)

        def step(i):
            idx = torch.randint(0, 64, (16,), generator=g)                # the run's generator
            noise = torch.randn(16) * 0.01 + float(np.random.randn()) * 0.001   # global torch and numpy RNG
            opt.zero_grad()
            loss = ((net(x[idx]).squeeze(1) - y[idx] - noise) ** 2).mean()
            loss.backward()
            opt.step()

        resume.resumable_loop("cat-a-training", 40, {"net": net, "opt": opt}, step, generator=g, every_seconds=0)
        return {"w": net.weight.detach().flatten().tolist(), "b": net.bias.item()}

    return {"metrics": {"a": runner.unit("category-a", one_category)}, "paper": {}, "config": {}}


@pytest.fixture
def toy(monkeypatch):
    reg = {"toy": experiments.Experiment("toy", _toy, "t", "a resumable toy", ("quick", "full"))}
    monkeypatch.setattr(experiments, "REGISTRY", reg)
    monkeypatch.setattr(experiments, "load_all", lambda: reg)


def test_a_stopped_run_resumes_to_the_uninterrupted_result(tmp_path, toy, monkeypatch, stop_after_steps, one_thread):
    straight = runner.run("toy", "quick", tmp_path / "a", "cpu")["metrics"]["a"]

    stop_after_steps(15)
    with pytest.raises(resume.StopForResume, match="stopped at step 15 of 40"):
        runner.run("toy", "quick", tmp_path / "b", "cpu", max_minutes=1)
    partial = tmp_path / "b" / "checkpoints" / "toy-quick-seed0" / "cat-a-training.partial.pt"
    assert partial.is_file() and torch.load(partial, weights_only=False)["progress"] == 15
    assert not (tmp_path / "b" / "toy.json").exists()
    monkeypatch.setattr(resume, "deadline_reached", lambda: False)
    res = runner.run("toy", "quick", tmp_path / "b", "cpu", max_minutes=1)
    assert res["metrics"]["a"] == straight                       # same seed, same numbers, to the last bit
    assert res["provenance"]["calls"] == 2 and res["provenance"]["resumed_units"] == ["cat-a-training@15"]
    assert not (tmp_path / "b" / "checkpoints" / "toy-quick-seed0").exists()


def test_the_command_line_exits_75_to_ask_for_a_resume(tmp_path, toy, monkeypatch, capsys, one_thread):
    monkeypatch.setattr(resume, "deadline_reached", lambda: True)
    assert main(["reproduce", "toy", "--out", str(tmp_path), "--max-minutes", "0.01"]) == resume.EXIT_RESUME
    assert "run the same command again to resume" in capsys.readouterr().out
    monkeypatch.setattr(resume, "deadline_reached", lambda: False)
    assert main(["reproduce", "toy", "--out", str(tmp_path), "--max-minutes", "5"]) == 0
    assert json.loads((tmp_path / "toy.json").read_text())["provenance"]["calls"] == 2


def test_outside_a_run_the_loop_just_runs():
    seen = []
    assert resume.resumable_loop("k", 5, {}, seen.append) == 5 and seen == [0, 1, 2, 3, 4]
