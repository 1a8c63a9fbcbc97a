import pytest
import torch

from energyad import config


def test_profile_default_env_and_argument(monkeypatch):
    monkeypatch.delenv("ENERGYAD_PROFILE", raising=False)
    assert config.get_profile() == "quick"
    monkeypatch.setenv("ENERGYAD_PROFILE", "FULL")
    assert config.get_profile() == "full"
    assert config.get_profile("quick") == "quick"
    monkeypatch.setenv("ENERGYAD_PROFILE", "fast")
    with pytest.raises(ValueError, match="ENERGYAD_PROFILE"):
        config.get_profile()


def test_data_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path))
    assert config.data_root() == tmp_path.resolve()
    assert config.data_root(tmp_path / "x") == (tmp_path / "x").resolve()
    monkeypatch.delenv("ENERGYAD_DATA")
    assert "energyad" in str(config.data_root())


def test_device_override(monkeypatch):
    monkeypatch.setenv("ENERGYAD_DEVICE", "cpu")
    assert config.get_device() == torch.device("cpu")
    monkeypatch.delenv("ENERGYAD_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert config.get_device().type == expected


def test_seed_gives_same_numbers():
    config.seed_everything(3)
    a = torch.randn(5), torch.nn.Linear(4, 2).weight.detach().clone()
    config.seed_everything(3)
    b = torch.randn(5), torch.nn.Linear(4, 2).weight.detach().clone()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    config.seed_everything(4)
    assert not torch.equal(torch.randn(5), a[0])


def test_settings_for():
    assert config.settings_for("quick", 1, 2) == 1
    assert config.settings_for("full", 1, 2) == 2
