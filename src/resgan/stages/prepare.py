"""The prepare stage: a source in, ``train.npz``/``test.npz`` + manifest, summary and preview out.

Steps: load the source (:mod:`resgan.data.sources`), convert each image (:mod:`resgan.data.images`;
bad files are skipped with a reason, or end the run with ``on_bad_image: fail``), drop exact
duplicates of converted pixels (first one kept), stop at ``max_images`` kept images, split
train/test deterministically (stratified by label when possible) and write everything atomically.

Labels: when no image has one, the npz files hold no ``labels``. When only some do (a folder with
class sub-folders and loose files in its root), the unlabelled ones get label ``-1``.

Memory: converted pixels never pile up in memory. Each one goes to a temporary pixel file beside the
outputs as it is made; after the split, the outputs (the npz files, the train shards of
:mod:`resgan.data.shards` when ``shard_size > 0``, and the data hash) are written from that file
a block at a time. What still grows with the data set is per-image bookkeeping (the source's item
list, one SHA-256 per image, the manifest), about 1 KB per image for a folder, and, for the
in-memory sources (digits, idx, npz, keras), the source arrays themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from resgan import io
from resgan.config import PrepareParams
from resgan.data import shards
from resgan.data.images import RESIZE_METHOD, BadImage, ImageSpec, convert, from_array, open_image
from resgan.data.sources import RawData, RawItem, load_source
from resgan.errors import ResganError

UNLABELLED = -1
PREVIEW_IMAGES = 64
BLOCK_BYTES = 4 << 20  # pixels read back from the temporary pixel file per block (a few copies live at once)
SPILL_PREFIX = ".prepare-pixels-"


class PrepareError(ResganError):
    """The source gave no usable data, too little of it, or a bad file under on_bad_image: fail."""


def split_indices(labels: np.ndarray | None, n: int, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Split ``range(n)`` into sorted train and test indices; returns ``(train, test, stratified)``.

    The test split holds ``ceil(test_fraction * n)`` images (scikit-learn's rule), clamped so that
    both splits keep at least one. The split is stratified by ``labels`` when every class has two or
    more images and each split can hold one of every class; otherwise it is a plain seeded shuffle.
    """
    from sklearn.model_selection import train_test_split

    if n < 2:
        raise PrepareError(f"need at least 2 images for a train and a test split, got {n}")
    n_test = min(max(1, math.ceil(test_fraction * n)), n - 1)
    stratify = None
    if labels is not None:
        counts = Counter(labels.tolist())
        if min(counts.values()) >= 2 and min(n_test, n - n_test) >= len(counts):
            stratify = labels
    train, test = train_test_split(np.arange(n), test_size=n_test, random_state=seed, shuffle=True,
                                   stratify=stratify)
    return np.sort(train), np.sort(test), stratify is not None


def data_hash(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> str:
    """sha256 over both splits' arrays (images, then labels when present), each preceded by its
    name, dtype and shape, so that equal bytes in another shape give another hash."""
    digest = hashlib.sha256()
    for split, arrays in (("train", train), ("test", test)):
        for key in ("images", "labels"):
            if key in arrays:
                array = np.ascontiguousarray(arrays[key])
                digest.update(f"{split}/{key}:{array.dtype.str}:{array.shape};".encode())
                digest.update(array.tobytes())
    return digest.hexdigest()


def _pixels_of(item: RawItem, spec: ImageSpec) -> np.ndarray:
    img = open_image(item.path, spec.max_pixels) if item.path is not None else from_array(item.pixels)
    return convert(img, spec)


def _fail(entry: dict[str, str]) -> PrepareError:
    return PrepareError(f"bad input {entry['path']}: {entry['reason']} (prepare.on_bad_image is 'fail'; "
                        "set it to 'skip' to leave such files out)")


def _describe(params: PrepareParams) -> str:
    if params.source == "digits":
        return "digits"
    if params.source == "keras":
        return f"keras {params.dataset}"
    return f"{params.source} {params.path}"


class _PixelFile:
    """Converted images appended one at a time to a temporary file in ``folder`` (created on the
    first image, deleted by :meth:`close`), read back a block at a time with ``pread``: the page
    cache holds them, not this process."""

    def __init__(self, folder: Path, shape: tuple[int, int, int]):
        self.folder, self.shape = folder, shape
        self.row = int(np.prod(shape))
        self.count = 0
        self.path: Path | None = None
        self._handle = None

    def append(self, pixels: np.ndarray) -> None:
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

    def blocks(self, idx: np.ndarray):
        """The images at the sorted indices ``idx``, in that order, in blocks of about BLOCK_BYTES."""
        self._handle.flush()
        per_block = max(1, BLOCK_BYTES // self.row)
        for start in range(0, self.count, per_block):
            lo, hi = np.searchsorted(idx, [start, min(start + per_block, self.count)])
            if lo < hi:
                first = int(idx[lo])
                yield self.read(first, int(idx[hi - 1]) + 1)[idx[lo:hi] - first]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _member(name: str) -> zipfile.ZipInfo:
    """A compressed zip member with a fixed date, so that the same data gives the same bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _save_npz(path: Path, count: int, shape: tuple[int, int, int], chunks, **arrays: np.ndarray) -> None:
    """Like ``io.save_npz`` (compressed, atomic), with ``images`` (``count`` uint8 images of ``shape``)
    written from an iterable of chunks, so the whole array is never in memory."""
    with io.atomic_path(path, suffix=".npz") as tmp, \
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        written = 0
        with archive.open(_member("images.npy"), "w", force_zip64=True) as handle:
            np.lib.format.write_array_header_1_0(
                handle, {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": (count, *shape)})
            for chunk in chunks:
                handle.write(np.ascontiguousarray(chunk, dtype=np.uint8))  # no bytes copy: the buffer itself
                written += len(chunk)
        if written != count:
            raise PrepareError(f"{path}: wrote {written} images, expected {count}")
        for name, array in arrays.items():
            with archive.open(_member(f"{name}.npy"), "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


def _npz_rows(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (sorted) of a split's images that go into its npz: all, or a seeded sample of ``cap``."""
    if not cap or n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def run(params: PrepareParams, out_dir: Path) -> dict:
    """Prepare the data described by ``params`` into ``out_dir``; returns the summary dict.

    Writes ``train.npz`` and ``test.npz`` (``images`` uint8 NHWC, ``labels`` int64 and
    ``class_names`` when known), ``shards/`` (the train split as shard files when
    ``shard_size > 0``; always its ``index.json``), ``manifest.csv``, ``summary.json`` and
    ``preview.png``. Raises :class:`PrepareError` (a ResganError) for an empty or too small result,
    or for the first bad file when ``on_bad_image`` is ``fail``.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    for stale in out_dir.glob(f"{SPILL_PREFIX}*") if not created else ():
        stale.unlink(missing_ok=True)  # left by a killed run
    spec = ImageSpec.from_params(params)
    pixels = _PixelFile(out_dir, spec.shape)
    try:
        return _run(params, out_dir, spec, pixels)
    finally:
        pixels.close()
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a failed run leaves nothing behind


def _run(params: PrepareParams, out_dir: Path, spec: ImageSpec, pixels: _PixelFile) -> dict:
    import pandas as pd

    raw: RawData = load_source(params)
    skipped = list(raw.skipped)
    if skipped and params.on_bad_image == "fail":
        raise _fail(skipped[0])

    kept: list[RawItem] = []
    hashes: list[str] = []
    seen: set[str] = set()
    duplicates = 0
    considered = len(raw.skipped)  # inputs looked at; fewer than all when max_images stops early
    for item in raw.items:
        if params.max_images and len(kept) >= params.max_images:
            break
        considered += 1
        try:
            image = _pixels_of(item, spec)
        except BadImage as bad:
            entry = {"path": item.ref, "reason": bad.reason}
            if params.on_bad_image == "fail":
                raise _fail(entry) from None
            skipped.append(entry)
            continue
        digest = hashlib.sha256(image.tobytes()).hexdigest()
        if digest in seen:
            duplicates += 1  # the first copy stays; later copies (even with another label) go
            continue
        seen.add(digest)
        pixels.append(image)
        kept.append(item)
        hashes.append(digest)
    del seen

    where = _describe(params)
    n = pixels.count
    if not n:
        if not raw.items and not skipped:
            raise PrepareError(f"no images found in {where}")
        first = f" (first: {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
        raise PrepareError(f"no usable images in {where}: {len(skipped)} input(s) skipped, "
                           f"{duplicates} duplicate(s){first}")

    has_labels = any(item.label is not None for item in kept)
    labels = (np.array([UNLABELLED if item.label is None else item.label for item in kept], dtype=np.int64)
              if has_labels else None)
    class_names = raw.class_names if has_labels else None
    train_idx, test_idx, stratified = split_indices(labels, n, params.test_fraction, params.seed)
    splits = {"train": train_idx, "test": test_idx}
    rng = np.random.default_rng(params.seed)
    npz_rows = {name: _npz_rows(len(idx), params.npz_max_images, rng) for name, idx in splits.items()}

    split_of = np.empty(n, dtype=object)
    row_in_split = np.empty(n, dtype=np.int64)
    row_in_npz = pd.array([None] * n, dtype="Int64")
    for name, idx in splits.items():
        split_of[idx] = name
        row_in_split[idx] = np.arange(len(idx))
        row_in_npz[idx[npz_rows[name]]] = np.arange(len(npz_rows[name]))
    manifest = pd.DataFrame({
        "index": np.arange(n),
        "source": [item.ref for item in kept],
        "label": pd.array([item.label for item in kept], dtype="Int64"),  # empty when unknown
        "split": split_of,
        "split_index": row_in_split,  # position in the split: the order of the shards and, uncapped, of <split>.npz
        "npz_index": row_in_npz,  # row in <split>.npz; empty when prepare.npz_max_images left the image out
        "sha256": hashes,
    })
    del kept, hashes, split_of, row_in_split, row_in_npz

    def class_counts(idx: np.ndarray) -> dict[str, int]:
        counts = Counter(labels[idx].tolist())
        named = class_names or []
        return {("unlabelled" if label == UNLABELLED else named[label] if 0 <= label < len(named) else str(label)): n
                for label, n in sorted(counts.items())}

    # The data files, one split after the other, from the pixel file a block at a time. The data hash
    # is data_hash() of the full splits (the training data, whatever the npz cap), computed on the way.
    shard_dir = out_dir / shards.FOLDER
    written_shards: list[shards.Shard] = []
    preview: list[np.ndarray] = []
    digest = hashlib.sha256()
    for name, idx in splits.items():
        in_npz = np.zeros(len(idx), dtype=bool)
        in_npz[npz_rows[name]] = True
        extra: dict[str, np.ndarray] = {}
        if labels is not None:
            extra["labels"] = labels[idx][npz_rows[name]]
        if class_names:
            extra["class_names"] = np.array(class_names, dtype=str)
        writer = (shards.ShardWriter(shard_dir, len(idx), params.shard_size, spec.shape, name)
                  if name == shards.SPLIT and params.shard_size else None)

        def chunks(idx=idx, in_npz=in_npz, writer=writer, name=name):
            digest.update(f"{name}/images:{np.dtype(np.uint8).str}:{(len(idx), *spec.shape)};".encode())
            done = 0
            for block in pixels.blocks(idx):
                digest.update(block)  # C-contiguous: hashed in place
                if writer is not None:
                    writer.add(block)
                if name == "train" and len(preview) < PREVIEW_IMAGES:
                    preview.extend(block[:PREVIEW_IMAGES - len(preview)].copy())  # not a view of the block
                yield block[in_npz[done:done + len(block)]]
                done += len(block)

        with writer if writer is not None else contextlib.nullcontext():
            _save_npz(out_dir / f"{name}.npz", len(npz_rows[name]), spec.shape, chunks(), **extra)
        if writer is not None:
            written_shards = writer.shards
        if labels is not None:
            array = labels[idx]
            digest.update(f"{name}/labels:{array.dtype.str}:{array.shape};".encode())
            digest.update(array.tobytes())
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards.write_index(shard_dir, spec.shape, written_shards, params.shard_size)

    summary = {
        "source": params.source,
        "path": params.path if params.source in ("folder", "idx", "npz") else None,
        "dataset": params.dataset if params.source == "keras" else None,
        "image_size": params.image_size,
        "channels": params.channels,
        "fit": params.fit,
        "resize_method": RESIZE_METHOD[params.fit],
        "alpha_background": "black",
        "seed": params.seed,
        "test_fraction": params.test_fraction,
        "stratified": stratified,
        "max_images": params.max_images,
        "inputs": considered,
        "counts": {"train": int(len(train_idx)), "test": int(len(test_idx)), "total": int(n)},
        "npz_counts": {name: int(len(rows)) for name, rows in npz_rows.items()},
        "shards": {"shard_size": params.shard_size, "files": len(written_shards),
                   "images": int(sum(s.count for s in written_shards))},
        "class_names": class_names,
        "class_counts": ({"train": class_counts(train_idx), "test": class_counts(test_idx)}
                         if labels is not None else None),
        "skipped": skipped,
        "duplicates": duplicates,
        "data_hash": digest.hexdigest(),
    }

    # Summary last: a summary.json on disk means the data files beside it are complete.
    with io.atomic_path(out_dir / "manifest.csv") as tmp:
        manifest.to_csv(tmp, index=False)  # written in chunks of rows, not built as one string first
    io.save_grid(out_dir / "preview.png", np.stack(preview))
    io.write_json(out_dir / "summary.json", summary)
    _report(summary, where, out_dir)
    return summary


def _report(summary: dict, where: str, out_dir: Path) -> None:
    counts = summary["counts"]
    size = f"{summary['image_size']}x{summary['image_size']}x{summary['channels']}"
    classes = f", {len(summary['class_names'])} classes" if summary["class_names"] else ", unlabelled"
    files = summary["shards"]["files"]
    print(f"prepare: {where} -> {out_dir}: {counts['train']} train + {counts['test']} test images ({size}"
          f"{classes}{', stratified' if summary['stratified'] else ''}); "
          f"{summary['duplicates']} duplicate(s) dropped, {len(summary['skipped'])} input(s) skipped"
          + (f"; train split in {files} shard(s)" if files else ""))
    npz = summary["npz_counts"]
    if (npz["train"], npz["test"]) != (counts["train"], counts["test"]):
        print(f"  train.npz / test.npz hold a sample of {npz['train']} / {npz['test']} images "
              f"(prepare.npz_max_images)")
    for entry in summary["skipped"][:10]:
        print(f"  skipped {entry['path']}: {entry['reason']}")
    if len(summary["skipped"]) > 10:
        print(f"  ... and {len(summary['skipped']) - 10} more (see summary.json)")
