"""The tf.data input pipeline for training: prepared uint8 images -> shuffled float batches in [-1, 1].

Two ways in, chosen by :func:`open_train_data` from ``train.input``: ``memory`` loads ``train.npz``
and shuffles all of it (:func:`train_dataset`); ``stream`` reads the train shards that the prepare
stage wrote (:mod:`resgan.data.shards`) through a bounded shuffle buffer (:func:`stream_dataset`),
so memory use does not grow with the data set. ``auto`` streams when there are shards.

TensorFlow is imported inside the two dataset functions, so that opening and checking the data
(:func:`open_train_data`) costs no TensorFlow start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resgan.data import shards as shard_files
from resgan.data.prepared import load_split
from resgan.errors import ResganError

NO_LABELS_IN_SHARDS = (
    "model.conditional needs the labels, which train.npz holds and the train shards do not: set train.input: memory"
)
# Images in flight while streaming: shard files read at once (interleaved), chosen by AUTOTUNE up to this.
MAX_PARALLEL_READS = 8


def train_dataset(
    images: np.ndarray, global_batch_size: int, seed: int, epoch_offset: int = 0, labels: np.ndarray | None = None
):
    """An endless ``tf.data.Dataset`` of float32 batches in [-1, 1], reshuffled every epoch; with
    ``labels``, of ``(images, labels)`` batches (labels int32), each label staying with its image.

    ``epoch_offset`` changes the shuffle order on resume so a resumed run does not replay the
    batches it already saw. Batches are whole (``drop_remainder``) so every step has the same shape.
    """
    import tensorflow as tf

    if len(images) < global_batch_size:
        raise ResganError(f"train.batch_size {global_batch_size} is larger than the {len(images)} training images")
    if labels is not None and len(labels) != len(images):
        raise ResganError(f"{len(labels)} labels for {len(images)} training images")
    ds = tf.data.Dataset.from_tensor_slices(images if labels is None else (images, labels.astype(np.int32)))
    ds = ds.shuffle(len(images), seed=seed + 7919 * epoch_offset, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(global_batch_size, drop_remainder=True)
    if labels is None:
        ds = ds.map(lambda x: tf.cast(x, tf.float32) / 127.5 - 1.0, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 127.5 - 1.0, y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _epoch_seed(seed: int, epoch_offset: int) -> int:
    return seed + 7919 * epoch_offset


def stream_dataset(
    index: shard_files.ShardIndex,
    global_batch_size: int,
    seed: int,
    epoch_offset: int = 0,
    shuffle_buffer: int = 10_000,
):
    """An endless ``tf.data.Dataset`` of float32 batches in [-1, 1] streamed from the shards of ``index``.

    Every epoch visits the shard files in a new seeded order, reads up to MAX_PARALLEL_READS of them
    at once (interleaved), mixes their images in a shuffle buffer of ``shuffle_buffer`` images,
    batches whole batches of raw records and decodes them in parallel. Memory: the buffer and the
    prefetched batches, whatever the number of shards. ``epoch_offset`` changes the order on resume
    as in :func:`train_dataset`. Under ``tf.distribute`` every worker reads every shard and keeps
    its share of the elements (data sharding), which works for any number of shards.
    """
    import tensorflow as tf

    if index.count < global_batch_size:
        raise ResganError(
            f"train.batch_size {global_batch_size} is larger than the {index.count} training images in {index.folder}"
        )
    height, width, channels = index.shape
    seed = _epoch_seed(seed, epoch_offset)
    files = tf.data.Dataset.from_tensor_slices([str(path) for path in index.paths])
    files = files.shuffle(len(index.shards), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(
        lambda path: tf.data.FixedLengthRecordDataset(path, index.record_bytes),
        cycle_length=min(len(index.shards), MAX_PARALLEL_READS),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.shuffle(min(shuffle_buffer, index.count), seed=seed + 1, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(global_batch_size, drop_remainder=True)

    def decode(records):
        images = tf.reshape(tf.io.decode_raw(records, tf.uint8), (global_batch_size, height, width, channels))
        return tf.cast(images, tf.float32) / 127.5 - 1.0

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


@dataclass(frozen=True)
class TrainData:
    """The training images as the train stage needs them: their shape, and a dataset on demand."""

    mode: str  # "memory" or "stream"
    count: int
    image_size: int
    channels: int
    images: np.ndarray | None = None  # memory
    labels: np.ndarray | None = None  # memory, when the data has labels
    index: shard_files.ShardIndex | None = None  # stream

    def dataset(
        self,
        global_batch_size: int,
        seed: int,
        epoch_offset: int = 0,
        shuffle_buffer: int = 10_000,
        with_labels: bool = False,
    ):
        """Batches of images, or of ``(images, labels)`` with ``with_labels`` (see :meth:`num_classes`)."""
        if self.mode == "stream":
            if with_labels:
                raise ResganError(NO_LABELS_IN_SHARDS)
            return stream_dataset(self.index, global_batch_size, seed, epoch_offset, shuffle_buffer)
        return train_dataset(
            self.images, global_batch_size, seed, epoch_offset, labels=self.labels if with_labels else None
        )

    def classes_for(self, conditional: bool | str, class_names: list[str] | None = None) -> int:
        """The classes of a model with ``model.conditional`` set to ``conditional``; 0 means unconditional.

        ``False``: 0. ``True``: :meth:`num_classes`, whose errors say why these data cannot have a
        conditional model. ``"auto"``: the same classes when every training image has a label and there
        are at least 2 of them, else 0.
        """
        if conditional == "auto":
            try:
                return self.num_classes(class_names)
            except ResganError:
                return 0
        return self.num_classes(class_names) if conditional else 0

    def num_classes(self, class_names: list[str] | None = None) -> int:
        """The classes a conditional model draws: ``class_names`` (from the prepare summary) or the
        largest label + 1. A clear error when some or all training images have no label."""
        if self.mode == "stream":
            raise ResganError(NO_LABELS_IN_SHARDS)
        if self.labels is None:
            raise ResganError(
                "model.conditional needs labelled images, and the prepared data has no labels "
                "(a folder source labels images by their class sub-folder)"
            )
        unlabelled = int(np.sum(self.labels < 0))
        if unlabelled:
            raise ResganError(
                f"model.conditional needs a label on every image; {unlabelled} of {len(self.labels)} "
                "training images have none (files in the folder's root, outside a class sub-folder)"
            )
        count = max(len(class_names or []), int(self.labels.max()) + 1)
        if count < 2:
            raise ResganError(f"model.conditional needs at least 2 classes; the training images have {count}")
        return count


def open_train_data(data_dir: str | Path, mode: str = "auto") -> TrainData:
    """The prepared train split of ``data_dir`` for ``train.input`` ``mode`` (auto, memory, stream).

    ``stream`` (and ``auto`` when ``shards/index.json`` lists shards) checks every shard against
    the index first (size and SHA-256, one read of the data), so a missing, truncated or altered
    shard is one :class:`resgan.data.shards.ShardError` naming the file, before any training; it
    never loads ``train.npz``. ``memory`` loads ``train.npz``, and refuses one that
    ``prepare.npz_max_images`` cut down to a sample of the training data.
    """
    data_dir = Path(data_dir)
    index = shard_files.read_index(data_dir)
    has_shards = index is not None and index.count > 0
    if mode == "stream" or (mode == "auto" and has_shards):
        if not has_shards:
            where = data_dir / shard_files.FOLDER / shard_files.INDEX
            state = "does not exist" if index is None else "lists no shards"
            raise ResganError(
                f"train.input is 'stream' but {where} {state}: set prepare.shard_size > 0 and "
                "re-run the prepare stage, or set train.input to auto or memory"
            )
        shard_files.verify(index)
        print(f"train: streaming {index.count} images from {len(index.shards)} shard(s) in {index.folder}", flush=True)
        return TrainData("stream", index.count, int(index.shape[0]), int(index.shape[2]), index=index)
    if mode not in ("auto", "memory"):
        raise ResganError(f"train.input: unknown mode {mode!r}; use auto, memory or stream")
    images, labels = load_split(data_dir, "train")
    if has_shards and len(images) != index.count:
        raise ResganError(
            f"{data_dir / 'train.npz'} holds {len(images)} of the {index.count} training images "
            "(a sample, prepare.npz_max_images): train.input: memory would train on the sample; "
            "set train.input to auto or stream"
        )
    return TrainData("memory", len(images), int(images.shape[1]), int(images.shape[3]), images=images, labels=labels)
