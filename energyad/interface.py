"""The one interface every method of the course shares.

A method is fitted on normal data only (the semi-supervised setting), then scores images:
one number per image (higher = more anomalous) and, where the method localizes, one map per
image (higher = more anomalous, same height and width as the input). Chapters and the
comparison chapter treat all methods through these three calls.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class AnomalyDetector(Protocol):
    """fit on normal images, then ``score`` (N,) and optionally ``anomaly_map`` (N, 1, H, W)."""

    def fit(self, images: torch.Tensor, **kwargs) -> "AnomalyDetector":
        """Train on normal images, a float tensor (N, C, H, W) in [0, 1]."""
        ...

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Image-level anomaly scores, shape (N,); higher means more anomalous."""
        ...


@runtime_checkable
class Localizer(AnomalyDetector, Protocol):
    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel-level anomaly scores, shape (N, 1, H, W); higher means more anomalous."""
        ...


def batched(fn, images: torch.Tensor, batch_size: int = 64, progress: bool = False, desc: str = ""):
    """Apply ``fn`` to ``images`` in batches and concatenate the results along dim 0."""
    from tqdm.auto import tqdm

    chunks = range(0, len(images), batch_size)
    if progress:
        chunks = tqdm(chunks, desc=desc or getattr(fn, "__name__", "batches"), leave=False)
    return torch.cat([fn(images[i : i + batch_size]) for i in chunks])
