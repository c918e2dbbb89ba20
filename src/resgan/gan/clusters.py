"""Pseudo-labels for unlabelled data: k-means clusters of learned features (self-conditioned GAN).

Liu et al. 2020, "Diverse Image Generation via Self-Conditioned GANs": a GAN conditioned on clusters
of its training images covers their modes as a class-conditional one covers classes. Here the features
are the feature stage's (the self-supervised encoder, for unlabelled data), L2-normalised, clustered
once before training; the exported generator draws each cluster as often as it holds training images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_PER_CLUSTER = 20  # fewer images per cluster than this: fewer clusters


@dataclass(frozen=True)
class Clusters:
    labels: np.ndarray  # (N,) int32, the cluster of each training image
    prior: tuple[float, ...]  # the share of training images in each cluster

    @property
    def k(self) -> int:
        return len(self.prior)


def cluster_count(wanted: int, n_images: int) -> int:
    """The clusters for ``n_images``: ``wanted``, fewer where clusters would hold under
    :data:`MIN_PER_CLUSTER` images; 0 (unconditional) where that leaves fewer than 2."""
    k = min(int(wanted), n_images // MIN_PER_CLUSTER)
    return k if k >= 2 else 0


def cluster_features(features: np.ndarray, k: int, seed: int) -> Clusters:
    """k-means (k-means++, 10 restarts) of the L2-normalised ``features`` into ``k`` clusters, numbered
    by size (cluster 0 the largest), so the same data and seed give the same labels."""
    from sklearn.cluster import KMeans

    features = np.asarray(features, dtype=np.float64)
    if not 2 <= k <= len(features):
        raise ValueError(f"k must be from 2 to the {len(features)} images, got {k}")
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    raw = KMeans(k, n_init=10, random_state=seed).fit_predict(unit)
    sizes = np.bincount(raw, minlength=k)
    order = np.argsort(-sizes, kind="stable")  # old id of the largest first
    rename = np.empty(k, dtype=np.int32)
    rename[order] = np.arange(k, dtype=np.int32)
    labels = rename[raw]
    counts = np.bincount(labels, minlength=k)
    return Clusters(labels=labels, prior=tuple(float(c) / len(labels) for c in counts))


def self_condition(train_data, k: int, classifier_path, seed: int) -> tuple[Clusters | None, str]:
    """``k`` k-means clusters (:func:`cluster_features`) of the training images' features from the feature
    stage's model at ``classifier_path``, for a self-conditioned GAN, and a note saying what they are; None
    and why, said in one line, where they cannot be had or trusted (training goes on unconditional)."""
    import time

    from resgan.errors import ResganError
    from resgan.metrics.features import LearnedFeatures

    def off(why: str) -> tuple[None, str]:
        print(f"self-conditioning is off ({why}): the model is unconditional", flush=True)
        return None, f"self-conditioning is off: {why}"

    if train_data.mode != "memory":
        return off("the training images are streamed from shards; train.input: memory clusters them")
    if classifier_path is None:
        return off("no feature extractor given (--classifier)")
    try:
        extractor = LearnedFeatures(classifier_path)
    except ResganError as error:
        return off(str(error))
    if not extractor.trusted:
        return off(f"the features failed their fitness check: {extractor.fitness}")
    started = time.perf_counter()
    try:
        features, _ = extractor(train_data.images)
    except ResganError as error:  # e.g. an extractor made for images of another shape
        return off(str(error))
    clusters = cluster_features(features, k, seed)
    sizes = np.bincount(clusters.labels, minlength=k)
    note = (
        f"{k} k-means clusters of the {extractor.kind} features stand in for labels "
        f"({sizes.max()} to {sizes.min()} images each, {time.perf_counter() - started:.0f} s)"
    )
    print(f"self-conditioning: {note}", flush=True)
    return clusters, note
