"""Metrics of the course: image AUROC, pixel AUROC, PRO/AUPRO, and thresholds.

(The metrics helper extends this module; the signatures below are the contract.)
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def image_auroc(scores, labels) -> float:
    """Area under the ROC curve of image scores (higher = anomalous) against labels (1 = anomaly)."""
    return float(roc_auc_score(_np(labels).ravel().astype(int), _np(scores).ravel().astype(np.float64)))


def pixel_auroc(maps, masks) -> float:
    """AUROC over all pixels of all images: ``maps`` (N, 1, H, W) or (N, H, W), ``masks`` binary, same shape."""
    m = _np(maps).astype(np.float64).ravel()
    g = (_np(masks).ravel() > 0.5).astype(int)
    return float(roc_auc_score(g, m))
