"""The domain classifier: a small CNN whose ``features`` layer is the offline FID/KID/PR embedding.

Only built-in Keras layers, so the saved ``.keras`` file loads with ``safe_mode=True``.
:func:`labelled_data` checks and filters the prepared splits it learns from; :func:`train_classifier`
trains and scores it.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import layers

from resgan.config import ClassifierParams
from resgan.errors import ResganError

FEATURE_LAYER = "features"  # the penultimate Dense layer read by resgan.metrics.features.LearnedFeatures
MIN_SIDE = 4  # px: downsample until the feature map is this small, then flatten

Split = tuple[np.ndarray, np.ndarray]  # uint8 NHWC images, int64 labels


def build_trunk(input_shape: tuple[int, int, int], width: int = 32, feature_dim: int = 128):
    """The convolutional trunk shared by the classifier and the self-supervised encoder
    (:mod:`resgan.metrics.ssl`): ``(inputs, features)`` of a functional model on uint8-valued images.

    One conv-BN-ReLU-maxpool block per halving of the image until it is 4 px a side (3 blocks at
    32 px), channels ``width * 2**i`` capped at ``8 * width``; then Flatten, a Dense embedding of
    ``feature_dim`` units and its batch norm: the ``features`` layer.

    The features are the batch-normalized embedding before any ReLU: no dead (constant zero)
    dimensions, so the covariance is well conditioned for FID, and about unit scale per dimension
    on real data, so FID and KID (whose cubic kernel grows with the feature scale) read like
    their Inception counterparts rather than in arbitrary units.
    """
    height, width_px, _ = input_shape
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = layers.Rescaling(1.0 / 255.0, name="to_unit")(inputs)  # takes raw 0..255 pixel values
    side, block = min(height, width_px), 0
    while side > MIN_SIDE or block == 0:
        channels = width * 2 ** min(block, 3)
        x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        # momentum 0.9 (not 0.99): with a few hundred steps the moving statistics must converge,
        # or test-time accuracy trails training accuracy badly.
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        if side > MIN_SIDE:
            x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
            side //= 2
        block += 1
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(feature_dim, use_bias=False, name="embedding")(x)
    return inputs, layers.BatchNormalization(momentum=0.9, name=FEATURE_LAYER)(x)


def build_classifier(
    input_shape: tuple[int, int, int], num_classes: int, width: int = 32, feature_dim: int = 128
) -> keras.Model:
    """A compact CNN for uint8-valued ``input_shape`` (H, W, C) images, ``num_classes`` softmax outputs:
    :func:`build_trunk`, then ReLU, dropout and the softmax head ``probs``."""
    inputs, features = build_trunk(input_shape, width, feature_dim)
    x = layers.ReLU(name="features_relu")(features)
    x = layers.Dropout(0.3, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="domain_classifier")


def labelled_data(
    train: tuple[np.ndarray, np.ndarray | None],
    test: tuple[np.ndarray, np.ndarray | None],
    class_names: list[str] | None,
) -> tuple[Split, Split, int]:
    """The labelled images of the prepared ``train`` and ``test`` splits (``(images, labels or None)``
    as :func:`resgan.data.prepared.load_split` gives them) and the number of classes.

    Images outside any class folder (label -1) are left out. The classes are ``class_names`` when
    given, else the largest label + 1. Raises :class:`ResganError` when the data has no labels,
    too few classes or labels outside them.
    """
    if train[1] is None or test[1] is None:
        raise ResganError(
            "the domain classifier needs labelled data, and the prepared data has no labels "
            "(for a folder source, put images in one sub-folder per class with "
            "prepare.labels_from_folders: true)"
        )
    if len(train[0]) == 0 or len(test[0]) == 0:
        raise ResganError("the domain classifier needs images in both train.npz and test.npz")
    if test[0].shape[1:] != train[0].shape[1:]:
        raise ResganError(f"train and test images differ in shape: {train[0].shape[1:]} vs {test[0].shape[1:]}")
    # Images outside any class folder carry label -1: the classifier learns from the labelled ones.
    train, test = _labelled(*train), _labelled(*test)
    if len(train[0]) == 0 or len(test[0]) == 0:
        raise ResganError("the domain classifier needs labelled images in both splits")
    num_classes = len(class_names) if class_names else int(max(train[1].max(), test[1].max())) + 1
    if num_classes < 2:
        raise ResganError("the domain classifier needs at least 2 classes in the prepared data")
    for split, (_, labels) in (("train", train), ("test", test)):
        if labels.max() >= num_classes:
            raise ResganError(f"{split}.npz: labels must lie in 0..{num_classes - 1}")
    return train, test, num_classes


def _labelled(images: np.ndarray, labels: np.ndarray) -> Split:
    keep = labels >= 0
    return images[keep], labels[keep].astype(np.int64)


def train_classifier(params: ClassifierParams, train: Split, test: Split, num_classes: int) -> tuple[keras.Model, dict]:
    """Train a :func:`build_classifier` model on ``train`` (seeded by ``params.seed``), score it on
    ``test``; returns the model and ``{accuracy, loss, epochs, n_train, n_test, num_classes, time_s}``."""
    keras.utils.set_random_seed(params.seed)
    model = build_classifier(train[0].shape[1:], num_classes, params.width, params.feature_dim)
    model.compile(
        optimizer=keras.optimizers.Adam(params.lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    start = time.perf_counter()
    ops = [op.strip() for op in params.augment.split(",") if op.strip()]
    if ops:  # a fresh random view of every image each epoch: what lets a small CNN generalise on photographs
        import tensorflow as tf

        from resgan.metrics.ssl import augment

        views = (
            tf.data.Dataset.from_tensor_slices(train)
            .shuffle(len(train[0]), seed=params.seed, reshuffle_each_iteration=True)
            .batch(params.batch_size)
            .map(lambda x, y: (augment(tf.cast(x, tf.float32), ops), y), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )
        model.fit(views, epochs=params.epochs, shuffle=False, verbose=2)  # shuffled above, every epoch
    else:
        model.fit(
            train[0].astype(np.float32),
            train[1],
            batch_size=params.batch_size,
            epochs=params.epochs,
            shuffle=True,
            verbose=2,
        )
    loss, accuracy = model.evaluate(test[0].astype(np.float32), test[1], batch_size=params.batch_size, verbose=0)
    return model, {
        "accuracy": float(accuracy),
        "loss": float(loss),
        "epochs": params.epochs,
        "augment": params.augment,
        "n_train": int(len(train[0])),
        "n_test": int(len(test[0])),
        "num_classes": num_classes,
        "time_s": round(time.perf_counter() - start, 2),
    }
