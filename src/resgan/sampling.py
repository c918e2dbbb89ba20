"""Turning a generator and seeds into images: the one place every caller samples through.

The seed contract: :func:`latents` row ``i`` depends only on ``(seed, i)``, and :func:`class_labels`
gives a class-conditional generator every class in turn, so ``--num 10`` draws the first ten images
of ``--num 20`` and "the image of seed s" is row 0 of seed ``s``. :func:`generate_images` runs a
generator on them in graph-compiled batches and returns uint8 NHWC images; the train stage's sample
grids, the sample stage and evaluate (through :func:`draw`), ``resgan generate``/``interpolate`` and
the served model all call it.

TensorFlow is imported only when a model first runs (:func:`generate_images`), so importing this
module stays fast: ``resgan generate`` checks its arguments before TensorFlow starts.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from resgan.errors import ResganError
from resgan.loading import image_shape, latent_dim, num_classes


def class_labels(num: int, classes: int, seed: int, label: int | None = None) -> np.ndarray | None:
    """Labels for ``num`` images of a generator with ``classes`` classes (None when it has none).

    ``label`` given: that class for every image (a clear error when it is not one). Otherwise row
    ``i`` gets class ``(seed + i) % classes``: every class equally often and, as with
    :func:`latents`, row ``i`` depends only on ``(seed, i)``: ``--num 10`` draws the first ten
    images of ``--num 20``, and ``--seed s --num 1`` draws class ``s % classes``.
    """
    if not classes:
        if label is not None:
            raise ResganError(
                "a label was given, but this generator is not class-conditional (it was "
                "trained with model.conditional: false, or self-conditioned on unlabelled data, "
                "which draws its clusters itself)"
            )
        return None
    if label is not None:
        if not 0 <= label < classes:
            raise ResganError(f"the label must be a class from 0 to {classes - 1}, got {label}")
        return np.full(num, label, dtype=np.int32)
    return ((np.arange(num, dtype=np.int64) + seed) % classes).astype(np.int32)


def model_inputs(x, labels):
    """A network's input: ``x`` (latents or images), or ``[x, labels]`` for a class-conditional one."""
    return x if labels is None else [x, labels]


def latents(num: int, dim: int, seed: int, truncation: float | None = None) -> np.ndarray:
    """``num`` standard-normal latents from ``seed``.

    Row ``i`` depends only on ``(seed, i, dim, truncation)``: ``latents(10, ...)`` is the first ten
    rows of ``latents(20, ...)``, so "the image of seed s" is row 0 whatever ``num`` is. With
    ``truncation`` t, each value beyond +-t is replaced by a draw from the normal truncated to
    [-t, t] (inverse CDF of a second stream, seeded ``[seed, 1]``, at the same position), so the
    result is exactly truncated-normal and keeps the row property.
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num, dim)).astype(np.float32)
    if truncation is None:
        return z
    if not truncation > 0:
        raise ResganError("--truncation must be positive")
    low = ndtr(-truncation)
    spread = 1.0 - 2.0 * low
    redraw = np.random.default_rng([seed, 1])
    rows = max(1, 2**20 // max(dim, 1))  # bounded memory for a million latents
    for start in range(0, num, rows):
        block = z[start : start + rows]
        uniform = redraw.random(block.shape)  # drawn for every position: row i's values depend on i only
        outside = np.abs(block) > truncation
        if outside.any():
            block[outside] = ndtri(low + uniform[outside] * spread).astype(np.float32)
    np.clip(z, -truncation, truncation, out=z)  # float32 rounding of a value at the edge
    return z


def to_uint8(images: Any) -> np.ndarray:
    """Generator output in [-1, 1] -> uint8 [0, 255]: ``(x + 1) * 127.5`` rounded to nearest (halves to
    even), clipped; so -1 -> 0, 0 -> 128 (127.5 rounds to even) and 1 -> 255."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def generate_images(
    model,
    z: np.ndarray,
    labels: np.ndarray | None = None,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """uint8 NHWC images for latents ``z`` (and class ``labels``, for a conditional generator).

    Runs ``model(x, training=False)`` ``batch_size`` rows at a time as one traced graph (about twice
    as fast as eager calls, and the same pixels); ``progress(n)`` is called after each batch of ``n``.
    """
    out = np.empty((len(z), *image_shape(model)), dtype=np.uint8)
    start = 0
    for batch in iter_images(model, z, labels, batch_size, progress):
        out[start : start + len(batch)] = batch
        start += len(batch)
    return out


def iter_images(
    model,
    z: np.ndarray,
    labels: np.ndarray | None = None,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """:func:`generate_images` one uint8 NHWC batch at a time, for outputs too big to hold at once."""
    if batch_size < 1:
        raise ResganError(f"the batch size must be at least 1, got {batch_size}")
    call = None
    for start in range(0, len(z), batch_size):
        window = slice(start, start + batch_size)
        inputs = model_inputs(z[window], None if labels is None else labels[window])
        if call is None:  # traced for the first batch's inputs, with any batch size
            call = _compiled(model, inputs)
        batch = to_uint8(call(inputs))
        if progress is not None:
            progress(len(batch))
        yield batch


_COMPILED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _compiled(model, example):
    """``model(x, training=False)`` as a ``tf.function``, kept as long as the model lives. It is traced
    once, for inputs like ``example`` with any batch size, so a last, shorter batch reuses the graph
    (the same pixels; tracing again cost about a quarter of a second). Inputs of another structure
    or dtype trace again (``reduce_retracing``)."""
    call = _COMPILED.get(model)
    if call is None:
        import tensorflow as tf

        model_ref = weakref.ref(model)  # a strong reference in the value would keep the key alive forever
        call = tf.function(lambda x: model_ref()(x, training=False), reduce_retracing=True)
        call.get_concrete_function(
            tf.nest.map_structure(
                lambda a: tf.TensorSpec((None, *np.shape(a)[1:]), tf.as_dtype(np.asarray(a).dtype)), example
            )
        )
        _COMPILED[model] = call
    return call


def draw(
    model,
    num: int,
    seed: int,
    batch_size: int = 256,
    truncation: float | None = None,
    label: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``num`` images of ``seed``: :func:`latents` and :func:`class_labels` through :func:`generate_images`.

    Returns uint8 NHWC images and the classes they were drawn for (``label``, or every class in
    turn; None for an unconditional generator). The same arguments give the same pixels, whatever
    ``batch_size``; ``progress`` is as for :func:`generate_images`.
    """
    z = latents(num, latent_dim(model), seed, truncation)
    labels = class_labels(num, num_classes(model), seed, label)
    return generate_images(model, z, labels, batch_size, progress), labels


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation from ``a`` to ``b`` at fractions ``t`` (shape (T,)); returns (T, dim).

    The angle is that between the two vectors; their norms are interpolated linearly, so a walk
    between two Gaussian latents keeps a typical norm instead of passing near the origin. Falls
    back to linear interpolation when the vectors are (anti)parallel within float precision.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)[:, None]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return ((1 - t) * a + t * b).astype(np.float32)
    ua, ub = a / na, b / nb
    omega = np.arccos(np.clip(np.dot(ua, ub), -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return ((1 - t) * a + t * b).astype(np.float32)
    direction = (np.sin((1 - t) * omega) * ua + np.sin(t * omega) * ub) / np.sin(omega)
    return (direction * ((1 - t) * na + t * nb)).astype(np.float32)


def seed_latent(dim: int, seed: int, truncation: float | None = None) -> np.ndarray:
    """The latent of ``seed``: the first of ``latents(num, dim, seed, truncation)`` for any num."""
    return latents(1, dim, seed, truncation)[0]


def walk_latents(dim: int, seeds: list[int], steps: int, truncation: float | None = None) -> np.ndarray:
    """(pairs, steps, dim): for each consecutive pair of seeds, ``steps`` latents from one to the other."""
    ends = [seed_latent(dim, s, truncation) for s in seeds]
    t = np.linspace(0.0, 1.0, steps)
    return np.stack([slerp(a, b, t) for a, b in zip(ends[:-1], ends[1:])])


def grid_images(images: np.ndarray, labels: np.ndarray | None, size: int) -> tuple[np.ndarray, int | None]:
    """The images of a sample grid of about ``size`` and its column count (None: near square).

    Unconditional (``labels`` None): the first ``size`` images. Class-conditional, where image ``i`` is
    class ``(seed + i) % K`` (:func:`class_labels`): rows of K images from the first class-0 image on,
    so each column holds one class, 0 to K-1 from left to right, ``round(size / K)`` rows (at least 1).
    """
    if labels is None or len(labels) == 0:
        return images[:size], None
    classes = int(labels.max()) + 1
    offset = int(np.argmax(labels == 0)) if (labels == 0).any() else 0
    rows = min(max(1, round(size / classes)), (len(images) - offset) // classes)
    if classes < 2 or rows < 1 or np.any(labels[offset : offset + rows * classes] != np.tile(np.arange(classes), rows)):
        return images[:size], None  # not the cycling labels of class_labels: no class layout
    return images[offset : offset + rows * classes], classes
