"""The whole evaluation of a set of generated images as one pure function: :func:`evaluate_samples`."""

from __future__ import annotations

import math
import time

import numpy as np

from resgan.config import EvaluateParams
from resgan.metrics.distances import MetricError
from resgan.metrics.registry import EvalContext, get_metric

# The figures people compare between runs, in this order (``<e>``: the extractor's name): what
# metrics/eval.json, `dvc exp show`, the evaluation run's metrics and the registered version's tags hold.
# Everything else an evaluation finds (noise floors, spreads, counts, timings, text) is detail.
HEADLINE = (
    "fid_<e>",
    "kid_<e>_mean",
    "is_<e>_mean",
    "pr_<e>_precision",
    "pr_<e>_recall",
    "class_accuracy",
    "class_tv_distance",
    "ssim_diversity_generated",
    "memorization_fraction",
)


def headline(results: dict) -> dict[str, float]:
    """The :data:`HEADLINE` figures of ``evaluate_samples``' results, in that order (those computed)."""
    keys = [key.replace("<e>", str(results.get("features"))) for key in HEADLINE]
    return {
        key: float(results[key])
        for key in keys
        if isinstance(results.get(key), (int, float)) and not isinstance(results.get(key), bool)
    }


def _check_sets(samples: np.ndarray, train_images: np.ndarray, test_images: np.ndarray) -> None:
    for name, images in (("samples", samples), ("train images", train_images), ("test images", test_images)):
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
            raise MetricError(
                f"evaluate: {name} must be uint8 NHWC with 1 or 3 channels, got {images.dtype} {images.shape}"
            )
    if samples.shape[1:] != train_images.shape[1:] or test_images.shape[1:] != train_images.shape[1:]:
        raise MetricError(
            f"evaluate: image shapes differ: samples {samples.shape[1:]}, train "
            f"{train_images.shape[1:]}, test {test_images.shape[1:]} (was the generator "
            "trained on other prepared data?)"
        )
    if len(samples) < 2 or len(train_images) < 2:
        raise MetricError("evaluate: needs at least 2 samples and 2 training images")


def _cap(images: np.ndarray, labels: np.ndarray | None, max_n: int, rng: np.random.Generator):
    """A random subset of at most ``max_n`` images (and their labels), in their original order."""
    if len(images) <= max_n:
        return images, labels
    keep = np.sort(rng.choice(len(images), max_n, replace=False))
    return images[keep], (None if labels is None else labels[keep])


def reference_set(train_images: np.ndarray, train_labels: np.ndarray | None, params: EvaluateParams):
    """The real images (and labels) the samples are compared with: at most ``params.max_real`` of the train
    split, drawn with ``params.seed``; the same set for the evaluation and for FID over training."""
    rng = np.random.default_rng(np.random.SeedSequence(params.seed).spawn(2)[0])
    return _cap(train_images, train_labels, params.max_real, rng)


class FidScore:
    """FID of generated images against a fixed reference set, whose features are extracted once: for FID
    over training, where the same reference is scored many times. ``score(images)`` returns
    ``{"fid_<extractor>": value, "halves_gap": g}``; :attr:`key` names the first. ``g`` is
    ``|FID(even images) - FID(odd images)|``, each half against the same reference: the spread of the
    FID that comes from the images alone (a conditional generator's halves hold every class alike),
    which :class:`resgan.gan.loop.FidTracker` pools into the FID's noise."""

    def __init__(self, extractor, reference: np.ndarray, batch_size: int = 256):
        self.extractor, self.batch_size = extractor, batch_size
        self.key = f"fid_{extractor.name}"
        self.reference_features, _ = extractor(reference, batch_size)

    def __call__(self, images: np.ndarray) -> dict[str, float]:
        from resgan.metrics.distances import fid

        features, _ = self.extractor(images, self.batch_size)
        reference = self.reference_features
        gap = abs(fid(reference, features[0::2]) - fid(reference, features[1::2])) if len(features) >= 4 else math.nan
        return {self.key: float(fid(reference, features)), "halves_gap": float(gap)}


def training_fid(params: EvaluateParams, data_dir, classifier_path) -> FidScore | None:
    """The score of FID over training: ``params.features`` (the evaluation's extractor) against the
    evaluation's reference set of the train split in ``data_dir``, 256 images a batch; None, said in one
    line, where no extractor can be had (training goes on without it)."""
    from resgan.data.prepared import load_split
    from resgan.errors import ResganError
    from resgan.metrics.features import resolve_extractor

    if classifier_path is None and params.features != "inception":
        print("FID over training is off: no domain classifier given (--classifier)", flush=True)
        return None
    try:
        extractor = resolve_extractor(params.features, classifier_path or "", params.inception_weights)
        score = FidScore(extractor, reference_set(*load_split(data_dir, "train"), params)[0])
    except ResganError as error:
        print(f"FID over training is off: {error}", flush=True)
        return None
    if not extractor.trusted:
        print(
            f"FID over training is logged as {score.key}: the features failed their fitness check "
            f"({extractor.fitness}), so the last step's generator is exported, not the best FID's",
            flush=True,
        )
    return score


def evaluate_samples(
    samples: np.ndarray,
    train_images: np.ndarray,
    test_images: np.ndarray,
    extractor,
    params: EvaluateParams,
    train_labels: np.ndarray | None = None,
    details: dict | None = None,
    sample_labels: np.ndarray | None = None,
) -> dict:
    """Score generated ``samples`` against the prepared data; return flat, JSON-ready results.

    All images are uint8 NHWC of one shape. The reference set is a random subset of at most
    ``params.max_real`` train images (seeded by ``params.seed``); the test split (capped alike)
    gives each metric's noise floor: the same metric between real train and real test images.
    ``extractor`` (see :mod:`resgan.metrics.features`) may be None when only ``ssim`` is asked
    for. Only ``params.metrics`` are computed. With the domain classifier (``extractor.data_classes``)
    the generated images' predicted-class histogram is reported, and with ``train_labels`` the
    real one beside it. Pass a dict as ``details`` to receive per-sample arrays
    (``memorization_max_ssim``, ``memorization_nearest``, ``predicted_class``) for plots.

    Result keys, with ``<e>`` the extractor's name (``classifier`` / ``inception``):
    ``fid_<e>``, ``fid_<e>_floor``; ``kid_<e>_mean/_std``, ``kid_<e>_floor_mean/_std``;
    ``is_<e>_mean/_std``, ``is_<e>_real_mean/_std`` (the test split);
    ``ssim_diversity_generated``, ``ssim_diversity_real``, ``memorization_mean/_median/_p95/_fraction``;
    ``pr_<e>_precision/_recall``, ``pr_<e>_floor_precision/_recall``, ``pr_n``, ``pr_floor_n``;
    ``class_histogram_generated`` (predicted-class counts), ``class_histogram_real`` and
    ``class_tv_distance`` (with ``train_labels``); ``class_accuracy`` (with ``sample_labels``, the
    classes a conditional generator was asked for: the fraction the classifier puts in the class
    asked for); ``n_generated``, ``n_real_reference``,
    ``n_real_test``, ``reference_split``, ``features``, ``notes`` (what was skipped and why) and
    ``time_<part>_s`` for features, each metric (``time_ssim_s`` includes ``time_memorization_s``)
    and the total. Memorization compares the samples with every train image, not only the
    ``max_real`` subset: a copy of any training image counts.
    """
    total_start = time.perf_counter()
    samples, train_images, test_images = np.asarray(samples), np.asarray(train_images), np.asarray(test_images)
    specs = _checked_metrics(params, extractor, samples, train_images, test_images, train_labels, sample_labels)
    needs_features = any(spec.needs_features for spec in specs)
    ctx, real_labels = _context(
        params, extractor.name if needs_features else None, samples, train_images, train_labels, test_images
    )
    results: dict = {
        "n_generated": int(len(samples)),
        "n_real_reference": int(len(ctx.images["real"])),
        "n_real_test": int(len(ctx.images["test"])),
        "reference_split": "train",
        "features": ctx.extractor_name,
    }
    if needs_features:
        results.update(_extract(ctx, extractor, params.batch_size, real_labels, sample_labels))
    results.update(_timed(specs, ctx))
    results["notes"] = ctx.notes
    results["time_total_s"] = time.perf_counter() - total_start
    if details is not None:
        details.update(ctx.details)
    return _plain(results)


def _timed(specs, ctx) -> dict:
    """Each metric's results on ``ctx`` and its seconds (``time_<name>_s``), in ``specs``' order."""
    results: dict = {}
    for spec in specs:
        start = time.perf_counter()
        results.update(spec.fn(ctx))
        results[f"time_{spec.name}_s"] = time.perf_counter() - start
    return results


def _checked_metrics(params, extractor, samples, train_images, test_images, train_labels, sample_labels) -> list:
    """The specs of ``params.metrics``, once the images and labels agree and there is an extractor where a
    metric needs one (:class:`MetricError` otherwise)."""
    _check_sets(samples, train_images, test_images)
    _check_labels(train_labels, len(train_images), "train labels", "train images")
    _check_labels(sample_labels, len(samples), "sample labels", "samples")
    specs = [get_metric(name) for name in params.metrics]
    if any(spec.needs_features for spec in specs) and extractor is None:
        raise MetricError(f"evaluate: metrics {', '.join(params.metrics)} need a feature extractor")
    return specs


def _context(params, extractor_name, samples, train_images, train_labels, test_images):
    """The metrics' :class:`EvalContext`, the samples beside the reference set (:func:`reference_set`) and
    the test split capped alike (its own stream of ``params.seed``); and the reference set's labels."""
    real, real_labels = reference_set(train_images, train_labels, params)
    test_rng = np.random.default_rng(np.random.SeedSequence(params.seed).spawn(2)[1])
    test, _ = _cap(test_images, None, params.max_real, test_rng)
    ctx = EvalContext(
        params=params,
        extractor_name=extractor_name,
        images={"generated": samples, "real": real, "test": test},
        train_images=train_images,
    )
    if len(test) < 2:
        ctx.notes.append("noise floors not computed: the test split has fewer than 2 images")
    return ctx, real_labels


def _check_labels(labels: np.ndarray | None, count: int, what: str, of: str) -> None:
    if labels is not None and len(labels) != count:
        raise MetricError(f"evaluate: {len(labels)} {what} for {count} {of}")


def _extract(
    ctx: EvalContext, extractor, batch_size: int, real_labels: np.ndarray | None, sample_labels: np.ndarray | None
) -> dict:
    """Every image set's features (and class probabilities) into ``ctx``; returns their time (s) and, with
    the domain classifier, the class mix of the generated images."""
    start = time.perf_counter()
    for name, images in ctx.images.items():
        if len(images):
            ctx.features[name], ctx.probs[name] = extractor(images, batch_size)
    results = {"time_features_s": time.perf_counter() - start}
    if getattr(extractor, "data_classes", False):  # a class histogram means something only over the data's classes
        results.update(_class_mix(ctx, real_labels, sample_labels))
    return results


def _plain(results: dict) -> dict:
    """Plain Python numbers (json.dumps and MLflow take them as is), timings rounded to the millisecond."""
    for key, value in results.items():
        if isinstance(value, np.generic):
            results[key] = value.item()
        if key.startswith("time_"):
            results[key] = round(float(results[key]), 3)
    return results


def _class_mix(ctx: EvalContext, real_labels: np.ndarray | None, sample_labels: np.ndarray | None) -> dict:
    """The domain classifier's view of the class mix: the generated images' predicted-class histogram,
    ``class_accuracy`` against the classes they were drawn for (``sample_labels``), and the real
    histogram with the total variation distance between the two mixes (``real_labels``)."""
    generated_probs = ctx.probs.get("generated")
    if generated_probs is None:
        return {}
    predicted = generated_probs.argmax(axis=1)
    num_classes = generated_probs.shape[1]
    histogram = np.bincount(predicted, minlength=num_classes)
    results: dict = {"class_histogram_generated": histogram.tolist()}
    ctx.details["predicted_class"] = predicted
    if sample_labels is not None:
        results["class_accuracy"] = float(np.mean(predicted == np.asarray(sample_labels)))
    if real_labels is not None and len(real_labels) and int(np.max(real_labels)) < num_classes:
        real_histogram = np.bincount(np.asarray(real_labels, dtype=np.int64), minlength=num_classes)
        results["class_histogram_real"] = real_histogram.tolist()
        # total variation distance of the class mixes: 0 = same proportions, 1 = disjoint
        results["class_tv_distance"] = float(
            0.5 * np.abs(histogram / histogram.sum() - real_histogram / real_histogram.sum()).sum()
        )
    return results
