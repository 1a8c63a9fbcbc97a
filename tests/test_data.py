"""The data layer: real files where present (skipped otherwise), small files the tests write, and
every bad-input case raising a DataError that names the file."""
import gzip
import hashlib
import io
import shutil
import struct
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from energyad.config import data_root
from energyad.data import (DataError, MVTecAD, StandInWarning, celeba, load_mnist, load_mnist_or_standin,
                           load_svhn, mvtec, one_class_split, synthetic, toy)

MNIST_COUNTS = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}
real_mnist = pytest.mark.skipif(not (data_root() / "MNIST/raw/t10k-images-idx3-ubyte.gz").exists(),
                                reason="real MNIST not under ENERGYAD_DATA (set it to a folder with MNIST/raw/)")


# ---------------------------------------------------------------- MNIST
@real_mnist
@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_real_mnist_sizes_and_official_label_counts(split, n):
    images, labels = load_mnist(split, download=False)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == MNIST_COUNTS[split]


@real_mnist
def test_real_mnist_test_images_are_the_official_bytes():
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
    write_idx(raw / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.zeros(10000))
    images, labels = load_mnist("test", root=tmp_path, download=False)
    assert images.shape == (10000, 28, 28)
    # truncate the image data
    blob = gzip.decompress((raw / "t10k-images-idx3-ubyte.gz").read_bytes())[:-100]
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(blob))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz.*truncated"):
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


# ---------------------------------------------------------------- SVHN
def test_svhn_loader_on_a_small_mat(tmp_path):
    import scipy.io

    folder = tmp_path / "SVHN"
    folder.mkdir()
    X = np.random.default_rng(0).integers(0, 255, (32, 32, 3, 5)).astype(np.uint8)
    y = np.array([[10], [1], [2], [10], [9]])
    scipy.io.savemat(folder / "test_32x32.mat", {"X": X, "y": y})
    images, labels = load_svhn("test", root=tmp_path, download=False)
    assert images.shape == (5, 32, 32, 3) and labels.tolist() == [0, 1, 2, 0, 9]
    assert np.array_equal(images[1], X[:, :, :, 1])
    scipy.io.savemat(folder / "test_32x32.mat", {"images": X})
    with pytest.raises(DataError, match="lacks the SVHN keys"):
        load_svhn("test", root=tmp_path, download=False)
    (folder / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="test_32x32.mat"):
        load_svhn("test", root=tmp_path, download=False)
    with pytest.raises(DataError, match="train_32x32.mat is missing"):
        load_svhn("train", root=tmp_path, download=False)


# ---------------------------------------------------------------- erased-patch toy
def test_erase_patches_erases_exactly_one_square():
    x = torch.rand(20, 3, 16, 16) + 0.1
    erased, boxes = toy.erase_patches(x, patch=4, generator=torch.Generator().manual_seed(0))
    for i, (t, l) in enumerate(boxes.tolist()):
        expect = x[i].clone()
        expect[:, t:t + 4, l:l + 4] = 0
        assert torch.equal(erased[i], expect)


def test_toy_contamination_and_duplicated_test_set():
    tr, te = torch.rand(300, 1, 12, 12) + 0.1, torch.rand(40, 1, 12, 12) + 0.1
    d = toy.make_erased_patch_toy(tr, te, contamination=0.01, seed=1)
    assert int(d["train_is_erased"].sum()) == 3
    changed = (d["x_train"] != tr).flatten(1).any(1)
    assert torch.equal(changed, d["train_is_erased"])
    assert torch.equal(d["x_test"][:40], te) and d["y_test"].tolist() == [0] * 40 + [1] * 40
    assert torch.equal(d["erase_mask"].sum((1, 2, 3)), torch.tensor([0.0] * 40 + [16.0] * 40))
    assert torch.equal(d["x_test"][40:] * (1 - d["erase_mask"][40:]), d["x_test"][40:])


# ---------------------------------------------------------------- MVTec AD
@pytest.fixture(scope="module")
def syn_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    synthetic.write_synthetic_mvtec(root, "tex", "texture", n_train=5, n_test_good=3, n_test_defect=2, size=64)
    synthetic.write_synthetic_mvtec(root, "obj", "object", n_train=5, n_test_good=3, n_test_defect=2, size=64,
                                    seed=1)
    synthetic.write_synthetic_mvtec(root, "gray", "texture", n_train=3, n_test_good=1, n_test_defect=1, size=32,
                                    grayscale=True)
    return root


def test_synthetic_category_loads_with_aligned_masks(syn_root):
    train = MVTecAD(syn_root, "obj", "train", image_size=64)
    test = MVTecAD(syn_root, "obj", "test", image_size=64)
    assert len(train) == 5 and len(test) == 3 + 2 * len(synthetic.DEFECTS) and test.has_masks
    good = MVTecAD(syn_root, "obj", "test", image_size=64)
    for item in good:
        assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
        assert item["label"] == int(item["defect"] != "good")
        assert (item["mask"].sum() > 0) == bool(item["label"])
    # the mask marks exactly the pixels the defect changed: regenerate with the same seed, no defects
    images, masks, labels, defects = mvtec.load_split(test, progress=False)
    i = defects.index("hole")
    inside = images[i][:, masks[i, 0] > 0]
    assert torch.allclose(inside, torch.full_like(inside, round(0.15 * 255) / 255), atol=1e-6)


def test_grayscale_and_resizing(syn_root):
    ds = MVTecAD(syn_root, "gray", "test", image_size=16)
    assert ds[0]["image"].shape == (1, 16, 16)
    assert MVTecAD(syn_root, "gray", "test", image_size=16, grayscale=False)[0]["image"].shape == (3, 16, 16)
    assert MVTecAD(syn_root, "tex", "train", image_size=None, grayscale=True)[0]["image"].shape == (1, 64, 64)


def test_mvtec_bad_inputs_name_the_file(syn_root, tmp_path):
    with pytest.raises(DataError, match="not found"):
        MVTecAD(tmp_path, "carpet", "train")
    shutil.copytree(syn_root / "obj", tmp_path / "obj")
    mask = next((tmp_path / "obj/ground_truth/stain").glob("*.png"))
    mask.unlink()
    with pytest.raises(DataError, match=mask.name):
        MVTecAD(tmp_path, "obj", "test")
    shutil.rmtree(tmp_path / "obj/ground_truth")
    with pytest.warns(UserWarning, match="pixel metrics"):
        ds = MVTecAD(tmp_path, "obj", "test")
    assert not ds.has_masks and all(it["mask"].sum() == 0 for it in ds)
    img = next((tmp_path / "obj/test/good").glob("*.png"))
    img.write_bytes(img.read_bytes()[:100])
    with pytest.raises(DataError, match=img.name):
        [ds[i] for i in range(len(ds))]
    shutil.rmtree(tmp_path / "obj/train")
    with pytest.raises(DataError, match="train/good is missing"):
        MVTecAD(tmp_path, "obj", "train")


def test_available_categories_and_mask_filter(syn_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path))
    monkeypatch.setenv("ENERGYAD_CACHE", str(tmp_path / "cache"))
    shutil.copytree(syn_root / "obj", tmp_path / "mvtec_ad" / "bottle")
    shutil.copytree(syn_root / "tex", tmp_path / "mvtec_ad_256" / "carpet")
    shutil.rmtree(tmp_path / "mvtec_ad_256" / "carpet" / "ground_truth")
    assert mvtec.available_categories() == {"bottle": tmp_path / "mvtec_ad", "carpet": tmp_path / "mvtec_ad_256"}
    assert list(mvtec.available_categories(need_masks=True)) == ["bottle"]
    assert mvtec.available_categories(["grid"]) == {}


shared_bottle = pytest.mark.skipif(not (data_root() / "mvtec_ad_256/bottle").is_dir(),
                                   reason="the MVTec bottle copy is not under ENERGYAD_DATA/mvtec_ad_256")


@shared_bottle
def test_shared_bottle_copy():
    assert MVTecAD(None, "bottle", "train", image_size=64).__len__() == 209
    with pytest.warns(UserWarning, match="no ground_truth"):
        test = MVTecAD(None, "bottle", "test", image_size=64)
    assert len(test) == 83 and not test.has_masks
    defects = [d for _, d in test.items]
    assert {d: defects.count(d) for d in set(defects)} == {"good": 20, "broken_large": 20, "broken_small": 22,
                                                             "contamination": 21}


def test_augmentations():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 64, 64)
    crops = mvtec.texture_random_crops(x, n=5, crop=32, resize=128, generator=g)
    assert crops.shape == (5, 3, 32, 32)
    same = mvtec.object_augment(x, max_rotation_deg=0, max_translation=0, generator=g)
    assert torch.allclose(same, x, atol=1e-5)
    moved = mvtec.object_augment(x, max_rotation_deg=20, max_translation=0.1, generator=g)
    assert moved.shape == x.shape and not torch.allclose(moved, x)


# ---------------------------------------------------------------- CelebA
def test_celeba_from_zip_and_folder(tmp_path):
    zpath = tmp_path / "faces.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in range(4):
            buf = io.BytesIO()
            Image.fromarray(np.full((80, 70, 3), 40 * i, np.uint8)).save(buf, format="JPEG")
            zf.writestr(f"{i:03d}.jpg", buf.getvalue())
    x = celeba.load_celeba(zpath, size=32, progress=False)
    assert x.shape == (4, 3, 32, 32) and abs(x[2].mean().item() - 80 / 255) < 0.02
    assert celeba.load_celeba(zpath, n=2, size=16, progress=False).shape == (2, 3, 16, 16)
    with pytest.raises(DataError, match="not found"):
        celeba.load_celeba(tmp_path / "nope")
    (tmp_path / "bad.zip").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.zip"):
        celeba.load_celeba(tmp_path / "bad.zip")
