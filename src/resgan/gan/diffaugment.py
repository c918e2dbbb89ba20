"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random, differentiable augmentation is applied to real and fake images before D sees them,
so D cannot overfit a small data set and G still gets gradients through the augmentation.
Images are NHWC in [-1, 1]; every op keeps the input's dtype (float32, bfloat16, float16), draws its
random values per example with ``tf.random.uniform`` (fine inside tf.function and tf.distribute),
and follows the authors' reference implementation.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from resgan.config import parse_diffaugment


def _uniform(x: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """Per-example factors of shape (N, 1, 1, 1) in [low, high), in x's dtype."""
    return tf.cast(tf.random.uniform([tf.shape(x)[0], 1, 1, 1], low, high), x.dtype)


def _color(x: tf.Tensor) -> tf.Tensor:
    """Random brightness (+[-0.5, 0.5)), saturation (x[0, 2), 3 channels only) and contrast (x[0.5, 1.5))."""
    x = x + _uniform(x, -0.5, 0.5)
    if x.shape[-1] == 3:  # one channel has no saturation: its channel mean is the pixel itself
        mean = tf.reduce_mean(x, axis=3, keepdims=True)
        x = (x - mean) * _uniform(x, 0.0, 2.0) + mean
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean


def _translation(x: tf.Tensor, ratio: float = 0.125) -> tf.Tensor:
    """Shift each image by up to ``ratio`` of its size (whole pixels, per axis), filling with zeros."""
    n, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    pad_h, pad_w = int(h * ratio + 0.5), int(w * ratio + 0.5)  # 2 pixels at 16x16, 4 at 32x32
    shift_h = tf.random.uniform([n, 1], -pad_h, pad_h + 1, dtype=tf.int32)
    shift_w = tf.random.uniform([n, 1], -pad_w, pad_w + 1, dtype=tf.int32)
    padded = tf.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
    # Output pixel (i, j) reads input pixel (i - shift_h, j - shift_w), i.e. padded (i - shift_h + pad_h, ...).
    # gather is differentiable w.r.t. x (its gradient scatters back), unlike tf.roll with per-example shifts.
    rows = tf.range(h)[None, :] - shift_h + pad_h  # (N, H)
    cols = tf.range(w)[None, :] - shift_w + pad_w  # (N, W)
    x = tf.gather(padded, rows, axis=1, batch_dims=1)  # (N, H, W + 2 pad_w, C)
    return tf.gather(x, cols, axis=2, batch_dims=1)  # (N, H, W, C)


def _cutout(x: tf.Tensor, ratio: float = 0.5) -> tf.Tensor:
    """Zero a square of ``ratio`` times the image size per example; its centre may lie near the border,
    in which case the part outside the image is lost (as in the reference implementation)."""
    n, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    centre_h = tf.random.uniform([n, 1, 1, 1], 0, h + (1 - size_h % 2), dtype=tf.int32)
    centre_w = tf.random.uniform([n, 1, 1, 1], 0, w + (1 - size_w % 2), dtype=tf.int32)
    top, left = centre_h - size_h // 2, centre_w - size_w // 2
    rows = tf.range(h)[None, :, None, None]
    cols = tf.range(w)[None, None, :, None]
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)  # (N, H, W, 1)
    return x * tf.cast(tf.logical_not(inside), x.dtype)


# One function per name of resgan.config.DIFFAUGMENT_OPS (the names train.diffaugment accepts; a test ties them).
OPS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {"color": _color, "translation": _translation, "cutout": _cutout}


def parse_policy(policy: str) -> list[str]:
    """``"color, translation"`` -> ``["color", "translation"]``; ValueError for an unknown op."""
    return parse_diffaugment(policy)


def diff_augment(x: tf.Tensor, policy: str, probability: tf.Tensor | float | None = None) -> tf.Tensor:
    """Apply the comma-separated ops of ``policy`` (any of color, translation, cutout) in the order given.

    x: (N, H, W, C) images in [-1, 1] with static H, W and C. Returns a tensor of the same shape and
    dtype; ``""`` returns x unchanged. Each call draws new random values for every example. With
    ``probability`` (ADA's p), each op is applied to each example with that probability, independently.
    """
    for name in parse_policy(policy):
        augmented = OPS[name](x)
        if probability is None:
            x = augmented
        else:
            keep = tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < tf.cast(probability, tf.float32)
            x = tf.where(keep, augmented, x)
    return x
