"""Distances between two sets of features: FID, KID and precision/recall. numpy/scipy only.

Features are 2-D arrays ``(N, D)``, one row per image, as the extractors in
:mod:`resgan.metrics.features` return them. Everything is computed in float64.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from resgan.errors import ResganError


class MetricError(ResganError, ValueError):
    """A metric cannot be computed from these inputs (too few samples, a numerical failure)."""


def _as_features(features: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise MetricError(f"{name}: features must be a 2-D array (N, D), got shape {features.shape}")
    if features.shape[0] < min_rows:
        raise MetricError(f"{name}: needs at least {min_rows} feature rows, got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise MetricError(f"{name}: features contain NaN or infinite values")
    return features


# ---------------------------------------------------------------- FID


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, N-1) of ``(N, D)`` features, in float64."""
    features = _as_features(features, "feature_stats")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))``, as in the reference
    implementation (TTUR / pytorch-fid): ``scipy.linalg.sqrtm`` of the product; if that gives
    non-finite values (a singular product), ``eps * I`` is added to both covariances and the root
    taken again; an imaginary part from round-off is dropped, a large one (> 1e-3 on the
    diagonal) raises :class:`MetricError`.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise MetricError(
            f"frechet_distance: shapes do not match: mu {mu1.shape} / {mu2.shape}, "
            f"sigma {sigma1.shape} / {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise MetricError(
                f"FID: the matrix square root has a large imaginary component "
                f"({np.max(np.abs(covmean.imag)):.3g}); the covariance estimates are "
                "ill-conditioned: use more images than feature dimensions"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """Fréchet Inception Distance between two ``(N, D)`` feature sets (lower is better)."""
    return frechet_distance(*feature_stats(real_features), *feature_stats(fake_features))


# ---------------------------------------------------------------- KID


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for all row pairs, in place (two products beat ``** 3`` here)."""
    k = x @ y.T
    k *= 1.0 / x.shape[1]
    k += 1.0
    cube = k * k
    cube *= k
    return cube


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between two ``(m, D)`` samples of equal size, cubic polynomial kernel.

    Within-set sums leave out the diagonal (k(x_i, x_i)); the cross term averages all m^2 pairs.
    """
    m = x.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and standard deviation of unbiased MMD^2 over random subsets.

    Each of ``subsets`` rounds draws ``m = min(subset_size, n_real, n_fake)`` rows of each set
    without replacement (Bińkowski et al. 2018, as in stylegan2-ada and torch-fidelity). The
    std is over the subsets (ddof=0, as torch-fidelity reports it). Lower is better; the mean
    can be slightly negative when the sets come from one distribution.
    """
    real = _as_features(real_features, "KID")
    fake = _as_features(fake_features, "KID")
    if real.shape[1] != fake.shape[1]:
        raise MetricError(f"KID: feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    if subsets < 1:
        raise MetricError("KID: subsets must be at least 1")
    rng = rng if rng is not None else np.random.default_rng(0)
    m = min(subset_size, real.shape[0], fake.shape[0])
    if m < 2:
        raise MetricError("KID: subset_size must be at least 2")
    values = np.empty(subsets)
    for i in range(subsets):
        x = fake[rng.choice(fake.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        values[i] = mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std())


# ---------------------------------------------------------------- precision / recall


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _distance_chunks(x: np.ndarray, y: np.ndarray, chunk: int):
    """Yield ``(start, D)`` with D the Euclidean distances of rows ``x[start:start+chunk]`` to all of y.

    Chunked so that 10k x 10k never holds more than ``chunk * len(y)`` float64 values at once.
    """
    y_sq = _sq_norms(y)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk]
        d2 = _sq_norms(block)[:, None] + y_sq[None, :] - 2.0 * (block @ y.T)
        yield start, np.sqrt(np.maximum(d2, 0.0))  # round-off can make d2 slightly negative


def knn_radii(features: np.ndarray, k: int = 3, chunk: int = 1024) -> np.ndarray:
    """Distance from each row to its k-th nearest other row of the same set (``(N,)``)."""
    features = _as_features(features, "k-NN radii", min_rows=k + 1)
    radii = np.empty(features.shape[0])
    for start, dist in _distance_chunks(features, features, chunk):
        # Position 0 of the sorted row is the point itself (distance ~0), so the k-th neighbour
        # is at position k. A duplicate of the point counts as a neighbour, as in the reference.
        radii[start : start + dist.shape[0]] = np.partition(dist, k, axis=1)[:, k]
    return radii


def _inside_manifold(queries: np.ndarray, manifold: np.ndarray, radii: np.ndarray, chunk: int) -> np.ndarray:
    inside = np.empty(queries.shape[0], dtype=bool)
    for start, dist in _distance_chunks(queries, manifold, chunk):
        inside[start : start + dist.shape[0]] = (dist <= radii[None, :]).any(axis=1)
    return inside


def precision_recall(
    real_features: np.ndarray, fake_features: np.ndarray, k: int = 3, chunk: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) in feature space.

    Each set's manifold is the union of balls around its points with radius the distance to the
    k-th nearest neighbour within the set. Precision: fraction of fake points inside the real
    manifold (fidelity). Recall: fraction of real points inside the fake manifold (coverage).
    Both in [0, 1], higher is better. Radii shrink as a set grows, so compare figures made with
    equally many points.
    """
    real = _as_features(real_features, "precision/recall", min_rows=k + 1)
    fake = _as_features(fake_features, "precision/recall", min_rows=k + 1)
    if real.shape[1] != fake.shape[1]:
        raise MetricError(f"precision/recall: feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    real_radii = knn_radii(real, k, chunk)
    fake_radii = knn_radii(fake, k, chunk)
    precision = _inside_manifold(fake, real, real_radii, chunk).mean()
    recall = _inside_manifold(real, fake, fake_radii, chunk).mean()
    return float(precision), float(recall)
