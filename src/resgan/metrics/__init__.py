"""Evaluation metrics: FID, KID, IS, SSIM diversity and memorization, precision/recall.

One module per concern: ``distances`` (FID, KID, precision/recall), ``scores`` (inception
score), ``ssim`` (diversity, memorization), ``features`` (classifier and InceptionV3
extractors), ``classifier`` (the domain classifier network), ``registry`` (metric names; the
champion metrics, their directions and result keys) and ``evaluation`` (:func:`evaluate_samples`).
Importing this package does not import TensorFlow; the extractors import Keras when they are built.
"""

from resgan.metrics.distances import (
    MetricError,
    feature_stats,
    fid,
    frechet_distance,
    kid,
    knn_radii,
    mmd2_unbiased,
    precision_recall,
)
from resgan.metrics.evaluation import evaluate_samples
from resgan.metrics.features import (
    InceptionFeatures,
    LearnedFeatures,
    find_inception_weights,
    resolve_extractor,
)
from resgan.metrics.registry import (
    CHAMPION_METRICS,
    METRIC_DIRECTION,
    get_metric,
    is_better,
    list_metrics,
    register_metric,
    result_key,
    result_key_pattern,
)
from resgan.metrics.scores import inception_score
from resgan.metrics.ssim import memorization, ssim, ssim_diversity

__all__ = [
    "CHAMPION_METRICS",
    "METRIC_DIRECTION",
    "InceptionFeatures",
    "LearnedFeatures",
    "MetricError",
    "evaluate_samples",
    "feature_stats",
    "fid",
    "find_inception_weights",
    "frechet_distance",
    "get_metric",
    "inception_score",
    "is_better",
    "kid",
    "knn_radii",
    "list_metrics",
    "memorization",
    "mmd2_unbiased",
    "precision_recall",
    "register_metric",
    "resolve_extractor",
    "result_key",
    "result_key_pattern",
    "ssim",
    "ssim_diversity",
]
