"""Kinder's pixel Bayesian network: CPTs against brute-force counting, the joint against exact
enumeration (it sums to one), and Gibbs sampling against the enumerated distribution."""
import itertools

import numpy as np
import pytest
import torch

from energyad.methods.kinder_bn import PARENT_SETS, BNSettings, PixelBN, binarize, parent_configs


pytestmark = pytest.mark.usefixtures("one_thread")


def test_parent_configs_by_hand():
    x = torch.tensor([[[1, 0, 1], [0, 1, 1]]], dtype=torch.uint8)   # (1, 2, 3)
    cfg = parent_configs(x, "fig9")
    # pixel (1, 1): NW = x[0,0] = 1, N = x[0,1] = 0, NE = x[0,2] = 1, W = x[1,0] = 0 -> 8 + 2 = 10
    assert cfg[0, 1, 1] == 10
    # pixel (0, 0): all parents outside -> 0; pixel (0, 2): W = x[0,1] = 0 -> 0; pixel (1, 2): NW=0,N=1,NE=0,W=1 -> 5
    assert cfg[0, 0, 0] == 0 and cfg[0, 0, 2] == 0 and cfg[0, 1, 2] == 5
    code = parent_configs(x, "code")                               # NW*8 + W*4 + SW*2 + N
    # pixel (0, 1): NW outside, W = x[0,0] = 1, SW = x[1,0] = 0, N outside -> 4
    # pixel (1, 2): NW = x[0,1] = 0, W = x[1,1] = 1, SW outside, N = x[0,2] = 1 -> 5
    assert code[0, 0, 1] == 4 and code[0, 1, 2] == 5 and code[0, 1, 0] == 1     # (1, 0): only N = x[0,0] = 1
    assert parent_configs(x, "none").eq(0).all()
    assert parent_configs(x) .equal(code)                          # the default is the thesis code's orientation
    with pytest.raises(ValueError, match="parents must be one of"):
        parent_configs(x, "south")


# The parents as the thesis's C code reads them (images [row][col]) and as Fig. 9 draws them, written out.
NAMED = {"code": {"NW": (-1, -1), "W": (0, -1), "SW": (1, -1), "N": (-1, 0)},
         "fig9": {"NW": (-1, -1), "N": (-1, 0), "NE": (-1, 1), "W": (0, -1)}}


@pytest.mark.parametrize("orientation", ["code", "fig9", "none"])
def test_cpt_against_brute_force_counting(orientation):
    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.random((50, 4, 5)) > 0.6).astype(np.uint8))
    lam = 0.5
    bn = PixelBN(BNSettings(pseudo_count=lam, parents=orientation)).fit(x)
    offs = list(NAMED.get(orientation, {}).values())
    assert bn.cpt.shape == (4, 5, 2 ** len(offs))
    xn = x.numpy()

    def val(i, h, w):                                              # outside the image: 0
        return int(xn[i, h, w]) if 0 <= h < 4 and 0 <= w < 5 else 0
    for h, w in itertools.product(range(4), range(5)):
        for row in range(2 ** len(offs)):
            bits = [(row >> (len(offs) - 1 - j)) & 1 for j in range(len(offs))]   # first parent = top bit
            match = [all(val(i, h + dy, w + dx) == b for (dy, dx), b in zip(offs, bits)) for i in range(50)]
            n_cfg = sum(match)
            n_one = sum(m and xn[i, h, w] == 1 for i, m in enumerate(match))
            assert bn.cpt[h, w, row].item() == pytest.approx((n_one + lam) / (n_cfg + 2 * lam))


def test_orientations_are_transposes_and_outside_padding_does_not_matter():
    rng = np.random.default_rng(3)
    x = torch.from_numpy((rng.random((80, 5, 5)) > 0.5).astype(np.uint8))
    code, fig9 = PixelBN(BNSettings(parents="code")).fit(x), PixelBN(BNSettings(parents="fig9")).fit(x)
    xt = x.transpose(1, 2).contiguous()
    # the code's network on x is Fig. 9's network on the transposed images (parent order NW, W, SW, N <-> NW, N, NE, W)
    assert torch.allclose(code.log_prob(x), PixelBN(BNSettings(parents="fig9")).fit(xt).log_prob(xt))
    assert not torch.allclose(code.log_prob(x), fig9.log_prob(x))
    # outside parents read as 1 instead of 0: every pixel has its own CPT, so the rows are only relabelled
    ones = torch.nn.functional.pad(x, (1, 1, 1, 1), value=1)       # (N, 7, 7) with a border of ones
    big = PixelBN(BNSettings(parents="code")).fit(ones)
    inner = big.cpt[1:-1, 1:-1]                                    # the CPTs of the original pixels
    lp_inner = torch.where(x.bool(), inner[torch.arange(5).view(1, 5, 1), torch.arange(5).view(1, 1, 5),
                                          parent_configs(ones, "code")[:, 1:-1, 1:-1]],
                           1 - inner[torch.arange(5).view(1, 5, 1), torch.arange(5).view(1, 1, 5),
                                     parent_configs(ones, "code")[:, 1:-1, 1:-1]]).log().flatten(1).sum(1)
    assert torch.allclose(lp_inner, code.log_prob(x))


def test_bernoulli_baseline_is_the_product_of_pixel_marginals():
    rng = np.random.default_rng(4)
    x = torch.from_numpy((rng.random((40, 3, 4)) > 0.7).astype(np.uint8))
    bn = PixelBN(BNSettings(parents="none", pseudo_count=1.0)).fit(x)
    q = (x.double().sum(0) + 1) / (40 + 2)                         # Laplace-smoothed marginal of every pixel
    expected = torch.where(x.bool(), q, 1 - q).log().flatten(1).sum(1)
    assert torch.allclose(bn.log_prob(x), expected)


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


@pytest.mark.parametrize("orientation", ["code", "fig9"])
def test_gibbs_ratio_needs_only_the_markov_blanket(orientation):
    rng = np.random.default_rng(5)
    data = torch.from_numpy((rng.random((100, 4, 5)) > 0.5).astype(np.uint8))
    bn = PixelBN(BNSettings(parents=orientation)).fit(data)
    x = data[:7]
    for h, w in itertools.product(range(4), range(5)):
        flipped = x.clone()
        flipped[:, h, w] = 1 - flipped[:, h, w]
        full = bn.log_prob(flipped) - bn.log_prob(x)
        assert torch.allclose(bn.flip_log_ratio(x, h, w), full, atol=1e-10)


def test_energy_ranks_unusual_images_higher_and_binarize():
    imgs = np.zeros((30, 6, 6), np.uint8)
    imgs[:, :, 2] = 200                                            # a vertical stroke in every image
    bn = PixelBN().fit(binarize(imgs))
    odd = np.zeros((1, 6, 6), np.uint8); odd[0, 3, :] = 200        # a horizontal stroke
    assert bn.score(odd)[0] > bn.score(imgs[:1])[0]
    assert binarize(torch.tensor([[[0.29, 0.31]]])).tolist() == [[[0, 1]]]
    with pytest.raises(RuntimeError, match="fit"):
        PixelBN().log_prob(torch.zeros(1, 2, 2, dtype=torch.uint8))


# --- hidden layers (Sec. 3.2) ---------------------------------------------------------------------
from energyad.methods.kinder_bn import (DIRECTIONS, HiddenBN, HiddenBNSettings, HiddenLayer, bic,  # noqa: E402
                                        family_counts, family_loglik, parent_config, search_structure, shift)


def hand_bic(z, k1, parents, dist):
    """BIC of kernel k1's nodes by explicit loops: -sum n log(n / n_row) + 0.5 * nodes * rows * log N."""
    N, K, H, W = z.shape
    counts = {}
    for i in range(N):
        for h in range(H):
            for w in range(W):
                cfg = []
                for k2, d in parents:
                    dy, dx = DIRECTIONS[d]
                    hh, ww = h + dist * dy, w + dist * dx
                    cfg.append(int(z[i, k2, hh, ww]) if 0 <= hh < H and 0 <= ww < W else 0)
                key = (h, w, tuple(cfg))
                counts.setdefault(key, [0, 0])[int(z[i, k1, h, w])] += 1
    ll = sum(n * np.log(n / sum(c)) for c in counts.values() for n in c if n > 0)
    return -ll + 0.5 * H * W * 2 ** len(parents) * np.log(N)


def test_bic_against_hand_computation_and_greedy_first_step():
    rng = np.random.default_rng(0)
    z = torch.from_numpy((rng.random((40, 2, 3, 4)) > 0.5).astype(np.float32))
    z[:, 0, :, 1:] = z[:, 1, :, :-1]                        # kernel 0 copies kernel 1 one step west
    for parents in ([], [(1, "W")], [(1, "W"), (0, "N")], [(0, "NE"), (1, "NW")]):
        c = family_counts(z[:, 0], parent_config(z, parents, 1), 2 ** len(parents))
        assert bic(c, 40) == pytest.approx(hand_bic(z.numpy(), 0, parents, 1))
    # the greedy search's first choice is the brute-force best candidate, here the planted relation
    best = min(((k2, d) for k2 in range(2) for d in DIRECTIONS), key=lambda c: hand_bic(z.numpy(), 0, [c], 1))
    structure = search_structure(z, 1)
    assert best == (1, "W") and structure[0][0] == (1, "W")
    assert hand_bic(z.numpy(), 0, structure[0], 1) < hand_bic(z.numpy(), 0, [], 1)
    # random, independent kernel 1: no relation pays for its parameters
    assert structure[1] == []


def test_eq8_gain_is_n_times_the_empirical_mutual_information():
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(6)
    z = torch.from_numpy((rng.random((60, 2, 3, 3)) > 0.5).astype(np.float32))
    z[:, 0, :, 1:] = torch.where(torch.from_numpy(rng.random((60, 3, 2)) < 0.8), z[:, 1, :, :-1], z[:, 0, :, 1:])
    parents = [(1, "W"), (0, "N")]
    cfg = parent_config(z, parents, 1)
    gain = family_loglik(family_counts(z[:, 0], cfg, 4)) - family_loglik(family_counts(z[:, 0], torch.zeros_like(cfg), 1))
    mi = sum(mutual_info_score(z[:, 0, h, w].numpy(), cfg[:, h, w].numpy()) for h in range(3) for w in range(3))
    assert gain.item() == pytest.approx(60 * mi, rel=1e-9)
    assert gain.item() > 0


def test_shift_reads_the_node_dist_away():
    z = torch.arange(12.0).view(1, 3, 4)
    assert shift(z, -1, 0)[0, 1, 2] == z[0, 0, 2] and shift(z, 0, -2)[0, 2, 3] == z[0, 2, 1]
    assert shift(z, -1, 1)[0, 0, 0] == 0 and shift(z, 0, -1)[0, 1, 0] == 0     # outside: 0


def test_hidden_layer_surrogate_gradient_and_interpolated_cpt():
    torch.manual_seed(0)
    layer = HiddenLayer(1, 2, 3, 1, 1, 8.0)                 # pool 1: one node per position
    x = torch.rand(1, 1, 3, 3)
    z = layer(x)
    assert set(z.unique().tolist()) <= {0.0, 1.0}            # forward: the threshold
    z.sum().backward()
    s = layer.conv(x).detach()
    expected = torch.autograd.grad(torch.sigmoid(8 * layer.conv(x)).sum(), layer.conv.weight)[0]
    assert torch.allclose(layer.conv.weight.grad, expected)  # backward: d sigmoid(8 s) (Eq. 9)
    assert s.abs().min() > 0
    # the multilinear CPT equals the table at binary states
    zb = (torch.rand(30, 2, 3, 3) > 0.5).float()
    layer.structure = [[(1, "W"), (0, "N")], []]
    layer.fit_cpts(zb, 1.0)
    lp = layer.log_prob(zb)
    cfg = parent_config(zb, layer.structure[0], 1)
    p1 = layer.cpts[0][torch.arange(3).view(1, 3, 1), torch.arange(3).view(1, 1, 3), cfg]
    exact0 = torch.where(zb[:, 0].bool(), p1, 1 - p1).log().flatten(1).sum(1)
    p1b = layer.cpts[1][..., 0].expand(30, 3, 3)
    exact1 = torch.where(zb[:, 1].bool(), p1b, 1 - p1b).log().flatten(1).sum(1)
    assert torch.allclose(lp, exact0 + exact1, atol=1e-5)


def test_hidden_bn_fit_and_gibbs_against_enumeration():
    rng = np.random.default_rng(2)
    data = torch.from_numpy((rng.random((300, 2, 4)) > 0.5).astype(np.uint8))
    flip = torch.from_numpy(rng.random((300, 4)) < 0.25)
    data[:, 1] = torch.where(flip, 1 - data[:, 0], data[:, 0])   # the lower row mostly copies the upper
    m = HiddenBN(HiddenBNSettings(kernels=(2,), em_iterations=3)).fit(data, progress=False)
    assert len(m.history) == 1 and len(m.history[0]) == 3
    states = all_states(2, 4)                                # 256 images
    e = m.energy(states)
    p = torch.softmax(-e.double(), 0)                        # the distribution Gibbs should sample
    g = torch.Generator().manual_seed(0)
    samples = m.gibbs(3000, 30, g)
    codes = (samples.view(len(samples), -1).long() * (2 ** torch.arange(7, -1, -1))).sum(1)
    empirical = torch.bincount(codes, minlength=256).double() / len(samples)
    assert 0.5 * (empirical - p).abs().sum().item() < 0.15       # sampling noise of 3000 draws: about 0.09
    assert 0.5 * (1 / 256 - p).abs().sum().item() > 0.35          # ...while the random start is far off
