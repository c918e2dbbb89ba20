"""Scores of one set of class probabilities: the Inception score (or classifier score). numpy/scipy only."""

from __future__ import annotations

import numpy as np
from scipy.special import rel_entr

from resgan.metrics.distances import MetricError


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception score ``exp(E_x KL(p(y|x) || p(y)))``: mean and std over ``splits`` consecutive parts.

    ``probs`` is ``(N, K)``, each row a predicted class distribution. p(y) is the mean row of
    each part, as in the reference implementation (Salimans et al. 2016). It ranges from 1
    (every prediction alike, or uniform) to K (confident and balanced over K classes); higher is
    better. Small parts bias it low: keep N / splits in the hundreds or more.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise MetricError(f"inception_score: probs must be a non-empty (N, K) array, got shape {probs.shape}")
    if not 1 <= splits <= probs.shape[0]:
        raise MetricError(f"inception_score: splits must be between 1 and N={probs.shape[0]}, got {splits}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise MetricError("inception_score: probs must be finite and non-negative")
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = rel_entr(part, marginal).sum(axis=1)  # rel_entr: 0 log 0 = 0
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
