"""A self-supervised image encoder for offline FID/KID/precision-recall on data without labels.

SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations"):
two random views of each image (random resized crops, optional flips, and the project's DiffAugment
ops), the encoder of :func:`resgan.metrics.classifier.build_trunk` and a small projection head, and the
NT-Xent loss, which pulls the two views of an image together and pushes the other images of the batch
away. The saved model is the encoder alone: uint8 images in, the batch-normalized ``features`` layer
out, read by :class:`resgan.metrics.features.LearnedFeatures` exactly as the classifier's.

:func:`retrieval_accuracy` is its fitness check on held-out images: embed two views of each image and
count how often a view's nearest neighbour (cosine) among all second views is its own partner.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from resgan.config import SSL_OPS, parse_ops
from resgan.errors import ResganError

FITNESS_OPS = ["crop", "translation"]  # the views of the fitness check: geometric, the same for every encoder
FITNESS_GROUP = 100  # held-out images per retrieval group: chance is 1 in 100
CROP_SCALE = (0.5, 1.0)  # share of the image's area a random crop keeps (SimCLR uses 0.08..1 on ImageNet)
ENCODER_NAME = "ssl_encoder"  # the saved model's name: how LearnedFeatures tells it from a classifier


def parse_augment(policy: str) -> list[str]:
    """``"crop, color"`` -> ``["crop", "color"]`` (``classifier.ssl_augment``, checked when params load)."""
    return parse_ops(policy, SSL_OPS, "augmentation")


def augment(images: tf.Tensor, ops: list[str], seed: int | None = None) -> tf.Tensor:
    """One random view of float32 ``images`` in 0..255 (NHWC), in 0..255. ``crop``: a random crop of
    :data:`CROP_SCALE` of the area and aspect 3/4..4/3, resized back; ``flip``: left-right with p=1/2;
    ``color``, ``translation``, ``cutout``: :mod:`resgan.gan.diffaugment`'s ops (which work in [-1, 1])."""
    from resgan.gan.diffaugment import OPS

    if seed is not None:
        tf.random.set_seed(int(seed))
    x = images
    n, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    if "crop" in ops:
        area = tf.random.uniform([n], *CROP_SCALE)
        ratio = tf.exp(tf.random.uniform([n], np.log(3 / 4), np.log(4 / 3)))
        ch = tf.minimum(tf.sqrt(area / ratio), 1.0)
        cw = tf.minimum(tf.sqrt(area * ratio), 1.0)
        top = tf.random.uniform([n]) * (1.0 - ch)
        left = tf.random.uniform([n]) * (1.0 - cw)
        boxes = tf.stack([top, left, top + ch, left + cw], axis=1)
        x = tf.image.crop_and_resize(x, boxes, tf.range(n), (h, w))
    if "flip" in ops:
        flip = tf.random.uniform([n, 1, 1, 1]) < 0.5
        x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    diff = [op for op in ops if op in OPS]
    if diff:
        x = x / 127.5 - 1.0
        for op in diff:
            x = OPS[op](x)
        x = (tf.clip_by_value(x, -1.0, 1.0) + 1.0) * 127.5
    return x


def nt_xent(z1: tf.Tensor, z2: tf.Tensor, temperature: float) -> tf.Tensor:
    """SimCLR's normalized-temperature cross-entropy of two batches of projections (row i of each is a
    view of image i): each of the 2N views must pick its partner among the other 2N - 1."""
    z = tf.math.l2_normalize(tf.concat([z1, z2], axis=0), axis=1)
    n = tf.shape(z1)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    logits = logits - 1e9 * tf.eye(2 * n)  # a view is not its own partner
    targets = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
    return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True))


def build_encoder(input_shape: tuple[int, int, int], width: int = 32, feature_dim: int = 128) -> keras.Model:
    """The encoder: the classifier's convolutional trunk and ``features`` layer, without a class head."""
    from resgan.metrics.classifier import build_trunk

    inputs, features = build_trunk(input_shape, width, feature_dim)
    return keras.Model(inputs, features, name=ENCODER_NAME)


def embed(encoder: keras.Model, images: np.ndarray | tf.Tensor, batch_size: int = 256) -> np.ndarray:
    """``encoder``'s features of float or uint8 images in 0..255, in batches (inference mode)."""
    out = [
        encoder(tf.cast(images[i : i + batch_size], tf.float32), training=False).numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.float64)


def retrieval_accuracy(
    encoder: keras.Model,
    images: np.ndarray,
    ops: list[str] | None = None,
    seed: int = 0,
    group: int = FITNESS_GROUP,
    batch_size: int = 256,
) -> float:
    """Top-1 two-view retrieval on ``images``: two random views of each (``ops``, default
    :data:`FITNESS_OPS`; the same views for any encoder at the same ``seed``), and the share of first views
    whose nearest second view (cosine similarity of the features) within its group of ``group`` images is
    a view of the same image. Chance: 1 / ``group``."""
    x = tf.constant(np.asarray(images), tf.float32)
    ops = FITNESS_OPS if ops is None else ops
    f1 = embed(encoder, augment(x, ops, seed=seed), batch_size)
    f2 = embed(encoder, augment(x, ops, seed=seed + 1), batch_size)
    f1 /= np.linalg.norm(f1, axis=1, keepdims=True) + 1e-12
    f2 /= np.linalg.norm(f2, axis=1, keepdims=True) + 1e-12
    hits = 0
    for start in range(0, len(f1), group):
        a, b = f1[start : start + group], f2[start : start + group]
        hits += int(np.sum((a @ b.T).argmax(axis=1) == np.arange(len(a))))
    return hits / max(len(f1), 1)


def skill(score: float, baseline: float) -> float:
    """How far ``score`` went from a no-learning ``baseline`` towards 1: (score - baseline) / (1 - baseline)."""
    return float((score - baseline) / (1.0 - baseline)) if baseline < 1 else 0.0


def knn_accuracy(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray, k: int = 5
) -> float:
    """A k-nearest-neighbour probe (cosine, majority vote): how well the features separate the classes,
    where labels exist (not needed to train the encoder)."""
    a = train_features / (np.linalg.norm(train_features, axis=1, keepdims=True) + 1e-12)
    b = test_features / (np.linalg.norm(test_features, axis=1, keepdims=True) + 1e-12)
    k = min(k, len(a))
    hits = 0
    for start in range(0, len(b), 512):
        sims = b[start : start + 512] @ a.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        votes = train_labels[nearest]
        predicted = np.array([np.bincount(v).argmax() for v in votes])
        hits += int(np.sum(predicted == test_labels[start : start + 512]))
    return hits / max(len(b), 1)


def train_encoder(
    train_images: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    width: int,
    feature_dim: int,
    temperature: float,
    ops: list[str],
    seed: int,
    min_steps: int = 0,
    log=print,
) -> tuple[keras.Model, dict]:
    """Train :func:`build_encoder` with SimCLR on uint8 ``train_images`` for ``epochs``, or more where
    that makes fewer than ``min_steps`` steps (a few hundred images are one batch an epoch); returns
    the encoder and ``{loss (last epoch's mean), epochs, steps, n_train, time_s}``."""
    if len(train_images) < 2:
        raise ResganError("the self-supervised encoder needs at least 2 training images")
    keras.utils.set_random_seed(seed)
    encoder = build_encoder(train_images.shape[1:], width, feature_dim)
    projection = keras.Sequential(
        [layers.ReLU(), layers.Dense(feature_dim), layers.ReLU(), layers.Dense(min(feature_dim, 64))], name="projection"
    )
    optimizer = keras.optimizers.Adam(lr)
    batch = int(min(batch_size, len(train_images)))

    @tf.function(reduce_retracing=True)
    def step(images):
        view1, view2 = augment(images, ops), augment(images, ops)
        with tf.GradientTape() as tape:
            z1 = projection(encoder(view1, training=True), training=True)
            z2 = projection(encoder(view2, training=True), training=True)
            loss = nt_xent(z1, z2, temperature)
        variables = encoder.trainable_variables + projection.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    data = tf.constant(np.asarray(train_images), tf.float32)
    rng = np.random.default_rng(seed)
    per_epoch = len(train_images) // batch  # whole batches: NT-Xent wants negatives
    epochs = max(epochs, -(-min_steps // per_epoch))
    every = -(-epochs // 10)  # about ten progress lines, whatever the epochs
    start, loss = time.perf_counter(), float("nan")
    for epoch in range(epochs):
        order = rng.permutation(len(train_images))
        losses = [float(step(tf.gather(data, order[i : i + batch]))) for i in range(0, per_epoch * batch, batch)]
        loss = float(np.mean(losses))
        if (epoch + 1) % every == 0 or epoch + 1 == epochs:
            log(f"self-supervised encoder: epoch {epoch + 1}/{epochs}, NT-Xent loss {loss:.4f}")
    if not np.isfinite(loss):
        raise ResganError(f"the self-supervised encoder's loss is {loss}: lower classifier.lr")
    return encoder, {
        "loss": loss,
        "epochs": epochs,
        "steps": epochs * per_epoch,
        "n_train": int(len(train_images)),
        "time_s": round(time.perf_counter() - start, 2),
    }
