"""Choosing the prepared images: convert a source's items, keep the good distinct ones, split them.

:func:`collect` converts each item of a :class:`~resgan.data.sources.RawData` (with
:mod:`resgan.data.images`), skips bad files with a reason (or stops at the first one under
``on_bad_image: fail``), drops exact duplicates of converted pixels (the first copy stays, even
when a later one has another label), stops at ``max_images`` kept images and appends every kept
image to a :class:`~resgan.data.prepared.PixelFile`. :func:`plan_splits` then splits the kept
images train/test deterministically (stratified by label when possible).

Labels: when no kept image has one, there are none. When only some do (a folder with class
sub-folders and loose files in its root), the unlabelled ones get label ``UNLABELLED`` (-1).
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from resgan.data.images import (
    BadImage,
    ImageSpec,
    convert,
    from_array,
    load_images,
    open_image,
)
from resgan.data.prepared import PixelFile, PrepareError, Split
from resgan.data.sources import RawData, RawItem

UNLABELLED = -1
CHUNK = 256  # files per worker task: enough that pickling and scheduling cost little, few enough to start soon


@dataclass
class Collected:
    """The kept images' bookkeeping (their pixels are in the pixel file, in this order)."""

    items: list[RawItem]  # kept, in source order
    hashes: list[str]  # SHA-256 of each kept image's converted pixels
    labels: np.ndarray | None  # int64, UNLABELLED where unknown; None when no kept image has a label
    class_names: list[str] | None  # the source's, when some kept image has a label
    skipped: list[dict[str, str]]  # {path, reason} of every bad input
    duplicates: int  # inputs dropped as copies of an earlier kept image
    inputs: int  # inputs looked at; fewer than all when max_images stopped early

    def class_counts(self, idx: np.ndarray) -> dict[str, int]:
        """Images per class name (``unlabelled`` for -1) among the kept images ``idx``, by label."""
        named = self.class_names or []
        return {
            ("unlabelled" if label == UNLABELLED else named[label] if 0 <= label < len(named) else str(label)): n
            for label, n in sorted(Counter(self.labels[idx].tolist()).items())
        }

    def manifest(self, splits: list[Split]) -> pd.DataFrame:
        """One row per kept image: index, source, label, split, split_index, npz_index, sha256."""
        n = len(self.items)
        split_of = np.empty(n, dtype=object)
        row_in_split = np.empty(n, dtype=np.int64)
        row_in_npz = pd.array([None] * n, dtype="Int64")
        for split in splits:
            split_of[split.idx] = split.name
            row_in_split[split.idx] = np.arange(len(split.idx))
            row_in_npz[split.idx[split.npz_rows]] = np.arange(len(split.npz_rows))
        return pd.DataFrame(
            {
                "index": np.arange(n),
                "source": [item.ref for item in self.items],
                "label": pd.array([item.label for item in self.items], dtype="Int64"),  # empty when unknown
                "split": split_of,
                "split_index": row_in_split,  # position in the split: the order of the shards and, uncapped, of <split>.npz
                "npz_index": row_in_npz,  # row in <split>.npz; empty when prepare.npz_max_images left the image out
                "sha256": self.hashes,
            }
        )


def bad_input(entry: dict[str, str]) -> PrepareError:
    """The error for a bad input under ``on_bad_image: fail``."""
    return PrepareError(
        f"bad input {entry['path']}: {entry['reason']} (prepare.on_bad_image is 'fail'; "
        "set it to 'skip' to leave such files out)"
    )


def _pixels_of(item: RawItem, spec: ImageSpec) -> np.ndarray | str:
    """The converted pixels of ``item``, or the reason it is bad input."""
    try:
        img = open_image(item.path, spec.max_pixels) if item.path is not None else from_array(item.pixels)
        return convert(img, spec)
    except BadImage as bad:
        return bad.reason


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def converted(
    items: list[RawItem], spec: ImageSpec, workers: int = 1, chunk: int = CHUNK
) -> Iterator[tuple[RawItem, np.ndarray | str]]:
    """``(item, pixels or the reason it is bad)`` for each of ``items``, in order.

    With ``workers`` > 1 and at least two chunks of files, files are converted by that many worker
    processes, ``chunk`` files a task, a few tasks ahead of the consumer (so memory holds a few
    chunks, not the data set); arrays, and small folders where starting workers costs more than it
    saves, are converted here. Stopping early (``max_images``) cancels the tasks not yet started.
    """
    if workers <= 1 or len(items) < 2 * chunk or any(item.path is None for item in items):
        for item in items:
            yield item, _pixels_of(item, spec)
        return
    # spawn, not fork: the caller may hold TensorFlow's or BLAS's threads, which fork does not copy.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        ahead: deque = deque()
        parts = (items[start : start + chunk] for start in range(0, len(items), chunk))
        for part in parts:
            ahead.append((part, pool.submit(load_images, [item.path for item in part], spec)))
            if len(ahead) > 2 * workers:
                yield from _finished(*ahead.popleft())
        while ahead:
            yield from _finished(*ahead.popleft())
    except BrokenProcessPool:
        raise PrepareError(
            "a prepare worker process died (out of memory?); set prepare.workers: 1 "
            "to convert the images in one process"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _finished(part: list[RawItem], future) -> Iterator[tuple[RawItem, np.ndarray | str]]:
    yield from zip(part, future.result())


def collect(
    raw: RawData,
    spec: ImageSpec,
    pixels: PixelFile,
    *,
    max_images: int,
    on_bad_image: str,
    where: str,
    workers: int = 1,
) -> Collected:
    """Convert ``raw``'s items to ``spec``, appending each kept image to ``pixels``.

    ``max_images`` (0: all) counts kept images; ``on_bad_image`` is ``skip`` or ``fail``; ``where``
    names the source in errors; ``workers`` processes decode files (see :func:`converted`; the
    result is the same for any number). Raises :class:`PrepareError` when nothing is kept, or for
    the first bad input under ``fail``.
    """
    skipped = list(raw.skipped)
    if skipped and on_bad_image == "fail":
        raise bad_input(skipped[0])
    kept: list[RawItem] = []
    hashes: list[str] = []
    seen: set[str] = set()
    duplicates, inputs = 0, len(raw.skipped)
    results = converted(raw.items, spec, workers, CHUNK)
    try:
        for item, image in results:
            if max_images and len(kept) >= max_images:
                break
            inputs += 1
            if isinstance(image, str):
                entry = {"path": item.ref, "reason": image}
                if on_bad_image == "fail":
                    raise bad_input(entry) from None
                skipped.append(entry)
                continue
            digest = hashlib.sha256(image.tobytes()).hexdigest()
            if digest in seen:
                duplicates += 1
                continue
            seen.add(digest)
            pixels.append(image)
            kept.append(item)
            hashes.append(digest)
    finally:
        results.close()  # stops the workers when max_images or a bad file ended the loop early
    if not kept:
        if not raw.items and not skipped:
            raise PrepareError(f"no images found in {where}")
        first = f" (first: {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
        raise PrepareError(
            f"no usable images in {where}: {len(skipped)} input(s) skipped, {duplicates} duplicate(s){first}"
        )
    if all(item.label is None for item in kept):
        return Collected(kept, hashes, None, None, skipped, duplicates, inputs)
    labels = np.array([UNLABELLED if item.label is None else item.label for item in kept], dtype=np.int64)
    return Collected(kept, hashes, labels, raw.class_names, skipped, duplicates, inputs)


def split_indices(
    labels: np.ndarray | None, n: int, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Split ``range(n)`` into sorted train and test indices; returns ``(train, test, stratified)``.

    The test split holds ``ceil(test_fraction * n)`` images (scikit-learn's rule), clamped so that
    both splits keep at least one. The split is stratified by ``labels`` when every class has two or
    more images and each split can hold one of every class; otherwise it is a plain seeded shuffle.
    """
    if n < 2:
        raise PrepareError(f"need at least 2 images for a train and a test split, got {n}")
    n_test = min(max(1, math.ceil(test_fraction * n)), n - 1)
    stratify = None
    if labels is not None:
        counts = Counter(labels.tolist())
        if min(counts.values()) >= 2 and min(n_test, n - n_test) >= len(counts):
            stratify = labels
    train, test = train_test_split(np.arange(n), test_size=n_test, random_state=seed, shuffle=True, stratify=stratify)
    return np.sort(train), np.sort(test), stratify is not None


def npz_rows(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (sorted) of a split's images that go into its npz: all, or a seeded sample of ``cap``."""
    if not cap or n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def plan_splits(
    labels: np.ndarray | None, n: int, test_fraction: float, seed: int, npz_max_images: int
) -> tuple[list[Split], bool]:
    """The train and test :class:`Split` of ``n`` kept images (see :func:`split_indices`), each with
    its npz rows (a seeded sample of ``npz_max_images`` when set); returns ``(splits, stratified)``."""
    train, test, stratified = split_indices(labels, n, test_fraction, seed)
    rng = np.random.default_rng(seed)  # one generator, drawn train first, then test
    return [
        Split(name, idx, npz_rows(len(idx), npz_max_images, rng)) for name, idx in (("train", train), ("test", test))
    ], stratified
