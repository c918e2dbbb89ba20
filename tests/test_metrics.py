"""The metric math (FID, KID, IS, SSIM, memorization, precision/recall) and evaluate_samples.

Expected values come from closed forms, hand computation or an independent library (numpy's
eigh, scikit-image, scikit-learn). No TensorFlow here: evaluate_samples runs with a toy extractor.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import typing

import numpy as np
import pytest
from skimage.metrics import structural_similarity
from sklearn.neighbors import NearestNeighbors

from resgan.config import EvaluateParams, MlflowParams
from resgan.errors import ResganError
from resgan.metrics import (
    CHAMPION_METRICS,
    METRIC_DIRECTION,
    MetricError,
    evaluate_samples,
    feature_stats,
    fid,
    frechet_distance,
    get_metric,
    inception_score,
    is_better,
    kid,
    knn_radii,
    list_metrics,
    memorization,
    mmd2_unbiased,
    precision_recall,
    result_key,
    result_key_pattern,
    ssim,
    ssim_diversity,
)

C1 = (0.01 * 255) ** 2  # SSIM's luminance constant for data_range 255


# ---------------------------------------------------------------- FID


def _fid_by_eigh(x: np.ndarray, y: np.ndarray) -> float:
    """FID via Tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1))), with a symmetric eigensolver."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = 1 + 0 + 6.25 + sum(a + b - 2 * math.sqrt(a * b) for a, b in zip(s1, s2))  # = 7.25 + 4 + 1 + 0
    assert expected == pytest.approx(12.25)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(12.25, rel=1e-12)


def test_fid_matches_an_independent_eigen_computation():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(8, 8))
    x = rng.normal(size=(500, 8)) @ mixing
    y = rng.normal(size=(400, 8)) @ mixing.T * 0.7 + 0.3
    assert fid(x, y) == pytest.approx(_fid_by_eigh(x, y), rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(1).normal(size=(300, 16))
    assert abs(fid(x, x)) < 1e-8


def test_fid_with_rank_deficient_covariances_is_finite_and_right():
    # 10 rows in 20 dimensions: both covariances are singular (rank 9).
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(10, 20)), rng.normal(size=(10, 20)) + 1.0
    assert fid(x, y) == pytest.approx(_fid_by_eigh(x, y), rel=1e-6)


def test_frechet_distance_raises_on_a_large_imaginary_component():
    # sqrt(I @ -I) = i I: not a pair of covariance matrices; the reference raises here too.
    with pytest.raises(MetricError, match="imaginary"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), -np.eye(3))


def test_feature_stats_are_mean_and_unbiased_covariance():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]])
    mu, sigma = feature_stats(x)
    np.testing.assert_allclose(mu, [3.0, 5.0])
    # by hand: deviations (-2,-3), (0,1), (2,2); sums of products / (3 - 1)
    np.testing.assert_allclose(sigma, [[4.0, 5.0], [5.0, 7.0]])  # (6 + 0 + 4) / 2 = 5


def test_fid_rejects_bad_input():
    with pytest.raises(MetricError, match="2-D"):
        fid(np.zeros(5), np.zeros(5))
    with pytest.raises(MetricError, match="NaN"):
        fid(np.full((4, 2), np.nan), np.zeros((4, 2)))


# ---------------------------------------------------------------- KID


def _kernel(a, b):
    return (np.dot(a, b) / len(a) + 1.0) ** 3


def test_mmd2_unbiased_matches_a_direct_double_loop():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) + 0.5
    m = len(x)
    xx = sum(_kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(_kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(_kernel(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_mmd2_estimator_is_unbiased_exactly_on_a_discrete_distribution():
    # x uniform on 3 points, y uniform on 3 others. Averaging the estimator over every possible
    # iid sample of size 2 (with equal weights) is its exact expectation; it must equal the
    # population MMD^2, where draws of x and x' may coincide (so the diagonal is included).
    a = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, -1.0]])
    b = np.array([[0.5, 0.5], [1.5, 2.0], [-1.0, 0.0]])
    population = (
        np.mean([_kernel(p, q) for p in a for q in a])
        + np.mean([_kernel(p, q) for p in b for q in b])
        - 2 * np.mean([_kernel(p, q) for p in a for q in b])
    )
    m = 2
    samples = list(itertools.product(range(3), repeat=m))
    estimates = [mmd2_unbiased(a[list(i)], b[list(j)]) for i in samples for j in samples]
    assert np.mean(estimates) == pytest.approx(population, rel=1e-12)
    # the biased (V-statistic) version would miss it: the test can fail
    biased = [
        np.mean((a[list(i)] @ a[list(i)].T / 2 + 1) ** 3)
        + np.mean((b[list(j)] @ b[list(j)].T / 2 + 1) ** 3)
        - 2 * np.mean((a[list(i)] @ b[list(j)].T / 2 + 1) ** 3)
        for i in samples
        for j in samples
    ]
    assert abs(np.mean(biased) - population) > 0.1


def test_kid_with_subsets_as_large_as_the_sets_equals_the_whole_set_estimate():
    # m = min(subset_size, n_real, n_fake) = 40: every subset is the whole set in another order,
    # so each round gives the same value and the std is 0.
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(40, 6)), rng.normal(size=(40, 6)) + 0.2
    mean, std = kid(real, fake, subsets=3, subset_size=1000, rng=np.random.default_rng(0))
    assert mean == pytest.approx(mmd2_unbiased(fake, real), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    same_mean, same_std = kid(a, b, subsets=50, subset_size=500, rng=np.random.default_rng(0))
    shifted_mean, _ = kid(a, b + 0.5, subsets=50, subset_size=500, rng=np.random.default_rng(0))
    # tolerance: one subset's std is ~0.005 here; the mean of 50 overlapping subsets is far tighter
    assert abs(same_mean) < 0.005
    assert 0.0 < same_std < 0.02
    assert shifted_mean > 0.5  # ~1.0 for a 0.5 shift in all 16 dimensions


# ---------------------------------------------------------------- inception score


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = inception_score(np.full((100, 10), 0.1), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_balanced_predictions_is_the_class_count():
    probs = np.eye(5)[np.arange(100) % 5]  # one-hot, each split of 10 holds every class twice
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(5.0, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_by_hand_and_its_spread_over_splits():
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    marginal = p.mean(0)  # (0.55, 0.45)
    kl = [sum(pi * math.log(pi / mi) for pi, mi in zip(row, marginal)) for row in p]
    assert inception_score(p, splits=1)[0] == pytest.approx(math.exp(np.mean(kl)), rel=1e-12)
    # split 1 uniform (score 1), split 2 confident over 2 classes (score 2): mean 1.5, std 0.5
    probs = np.vstack([np.full((4, 2), 0.5), np.eye(2)[[0, 1, 0, 1]]])
    mean, std = inception_score(probs, splits=2)
    assert (mean, std) == pytest.approx((1.5, 0.5), rel=1e-12)


def test_inception_score_rejects_more_splits_than_rows():
    with pytest.raises(MetricError, match="splits"):
        inception_score(np.full((3, 2), 0.5), splits=4)


# ---------------------------------------------------------------- SSIM


def _pattern(seed: int, size: int = 16, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = 127 + 100 * np.sin(xx / rng.uniform(1, 4) + yy / rng.uniform(1, 4))
    image = np.stack([base + rng.normal(0, 20, base.shape) for _ in range(channels)], -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_ssim_of_constant_images_matches_the_hand_formula():
    # constant images: zero variances, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1)
    a, b = np.full((16, 16, 1), 100, np.uint8), np.full((16, 16, 1), 150, np.uint8)
    assert ssim(a, b) == pytest.approx((2 * 100 * 150 + C1) / (100**2 + 150**2 + C1), rel=1e-12)
    assert ssim(a, a) == pytest.approx(1.0)


def test_ssim_equals_scikit_image_on_grayscale_rgb_and_tiny_images():
    a, b = _pattern(0), _pattern(1)
    assert ssim(a, b) == pytest.approx(structural_similarity(a[..., 0], b[..., 0], data_range=255), rel=1e-12)
    a3, b3 = _pattern(2, channels=3), _pattern(3, channels=3)
    per_channel = [structural_similarity(a3[..., c], b3[..., c], data_range=255) for c in range(3)]
    assert ssim(a3, b3) == pytest.approx(np.mean(per_channel), rel=1e-12)
    # 5 px images: the 7 px default window does not fit, a 5 px one is used
    a5, b5 = a[:5, :5], b[:5, :5]
    assert ssim(a5, b5) == pytest.approx(
        structural_similarity(a5[..., 0], b5[..., 0], data_range=255, win_size=5), rel=1e-12
    )


def test_ssim_diversity_is_the_mean_over_distinct_pairs():
    pair = np.stack([_pattern(4), _pattern(5)])
    expected = structural_similarity(pair[0, ..., 0], pair[1, ..., 0], data_range=255)
    # two images: every drawn pair is (0, 1) or (1, 0), never (i, i)
    assert ssim_diversity(pair, pairs=20, rng=np.random.default_rng(0)) == pytest.approx(expected, rel=1e-12)
    same = np.stack([_pattern(6)] * 4)
    assert ssim_diversity(same, pairs=10) == pytest.approx(1.0)


def test_memorization_finds_an_exact_copy():
    train = np.stack([_pattern(s) for s in range(20)])
    samples = np.stack([_pattern(100), train[7], _pattern(101)])
    memo = memorization(samples, train, shortlist=5, threshold=0.9)
    assert memo["max_ssim"][1] == pytest.approx(1.0)
    assert memo["nearest"][1] == 7
    assert memo["fraction"] == pytest.approx(1 / 3)
    assert memo["max_ssim"][0] < 0.9 and memo["max_ssim"][2] < 0.9
    assert memo["median"] == pytest.approx(np.median(memo["max_ssim"]))
    assert memo["p95"] == pytest.approx(np.percentile(memo["max_ssim"], 95))


def _brute_force_max_ssim(samples, train):
    return np.array([max(structural_similarity(s[..., 0], t[..., 0], data_range=255) for t in train) for s in samples])


def test_memorization_shortlist_equals_brute_force():
    rng = np.random.default_rng(7)
    train = np.stack([_pattern(s) for s in range(30)])
    # noisy copies of training images and unrelated images
    noisy = np.clip(train[[3, 11, 29]].astype(int) + rng.normal(0, 15, (3, 16, 16, 1)), 0, 255).astype(np.uint8)
    samples = np.concatenate([noisy, np.stack([_pattern(200 + s) for s in range(5)])])
    brute = _brute_force_max_ssim(samples, train)
    # shortlist covering the whole set: exactly the brute-force maximum
    np.testing.assert_allclose(memorization(samples, train, shortlist=30)["max_ssim"], brute, rtol=1e-12)
    # a short shortlist still finds the best match of the noisy copies (their L2 neighbour is it)
    short = memorization(samples, train, shortlist=3)
    np.testing.assert_allclose(short["max_ssim"][:3], brute[:3], rtol=1e-12)
    np.testing.assert_array_equal(short["nearest"][:3], [3, 11, 29])
    assert np.all(short["max_ssim"] <= brute + 1e-12)


# ---------------------------------------------------------------- precision / recall


def test_precision_recall_of_identical_sets_is_one():
    x = np.random.default_rng(8).normal(size=(200, 8))
    assert precision_recall(x, x.copy(), k=3) == (1.0, 1.0)


def test_precision_recall_of_far_apart_sets_is_zero():
    rng = np.random.default_rng(9)
    assert precision_recall(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)) + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_by_hand_in_one_dimension():
    # real 0,1,2,3 with k=1: every radius 1. fake 0.5 and 10: k=1 radii 9.5.
    real, fake = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.5], [10.0]])
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == 0.5  # 0.5 lies within 1 of 0; 10 is outside every real ball
    assert recall == 1.0  # the ball of radius 9.5 around 0.5 covers all real points


def test_knn_radii_match_scikit_learn_and_chunking_changes_nothing():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(150, 5)), rng.normal(size=(120, 5)) + 0.3
    distances, _ = NearestNeighbors(n_neighbors=4).fit(x).kneighbors(x)  # column 0 is the point itself
    np.testing.assert_allclose(knn_radii(x, k=3), distances[:, 3], rtol=1e-9)
    np.testing.assert_allclose(knn_radii(x, k=3, chunk=7), distances[:, 3], rtol=1e-9)
    assert precision_recall(x, y, k=3, chunk=11) == precision_recall(x, y, k=3)
    precision, recall = precision_recall(x, y, k=3)
    assert 0.0 < precision < 1.0 and 0.0 < recall < 1.0


# ---------------------------------------------------------------- registry


def test_registry_directions_and_result_keys():
    assert METRIC_DIRECTION == {"fid": "min", "kid": "min", "is": "max", "pr_precision": "max", "pr_recall": "max"}
    assert result_key("kid", "classifier") == "kid_classifier_mean"
    assert result_key("pr_recall", "inception") == "pr_inception_recall"
    assert is_better("fid", 3.0, 4.0) and not is_better("fid", 4.0, 3.0)
    assert is_better("is", 4.0, 3.0) and not is_better("is", 3.0, 3.0)
    assert get_metric("ssim").needs_features is False
    with pytest.raises(ResganError, match="unknown metric"):
        get_metric("lpips")


def test_the_config_accepts_exactly_the_registered_metric_names():
    champion = typing.get_args(MlflowParams.model_fields["champion_metric"].annotation)
    assert set(champion) == set(CHAMPION_METRICS) == set(METRIC_DIRECTION)
    evaluated = typing.get_args(typing.get_args(EvaluateParams.model_fields["metrics"].annotation)[0])
    assert set(evaluated) == set(list_metrics())


def test_result_key_patterns_match_every_extractor_and_nothing_else():
    assert result_key_pattern("kid") == "kid_[a-z]+(?:_untrusted)?_mean"
    for metric in CHAMPION_METRICS:
        pattern = re.compile(result_key_pattern(metric))
        for features in ("classifier", "inception", "ssl", "ssl_untrusted", "classifier_untrusted"):
            assert pattern.fullmatch(result_key(metric, features)), (metric, features)
    # Floors, spreads and sample counts are not the champion metric's number.
    for key in (
        "fid_classifier_floor",
        "kid_classifier_std",
        "kid_classifier_floor_mean",
        "is_inception_real_mean",
        "pr_classifier_floor_precision",
        "pr_n",
    ):
        assert not any(re.fullmatch(result_key_pattern(m), key) for m in CHAMPION_METRICS), key
    with pytest.raises(MetricError, match="no result key for metric 'ssim'"):
        result_key_pattern("ssim")


# ---------------------------------------------------------------- evaluate_samples


class ToyExtractor:
    """Deterministic numpy features: 4x4 block means of the pixels; probs: softmax over 3 of them."""

    name = "toy"
    data_classes = True

    def __init__(self, with_probs: bool = True):
        self.with_probs = with_probs
        self.calls = 0

    def __call__(self, images, batch_size=256):
        self.calls += 1
        n = len(images)
        features = images.astype(np.float64).reshape(n, 4, 4, 4, 4, -1).mean(axis=(2, 4)).reshape(n, -1) / 255
        if not self.with_probs:
            return features, None
        logits = features[:, :3] * 10
        probs = np.exp(logits - logits.max(1, keepdims=True))
        return features, probs / probs.sum(1, keepdims=True)


def _images(n: int, seed: int, offset: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(100 + offset, 40, (n, 16, 16, 1)), 0, 255).astype(np.uint8)


def test_evaluate_samples_reports_every_metric_with_the_extractor_name():
    samples, train, test = _images(120, 0, offset=30), _images(80, 1), _images(40, 2)
    labels = np.arange(80) % 3
    params = EvaluateParams(kid_subsets=5, kid_subset_size=30, is_splits=2, ssim_pairs=20, max_real=1000)
    details: dict = {}
    results = evaluate_samples(samples, train, test, ToyExtractor(), params, train_labels=labels, details=details)
    json.dumps(results)  # JSON-ready: plain numbers, strings and lists

    toy = ToyExtractor()
    f_gen, p_gen = toy(samples)
    f_train, _ = toy(train)
    f_test, p_test = toy(test)
    assert results["fid_toy"] == pytest.approx(fid(f_train, f_gen), rel=1e-12)
    assert results["fid_toy_floor"] == pytest.approx(fid(f_train, f_test), rel=1e-12)
    assert results["is_toy_mean"] == pytest.approx(inception_score(p_gen, 2)[0], rel=1e-12)
    assert results["is_toy_real_mean"] == pytest.approx(inception_score(p_test, 2)[0], rel=1e-12)
    assert results["fid_toy"] > results["fid_toy_floor"]  # samples are shifted by 30 grey levels
    assert results["kid_toy_mean"] > results["kid_toy_floor_mean"]
    for key in (
        "kid_toy_std",
        "kid_toy_floor_std",
        "is_toy_std",
        "ssim_diversity_generated",
        "ssim_diversity_real",
        "memorization_mean",
        "memorization_median",
        "memorization_p95",
        "memorization_fraction",
        "pr_toy_precision",
        "pr_toy_recall",
        "pr_toy_floor_precision",
        "pr_toy_floor_recall",
        "time_features_s",
        "time_fid_s",
        "time_kid_s",
        "time_is_s",
        "time_ssim_s",
        "time_pr_s",
        "time_total_s",
    ):
        assert isinstance(results[key], float), key
    assert results["pr_n"] == 80 and results["pr_floor_n"] == 40  # equal-sized sets
    assert (results["n_generated"], results["n_real_reference"], results["n_real_test"]) == (120, 80, 40)
    assert results["reference_split"] == "train" and results["features"] == "toy"
    assert results["notes"] == []
    predicted = p_gen.argmax(1)
    assert results["class_histogram_generated"] == np.bincount(predicted, minlength=3).tolist()
    assert results["class_histogram_real"] == [27, 27, 26]
    np.testing.assert_array_equal(details["predicted_class"], predicted)
    assert details["memorization_max_ssim"].shape == (120,)
    assert results["memorization_mean"] == pytest.approx(details["memorization_max_ssim"].mean())


def test_every_champion_metric_is_a_result_under_its_result_key():
    samples, train, test = _images(60, 3, offset=30), _images(40, 4), _images(20, 5)
    params = EvaluateParams(kid_subsets=3, kid_subset_size=20, is_splits=2, metrics=["fid", "kid", "is", "pr"])
    results = evaluate_samples(samples, train, test, ToyExtractor(), params)
    toy = ToyExtractor()
    f_gen, p_gen = toy(samples)
    f_train, _ = toy(train)
    assert results[result_key("fid", "toy")] == pytest.approx(fid(f_train, f_gen), rel=1e-12)
    assert results[result_key("is", "toy")] == pytest.approx(inception_score(p_gen, 2)[0], rel=1e-12)
    for metric in CHAMPION_METRICS:  # the keys the model registry reads are the keys the metrics write
        assert isinstance(results[result_key(metric, "toy")], float), metric


def test_class_accuracy_is_the_share_of_samples_predicted_as_the_class_they_were_drawn_for():
    samples, train, test = _images(60, 6), _images(30, 7), _images(10, 8)
    predicted = ToyExtractor()(samples)[1].argmax(1)
    asked = predicted.copy()
    asked[:15] = (asked[:15] + 1) % 3  # a quarter drawn for another class than the classifier sees
    params = EvaluateParams(metrics=["is"], is_splits=2)
    results = evaluate_samples(samples, train, test, ToyExtractor(), params, sample_labels=asked)
    assert results["class_accuracy"] == pytest.approx(0.75)
    assert "class_accuracy" not in evaluate_samples(samples, train, test, ToyExtractor(), params)
    with pytest.raises(ResganError, match="59 sample labels for 60 samples"):
        evaluate_samples(samples, train, test, ToyExtractor(), params, sample_labels=asked[:59])


def test_evaluate_samples_computes_only_the_listed_metrics():
    samples, train, test = _images(30, 3), _images(30, 4), _images(10, 5)
    params = EvaluateParams(metrics=["ssim"], ssim_pairs=10)
    results = evaluate_samples(samples, train, test, None, params)  # no extractor needed for SSIM
    assert not any(k.startswith(("fid", "kid", "is_", "pr_", "class_")) for k in results)
    assert "ssim_diversity_generated" in results and "time_features_s" not in results
    assert results["features"] is None
    with pytest.raises(ResganError, match="extractor"):
        evaluate_samples(samples, train, test, None, EvaluateParams(metrics=["fid"]))


def test_evaluate_samples_caps_real_images_and_notes_a_missing_inception_score():
    samples, train, test = _images(40, 6), _images(100, 7), _images(30, 8)
    params = EvaluateParams(metrics=["fid", "is"], max_real=25, seed=3)
    results = evaluate_samples(samples, train, test, ToyExtractor(with_probs=False), params)
    assert results["n_real_reference"] == 25 and results["n_real_test"] == 25
    assert "is_toy_mean" not in results
    assert len(results["notes"]) == 1 and "is not computed" in results["notes"][0]
    again = evaluate_samples(samples, train, test, ToyExtractor(with_probs=False), params)
    assert again["fid_toy"] == results["fid_toy"]  # the real subset is seeded


def test_evaluate_samples_rejects_mismatched_shapes():
    with pytest.raises(ResganError, match="shapes differ"):
        evaluate_samples(_images(10, 0), _images(10, 1)[:, :8, :8], _images(10, 2), ToyExtractor(), EvaluateParams())


def test_evaluate_samples_reports_class_histograms_only_over_the_data_classes():
    class ImagenetLikeToy(ToyExtractor):
        data_classes = False  # probs over another label set (like InceptionV3's ImageNet classes)

    samples, train, test = _images(30, 9), _images(30, 10), _images(10, 11)
    params = EvaluateParams(metrics=["is"], is_splits=2)
    results = evaluate_samples(samples, train, test, ImagenetLikeToy(), params, train_labels=np.zeros(30, int))
    assert "is_toy_mean" in results
    assert not any(key.startswith("class_") for key in results)


def test_memorization_checks_the_whole_train_split_not_only_the_reference_subset():
    train = np.stack([_pattern(s) for s in range(40)])
    samples = train[::2].copy()  # 20 exact copies; most lie outside a 10-image reference subset
    params = EvaluateParams(metrics=["ssim"], max_real=10, ssim_pairs=5, memorization_shortlist=3)
    details: dict = {}
    results = evaluate_samples(samples, train, train[:5], None, params, details=details)
    assert results["n_real_reference"] == 10
    assert results["memorization_fraction"] == 1.0
    np.testing.assert_array_equal(details["memorization_nearest"], np.arange(0, 40, 2))
