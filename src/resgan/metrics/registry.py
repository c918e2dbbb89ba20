"""The metric registry: names in ``evaluate.metrics`` -> functions, and which way each is better.

Like stylegan2-ada's ``metric_main``: each metric is a function of an :class:`EvalContext`
registered with ``@register_metric("fid")``, returning flat ``{result_name: number}``. Result
names carry the feature extractor (``fid_classifier``, ``kid_inception_mean``) so that numbers
from different extractors never share a key.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from resgan.config import EvaluateParams
from resgan.metrics.distances import MetricError, fid, kid, precision_recall
from resgan.metrics.scores import inception_score
from resgan.metrics.ssim import memorization, ssim_diversity

# The champion metrics (the values of mlflow.champion_metric): which way is better, and the result key that
# holds each, where {features} is the extractor's name (classifier, inception). The config's Literal, the
# registry's version tags and the `resgan models list` columns all follow this table (tests tie them).
CHAMPION_METRICS: dict[str, tuple[str, str]] = {
    "fid": ("min", "fid_{features}"),
    "kid": ("min", "kid_{features}_mean"),
    "is": ("max", "is_{features}_mean"),
    "pr_precision": ("max", "pr_{features}_precision"),
    "pr_recall": ("max", "pr_{features}_recall"),
}
METRIC_DIRECTION: dict[str, str] = {name: direction for name, (direction, _) in CHAMPION_METRICS.items()}


@dataclass
class EvalContext:
    """What a metric function sees: the images, their features and a place for notes.

    ``images``/``features``/``probs`` are keyed by set: ``generated``, ``real`` (the reference
    subset of the train split, at most ``max_real`` images) and ``test`` (the held-out split, for
    noise floors); ``train_images`` is the whole train split. ``features``
    and ``probs`` hold only the sets that were extracted; ``probs`` values may be None.
    """

    params: EvaluateParams
    extractor_name: str | None
    images: dict[str, np.ndarray]
    train_images: np.ndarray | None = None  # the whole train split (memorization checks all of it)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    probs: dict[str, np.ndarray | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # per-sample arrays for plots; not JSON-ready

    def rng(self, purpose: str) -> np.random.Generator:
        """A generator seeded by ``params.seed`` and ``purpose``: one metric's draws do not
        depend on which other metrics run."""
        return np.random.default_rng([self.params.seed, zlib.crc32(purpose.encode())])

    def has_floor(self) -> bool:
        return "test" in self.features and len(self.features["test"]) >= 2


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable[[EvalContext], dict[str, float]]
    needs_features: bool


_METRICS: dict[str, MetricSpec] = {}


def register_metric(name: str, needs_features: bool = True):
    """Decorator: register ``fn(ctx) -> dict`` under ``name`` (a value of ``evaluate.metrics``)."""

    def decorate(fn: Callable[[EvalContext], dict[str, float]]):
        _METRICS[name] = MetricSpec(name, fn, needs_features)
        return fn

    return decorate


def list_metrics() -> list[str]:
    """Names of all registered metrics."""
    return list(_METRICS)


def get_metric(name: str) -> MetricSpec:
    """The registered metric ``name`` (MetricError naming the valid ones otherwise)."""
    if name not in _METRICS:
        raise MetricError(f"unknown metric {name!r}; use any of {', '.join(_METRICS)}")
    return _METRICS[name]


def result_key(metric: str, features: str) -> str:
    """The key of ``evaluate_samples``' results that holds ``metric`` (a CHAMPION_METRICS name)
    for extractor ``features``: ``result_key("kid", "classifier") == "kid_classifier_mean"``."""
    return _template(metric).format(features=features)


def result_key_pattern(metric: str) -> str:
    """A regular expression that fully matches ``metric``'s result key for any extractor:
    ``result_key_pattern("kid") == "kid_[a-z]+(?:_untrusted)?_mean"`` (an extractor that failed its
    fitness check is ``<name>_untrusted``)."""
    before, after = _template(metric).split("{features}")
    return f"{re.escape(before)}[a-z]+(?:_untrusted)?{re.escape(after)}"


def _template(metric: str) -> str:
    if metric not in CHAMPION_METRICS:
        raise MetricError(f"no result key for metric {metric!r}; use any of {', '.join(CHAMPION_METRICS)}")
    return CHAMPION_METRICS[metric][1]


def is_better(metric: str, new: float, old: float) -> bool:
    """Whether ``new`` beats ``old`` on ``metric`` (strictly), by METRIC_DIRECTION."""
    if metric not in METRIC_DIRECTION:
        raise MetricError(f"unknown direction for metric {metric!r}; use any of {', '.join(METRIC_DIRECTION)}")
    return new < old if METRIC_DIRECTION[metric] == "min" else new > old


def rounded(value: float) -> float:
    """``value`` to 4 significant digits (``19.55`` for ``19.55067478114634``): what a registered version's
    tags and a train run's row in ``mlflow ui`` show, and what the champion rule compares."""
    return float(f"{float(value):.4g}")


# ---------------------------------------------------------------- the metrics


@register_metric("fid")
def _fid(ctx: EvalContext) -> dict[str, float]:
    e, f = ctx.extractor_name, ctx.features
    out = {f"fid_{e}": fid(f["real"], f["generated"])}
    if ctx.has_floor():
        try:
            out[f"fid_{e}_floor"] = fid(f["real"], f["test"])
        except MetricError as error:  # a test split smaller than the feature dimension
            ctx.notes.append(f"fid floor not computed: {error}")
    return out


@register_metric("kid")
def _kid(ctx: EvalContext) -> dict[str, float]:
    e, f, p = ctx.extractor_name, ctx.features, ctx.params
    mean, std = kid(f["real"], f["generated"], p.kid_subsets, p.kid_subset_size, ctx.rng("kid"))
    out = {f"kid_{e}_mean": mean, f"kid_{e}_std": std}
    if ctx.has_floor():
        mean, std = kid(f["real"], f["test"], p.kid_subsets, p.kid_subset_size, ctx.rng("kid_floor"))
        out.update({f"kid_{e}_floor_mean": mean, f"kid_{e}_floor_std": std})
    return out


@register_metric("is")
def _is(ctx: EvalContext) -> dict[str, float]:
    e, splits = ctx.extractor_name, ctx.params.is_splits
    probs = ctx.probs.get("generated")
    if probs is None:
        if e.startswith("inception"):
            ctx.notes.append(
                "is not computed: the inception extractor gives no class probabilities (InceptionV3 "
                "weights without the classification head); give the full-model weights file "
                "to get it"
            )
        else:
            ctx.notes.append(
                f"is not computed: it needs class probabilities, which only a classifier or "
                f"InceptionV3 gives, and the {e} extractor is a self-supervised encoder"
            )
        return {}
    mean, std = inception_score(probs, min(splits, len(probs)))
    out = {f"is_{e}_mean": mean, f"is_{e}_std": std}
    test_probs = ctx.probs.get("test")
    if test_probs is not None and len(test_probs):
        mean, std = inception_score(test_probs, min(splits, len(test_probs)))
        out.update({f"is_{e}_real_mean": mean, f"is_{e}_real_std": std})
    return out


@register_metric("ssim", needs_features=False)
def _ssim(ctx: EvalContext) -> dict[str, float]:
    p, images = ctx.params, ctx.images
    out = {
        "ssim_diversity_generated": ssim_diversity(images["generated"], p.ssim_pairs, ctx.rng("ssim_generated")),
        "ssim_diversity_real": ssim_diversity(images["real"], p.ssim_pairs, ctx.rng("ssim_real")),
    }
    start = time.perf_counter()
    train = ctx.train_images if ctx.train_images is not None else images["real"]
    memo = memorization(images["generated"], train, p.memorization_shortlist, p.memorization_threshold)
    out.update(
        {
            "memorization_mean": memo["mean"],
            "memorization_median": memo["median"],
            "memorization_p95": memo["p95"],
            "memorization_fraction": memo["fraction"],
            "time_memorization_s": time.perf_counter() - start,
        }
    )
    ctx.details["memorization_max_ssim"] = memo["max_ssim"]
    ctx.details["memorization_nearest"] = memo["nearest"]
    return out


def _equal_sizes(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # k-NN radii shrink as a set grows: compare sets of equal size (as Kynkäänniemi et al. do).
    n = min(len(a), len(b))
    pick = lambda x: x if len(x) == n else x[np.sort(rng.choice(len(x), n, replace=False))]  # noqa: E731
    return pick(a), pick(b)


@register_metric("pr")
def _pr(ctx: EvalContext) -> dict[str, float]:
    e, f, k = ctx.extractor_name, ctx.features, ctx.params.pr_k
    real, fake = _equal_sizes(f["real"], f["generated"], ctx.rng("pr"))
    precision, recall = precision_recall(real, fake, k)
    out = {f"pr_{e}_precision": precision, f"pr_{e}_recall": recall, "pr_n": len(real)}
    if ctx.has_floor() and min(len(f["real"]), len(f["test"])) > k:
        real, test = _equal_sizes(f["real"], f["test"], ctx.rng("pr_floor"))
        precision, recall = precision_recall(real, test, k)
        out.update({f"pr_{e}_floor_precision": precision, f"pr_{e}_floor_recall": recall, "pr_floor_n": len(real)})
    return out
