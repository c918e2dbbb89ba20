"""Feature extractors for FID, KID, IS and precision/recall: the learned extractor of the classifier
stage (domain classifier or self-supervised encoder) or InceptionV3.

All share one interface::

    extractor.name                       # "classifier", "ssl" or "inception" ("ssl_untrusted" when the
                                         # learned one failed its fitness check): in every metric name
    extractor.trusted                    # whether its figures may be compared (and move a champion)
    extractor.data_classes               # True when probs are over the data's classes (the classifier)
    features, probs = extractor(images_uint8, batch_size)
    # features: float64 (N, D); probs: float64 (N, K) class probabilities, or None

Keras and TensorFlow are imported when an extractor is built, not when this module is imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from resgan.errors import ResganError
from resgan.terminal import progress_bar

INCEPTION_SIZE = 299  # px: InceptionV3's native input
INCEPTION_MAX_BATCH = 64  # images per forward pass at 299x299: bounds activation memory to ~1-2 GB
# Keras' own cache names (keras/src/applications/inception_v3.py), under <KERAS_HOME>/models/.
INCEPTION_CACHE_FILES = (
    "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",  # full model: pool features and class probs
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",  # no top: pool features only
)
INCEPTION_HELP = (
    "InceptionV3 ImageNet weights are needed for evaluate.features=inception. Download them once "
    "where there is internet: `python -c \"import keras; keras.applications.InceptionV3()\"` puts "
    f"{INCEPTION_CACHE_FILES[0]} (with the classification head, which the inception score needs) in "
    f"Keras' cache; {INCEPTION_CACHE_FILES[1]} (features only) works too; both are at "
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/. Copy the file into "
    "Keras' cache ({cache}) or set evaluate.inception_weights to its path; or use evaluate.features=classifier."
)


class Extractor(Protocol):
    name: str
    trusted: bool
    data_classes: bool  # whether probs are over the prepared data's own classes (not ImageNet's)

    def __call__(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]: ...


def _check_uint8_images(images: np.ndarray, who: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
        raise ResganError(
            f"{who}: images must be a non-empty uint8 NHWC batch with 1 or 3 channels, got shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise ResganError(f"{who}: images must be uint8 (0..255), got {images.dtype}")
    return images


def _run_batches(forward: Callable, images: np.ndarray, batch_size: int, description: str):
    """Apply ``forward`` (a batch -> (features, probs|None)) in batches; concatenate as float64."""
    features, probs = [], []
    with progress_bar(len(images), description) as advance:
        for start in range(0, len(images), batch_size):
            f, p = forward(images[start : start + batch_size])
            features.append(np.asarray(f, dtype=np.float64))
            if p is not None:
                probs.append(np.asarray(p, dtype=np.float64))
            advance(min(batch_size, len(images) - start))
    return np.concatenate(features), (np.concatenate(probs) if probs else None)


# ---------------------------------------------------------------- learned: domain classifier or SSL encoder


class LearnedFeatures:
    """Features from the ``classifier`` stage's model: the domain classifier (its ``features`` layer and
    softmax probabilities) or the self-supervised encoder (its ``features``, no probabilities).

    The record beside the model (:mod:`resgan.metrics.learned`) says which and whether it passed its
    fitness check on held-out images; an untrusted extractor's :attr:`name` ends in ``_untrusted``
    (``fid_ssl_untrusted``), and so does every figure measured with it. A model without a record has not
    proved itself and is untrusted.
    """

    def __init__(self, model_path: str | Path):
        import json

        import keras

        from resgan.metrics.classifier import FEATURE_LAYER
        from resgan.metrics.learned import RECORD_SUFFIX

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ResganError(
                f"feature extractor {self.model_path} not found: run the classifier stage "
                "(`dvc repro classifier`) or use evaluate.features=inception"
            )
        try:
            model = keras.models.load_model(self.model_path, safe_mode=True, compile=False)
        except Exception as error:  # a corrupt or foreign file: say which one
            raise ResganError(f"cannot load the feature extractor {self.model_path}: {error}") from error
        try:
            feature_output = model.get_layer(FEATURE_LAYER).output
        except (ValueError, AttributeError):  # no such layer; or a Sequential model never called
            raise ResganError(
                f"{self.model_path} has no {FEATURE_LAYER!r} layer: it is not a resgan feature extractor"
            ) from None
        self.input_shape = tuple(model.input_shape[1:])
        self.kind = "ssl" if model.output is feature_output else "classifier"
        self.data_classes = self.kind == "classifier"
        self.num_classes = int(model.output_shape[-1]) if self.data_classes else 0
        record_path = self.model_path.with_suffix(RECORD_SUFFIX)
        try:
            self.record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        except (OSError, ValueError) as error:
            raise ResganError(f"cannot read the feature extractor's record {record_path}: {error}") from None
        self.trusted = bool(self.record.get("trusted")) and self.record.get("kind") == self.kind
        self.fitness = str(self.record.get("fitness") or f"no fitness record ({record_path.name}) beside the model")
        self.name = self.kind if self.trusted else f"{self.kind}_untrusted"
        self._model = keras.Model(model.inputs, [feature_output, model.output] if self.data_classes else feature_output)

    def __call__(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
        """``(N, feature_dim)`` features and ``(N, K)`` probabilities (None for the encoder) of uint8 NHWC images."""
        images = _check_uint8_images(images, f"{self.kind} features")
        if tuple(images.shape[1:]) != self.input_shape:
            raise ResganError(
                f"the feature extractor was trained on {self.input_shape} images, got "
                f"{images.shape[1:]}: retrain it on the prepared data (`dvc repro classifier`)"
            )

        def forward(batch):
            out = self._model.predict_on_batch(batch.astype(np.float32))
            return (out[0], out[1]) if self.data_classes else (out, None)

        return _run_batches(forward, images, batch_size, f"{self.kind} features")


# ---------------------------------------------------------------- InceptionV3


def keras_cache_dirs() -> list[Path]:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models``, else ``~/.keras/models``
    (``/tmp/.keras/models`` when the home folder is not writable), without importing Keras."""
    if os.environ.get("KERAS_HOME"):
        return [Path(os.environ["KERAS_HOME"]) / "models"]
    return [Path.home() / ".keras" / "models", Path("/tmp/.keras/models")]


def find_inception_weights(weights_path: str | Path = "") -> Path | None:
    """The InceptionV3 weights file to use, or None when there is none.

    An explicit ``weights_path`` must exist (ResganError otherwise: a typo should not silently
    switch extractors). Without one, Keras' cache is searched, the full model (with the
    classification head, which IS needs) first.
    """
    if str(weights_path):
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ResganError(
                f"evaluate.inception_weights: {path} not found. " + INCEPTION_HELP.format(cache=keras_cache_dirs()[0])
            )
        return path
    for folder in keras_cache_dirs():
        for name in INCEPTION_CACHE_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def weights_have_top(path: str | Path) -> bool:
    """Whether an InceptionV3 weights file (legacy ``.h5`` or Keras 3 ``.weights.h5``) has the
    classification head: it is the network's only Dense layer, so any 2-D weight means it is there."""
    import h5py

    found = []

    def visit(_name, item):
        if isinstance(item, h5py.Dataset) and item.ndim == 2:
            found.append(item.shape)

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(visit)
    except OSError as error:
        raise ResganError(f"cannot read InceptionV3 weights {path}: {error}") from error
    return bool(found)


class InceptionFeatures:
    """2048-d pool3 features of Keras' InceptionV3 (ImageNet weights from a file or Keras' cache).

    Images are converted to float32, resized to 299x299 with an anti-aliased bicubic filter (no
    re-quantization to uint8; values clipped to [0, 255] as clean-fid does), grayscale repeated
    to RGB, and scaled to [-1, 1] by ``inception_v3.preprocess_input``. Class probabilities (for
    IS) come only with a full-model weights file (with the 1000-class top); with ``notop``
    weights ``probs`` is None.

    Note: Keras' ImageNet InceptionV3 is not the TF-slim graph behind published FID/IS figures
    (pytorch-fid, 1008 classes), so these numbers compare runs of this project with each other only.
    """

    name = "inception"
    data_classes = False
    trusted = True  # ImageNet's features: the published metrics' own
    fitness = "ImageNet-trained InceptionV3"

    def __init__(self, weights_path: str | Path = ""):
        path = find_inception_weights(weights_path)
        if path is None:
            raise ResganError("no InceptionV3 weights found. " + INCEPTION_HELP.format(cache=keras_cache_dirs()[0]))
        import keras
        import tensorflow as tf

        self.weights_path = path
        self.has_top = weights_have_top(path)
        shape = (INCEPTION_SIZE, INCEPTION_SIZE, 3)
        if self.has_top:
            full = keras.applications.InceptionV3(include_top=True, weights=None, input_shape=shape)
            self._load(full, path)
            model = keras.Model(full.inputs, [full.get_layer("avg_pool").output, full.output])
        else:
            model = keras.applications.InceptionV3(include_top=False, pooling="avg", weights=None, input_shape=shape)
            self._load(model, path)
        self._model = model
        preprocess = keras.applications.inception_v3.preprocess_input

        @tf.function(reduce_retracing=True)
        def forward(batch):
            x = tf.image.resize(
                tf.cast(batch, tf.float32), (INCEPTION_SIZE, INCEPTION_SIZE), method="bicubic", antialias=True
            )
            x = tf.clip_by_value(x, 0.0, 255.0)  # bicubic overshoots near edges
            if x.shape[-1] == 1:
                x = tf.repeat(x, 3, axis=-1)
            return model(preprocess(x), training=False)

        self._forward = forward

    @staticmethod
    def _load(model, path: Path) -> None:
        try:
            model.load_weights(str(path))
        except Exception as error:  # wrong file (another network, a truncated download)
            raise ResganError(f"cannot load InceptionV3 weights from {path}: {error}") from error

    def __call__(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
        """``(N, 2048)`` features and ``(N, 1000)`` probabilities (None without the top) of uint8 NHWC images."""
        images = _check_uint8_images(images, "inception features")

        def forward(batch):
            out = self._forward(batch)
            if self.has_top:
                return out[0].numpy(), out[1].numpy()
            return out.numpy(), None

        return _run_batches(forward, images, min(batch_size, INCEPTION_MAX_BATCH), "inception features")


def resolve_extractor(kind: str, classifier_path: str | Path, inception_weights: str | Path = "") -> Extractor:
    """Build the extractor named by ``evaluate.features``.

    ``inception`` builds InceptionV3 (ResganError saying what to do when its weights are missing);
    ``classifier`` and ``ssl`` load the classifier stage's model and check it is of that kind; ``auto``
    takes Inception when its weights are present (an explicit path or Keras' cache), else the classifier
    stage's model, whichever kind it is. The choice is ``extractor.name``.
    """
    if kind == "inception":
        return InceptionFeatures(inception_weights)
    if kind in ("classifier", "ssl"):
        learned = LearnedFeatures(classifier_path)
        if learned.kind != kind:
            raise ResganError(
                f"evaluate.features is {kind}, but {classifier_path} is a {learned.kind} "
                f"model: set classifier.kind: {kind} and run the classifier stage, or set "
                "evaluate.features: auto"
            )
        return learned
    if kind == "auto":
        if find_inception_weights(inception_weights) is not None:
            return InceptionFeatures(inception_weights)
        return LearnedFeatures(classifier_path)
    raise ResganError(f"evaluate.features: unknown extractor {kind!r}; use auto, inception, classifier or ssl")
