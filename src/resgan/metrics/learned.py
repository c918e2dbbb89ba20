"""The learned feature extractor: train the one the data allows, and make it prove itself first.

``classifier.kind: auto`` trains the domain classifier (:mod:`resgan.metrics.classifier`) when the
prepared data has labels in at least 2 classes, and keeps it when its held-out accuracy shows it learned
the classes; otherwise (no labels, or a classifier that learned nothing, as with a few images per class)
it trains the self-supervised encoder (:mod:`resgan.metrics.ssl`). Whichever is kept is *trusted* only
when its skill on held-out images reaches the threshold:

- classifier: ``(accuracy - chance) / (1 - chance)`` >= ``classifier.min_skill`` (default 0.5: at least
  half-way from guessing to perfect; 40 faces at 10 per class reached 0.03, the built-in digits 0.99);
- self-supervised: two-view retrieval on held-out images (:func:`resgan.metrics.ssl.retrieval_accuracy`)
  against the same network untrained, ``(trained - untrained) / (1 - untrained)`` >= ``classifier.ssl_min_skill``
  (default 0.1; 5 epochs on the real digits: 0.195 in ``make bench-features``; an untrained one: 0).

The record (:data:`RECORD_SUFFIX` beside the model) says which kind, the fitness figures and whether it is
trusted; :class:`resgan.metrics.features.LearnedFeatures` reads it, and an untrusted extractor's figures
get names that say so (``fid_ssl_untrusted``) and never move the champion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from resgan.config import ClassifierParams
from resgan.errors import ResganError

RECORD_SUFFIX = ".json"  # models/classifier.keras -> models/classifier.json
MIN_HELD_OUT = 20  # held-out images below which no extractor can prove itself


def significant(score: float, baseline: float, n: int) -> bool:
    """Whether ``score`` (a share of ``n`` held-out trials) beats ``baseline`` by more than chance would:
    at least two binomial standard deviations of ``baseline`` (6 of 12 against 5 of 12 does not)."""
    p = min(max(baseline, 1.0 / max(n, 1)), 1.0 - 1.0 / max(n, 1))
    return n >= MIN_HELD_OUT and (score - baseline) * n >= 2.0 * (n * p * (1.0 - p)) ** 0.5


def fit_extractor(
    params: ClassifierParams,
    train: tuple[np.ndarray, np.ndarray | None],
    test: tuple[np.ndarray, np.ndarray | None],
    class_names: list[str] | None,
    log: Callable[[str], None] = print,
):
    """Train the extractor ``params.kind`` asks for (see the module text) on the prepared ``train`` split,
    prove it on ``test``; returns ``(model, record, figures)``: the Keras model to save, the record to save
    beside it, and the numeric figures (``metrics/classifier.json``)."""
    from resgan.metrics.classifier import labelled_data, train_classifier

    labelled = None
    if params.kind != "ssl":
        try:
            labelled = labelled_data(train, test, class_names)
        except ResganError as error:
            if params.kind == "classifier":
                raise ResganError(
                    f"{error}; or set classifier.kind: auto (a self-supervised encoder when there are no labels)"
                ) from None
            log(f"no classifier: {error.args[0].split(';')[0]}; training a self-supervised encoder instead")
    tried: dict[str, Any] = {}
    if labelled is not None:
        (tr, te, num_classes) = labelled
        model, result = train_classifier(params, tr, te, num_classes)
        chance = 1.0 / num_classes
        gain = (result["accuracy"] - chance) / (1.0 - chance)
        beyond_noise = significant(result["accuracy"], chance, len(te[0]))
        trusted = gain >= params.min_skill and beyond_noise
        figures = {**result, "chance": round(chance, 6), "skill": round(gain, 6), "trusted": int(trusted)}
        reason = (
            f"held-out accuracy {result['accuracy']:.3f} against chance {chance:.3f} on {len(te[0])} images: "
            f"skill {gain:.3f} (needs {params.min_skill})"
        )
        if not beyond_noise:
            reason += (
                f"; fewer than {MIN_HELD_OUT} held-out images cannot prove it"
                if len(te[0]) < MIN_HELD_OUT
                else f"; not beyond chance's noise on {len(te[0])} held-out images"
            )
        if trusted or params.kind == "classifier":
            log(f"domain classifier: {reason}: {'trusted' if trusted else 'NOT trusted'}")
            return model, _record("classifier", trusted, gain, params.min_skill, reason), figures
        log(f"domain classifier learned too little ({reason}): training a self-supervised encoder instead")
        tried = {"classifier_accuracy": result["accuracy"], "classifier_skill": round(gain, 6)}
    return _fit_ssl(params, train, test, log, tried)


def _fit_ssl(params: ClassifierParams, train, test, log, tried: dict[str, Any]):
    from resgan.metrics import ssl

    train_images, test_images = np.asarray(train[0]), np.asarray(test[0])
    if len(train_images) < 2:
        raise ResganError("the self-supervised encoder needs at least 2 training images")
    ops = ssl.parse_augment(params.ssl_augment)
    untrained = ssl.build_encoder(train_images.shape[1:], params.width, params.feature_dim)
    encoder, result = ssl.train_encoder(
        train_images,
        epochs=params.ssl_epochs,
        batch_size=params.ssl_batch_size,
        lr=params.lr,
        width=params.width,
        feature_dim=params.feature_dim,
        temperature=params.ssl_temperature,
        ops=ops,
        seed=params.seed,
        min_steps=params.ssl_min_steps,
        log=log,
    )
    held_out = test_images[:2000]
    before, after, gain, trusted, reason = _ssl_fitness(params, untrained, encoder, held_out)
    figures = {
        **result,
        **tried,
        "n_test": int(len(test_images)),
        "retrieval": after,
        "retrieval_untrained": before,
        "skill": round(gain, 6) if np.isfinite(gain) else gain,
        "trusted": int(trusted),
    }
    figures.update(_knn_probe(encoder, train_images, train[1], held_out, test[1]))
    log(f"self-supervised encoder: {reason}: {'trusted' if trusted else 'NOT trusted'}")
    figures = {k: v for k, v in figures.items() if not (isinstance(v, float) and not np.isfinite(v))}
    return encoder, _record("ssl", trusted, gain, params.ssl_min_skill, reason), figures


def _ssl_fitness(params: ClassifierParams, untrained, encoder, held_out: np.ndarray):
    """The encoder's fitness check: two-view retrieval on ``held_out`` images, trained against untrained;
    returns (untrained's, trained's, skill, trusted, the reason in words). Too few images prove nothing."""
    from resgan.metrics import ssl

    if len(held_out) < MIN_HELD_OUT:
        reason = f"only {len(held_out)} held-out images: fewer than {MIN_HELD_OUT} cannot prove it"
        return float("nan"), float("nan"), float("nan"), False, reason
    before = ssl.retrieval_accuracy(untrained, held_out, seed=params.seed)
    after = ssl.retrieval_accuracy(encoder, held_out, seed=params.seed)
    gain = ssl.skill(after, before)
    beyond_noise = significant(after, before, len(held_out))
    reason = (
        f"two-view retrieval on {len(held_out)} held-out images (groups of {ssl.FITNESS_GROUP}): "
        f"{after:.3f} trained against {before:.3f} untrained: skill {gain:.3f} "
        f"(needs {params.ssl_min_skill})"
    )
    if not beyond_noise:
        reason += f"; not beyond the untrained encoder's noise on {len(held_out)} images"
    return before, after, gain, gain >= params.ssl_min_skill and beyond_noise, reason


def _knn_probe(encoder, train_images, labels_train, held_out, labels_test) -> dict[str, float]:
    """``knn_accuracy``: a k-NN probe of the encoder's features with the labels it never saw (at most 10,000
    labelled training images against the labelled ``held_out`` ones); {} without labels on both sides."""
    from resgan.metrics import ssl

    if labels_train is None or labels_test is None or not len(held_out):
        return {}
    keep_train, keep_test = labels_train >= 0, labels_test[: len(held_out)] >= 0
    if not (keep_train.any() and keep_test.any()):
        return {}
    return {
        "knn_accuracy": ssl.knn_accuracy(
            ssl.embed(encoder, train_images[keep_train][:10000]),
            labels_train[keep_train][:10000],
            ssl.embed(encoder, held_out[keep_test]),
            labels_test[: len(held_out)][keep_test],
        )
    }


def _record(kind: str, trusted: bool, gain: float, threshold: float, reason: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "trusted": bool(trusted),
        "skill": None if not np.isfinite(gain) else round(float(gain), 6),
        "min_skill": threshold,
        "fitness": reason,
    }
