"""Metrics against independent computations: pair counting, and a brute-force PRO per threshold."""
import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from energyad import metrics


def auroc_by_pairs(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_image_auroc_against_pair_counting():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 40).astype(float)  # many ties
    labels = rng.integers(0, 2, 40)
    assert metrics.image_auroc(scores, labels) == pytest.approx(auroc_by_pairs(scores, labels))
    assert metrics.image_auroc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(
        auroc_by_pairs(scores, labels))
    with pytest.raises(ValueError, match="both normal and anomalous"):
        metrics.image_auroc(scores, np.ones(40))


def test_pixel_auroc_against_pair_counting_on_pixels():
    rng = np.random.default_rng(1)
    maps = rng.random((2, 1, 4, 4)).round(1)
    masks = (rng.random((2, 1, 4, 4)) > 0.7).astype(float)
    assert metrics.pixel_auroc(maps, masks) == pytest.approx(auroc_by_pairs(maps.ravel(), masks.ravel()))
    with pytest.raises(ValueError, match="same shape"):
        metrics.pixel_auroc(maps, masks[:, :, :2])


def test_roc_curve_endpoints():
    fpr, tpr, _ = metrics.roc_curve([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1])
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(1.0)


def brute_force_aupro(maps, masks, limit):
    """Independent reference: loop over every distinct threshold, label regions per image with an
    explicit flood fill, measure overlaps and FPR directly, integrate with linear interpolation."""
    maps, masks = np.asarray(maps, float)[:, 0], np.asarray(masks)[:, 0] > 0.5
    regions = []
    for img in range(len(masks)):
        seen = np.zeros_like(masks[img])
        H, W = masks[img].shape
        for i, j in zip(*np.nonzero(masks[img])):
            if seen[i, j]:
                continue
            stack, comp = [(i, j)], []
            seen[i, j] = True
            while stack:
                a, b = stack.pop()
                comp.append((a, b))
                for da, db in itertools.product((-1, 0, 1), repeat=2):
                    u, v = a + da, b + db
                    if 0 <= u < H and 0 <= v < W and masks[img][u, v] and not seen[u, v]:
                        seen[u, v] = True
                        stack.append((u, v))
            regions.append((img, comp))
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel()), reverse=True):
        above = maps >= t
        fpr = (above & normal).sum() / normal.sum()
        pro = np.mean([np.mean([above[img][p] for p in comp]) for img, comp in regions])
        points.append((fpr, pro))
    xs, ys = np.array(points).T
    grid = np.r_[xs[xs <= limit], limit]
    return np.trapezoid(np.interp(grid, xs, ys), grid) / limit


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupro_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 1, 12, 12))
    masks[0, 0, 1:4, 1:4] = 1          # two regions in one image
    masks[0, 0, 7:11, 6:8] = 1
    masks[0, 0, 4, 4] = 1              # touches the first region diagonally: 8-connected, same region
    masks[1, 0, 5:9, 5:9] = 1
    # image 2 is a good image: only defect-free pixels
    maps = rng.random((3, 1, 12, 12)) + 0.6 * masks
    maps = np.round(maps, 1)           # ties
    for limit in (0.05, 0.3, 1.0):
        assert metrics.aupro(maps, masks, limit) == pytest.approx(brute_force_aupro(maps, masks, limit), abs=1e-9)


def test_aupro_worked_examples():
    masks = torch.zeros(2, 1, 10, 10)
    masks[0, 0, 1:4, 1:4] = 1
    masks[0, 0, 6:9, 6:9] = 1
    assert metrics.aupro(masks, masks) == pytest.approx(1.0)
    # a constant map: every threshold flags everything or nothing -> PRO = FPR along the chord
    assert metrics.aupro(torch.zeros_like(masks), masks, 0.3) == pytest.approx(0.15)
    # one region ranked perfectly, the other ranked below all normal pixels
    amap = torch.rand(2, 1, 10, 10, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.1
    amap[0, 0, 1:4, 1:4] = 1.0
    amap[0, 0, 6:9, 6:9] = 0.0
    assert metrics.aupro(amap, masks, 0.3) == pytest.approx(0.5)
    assert metrics.pixel_auroc(amap, masks) == pytest.approx(0.5 * 1 + 0.5 * 0)
    with pytest.raises(ValueError, match="anomalous region"):
        metrics.aupro(amap, torch.zeros_like(masks))


def test_pro_curve_is_monotone_and_ends_at_one():
    rng = np.random.default_rng(3)
    masks = np.zeros((2, 8, 8)); masks[0, 2:5, 2:5] = 1
    fpr, pro = metrics.pro_curve(rng.random((2, 8, 8)), masks)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
    assert fpr[-1] == pytest.approx(1) and pro[-1] == pytest.approx(1)
    assert ndimage.label(masks[0])[1] == 1
    # a thinned curve is a subset of the exact one, with both ends kept
    amap = rng.random((2, 8, 8))
    f_all, p_all = metrics.pro_curve(amap, masks)
    f10, p10 = metrics.pro_curve(amap, masks, num_thresholds=10)
    assert set(zip(f10, p10)) <= set(zip(f_all, p_all))
    assert len(f10) == 10 and (f10[0], p10[0]) == (0, 0) and (f10[-1], p10[-1]) == (1, 1)
    with pytest.raises(ValueError, match="num_thresholds"):
        metrics.pro_curve(rng.random((2, 8, 8)), masks, num_thresholds=1)


def test_thresholds_against_numpy():
    s = np.random.default_rng(4).normal(size=1000)
    assert metrics.three_sigma_threshold(s) == pytest.approx(s.mean() + 3 * s.std(ddof=1))
    assert metrics.three_sigma_threshold(torch.tensor(s), k=2) == pytest.approx(s.mean() + 2 * s.std(ddof=1))
    assert metrics.quantile_threshold(s, 0.9) == pytest.approx(np.quantile(s, 0.9))
    b = metrics.binarize(torch.tensor([0.1, 0.5, 0.9]), 0.5)
    assert b.tolist() == [0.0, 0.0, 1.0]


def test_summarize():
    masks = np.zeros((2, 1, 4, 4)); masks[1, 0, :2, :2] = 1
    out = metrics.summarize([0.1, 0.9], [0, 1], masks * 2.0, masks)
    assert out == {"image_auroc": 1.0, "pixel_auroc": 1.0, "aupro": pytest.approx(1.0)}


def test_metrics_refuse_nan_maps_and_single_scores():
    maps = np.random.default_rng(0).random((2, 8, 8))
    masks = np.zeros((2, 8, 8))
    masks[0, 2:4, 2:4] = 1
    maps[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.aupro(maps, masks)
    with pytest.raises(ValueError, match="NaN"):
        metrics.aupro(np.full((2, 8, 8), np.nan), masks)
    with pytest.raises(ValueError, match="at least two scores"):
        metrics.three_sigma_threshold([1.0])


def test_pixel_metrics_at_the_masks_resolution():
    """A map at half resolution is upsampled to the mask's size (bilinear, as torch interpolates), so a
    defect of one mask pixel is not lost by shrinking the mask."""
    import torch

    rng = np.random.default_rng(1)
    small = rng.random((3, 1, 8, 8))
    masks = np.zeros((3, 1, 16, 16))
    masks[0, 0, 5, 5] = 1                       # a one-pixel defect: shrinking the mask would erase it
    masks[1, 0, 9:12, 2:6] = 1
    up = torch.nn.functional.interpolate(torch.tensor(small), size=(16, 16), mode="bilinear",
                                         align_corners=False).numpy()
    assert metrics.pixel_auroc(small, masks) == pytest.approx(metrics.pixel_auroc(up, masks), abs=1e-12)
    assert metrics.aupro(small, masks) == pytest.approx(metrics.aupro(up, masks), abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        metrics.pixel_auroc(up, masks[:, :, :8, :8])      # larger maps than masks are refused


def test_auroc_ci_against_pair_counting_and_hanley_mcneil():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(60), np.ones(40)]
    s = rng.normal(size=100) + 1.0 * y
    ci = metrics.auroc_ci(s, y, n_boot=2000)
    a = auroc_by_pairs(s, y)
    assert ci["auroc"] == pytest.approx(a, abs=1e-12) and ci["low"] < a < ci["high"]
    # Hanley & McNeil (1982): the analytic standard error of an AUROC for n1 anomalies, n0 normals
    n1, n0 = 40, 60
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se_hm = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n0 * n1))
    assert ci["se"] == pytest.approx(se_hm, rel=0.2)
    with pytest.raises(ValueError, match="NaN"):
        metrics.auroc_ci(np.r_[s[:-1], np.nan], y)


def test_paired_difference_finds_a_real_gap_and_not_a_tie():
    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(80), np.ones(80)]
    good, bad = rng.normal(size=160) + 2.0 * y, rng.normal(size=160) + 0.2 * y
    gap = metrics.paired_auroc_difference(good, bad, y)
    assert gap["difference"] == pytest.approx(auroc_by_pairs(good, y) - auroc_by_pairs(bad, y), abs=1e-12)
    assert gap["low"] > 0
    tie = metrics.paired_auroc_difference(good, good + 1e-3 * rng.normal(size=160), y)
    assert tie["low"] <= 0 <= tie["high"]


def test_pixel_auroc_ci_brackets_the_exact_value_and_its_binning_is_close():
    rng = np.random.default_rng(5)
    masks = np.zeros((12, 16, 16))
    for i in range(0, 12, 2):
        masks[i, 3 + i // 2:8 + i // 2, 4:9] = 1
    maps = rng.random((12, 16, 16)) + 0.8 * masks
    ci = metrics.pixel_auroc_ci(maps, masks, n_boot=300)
    assert ci["auroc"] == pytest.approx(metrics.pixel_auroc(maps, masks), abs=1e-12)
    assert ci["low"] < ci["auroc"] < ci["high"] and ci["high"] - ci["low"] < 0.2
    # the binned resamples are centred on the exact value (a wrong binning would shift them)
    assert (ci["low"] + ci["high"]) / 2 == pytest.approx(ci["auroc"], abs=0.02)
    worse = metrics.pixel_auroc_ci(rng.random((12, 16, 16)), masks, n_boot=300)
    assert worse["high"] < ci["low"]                  # a map without signal: a disjoint, lower interval


def test_mean_auroc_intervals_pair_the_methods_and_find_only_real_gaps():
    rng = np.random.default_rng(6)
    labels = {u: np.r_[np.zeros(50), np.ones(30)] for u in ("a", "b")}
    good = {u: [rng.normal(size=80) + 2.0 * labels[u] for _ in range(2)] for u in labels}
    twin = {u: [s + 1e-3 * rng.normal(size=80) for s in good[u]] for u in labels}
    weak = {u: [rng.normal(size=80) + 0.3 * labels[u]] for u in labels}
    iv = metrics.mean_auroc_intervals({"good": good, "twin": twin, "weak": weak}, labels, n_boot=300)
    expect = np.mean([np.mean([auroc_by_pairs(s, labels[u]) for s in good[u]]) for u in labels])
    assert iv["methods"]["good"]["mean"] == pytest.approx(expect, abs=1e-12)
    assert metrics.ranking_holds(iv, "good", "weak") and metrics.ranking_holds(iv, "twin", "weak")
    assert not metrics.ranking_holds(iv, "good", "twin") and not metrics.ranking_holds(iv, "twin", "good")
    with pytest.raises(KeyError):
        metrics.ranking_holds(iv, "good", "other")
