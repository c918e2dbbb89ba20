"""The tf.data input pipeline for training: prepared uint8 images -> shuffled float batches in [-1, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resgan.errors import ResganError


def load_split(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``images`` (uint8 NHWC) and ``labels`` (or None) from a prepared ``.npz``; clear errors."""
    path = Path(path)
    try:
        with np.load(path) as data:
            images = data["images"]
            labels = data["labels"] if "labels" in data.files else None
    except FileNotFoundError:
        raise ResganError(f"{path} not found: run the prepare stage first") from None
    except (OSError, ValueError, KeyError) as error:
        raise ResganError(f"{path} is not a prepared data file: {error}") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ResganError(f"{path}: images must be uint8 NHWC, got {images.dtype} {images.shape}")
    return images, labels


def train_dataset(images: np.ndarray, global_batch_size: int, seed: int, epoch_offset: int = 0):
    """An endless ``tf.data.Dataset`` of float32 batches in [-1, 1], reshuffled every epoch.

    ``epoch_offset`` changes the shuffle order on resume so a resumed run does not replay the
    batches it already saw. Batches are whole (``drop_remainder``) so every step has the same shape.
    """
    import tensorflow as tf

    if len(images) < global_batch_size:
        raise ResganError(f"train.batch_size {global_batch_size} is larger than the {len(images)} training images")
    ds = tf.data.Dataset.from_tensor_slices(images)
    ds = ds.shuffle(len(images), seed=seed + 7919 * epoch_offset, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(global_batch_size, drop_remainder=True)
    ds = ds.map(lambda x: tf.cast(x, tf.float32) / 127.5 - 1.0, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
