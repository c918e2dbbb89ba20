"""Prepared-data files: the split files the prepare stage writes and every later stage reads, the data
hash that identifies them, and the temporary pixel file they are written from.

``<split>.npz`` (``train``, ``test``) holds ``images`` (uint8, NHWC) and, when the data has labels,
``labels`` (int64; ``-1`` for an image without one) and ``class_names`` (str). :func:`load_split`
reads one. The train split may also be written as shard files (:mod:`resgan.data.shards`).

The data hash (:class:`DataHasher`) is a SHA-256 over the full splits, whatever ``npz_max_images``
left in the npz files: train images, train labels, test images, test labels (labels only when the
data has them), each array preceded by ``"<split>/<key>:<dtype.str>:<shape>;"`` (UTF-8, the shape
as a Python tuple, e.g. ``train/images:|u1:(270, 16, 16, 1);``) so that equal bytes in another
shape give another hash, then its bytes in C order. Checkpoint keys and MLflow tags depend on it:
the formula must not change.

Memory: the prepare stage appends converted images to a :class:`PixelFile` one at a time and
:func:`write_splits` reads them back a block of about ``BLOCK_BYTES`` at a time, so the pixels of a
data set are never all in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resgan import files
from resgan.data import shards
from resgan.errors import ResganError

BLOCK_BYTES = 4 << 20  # pixels read back from the temporary pixel file per block (a few copies live at once)
SPILL_PREFIX = ".prepare-pixels-"
MISSING_HINT = "run the prepare stage first (`dvc repro prepare`)"


class PrepareError(ResganError):
    """The source gave no usable data, too little of it, or a bad file under on_bad_image: fail."""


# ------------------------------------------------------------------------------------------ reading


@contextlib.contextmanager
def _open_npz(path: Path) -> Iterator:
    """``np.load(path)``, with a missing or unreadable file (also while reading a member) as one
    :class:`ResganError` naming it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            yield data
    except FileNotFoundError:
        raise ResganError(f"{path} not found: {MISSING_HINT}") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ResganError(
            f"{path} is not a prepared data file ({type(error).__name__}: {error}); {MISSING_HINT}"
        ) from None


def load_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(images, labels)`` of ``data_dir/<split>.npz``: images uint8 NHWC, labels (N,) or None.

    Raises :class:`ResganError` naming the file when it is missing, unreadable, or holds no uint8
    NHWC ``images`` or labels that do not match them.
    """
    path = Path(data_dir) / f"{split}.npz"
    with _open_npz(path) as data:
        images = data["images"]
        labels = data["labels"] if "labels" in data.files else None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ResganError(f"{path}: images must be uint8 NHWC, got {images.dtype} {images.shape}")
    if labels is not None and (labels.shape != (len(images),) or labels.dtype.kind not in "iu"):
        raise ResganError(f"{path}: labels must be {len(images)} integers, got {labels.dtype} {labels.shape}")
    return images, labels


def load_class_names(data_dir: str | Path, split: str = "train") -> list[str] | None:
    """The class names stored in ``data_dir/<split>.npz``; None when it has none (or no labels)."""
    with _open_npz(Path(data_dir) / f"{split}.npz") as data:
        return [str(name) for name in data["class_names"]] if "class_names" in data.files else None


# ------------------------------------------------------------------------------------------ hashing


class DataHasher:
    """The data hash (see the module docstring), fed one array at a time or in blocks.

    ``add(split, key, array)`` hashes a whole array; ``begin(split, key, dtype, shape)`` followed
    by ``update(block)`` calls hashes the same array fed in blocks (first axis, in order) and gives
    the same digest. Feed train images, train labels, test images, test labels, in that order.
    :meth:`hexdigest` (and the next :meth:`begin`) raises ``ValueError`` if an announced array did
    not get exactly its bytes.
    """

    def __init__(self):
        self._digest = hashlib.sha256()
        self._array = ""  # "<split>/<key>" being fed
        self._dtype = np.dtype(np.uint8)
        self._left = 0  # bytes of it still expected

    def begin(self, split: str, key: str, dtype, shape: Iterable[int]) -> None:
        """Start the array ``split/key`` of ``dtype`` and ``shape``: hashes its header."""
        self._check_complete()
        dtype, shape = np.dtype(dtype), tuple(int(d) for d in shape)  # ints: numpy scalars print otherwise
        self._digest.update(f"{split}/{key}:{dtype.str}:{shape};".encode())
        self._array, self._dtype, self._left = f"{split}/{key}", dtype, math.prod(shape) * dtype.itemsize

    def update(self, block: np.ndarray) -> None:
        """Hash the next rows of the current array (its dtype, any number of rows)."""
        if block.dtype != self._dtype:
            raise ValueError(f"data hash: a {block.dtype} block for {self._array} ({self._dtype})")
        block = np.ascontiguousarray(block)
        if block.nbytes > self._left:
            raise ValueError(f"data hash: more bytes than the shape of {self._array} announced")
        self._digest.update(block)  # C-contiguous: hashed in place, no bytes copy
        self._left -= block.nbytes

    def add(self, split: str, key: str, array: np.ndarray) -> None:
        """Hash the whole array ``split/key``: its header, then its bytes."""
        array = np.ascontiguousarray(array)
        self.begin(split, key, array.dtype, array.shape)
        self.update(array)

    def hexdigest(self) -> str:
        """The data hash so far, 64 hex digits."""
        self._check_complete()
        return self._digest.hexdigest()

    def _check_complete(self) -> None:
        if self._left:
            raise ValueError(f"data hash: {self._left} bytes of {self._array} were never fed")


# ------------------------------------------------------------------------------------------ writing


class PixelFile:
    """Converted images appended one at a time to a temporary file in ``folder`` (created on the
    first image, deleted by :meth:`close`), read back a block at a time with ``pread``: the page
    cache holds them, not this process."""

    def __init__(self, folder: Path, shape: tuple[int, int, int]):
        self.folder, self.shape = Path(folder), tuple(shape)
        self.row = int(np.prod(shape))  # bytes per image
        self.count = 0
        self.path: Path | None = None
        self._handle = None

    def append(self, pixels: np.ndarray) -> None:
        """Append one uint8 image of :attr:`shape`."""
        if self._handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=SPILL_PREFIX, suffix=".tmp", dir=self.folder)
            self.path, self._handle = Path(name), os.fdopen(fd, "w+b")
        self._handle.write(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
        self.count += 1

    def read(self, first: int, stop: int) -> np.ndarray:
        """Images ``first`` to ``stop - 1``."""
        size, offset = (stop - first) * self.row, first * self.row
        parts = []
        while size:
            data = os.pread(self._handle.fileno(), size, offset)
            if not data:
                raise PrepareError(f"temporary pixel file {self.path} ended early")
            parts.append(data)
            size, offset = size - len(data), offset + len(data)
        return np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(-1, *self.shape)

    def blocks(self, idx: np.ndarray) -> Iterator[np.ndarray]:
        """The images at the sorted indices ``idx``, in that order, in blocks of about BLOCK_BYTES."""
        self._handle.flush()
        per_block = max(1, BLOCK_BYTES // self.row)
        for start in range(0, self.count, per_block):
            lo, hi = np.searchsorted(idx, [start, min(start + per_block, self.count)])
            if lo < hi:
                first = int(idx[lo])
                yield self.read(first, int(idx[hi - 1]) + 1)[idx[lo:hi] - first]

    def close(self) -> None:
        """Close and delete the file (idempotent)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def remove_spill_files(folder: Path) -> None:
    """Delete the temporary pixel files a killed run left in ``folder``."""
    for stale in Path(folder).glob(f"{SPILL_PREFIX}*"):
        stale.unlink(missing_ok=True)


def _member(name: str) -> zipfile.ZipInfo:
    """A compressed zip member with a fixed date, so that the same data gives the same bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def save_npz_chunked(
    path: Path, count: int, shape: tuple[int, int, int], chunks: Iterable[np.ndarray], **arrays: np.ndarray
) -> None:
    """Like ``files.save_npz`` (compressed, atomic), with ``images`` (``count`` uint8 images of ``shape``)
    written from an iterable of chunks, so the whole array is never in memory."""
    with (
        files.atomic_path(path, suffix=".npz") as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive,
    ):
        written = 0
        with archive.open(_member("images.npy"), "w", force_zip64=True) as handle:
            np.lib.format.write_array_header_1_0(
                handle, {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": (count, *shape)}
            )
            for chunk in chunks:
                handle.write(np.ascontiguousarray(chunk, dtype=np.uint8))  # no bytes copy: the buffer itself
                written += len(chunk)
        if written != count:
            raise PrepareError(f"{path}: wrote {written} images, expected {count}")
        for name, array in arrays.items():
            with archive.open(_member(f"{name}.npy"), "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


@dataclass(frozen=True)
class Split:
    """One split of the kept images."""

    name: str  # "train" or "test": the file <name>.npz
    idx: np.ndarray  # sorted positions of its images in the pixel file
    npz_rows: np.ndarray  # sorted positions inside the split of the images <name>.npz holds


@dataclass(frozen=True)
class Written:
    """What :func:`write_splits` wrote."""

    data_hash: str
    shards: list[shards.Shard]  # the train shards; empty with shards off
    preview: np.ndarray  # the first train images, for preview.png


def write_splits(
    out_dir: Path,
    pixels: PixelFile,
    splits: list[Split],
    labels: np.ndarray | None,
    class_names: list[str] | None,
    shard_size: int,
    preview: int,
) -> Written:
    """Write ``<split>.npz`` for each split and the train shards (``shard_size > 0``) with their index,
    from ``pixels`` a block at a time; hash the full splits on the way.

    ``labels`` holds one label per image of ``pixels`` (or is None). Returns the data hash, the
    shards written and the first ``preview`` train images.
    """
    hasher = DataHasher()
    shard_dir = Path(out_dir) / shards.FOLDER
    written_shards: list[shards.Shard] = []
    first_images: list[np.ndarray] = []
    for split in splits:
        extra: dict[str, np.ndarray] = {}
        if labels is not None:
            extra["labels"] = labels[split.idx][split.npz_rows]
        if class_names:
            extra["class_names"] = np.array(class_names, dtype=str)
        writer = (
            shards.ShardWriter(shard_dir, len(split.idx), shard_size, pixels.shape, split.name)
            if split.name == shards.SPLIT and shard_size
            else None
        )
        keep = first_images if split.name == "train" else None
        chunks = _split_chunks(pixels, split, hasher, writer, keep, preview)
        with writer if writer is not None else contextlib.nullcontext():
            save_npz_chunked(Path(out_dir) / f"{split.name}.npz", len(split.npz_rows), pixels.shape, chunks, **extra)
        if writer is not None:
            written_shards = writer.shards
        if labels is not None:
            hasher.add(split.name, "labels", labels[split.idx])
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards.write_index(shard_dir, pixels.shape, written_shards, shard_size)
    return Written(hasher.hexdigest(), written_shards, np.stack(first_images))


def _split_chunks(
    pixels: PixelFile,
    split: Split,
    hasher: DataHasher,
    writer: shards.ShardWriter | None,
    first_images: list[np.ndarray] | None,
    preview: int,
) -> Iterator[np.ndarray]:
    """The split's npz rows, a block at a time; every image of the split goes to the hash, the shard
    writer and (up to ``preview``) ``first_images`` on the way."""
    hasher.begin(split.name, "images", np.uint8, (len(split.idx), *pixels.shape))
    in_npz = np.zeros(len(split.idx), dtype=bool)
    in_npz[split.npz_rows] = True
    done = 0
    for block in pixels.blocks(split.idx):
        hasher.update(block)
        if writer is not None:
            writer.add(block)
        if first_images is not None and len(first_images) < preview:
            first_images.extend(block[: preview - len(first_images)].copy())  # not a view of the block
        yield block[in_npz[done : done + len(block)]]
        done += len(block)


def load_summary(data_dir: str | Path) -> dict:
    """``<data_dir>/summary.json`` as the prepare stage wrote it; a clear error when it is missing."""
    path = Path(data_dir) / "summary.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResganError(f"{path} not found: run the prepare stage first") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ResganError(f"{path} is unreadable: {error}") from None


def data_name(summary: dict) -> str:
    """A short name for the prepared data that ``summary`` (``summary.json``) describes: its source folder's
    name (``mnist`` for ``data/raw/mnist``), the Keras data set's or the built-in source's name."""
    source = summary.get("source") or "prepared"
    if source in ("folder", "idx", "npz") and Path(summary.get("path") or "").name:
        return Path(summary["path"]).name
    return str(summary.get("dataset") or source) if source == "keras" else str(source)
