"""The prepare stage: a source in, ``train.npz``/``test.npz`` + manifest, summary and preview out.

Steps: load the source (:mod:`resgan.data.sources`), convert each image (:mod:`resgan.data.images`;
bad files are skipped with a reason, or end the run with ``on_bad_image: fail``), drop exact
duplicates of converted pixels (first one kept), stop at ``max_images`` kept images, split
train/test deterministically (stratified by label when possible) and write everything atomically.

Labels: when no image has one, the npz files hold no ``labels``. When only some do (a folder with
class sub-folders and loose files in its root), the unlabelled ones get label ``-1``.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np

from resgan import io
from resgan.config import PrepareParams
from resgan.data.images import RESIZE_METHOD, BadImage, ImageSpec, convert, from_array, open_image
from resgan.data.sources import RawData, RawItem, load_source
from resgan.errors import ResganError

UNLABELLED = -1
PREVIEW_IMAGES = 64


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


def run(params: PrepareParams, out_dir: Path) -> dict:
    """Prepare the data described by ``params`` into ``out_dir``; returns the summary dict.

    Writes ``train.npz`` and ``test.npz`` (``images`` uint8 NHWC, ``labels`` int64 and
    ``class_names`` when known), ``manifest.csv``, ``summary.json`` and ``preview.png``.
    Raises :class:`PrepareError` (a ResganError) for an empty or too small result, or for the first
    bad file when ``on_bad_image`` is ``fail``.
    """
    import pandas as pd

    out_dir = Path(out_dir)
    spec = ImageSpec.from_params(params)
    raw: RawData = load_source(params)
    skipped = list(raw.skipped)
    if skipped and params.on_bad_image == "fail":
        raise _fail(skipped[0])

    images: list[np.ndarray] = []
    kept: list[RawItem] = []
    hashes: list[str] = []
    seen: set[str] = set()
    duplicates = 0
    considered = len(raw.skipped)  # inputs looked at; fewer than all when max_images stops early
    for item in raw.items:
        if params.max_images and len(images) >= params.max_images:
            break
        considered += 1
        try:
            pixels = _pixels_of(item, spec)
        except BadImage as bad:
            entry = {"path": item.ref, "reason": bad.reason}
            if params.on_bad_image == "fail":
                raise _fail(entry) from None
            skipped.append(entry)
            continue
        digest = hashlib.sha256(pixels.tobytes()).hexdigest()
        if digest in seen:
            duplicates += 1  # the first copy stays; later copies (even with another label) go
            continue
        seen.add(digest)
        images.append(pixels)
        kept.append(item)
        hashes.append(digest)

    where = _describe(params)
    if not images:
        if not raw.items and not skipped:
            raise PrepareError(f"no images found in {where}")
        first = f" (first: {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
        raise PrepareError(f"no usable images in {where}: {len(skipped)} input(s) skipped, "
                           f"{duplicates} duplicate(s){first}")

    all_images = np.stack(images)
    has_labels = any(item.label is not None for item in kept)
    labels = (np.array([UNLABELLED if item.label is None else item.label for item in kept], dtype=np.int64)
              if has_labels else None)
    class_names = raw.class_names if has_labels else None
    train_idx, test_idx, stratified = split_indices(labels, len(all_images), params.test_fraction, params.seed)

    splits: dict[str, dict[str, np.ndarray]] = {}
    for name, idx in (("train", train_idx), ("test", test_idx)):
        arrays = {"images": all_images[idx]}
        if labels is not None:
            arrays["labels"] = labels[idx]
        if class_names:
            arrays["class_names"] = np.array(class_names, dtype=str)
        splits[name] = arrays

    split_of = np.empty(len(all_images), dtype=object)
    row_in_split = np.empty(len(all_images), dtype=np.int64)
    for name, idx in (("train", train_idx), ("test", test_idx)):
        split_of[idx] = name
        row_in_split[idx] = np.arange(len(idx))
    manifest = pd.DataFrame({
        "index": np.arange(len(all_images)),
        "source": [item.ref for item in kept],
        "label": pd.array([item.label for item in kept], dtype="Int64"),  # empty when unknown
        "split": split_of,
        "split_index": row_in_split,  # row in <split>.npz
        "sha256": hashes,
    })

    def class_counts(idx: np.ndarray) -> dict[str, int]:
        counts = Counter(labels[idx].tolist())
        named = class_names or []
        return {("unlabelled" if label == UNLABELLED else named[label] if 0 <= label < len(named) else str(label)): n
                for label, n in sorted(counts.items())}

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
        "counts": {"train": int(len(train_idx)), "test": int(len(test_idx)), "total": int(len(all_images))},
        "class_names": class_names,
        "class_counts": ({"train": class_counts(train_idx), "test": class_counts(test_idx)}
                         if labels is not None else None),
        "skipped": skipped,
        "duplicates": duplicates,
        "data_hash": data_hash(splits["train"], splits["test"]),
    }

    # Summary last: a summary.json on disk means the data files beside it are complete.
    io.save_npz(out_dir / "train.npz", **splits["train"])
    io.save_npz(out_dir / "test.npz", **splits["test"])
    io.write_bytes(out_dir / "manifest.csv", manifest.to_csv(index=False).encode())
    io.save_grid(out_dir / "preview.png", splits["train"]["images"][:PREVIEW_IMAGES])
    io.write_json(out_dir / "summary.json", summary)
    _report(summary, where, out_dir)
    return summary


def _report(summary: dict, where: str, out_dir: Path) -> None:
    counts = summary["counts"]
    size = f"{summary['image_size']}x{summary['image_size']}x{summary['channels']}"
    classes = f", {len(summary['class_names'])} classes" if summary["class_names"] else ", unlabelled"
    print(f"prepare: {where} -> {out_dir}: {counts['train']} train + {counts['test']} test images ({size}"
          f"{classes}{', stratified' if summary['stratified'] else ''}); "
          f"{summary['duplicates']} duplicate(s) dropped, {len(summary['skipped'])} input(s) skipped")
    for entry in summary["skipped"][:10]:
        print(f"  skipped {entry['path']}: {entry['reason']}")
    if len(summary["skipped"]) > 10:
        print(f"  ... and {len(summary['skipped']) - 10} more (see summary.json)")
