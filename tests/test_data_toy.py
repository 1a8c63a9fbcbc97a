"""The erased-patch toy of Matsubara et al. (Sec. V-B) against an explicit construction."""
import numpy as np
import pytest
import torch

from energyad.data import DataError, toy


def test_erase_patches_erases_exactly_one_square():
    x = torch.rand(20, 3, 16, 16) + 0.1
    erased, boxes = toy.erase_patches(x, patch=4, generator=torch.Generator().manual_seed(0))
    assert boxes.shape == (20, 2)
    for i, (t, l) in enumerate(boxes.tolist()):
        expect = x[i].clone()
        expect[:, t:t + 4, l:l + 4] = 0
        assert torch.equal(erased[i], expect)
    assert torch.equal(x, x.clone()) and (x > 0).all()  # the input is left alone


def test_erase_several_patches_with_a_value():
    x = torch.rand(6, 1, 12, 12) * 0.5
    erased, boxes = toy.erase_patches(x, patch=3, n_patches=2, value=1.0, generator=torch.Generator().manual_seed(3))
    assert boxes.shape == (6, 2, 2)
    for i in range(6):
        expect = x[i].clone()
        for t, l in boxes[i].tolist():
            expect[:, t:t + 3, l:l + 3] = 1.0
        assert torch.equal(erased[i], expect)
    with pytest.raises(ValueError, match="does not fit"):
        toy.erase_patches(x, patch=13)


def test_toy_contamination_and_duplicated_test_set():
    tr, te = torch.rand(300, 1, 12, 12) + 0.1, torch.rand(40, 1, 12, 12) + 0.1
    d = toy.make_erased_patch_toy(tr, te, contamination=0.01, seed=1)
    assert int(d["train_is_erased"].sum()) == 3                       # 1% of 300
    changed = (d["x_train"] != tr).flatten(1).any(1)
    assert torch.equal(changed, d["train_is_erased"])
    assert torch.equal(d["x_test"][:40], te) and d["y_test"].tolist() == [0] * 40 + [1] * 40
    assert torch.equal(d["erase_mask"].sum((1, 2, 3)), torch.tensor([0.0] * 40 + [16.0] * 40))
    # the erased half is the intact half with exactly the boxed 4x4 square set to grey ("the gray squares")
    assert toy.GREY == 0.5
    for i, (t, l) in enumerate(d["test_boxes"][40:].tolist()):
        expect = te[i].clone()
        expect[:, t:t + 4, l:l + 4] = 0.5
        assert torch.equal(d["x_test"][40 + i], expect)
    black = toy.make_erased_patch_toy(tr, te, contamination=0.01, seed=1, value=0.0)   # a control
    assert torch.equal(black["x_test"][40:][d["erase_mask"][40:].expand_as(te) > 0], torch.zeros(40 * 16))
    assert (d["test_boxes"][:40] == -1).all()
    again = toy.make_erased_patch_toy(tr, te, contamination=0.01, seed=1)
    assert torch.equal(again["x_test"], d["x_test"]) and torch.equal(again["x_train"], d["x_train"])


def test_mnist_toy_on_the_standin(tmp_path):
    with pytest.warns(UserWarning):
        d = toy.mnist_erased_patch_toy(root=tmp_path, n_train=200, n_test=30, seed=0, download=False)
    assert d["x_train"].shape == (200, 1, 28, 28) and d["x_test"].shape == (60, 1, 28, 28)
    assert "STAND-IN" in d["source"] and d["test_digits"].shape == (60,)
    assert "grey squares, value 0.5" in d["source"]
    assert (d["x_test"][30:][d["erase_mask"][30:] > 0] == 0.5).all()
    assert torch.equal(d["test_digits"][:30], d["test_digits"][30:])


def test_svhn_toy_on_a_small_mat(tmp_path):
    import scipy.io

    (tmp_path / "SVHN").mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train_32x32.mat", 100), ("test_32x32.mat", 10)):
        scipy.io.savemat(tmp_path / "SVHN" / name, {"X": rng.integers(1, 255, (32, 32, 3, n)).astype(np.uint8),
                                                     "y": rng.integers(1, 11, (n, 1))})
    d = toy.svhn_erased_patch_toy(root=tmp_path, n_test=8, seed=0, download=False)
    assert d["x_train"].shape == (100, 3, 32, 32) and d["x_test"].shape == (16, 3, 32, 32)
    assert int(d["train_is_erased"].sum()) == 1 and "SVHN" in d["source"]
    erased = d["x_test"][8:].permute(1, 0, 2, 3)[:, d["erase_mask"][8:, 0] > 0]     # (3, 8 * 16): every channel
    assert (erased == 0.5).all()
    with pytest.raises(DataError, match="SVHN"):
        toy.svhn_erased_patch_toy(root=tmp_path / "none", download=False)
