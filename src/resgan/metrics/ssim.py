"""SSIM figures on uint8 NHWC images: diversity of a set and memorization of the training set.

SSIM itself is scikit-image's ``structural_similarity`` with its defaults (a 7x7 uniform window,
sample covariances) and ``data_range=255``, one pair of images at a time; RGB channels are averaged.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from resgan.metrics.distances import MetricError


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise MetricError(f"{name}: images must be NHWC with 1 or 3 channels, got shape {images.shape}")
    if min(images.shape[1:3]) < 3:
        raise MetricError(f"{name}: images of {images.shape[1]}x{images.shape[2]} px are too small for SSIM")
    return images


def _win_size(height: int, width: int) -> int:
    # skimage's default window is 7 px and must fit in the image; below 7 px use the largest odd size.
    side = min(7, height, width)
    return side if side % 2 else side - 1


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two HWC images with values in [0, 255] (1 means identical)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise MetricError(f"ssim: two HWC images of one shape needed, got {a.shape} and {b.shape}")
    win = _win_size(a.shape[0], a.shape[1])
    if a.shape[-1] == 1:
        return float(structural_similarity(a[..., 0], b[..., 0], data_range=255, win_size=win))
    return float(structural_similarity(a, b, data_range=255, win_size=win, channel_axis=-1))


def ssim_diversity(images: np.ndarray, pairs: int = 1000, rng: np.random.Generator | None = None) -> float:
    """Mean SSIM over ``pairs`` random pairs of distinct images of one set (lower means more diverse).

    Pairs are drawn with replacement among all ordered pairs (i, j) with i != j.
    """
    images = _check_images(images, "ssim_diversity")
    n = images.shape[0]
    if n < 2:
        raise MetricError("ssim_diversity: needs at least 2 images")
    rng = rng if rng is not None else np.random.default_rng(0)
    first = rng.integers(0, n, size=pairs)
    second = (first + rng.integers(1, n, size=pairs)) % n  # never equal to first
    return float(np.mean([ssim(images[i], images[j]) for i, j in zip(first, second)]))


def _downscale(images: np.ndarray, max_side: int = 16) -> np.ndarray:
    """Block-mean images to at most ``max_side`` px per side, flattened to float32 rows in [0, 1].

    Small thumbnails make the L2 shortlist cheap and forgiving of one-pixel shifts.
    """
    n, height, width, channels = images.shape
    factor = max(1, max(height, width) // max_side)
    h, w = height // factor, width // factor
    blocks = images[:, : h * factor, : w * factor].astype(np.float32).reshape(n, h, factor, w, factor, channels)
    return (blocks.mean(axis=(2, 4)) / 255.0).reshape(n, -1)


def memorization(samples: np.ndarray, train_images: np.ndarray, shortlist: int = 10, threshold: float = 0.9) -> dict:
    """How close each generated sample comes to a training image, by SSIM.

    For each sample, the ``shortlist`` training images nearest by L2 distance on downscaled
    pixels are found (scikit-learn, brute force in chunks), and the highest SSIM among them is
    kept: SSIM on the shortlist only, not on all N x M pairs. Returns a dict with
    ``max_ssim`` (``(N,)`` float64), ``nearest`` (``(N,)`` index into ``train_images`` of the best
    match), and the summary figures ``mean``, ``median``, ``p95`` and ``fraction`` (share of
    samples with ``max_ssim >= threshold``: likely copies of a training image).
    """
    from sklearn.neighbors import NearestNeighbors

    samples = _check_images(samples, "memorization")
    train_images = _check_images(train_images, "memorization")
    if samples.shape[1:] != train_images.shape[1:]:
        raise MetricError(
            f"memorization: sample shape {samples.shape[1:]} differs from training image shape {train_images.shape[1:]}"
        )
    if samples.shape[0] == 0 or train_images.shape[0] == 0:
        raise MetricError("memorization: needs at least one sample and one training image")
    k = min(shortlist, train_images.shape[0])
    index = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(_downscale(train_images))
    candidates = index.kneighbors(_downscale(samples), return_distance=False)  # (N, k)
    scores = np.array([[ssim(sample, train_images[j]) for j in row] for sample, row in zip(samples, candidates)])
    best = scores.argmax(axis=1)
    max_ssim = scores[np.arange(len(scores)), best]
    return {
        "max_ssim": max_ssim,
        "nearest": candidates[np.arange(len(candidates)), best],
        "mean": float(max_ssim.mean()),
        "median": float(np.median(max_ssim)),
        "p95": float(np.percentile(max_ssim, 95)),
        "fraction": float((max_ssim >= threshold).mean()),
        "threshold": float(threshold),
    }
