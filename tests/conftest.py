"""Shared fixtures: small synthetic MVTec-layout categories written once per test session."""
import pytest
import torch

from energyad.data import synthetic


@pytest.fixture(scope="session")
def syn_root(tmp_path_factory):
    """``tex`` (RGB texture, 64px), ``obj`` (RGB object, 64px), ``gray`` (1-channel texture, 32px)."""
    root = tmp_path_factory.mktemp("mvtec")
    synthetic.write_synthetic_mvtec(root, "tex", "texture", n_train=5, n_test_good=3, n_test_defect=2, size=64)
    synthetic.write_synthetic_mvtec(root, "obj", "object", n_train=5, n_test_good=3, n_test_defect=2, size=64,
                                    seed=1)
    synthetic.write_synthetic_mvtec(root, "gray", "texture", n_train=3, n_test_good=1, n_test_defect=1, size=32,
                                    grayscale=True)
    return root


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waiting on a busy machine (30 ms per small matmul)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def carpet_data_root(tmp_path, monkeypatch):
    """A data root holding one real-layout MVTec AD category the project does not ship: "carpet" (a
    texture, masks included, 64 px files), with its own cache folder. Experiments pointed at it must run
    on it and report pixel numbers."""
    root = tmp_path / "data"
    synthetic.write_synthetic_mvtec(root / "mvtec_ad", "carpet", "texture", n_train=6, n_test_good=3,
                                    n_test_defect=2, size=64, seed=2)
    monkeypatch.setenv("ENERGYAD_DATA", str(root))
    monkeypatch.setenv("ENERGYAD_CACHE", str(tmp_path / "cache"))
    return root
