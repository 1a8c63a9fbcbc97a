"""Metrics of the course: image AUROC, pixel AUROC, PRO/AUPRO, and thresholds from normal data.

All functions accept numpy arrays or torch tensors; higher scores mean "more anomalous".

Image AUROC
    Area under the ROC curve of image scores against image labels (1 = anomalous). Equal to the
    probability that a random anomalous image outscores a random normal one, ties counting 1/2:
    ``AUROC = 1/(n0 n1) * sum_{i: y=1} sum_{j: y=0} ([s_i > s_j] + 1/2 [s_i = s_j])``.
Pixel AUROC
    The same over every pixel of every test image, with the ground-truth masks as labels.
PRO and AUPRO (Bergmann et al., IJCV 2021)
    Ground-truth regions C_k are the 8-connected components of each mask. At threshold t,
    ``PRO(t) = mean_k |{p in C_k : a(p) > t}| / |C_k|`` (every region counts once, whatever its
    size) and ``FPR(t) = |{p normal : a(p) > t}| / |{p normal}|`` over all defect-free pixels of all
    images. ``AUPRO(l) = (1/l) * integral_0^l PRO d FPR``, so a perfect map gives 1.
Thresholds
    ``three_sigma_threshold``: mean + k std of training scores; ``quantile_threshold``: a quantile.
    Neither uses anomalous data.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from sklearn import metrics as skm

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def to_mask_resolution(maps, size) -> np.ndarray:
    """Upsample anomaly maps (N, 1, h, w) or (N, h, w) bilinearly to ``size`` = (H, W), the ground
    truth's resolution: the official MVTec protocol scores the map against the full-size mask, since
    shrinking a mask can erase small defects."""
    m = torch.as_tensor(_np(maps), dtype=torch.float64)
    squeeze = m.ndim == 3
    if squeeze:
        m = m[:, None]
    if m.ndim != 4:
        raise ValueError(f"maps must be (N, 1, h, w) or (N, h, w), got {tuple(m.shape)}")
    up = torch.nn.functional.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)
    return (up[:, 0] if squeeze else up).numpy()


def _maps_masks(maps, masks) -> tuple[np.ndarray, np.ndarray]:
    """Return (N, H, W) float64 maps and bool masks; accept (N, 1, H, W) or (N, H, W) or (H, W).

    Maps smaller than the masks are upsampled to the masks' resolution (:func:`to_mask_resolution`);
    maps with NaN are refused."""
    m, g = _np(maps).astype(np.float64), _np(masks) > 0.5
    if np.isnan(m).any():
        raise ValueError(f"anomaly maps contain {int(np.isnan(m).sum())} NaN values (of {m.size}): a metric "
                         "over them would be meaningless. Fix the model or scoring that produced them.")
    if m.ndim == g.ndim and m.ndim >= 3 and m.shape[:-2] == g.shape[:-2] and m.shape != g.shape \
            and m.shape[-2] <= g.shape[-2] and m.shape[-1] <= g.shape[-1]:
        m = to_mask_resolution(m, g.shape[-2:])
    if m.shape != g.shape:
        raise ValueError(f"maps {m.shape} and masks {g.shape} must have the same shape (or smaller maps)")
    if m.ndim == 4:
        if m.shape[1] != 1:
            raise ValueError(f"maps must have one channel, got shape {m.shape}")
        m, g = m[:, 0], g[:, 0]
    elif m.ndim == 2:
        m, g = m[None], g[None]
    if m.ndim != 3:
        raise ValueError(f"maps must be (N, 1, H, W), (N, H, W) or (H, W), got {m.shape}")
    return m, g


def _check_both_classes(labels: np.ndarray, what: str) -> None:
    if labels.all() or not labels.any():
        raise ValueError(f"{what} needs both normal and anomalous samples (got only "
                         f"{'anomalous' if labels.all() else 'normal'} ones)")


def image_auroc(scores, labels) -> float:
    """Area under the ROC curve of image scores (higher = anomalous) against labels (1 = anomaly)."""
    y = _np(labels).ravel().astype(int)
    _check_both_classes(y, "image_auroc")
    return float(skm.roc_auc_score(y, _np(scores).ravel().astype(np.float64)))


def roc_curve(scores, labels):
    """``(fpr, tpr, thresholds)`` of image scores against labels (scikit-learn's ROC)."""
    return skm.roc_curve(_np(labels).ravel().astype(int), _np(scores).ravel().astype(np.float64))


def pixel_auroc(maps, masks) -> float:
    """AUROC over all pixels of all images: ``maps`` (N, 1, H, W) or (N, H, W), ``masks`` binary, same shape."""
    m, g = _maps_masks(maps, masks)
    _check_both_classes(g, "pixel_auroc")
    return float(skm.roc_auc_score(g.ravel().astype(int), m.ravel()))


def pro_curve(maps, masks, num_thresholds: int | None = None):
    """The exact PRO curve: ``(fpr, pro)`` at every distinct score, from (0, 0) to (1, 1).

    ``num_thresholds`` (optional, for plotting large curves) keeps at most that many points of the
    exact curve, evenly spaced along it, always including both ends; ``aupro`` uses the exact curve.
    All pixels are sorted by score once; lowering the threshold past a pixel raises either the FPR
    (a defect-free pixel) or the overlap of that pixel's region by 1/(|C_k| * n_regions).
    """
    m, g = _maps_masks(maps, masks)
    regions = np.zeros(m.shape, dtype=np.int64)
    n_regions = 0
    for i in range(len(g)):
        lab, n = ndimage.label(g[i], structure=EIGHT_CONNECTED)
        regions[i] = np.where(lab > 0, lab + n_regions, 0)
        n_regions += n
    if n_regions == 0:
        raise ValueError("pro_curve needs at least one anomalous region in the masks")
    n_normal = int((~g).sum())
    if n_normal == 0:
        raise ValueError("pro_curve needs defect-free pixels to measure false positives")
    scores, reg = m.ravel(), regions.ravel()
    sizes = np.bincount(reg, minlength=n_regions + 1).astype(np.float64)
    # each pixel's contribution when it passes the threshold
    d_fpr = np.where(reg == 0, 1.0 / n_normal, 0.0)
    d_pro = np.where(reg > 0, 1.0 / (sizes[reg] * n_regions), 0.0)
    order = np.argsort(-scores, kind="mergesort")
    s_sorted = scores[order]
    fpr, pro = np.cumsum(d_fpr[order]), np.cumsum(d_pro[order])
    # keep one point per distinct score (ties pass the threshold together)
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    fpr = np.r_[0.0, fpr[last_of_tie]]
    pro = np.r_[0.0, pro[last_of_tie]]
    fpr[-1], pro[-1] = 1.0, 1.0  # every pixel is above the lowest threshold (removes rounding error)
    if num_thresholds is not None:
        if num_thresholds < 2:
            raise ValueError(f"num_thresholds must be at least 2, got {num_thresholds}")
        if len(fpr) > num_thresholds:
            idx = np.unique(np.linspace(0, len(fpr) - 1, num_thresholds).round().astype(int))
            fpr, pro = fpr[idx], pro[idx]
    return np.clip(fpr, 0, 1), np.clip(pro, 0, 1)


def aupro(maps, masks, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by ``fpr_limit`` (1.0 = perfect)."""
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro = pro_curve(maps, masks)
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit:  # interpolate the curve at the limit
        j = int(np.searchsorted(fpr, fpr_limit, side="right"))
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0) if x1 > x0 else y1
        x, y = np.r_[x, fpr_limit], np.r_[y, y_lim]
    return float(np.trapezoid(y, x) / fpr_limit)


def three_sigma_threshold(train_scores, k: float = 3.0) -> float:
    """Mean + ``k`` standard deviations of scores on normal (training) data (at least two scores)."""
    s = _np(train_scores).astype(np.float64).ravel()
    if s.size < 2 or np.isnan(s).any():
        raise ValueError(f"three_sigma_threshold needs at least two scores without NaN (got {s.size}, "
                         f"{int(np.isnan(s).sum())} NaN)")
    return float(s.mean() + k * s.std(ddof=1))


def quantile_threshold(train_scores, q: float = 0.99) -> float:
    """The ``q`` quantile of scores on normal (training) data."""
    if np.isnan(_np(train_scores)).any():
        raise ValueError("quantile_threshold: the scores contain NaN")
    return float(np.quantile(_np(train_scores).astype(np.float64).ravel(), q))


def binarize(maps, threshold: float):
    """``maps > threshold`` as the input's type (tensor in, tensor out)."""
    if isinstance(maps, torch.Tensor):
        return (maps > threshold).to(maps.dtype)
    return (np.asarray(maps) > threshold).astype(np.float64)


def summarize(scores, labels, maps=None, masks=None, fpr_limit: float = 0.3) -> dict:
    """``{"image_auroc"}`` and, when maps and masks are given, ``pixel_auroc`` and ``aupro``."""
    out = {"image_auroc": image_auroc(scores, labels)}
    if maps is not None and masks is not None:
        out["pixel_auroc"] = pixel_auroc(maps, masks)
        out["aupro"] = aupro(maps, masks, fpr_limit)
    return out


def auroc_ci(scores, labels, level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> dict:
    """Image AUROC with a stratified bootstrap confidence interval over test images.

    Normal and anomalous images are resampled separately (their counts stay fixed, as in the test
    set), the AUROC recomputed on each of ``n_boot`` resamples, and the ``(1 - level)/2`` and
    ``(1 + level)/2`` quantiles reported. Returns ``{"auroc", "low", "high", "se"}`` (``se``: the
    bootstrap standard deviation). Pair counting gives the AUROC exactly as :func:`image_auroc`.
    """
    s, y = _np(scores).astype(np.float64).ravel(), _np(labels).ravel().astype(int)
    _check_both_classes(y, "auroc_ci")
    if np.isnan(s).any():
        raise ValueError("auroc_ci: the scores contain NaN")
    pos, neg = s[y == 1], s[y == 0]
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        p = pos[rng.integers(0, len(pos), len(pos))]
        n = neg[rng.integers(0, len(neg), len(neg))]
        boots[b] = _auroc_from_samples(p, n)
    a = (1 - level) / 2
    return {"auroc": _auroc_from_samples(pos, neg), "low": float(np.quantile(boots, a)),
            "high": float(np.quantile(boots, 1 - a)), "se": float(boots.std(ddof=1))}


def _auroc_from_samples(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + P(pos = neg)/2 by ranks (the Mann-Whitney statistic), O(n log n)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.r_[pos, neg])
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def paired_auroc_difference(scores_a, scores_b, labels, level: float = 0.95, n_boot: int = 1000,
                            seed: int = 0) -> dict:
    """AUROC(a) - AUROC(b) on the same test images, with a paired stratified bootstrap interval:
    both methods are scored on each resample. ``{"difference", "low", "high"}``; the difference is
    called a difference only when the interval excludes 0."""
    a, b = _np(scores_a).astype(np.float64).ravel(), _np(scores_b).astype(np.float64).ravel()
    y = _np(labels).ravel().astype(int)
    _check_both_classes(y, "paired_auroc_difference")
    ip, ineg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed)
    d = np.empty(n_boot)
    for k in range(n_boot):
        p, n = ip[rng.integers(0, len(ip), len(ip))], ineg[rng.integers(0, len(ineg), len(ineg))]
        d[k] = _auroc_from_samples(a[p], a[n]) - _auroc_from_samples(b[p], b[n])
    q = (1 - level) / 2
    diff = _auroc_from_samples(a[ip], a[ineg]) - _auroc_from_samples(b[ip], b[ineg])
    return {"difference": diff, "low": float(np.quantile(d, q)), "high": float(np.quantile(d, 1 - q))}


def pixel_auroc_ci(maps, masks, level: float = 0.95, n_boot: int = 500, bins: int = 2048, seed: int = 0) -> dict:
    """Pixel AUROC with a bootstrap interval over test *images* (pixels of one image are not
    independent, so images are the unit that is resampled).

    The point estimate is exact (:func:`pixel_auroc`). For the resamples, every image's normal and
    defect pixels are counted in ``bins`` quantile bins of the pooled scores; a resample's pooled
    histogram is the sum of its images' histograms and its AUROC the Mann-Whitney statistic of the two
    histograms (ties within a bin count 1/2), so a resample costs O(images x bins), not a sort of all
    pixels. Returns ``{"auroc", "low", "high", "se"}``.
    """
    m, g = _maps_masks(maps, masks)
    _check_both_classes(g, "pixel_auroc_ci")
    exact = float(skm.roc_auc_score(g.ravel().astype(int), m.ravel()))
    edges = np.unique(np.quantile(m.ravel(), np.linspace(0, 1, bins + 1)[1:-1]))
    idx = np.searchsorted(edges, m.reshape(len(m), -1), side="right")            # (N, H*W) bin per pixel
    nb = len(edges) + 1
    flat_g = g.reshape(len(g), -1)
    pos = np.stack([np.bincount(idx[i][flat_g[i]], minlength=nb) for i in range(len(m))]).astype(np.float64)
    neg = np.stack([np.bincount(idx[i][~flat_g[i]], minlength=nb) for i in range(len(m))]).astype(np.float64)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(m), len(m))
        p, n = pos[pick].sum(0), neg[pick].sum(0)
        if p.sum() == 0 or n.sum() == 0:
            continue                                   # a resample without defect pixels has no AUROC
        below = np.cumsum(n) - n                                                  # normal pixels in lower bins
        boots.append(float((p * (below + 0.5 * n)).sum() / (p.sum() * n.sum())))
    boots = np.asarray(boots)
    q = (1 - level) / 2
    return {"auroc": exact, "low": float(np.quantile(boots, q)), "high": float(np.quantile(boots, 1 - q)),
            "se": float(boots.std(ddof=1))}


def mean_auroc_intervals(scores: dict, labels: dict, level: float = 0.95, n_boot: int = 1000,
                         seed: int = 0) -> dict:
    """Mean image AUROC over units (digits, categories) for several methods, with paired bootstrap
    intervals for each method and for each pair's difference.

    ``scores[method][unit]`` is a list of score arrays (one per seed, same test images), ``labels[unit]``
    the labels of that unit's test images. Each resample draws, per unit, the normal and the anomalous
    test images with replacement (the same draw for every method and seed: a paired comparison); a
    method's value on it is the mean over units of its AUROC averaged over seeds. Returns
    ``{"methods": {m: {"mean", "low", "high"}}, "differences": {"a - b": {"difference", "low", "high"}}}``.
    """
    methods = list(scores)
    units = list(labels)
    rng = np.random.default_rng(seed)
    y = {u: _np(labels[u]).ravel().astype(int) for u in units}
    for u in units:
        _check_both_classes(y[u], f"mean_auroc_intervals (unit {u})")
    sc = {m: {u: [_np(s).astype(np.float64).ravel() for s in scores[m][u]] for u in units} for m in methods}
    pos = {u: np.flatnonzero(y[u] == 1) for u in units}
    neg = {u: np.flatnonzero(y[u] == 0) for u in units}

    def value(m, draw):
        per_unit = []
        for u in units:
            p, n = draw[u]
            per_unit.append(np.mean([_auroc_from_samples(s[p], s[n]) for s in sc[m][u]]))
        return float(np.mean(per_unit))

    full = {u: (pos[u], neg[u]) for u in units}
    point = {m: value(m, full) for m in methods}
    boots = {m: np.empty(n_boot) for m in methods}
    for b in range(n_boot):
        draw = {u: (pos[u][rng.integers(0, len(pos[u]), len(pos[u]))],
                    neg[u][rng.integers(0, len(neg[u]), len(neg[u]))]) for u in units}
        for m in methods:
            boots[m][b] = value(m, draw)
    q = (1 - level) / 2
    out = {"methods": {m: {"mean": point[m], "low": float(np.quantile(boots[m], q)),
                           "high": float(np.quantile(boots[m], 1 - q))} for m in methods},
           "differences": {}}
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            d = boots[a] - boots[b]
            out["differences"][f"{a} - {b}"] = {"difference": point[a] - point[b],
                                                "low": float(np.quantile(d, q)), "high": float(np.quantile(d, 1 - q))}
    return out


def ranking_holds(intervals: dict, better: str, worse: str) -> bool:
    """True when ``better``'s mean AUROC exceeds ``worse``'s with a paired interval above 0."""
    d = intervals["differences"]
    if f"{better} - {worse}" in d:
        return d[f"{better} - {worse}"]["low"] > 0
    if f"{worse} - {better}" in d:
        return d[f"{worse} - {better}"]["high"] < 0
    raise KeyError(f"no difference between {better!r} and {worse!r} in the intervals")
