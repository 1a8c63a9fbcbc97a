"""MNIST: the real files (skipped when absent) against the official counts and checksum, and every
bad-input case raising a DataError that names the file."""
import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from energyad.config import data_root
from energyad.data import DataError, StandInWarning, load_mnist, load_mnist_or_standin, one_class_split

MNIST_COUNTS = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}
real_mnist = pytest.mark.skipif(not (data_root() / "MNIST/raw/t10k-images-idx3-ubyte.gz").exists(),
                                reason="real MNIST not under ENERGYAD_DATA (set it to a folder with MNIST/raw/)")


@real_mnist
@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_real_mnist_sizes_and_official_label_counts(split, n):
    images, labels = load_mnist(split, download=False)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == MNIST_COUNTS[split]


@real_mnist
def test_real_mnist_test_images_are_the_official_bytes():
    """MD5 of the uncompressed t10k-images file, rebuilt from the loaded array and its IDX header."""
    images, _ = load_mnist("test", download=False)
    header = struct.pack(">IIII", 0x803, 10000, 28, 28)
    assert hashlib.md5(header + images.tobytes()).hexdigest() == "2646ac647ad5339dbf082846283269ea"


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_truncated_and_corrupt_files_name_the_file(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (10000, 28, 28))
    write_idx(raw / "t10k-images-idx3-ubyte.gz", pixels)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(10000) % 10)
    images, labels = load_mnist("test", root=tmp_path, download=False)
    assert np.array_equal(images, pixels) and np.array_equal(labels, np.arange(10000) % 10)
    good = (raw / "t10k-images-idx3-ubyte.gz").read_bytes()
    # a truncated .gz stream (the download was cut off)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist("test", root=tmp_path, download=False)
    # a valid .gz whose IDX body is shorter than its header says
    blob = gzip.decompress(good)[:-100]
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(blob))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        load_mnist("test", root=tmp_path, download=False)
    # a wrong magic number (e.g. a labels file in the images' place)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes((raw / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is not an IDX file"):
        load_mnist("test", root=tmp_path, download=False)
    # not gzip at all
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist("test", root=tmp_path, download=False)
    # missing file, no download
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is missing"):
        load_mnist("train", root=tmp_path, download=False)


def test_standin_is_announced(tmp_path):
    with pytest.warns(StandInWarning, match="MNIST is not available"):
        images, labels, source = load_mnist_or_standin("train", root=tmp_path, download=False)
    assert source.startswith("STAND-IN") and images.shape[1:] == (28, 28) and images.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(10))


def test_one_class_split_labels():
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 255, (100, 28, 28)).astype(np.uint8), np.arange(100) % 10)
    test = (rng.integers(0, 255, (50, 28, 28)).astype(np.uint8), np.arange(50) % 10)
    x_tr, x_te, y_te = one_class_split(train, test, normal_digit=3)
    assert x_tr.shape == (10, 1, 28, 28) and x_tr.max() <= 1
    assert torch.equal(y_te, torch.from_numpy((test[1] != 3).astype(np.int64)))
    assert torch.allclose(x_tr[0, 0], torch.from_numpy(train[0][3]).float() / 255)
    assert torch.allclose(x_te[7, 0], torch.from_numpy(test[0][7]).float() / 255)
    # subsets: only the normal digit in training, sizes as asked, same seed -> same subset
    x_tr2, x_te2, y_te2 = one_class_split(train, test, normal_digit=3, n_train=4, n_test=20, seed=5)
    assert x_tr2.shape[0] == 4 and x_te2.shape[0] == 20 and y_te2.shape == (20,)
    again = one_class_split(train, test, normal_digit=3, n_train=4, n_test=20, seed=5)
    assert torch.equal(again[0], x_tr2) and torch.equal(again[2], y_te2)
    normals = {tuple(train[0][i].ravel()[:8]) for i in np.flatnonzero(train[1] == 3)}
    assert all(tuple((x * 255).round().to(torch.uint8).ravel()[:8].tolist()) in normals for x in x_tr2)


def test_offline_switch_refuses_downloads_and_names_the_fix(tmp_path, monkeypatch):
    import pytest

    from energyad.data import DataError, mnist

    monkeypatch.setenv("ENERGYAD_OFFLINE", "1")
    monkeypatch.setattr("pooch.retrieve", lambda *a, **k: pytest.fail("a download was attempted offline"))
    with pytest.raises(DataError, match="downloads are off"):
        mnist.load_mnist("train", root=tmp_path)
