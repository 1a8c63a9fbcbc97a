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
def stop_after_steps(monkeypatch):
    """``stop_after_steps(n)``: the resumable loops' deadline check answers yes once ``n`` steps have run.

    The loops check once before a unit and once after each step, so the first check to say yes is the
    ``n + 2``-th; steps count on across the units of one run.
    """
    from energyad.experiments import resume

    def arm(n: int):
        calls = {"n": 0}

        def reached():
            calls["n"] += 1
            return calls["n"] > n + 1

        monkeypatch.setattr(resume, "deadline_reached", reached)
    return arm


@pytest.fixture
def make_data_root(tmp_path, monkeypatch):
    """``make_data_root(size=64, n_test_good=3, n_test_defect=2, seed=2)`` writes a data root holding one
    real-layout MVTec AD category the project does not ship, "carpet" (a texture, masks included), points
    ``ENERGYAD_DATA`` at it and ``ENERGYAD_CACHE`` at a folder of its own, and returns the root.
    Experiments pointed at it must run on it and report pixel numbers."""
    def make(size: int = 64, n_test_good: int = 3, n_test_defect: int = 2, seed: int = 2, n_train: int = 6):
        root = tmp_path / "data"
        synthetic.write_synthetic_mvtec(root / "mvtec_ad", "carpet", "texture", n_train=n_train,
                                        n_test_good=n_test_good, n_test_defect=n_test_defect, size=size, seed=seed)
        monkeypatch.setenv("ENERGYAD_DATA", str(root))
        monkeypatch.setenv("ENERGYAD_CACHE", str(tmp_path / "cache"))
        return root
    return make


@pytest.fixture
def carpet_data_root(make_data_root):
    """The carpet-only data root at 64 px (3 good and 2 defective test images)."""
    return make_data_root()


@pytest.fixture
def three_categories(tmp_path, monkeypatch):
    """A data root with carpet (RGB) and grid (grayscale), both with masks, and bottle without masks (like
    the shared copy's bottle), 32 px; returns the root."""
    import shutil

    root = tmp_path / "mvtec_ad"
    for cat, gray in (("carpet", False), ("grid", True), ("bottle", False)):
        synthetic.write_synthetic_mvtec(root, cat, "texture", n_train=2, n_test_good=1, n_test_defect=1, size=32,
                                        grayscale=gray)
    shutil.rmtree(root / "bottle" / "ground_truth")
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path))
    return tmp_path
