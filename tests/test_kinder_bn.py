"""Kinder's pixel Bayesian network: CPTs against brute-force counting, the joint against exact
enumeration (it sums to one), and Gibbs sampling against the enumerated distribution."""
import itertools

import numpy as np
import pytest
import torch

from energyad.methods.kinder_bn import BNSettings, PixelBN, binarize, parent_configs


def test_parent_configs_by_hand():
    x = torch.tensor([[[1, 0, 1], [0, 1, 1]]], dtype=torch.uint8)   # (1, 2, 3)
    cfg = parent_configs(x)
    # pixel (1, 1): NW = x[0,0] = 1, N = x[0,1] = 0, NE = x[0,2] = 1, W = x[1,0] = 0 -> 8 + 2 = 10
    assert cfg[0, 1, 1] == 10
    # pixel (0, 0): all parents outside -> 0; pixel (0, 2): W = x[0,1] = 0 -> 0; pixel (1, 2): NW=0,N=1,NE=0,W=1 -> 5
    assert cfg[0, 0, 0] == 0 and cfg[0, 0, 2] == 0 and cfg[0, 1, 2] == 5


def test_cpt_against_brute_force_counting():
    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.random((50, 4, 5)) > 0.6).astype(np.uint8))
    bn = PixelBN(BNSettings(pseudo_count=1.0)).fit(x)
    xp = np.pad(x.numpy(), ((0, 0), (1, 0), (1, 1)))
    for h, w in itertools.product(range(4), range(5)):
        for cfg in range(16):
            nw, n, ne, wst = (cfg >> 3) & 1, (cfg >> 2) & 1, (cfg >> 1) & 1, cfg & 1
            match = [(xp[i, h, w] == nw and xp[i, h, w + 1] == n and xp[i, h, w + 2] == ne and xp[i, h + 1, w] == wst)
                     for i in range(50)]
            n_cfg = sum(match)
            n_one = sum(m and x[i, h, w] == 1 for i, m in enumerate(match))
            assert bn.cpt[h, w, cfg].item() == pytest.approx((n_one + 1) / (n_cfg + 2))


def all_states(H, W):
    return torch.tensor(list(itertools.product([0, 1], repeat=H * W)), dtype=torch.uint8).view(-1, H, W)


def test_joint_is_normalised_and_gibbs_matches_it():
    rng = np.random.default_rng(1)
    data = torch.from_numpy((rng.random((200, 2, 3)) > 0.5).astype(np.uint8))
    data[:, 1, 1] = data[:, 0, 1]                                  # some structure
    bn = PixelBN().fit(data)
    states = all_states(2, 3)                                      # 64 states
    p = bn.log_prob(states).exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)         # no normalising constant needed
    g = torch.Generator().manual_seed(0)
    samples = bn.gibbs(4000, 60, g)
    codes = (samples.view(len(samples), -1).long() * (2 ** torch.arange(5, -1, -1))).sum(1)
    empirical = torch.bincount(codes, minlength=64).double() / len(samples)
    tv = 0.5 * (empirical - p).abs().sum().item()
    assert tv < 0.05


def test_energy_ranks_unusual_images_higher_and_binarize():
    imgs = np.zeros((30, 6, 6), np.uint8)
    imgs[:, :, 2] = 200                                            # a vertical stroke in every image
    bn = PixelBN().fit(binarize(imgs))
    odd = np.zeros((1, 6, 6), np.uint8); odd[0, 3, :] = 200        # a horizontal stroke
    assert bn.score(odd)[0] > bn.score(imgs[:1])[0]
    assert binarize(torch.tensor([[[0.29, 0.31]]])).tolist() == [[[0, 1]]]
    with pytest.raises(RuntimeError, match="fit"):
        PixelBN().log_prob(torch.zeros(1, 2, 2, dtype=torch.uint8))
