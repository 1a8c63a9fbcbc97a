"""SVHN from a tiny .mat file the test writes (the real files are not needed)."""
import numpy as np
import pytest

from energyad.data import DataError, load_svhn


def write_mat(folder, name, n=5, labels=(10, 1, 2, 10, 9)):
    import scipy.io

    X = np.random.default_rng(0).integers(0, 255, (32, 32, 3, n)).astype(np.uint8)
    scipy.io.savemat(folder / name, {"X": X, "y": np.array(labels)[:, None]})
    return X


def test_svhn_loader_on_a_small_mat(tmp_path):
    folder = tmp_path / "SVHN"
    folder.mkdir()
    X = write_mat(folder, "test_32x32.mat")
    images, labels = load_svhn("test", root=tmp_path, download=False)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 2, 0, 9]  # label 10 is the digit 0
    for i in range(5):
        assert np.array_equal(images[i], X[:, :, :, i])


def test_svhn_bad_inputs_name_the_file(tmp_path):
    import scipy.io

    folder = tmp_path / "SVHN"
    folder.mkdir()
    X = write_mat(folder, "test_32x32.mat")
    scipy.io.savemat(folder / "test_32x32.mat", {"images": X})
    with pytest.raises(DataError, match="test_32x32.mat lacks the SVHN keys"):
        load_svhn("test", root=tmp_path, download=False)
    scipy.io.savemat(folder / "test_32x32.mat", {"X": X[:, :, :, :3], "y": np.ones((5, 1))})
    with pytest.raises(DataError, match="test_32x32.mat: X has shape"):
        load_svhn("test", root=tmp_path, download=False)
    (folder / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="test_32x32.mat is not a readable .mat"):
        load_svhn("test", root=tmp_path, download=False)
    with pytest.raises(DataError, match=r"train_32x32.mat is missing.*ufldl.stanford.edu/housenumbers/train_32x32.mat"):
        load_svhn("train", root=tmp_path, download=False)
    with pytest.raises(ValueError, match="split"):
        load_svhn("extra", root=tmp_path, download=False)
