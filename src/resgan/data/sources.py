"""Data sources for the prepare stage: one loader per ``prepare.source``.

Each loader returns a :class:`RawData`: items in a deterministic order, each either a file to open
(``folder``) or a uint8 pixel array (``digits``, ``idx``, ``npz``, ``keras``), with a label when one
is known. Nothing is converted here; :mod:`resgan.data.images` does that, per item, so that one bad
file is one skipped entry. Only the ``keras`` source imports TensorFlow, lazily.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits as sklearn_digits

from resgan.errors import ResganError

FALLBACK_HINT = "use prepare.source: idx, folder or npz with files you have locally"

KERAS_CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}

# IDX element types: the third byte of the magic number -> big-endian numpy dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True, slots=True)  # slots: one per input image, a large folder has millions
class RawItem:
    """One input image before conversion: a file (``path``) or a uint8 array (``pixels``)."""

    ref: str  # what the manifest and skip list call it: a path, or "digits:<i>", "<file>:<i>"
    label: int | None = None  # None: unknown
    path: Path | None = None
    pixels: np.ndarray | None = None


@dataclass
class RawData:
    """A source's items in deterministic order, its class names, and inputs it could not even list."""

    items: list[RawItem]
    class_names: list[str] | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)  # {path, reason} found while listing


class SourceError(ResganError):
    """The configured source is missing, empty, malformed or cannot be downloaded."""


def load_source(params) -> RawData:
    """Load the source named by ``params.source`` (a :class:`resgan.config.PrepareParams`).

    ``params.max_images`` is applied by the prepare stage, after bad files and duplicates are
    dropped, so that it counts images that are actually kept.
    """
    if params.source == "digits":
        return load_digits()
    if params.source == "keras":
        return load_keras(params.dataset)
    path = Path(params.path)
    if not path.exists():
        raise SourceError(f"prepare.path: {path} does not exist (prepare.source is {params.source!r})")
    if params.source == "folder":
        return load_folder(path, labels_from_folders=params.labels_from_folders)
    if params.source == "idx":
        return load_idx(path)
    if params.source == "npz":
        return load_npz(path)
    raise SourceError(f"prepare.source: unknown source {params.source!r}")


def describe_source(params) -> str:
    """The source as messages name it: ``digits``, ``keras mnist``, ``folder data/raw``."""
    if params.source == "digits":
        return "digits"
    if params.source == "keras":
        return f"keras {params.dataset}"
    return f"{params.source} {params.path}"


def _array_items(images: np.ndarray, labels: np.ndarray | None, prefix: str) -> list[RawItem]:
    """Items that view rows of ``images`` (no copies)."""
    return [
        RawItem(ref=f"{prefix}:{i}", label=None if labels is None else int(labels[i]), pixels=images[i])
        for i in range(len(images))
    ]


# ---------------------------------------------------------------------------------------- digits


def load_digits() -> RawData:
    """scikit-learn's bundled 8x8 digits (1,797 images, labels 0-9), scaled from 0..16 to 0..255."""
    digits = sklearn_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 16 -> 255 exactly
    labels = digits.target.astype(np.int64)
    return RawData(_array_items(images, labels, "digits"), class_names=[str(d) for d in range(10)])


# ---------------------------------------------------------------------------------------- folder


def _ignored(name: str) -> bool:
    """Files that live beside images but are never images: dot-files, DVC pointers, READMEs."""
    return name.startswith(".") or name.endswith(".dvc") or name.lower().startswith("readme")


def load_folder(root: str | Path, labels_from_folders: bool = True) -> RawData:
    """Every file under ``root`` (recursively, sorted by relative path) as an item to open.

    With ``labels_from_folders`` the first folder below ``root`` names the class (sorted names ->
    0..K-1, also for images deeper inside it); files directly in ``root`` get no label. Hidden
    files and folders, ``*.dvc`` files and READMEs are ignored. Symlinked folders are not followed
    (no loops) and are listed as skipped, as are folders that cannot be read.
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"prepare.path: {root} is not a folder (prepare.source is 'folder')")
    skipped: list[dict[str, str]] = []

    def on_error(error: OSError) -> None:
        where = Path(error.filename) if error.filename else root
        if isinstance(error, PermissionError):
            reason = "permission denied"
        else:
            reason = f"cannot list folder ({error.strerror or error})"
        skipped.append({"path": _shown(root, where), "reason": reason})

    # Relative POSIX strings, one pathlib call per folder rather than several per file: listing 50,000
    # files took 8.6 of a profiled 93 s with Path objects per file.
    shown_root = root.as_posix()
    prefix = "" if shown_root == "." else shown_root.rstrip("/") + "/"
    relative: list[str] = []
    for folder, dirs, names in os.walk(root, onerror=on_error, followlinks=False):
        folder_path = Path(folder)
        for name in list(dirs):
            if _ignored(name):
                dirs.remove(name)
            elif (folder_path / name).is_symlink():
                # os.walk would not enter it anyway (followlinks=False); say so instead of dropping it.
                skipped.append({"path": _shown(root, folder_path / name), "reason": "symlinked folder (not followed)"})
        dirs.sort()
        inside = folder_path.relative_to(root).as_posix()
        here = "" if inside == "." else inside + "/"
        relative.extend(here + name for name in names if not _ignored(name))
    relative.sort()

    class_names: list[str] | None = None
    labels: list[int | None] = [None] * len(relative)
    if labels_from_folders:
        tops = [rel.split("/") for rel in relative]
        class_names = sorted({parts[0] for parts in tops if len(parts) > 1}) or None
        if class_names:
            index = {name: i for i, name in enumerate(class_names)}
            labels = [index[parts[0]] if len(parts) > 1 else None for parts in tops]
    items = [RawItem(ref=prefix + rel, label=label, path=root / rel) for rel, label in zip(relative, labels)]
    skipped.sort(key=lambda entry: entry["path"])
    return RawData(items, class_names=class_names, skipped=skipped)


def _shown(root: Path, path: Path) -> str:
    """``path`` as the user configured it (root joined with the relative part), in POSIX form."""
    try:
        return (root / path.relative_to(root)).as_posix()
    except ValueError:
        return path.as_posix()


# ------------------------------------------------------------------------------------------- idx


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (as used by MNIST), gzip-compressed or raw; returns a native-endian array.

    The header is the magic ``00 00 <type> <ndim>`` followed by ``ndim`` big-endian uint32 sizes;
    the data must be exactly the size the header announces.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise SourceError(f"IDX file {path}: cannot read ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise SourceError(
            f"IDX file {path}: bad magic number {raw[:4].hex() or '(empty)'} "
            "(expected 00 00 <type 08/09/0b/0c/0d/0e> <ndim>)"
        )
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    if ndim == 0:
        raise SourceError(f"IDX file {path}: header declares 0 dimensions")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise SourceError(f"IDX file {path}: header truncated ({len(raw)} bytes, needs {header_end})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise SourceError(
            f"IDX file {path}: size mismatch: header says {shape} x {dtype.itemsize} bytes = "
            f"{expected} bytes of data, the file has {len(raw) - header_end}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _labels_file_for(images_file: Path) -> Path | None:
    """``train-images-idx3-ubyte[.gz]`` -> the ``train-labels-idx1-ubyte[.gz]`` beside it, if any."""
    name = images_file.name.replace("images", "labels").replace("idx3", "idx1")
    stem = name[:-3] if name.endswith(".gz") else name
    for candidate in (images_file.with_name(stem), images_file.with_name(stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_idx(path: str | Path) -> RawData:
    """MNIST-format IDX: a folder with ``*images*idx3*`` (and optional ``*labels*idx1*``) files, or
    one images file. Several image files (train + t10k) are concatenated in name order; the
    prepare stage makes its own split. Images must be unsigned bytes, (N, H, W) or (N, H, W, C).
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and re.search(r"images.*idx3", p.name))
        names = {p.name for p in found}
        # an extracted copy next to its .gz would count every image twice: keep the extracted one
        image_files = [p for p in found if not (p.name.endswith(".gz") and p.name[:-3] in names)]
        if not image_files:
            raise SourceError(
                f"prepare.path: no *images*idx3* file in {path} (expected e.g. train-images-idx3-ubyte.gz)"
            )
    else:
        image_files = [path]

    items: list[RawItem] = []
    for images_file in image_files:
        images = read_idx(images_file)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise SourceError(
                f"IDX file {images_file}: expected unsigned-byte images (N, H, W[, C]), "
                f"got {images.dtype} with shape {images.shape}"
            )
        labels_file = _labels_file_for(images_file)
        labels = None
        if labels_file is not None:
            labels = read_idx(labels_file)
            if labels.ndim != 1 or len(labels) != len(images):
                raise SourceError(
                    f"IDX file {labels_file}: {labels.shape[0] if labels.ndim else 0} labels "
                    f"(shape {labels.shape}) for {len(images)} images in {images_file.name}"
                )
            labels = labels.astype(np.int64)
        items += _array_items(images, labels, images_file.name)
    class_names = _names_for(items)
    return RawData(items, class_names=class_names)


def _names_for(items: list[RawItem]) -> list[str] | None:
    """Class names for integer labels 0..K-1 that carry no names of their own: "0", "1", ..."""
    known = [item.label for item in items if item.label is not None]
    if not known:
        return None
    return [str(i) for i in range(max(known) + 1)] if min(known) >= 0 else None


# ------------------------------------------------------------------------------------------- npz


def load_npz(path: str | Path) -> RawData:
    """An ``.npz`` holding ``images`` (N, H, W[, C]) as uint8 or float in [0, 1], optional
    ``labels`` (N,) as integers or strings, and optional ``class_names``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError) as error:
        raise SourceError(f"npz file {path}: cannot read ({error})") from None
    except Exception as error:  # noqa: BLE001 - zipfile raises BadZipFile and friends
        raise SourceError(f"npz file {path}: cannot read ({type(error).__name__}: {error})") from None
    if "images" not in arrays:
        raise SourceError(f"npz file {path}: no 'images' array (found: {', '.join(arrays) or 'nothing'})")
    images = arrays["images"]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
        raise SourceError(
            f"npz file {path}: 'images' must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4; got shape {images.shape}"
        )
    if np.issubdtype(images.dtype, np.floating):
        lo, hi = float(np.nanmin(images)), float(np.nanmax(images))
        if np.isnan(images).any() or lo < 0.0 or hi > 1.0:
            raise SourceError(
                f"npz file {path}: float 'images' must lie in [0, 1] (found {lo:g} .. {hi:g}"
                f"{', NaN' if np.isnan(images).any() else ''})"
            )
        images = np.rint(images * 255.0).astype(np.uint8)
    elif images.dtype != np.uint8:
        raise SourceError(f"npz file {path}: 'images' must be uint8 or float in [0, 1], got {images.dtype}")

    labels, class_names = None, None
    if "labels" in arrays:
        labels = arrays["labels"].reshape(-1) if arrays["labels"].ndim == 2 else arrays["labels"]
        if labels.shape != (len(images),):
            raise SourceError(
                f"npz file {path}: 'labels' has shape {arrays['labels'].shape}, expected ({len(images)},)"
            )
        if labels.dtype.kind in "US":  # class names as strings: sorted names -> 0..K-1
            class_names = sorted({str(v) for v in labels})
            index = {name: i for i, name in enumerate(class_names)}
            labels = np.array([index[str(v)] for v in labels], dtype=np.int64)
        elif labels.dtype.kind in "iu":
            labels = labels.astype(np.int64)
        else:
            raise SourceError(f"npz file {path}: 'labels' must be integers or strings, got {labels.dtype}")
    if "class_names" in arrays and labels is not None:
        class_names = [str(name) for name in arrays["class_names"]]
    items = _array_items(images, labels, path.name)
    return RawData(items, class_names=class_names or _names_for(items))


# ----------------------------------------------------------------------------------------- keras


def load_keras(dataset: str) -> RawData:
    """``keras.datasets.<dataset>.load_data()`` (train then test, re-split later by the stage).

    Downloads into Keras' cache on first use; without a network that fails with a
    :class:`SourceError` that suggests the offline sources.
    """
    if dataset not in KERAS_CLASS_NAMES:
        raise SourceError(
            f"prepare.dataset: unknown Keras dataset {dataset!r}; use one of {', '.join(KERAS_CLASS_NAMES)}"
        )
    import keras  # lazy: TensorFlow costs seconds and only this source needs it

    loader = getattr(keras.datasets, dataset).load_data
    (x_train, y_train), (x_test, y_test) = call_keras_loader(loader, dataset)
    images = np.concatenate([x_train, x_test]).astype(np.uint8, copy=False)
    labels = np.concatenate([np.ravel(y_train), np.ravel(y_test)]).astype(np.int64)
    split = ["train"] * len(x_train) + ["test"] * len(x_test)
    offset = [0] * len(x_train) + [len(x_train)] * len(x_test)
    items = [
        RawItem(ref=f"keras:{dataset}:{split[i]}:{i - offset[i]}", label=int(labels[i]), pixels=images[i])
        for i in range(len(images))
    ]
    return RawData(items, class_names=list(KERAS_CLASS_NAMES[dataset]))


def call_keras_loader(loader, dataset: str):
    """Call a ``load_data`` function; any failure (usually no network) becomes a SourceError."""
    try:
        return loader()
    except Exception as error:  # noqa: BLE001 - Keras raises a bare Exception for a failed download
        raise SourceError(
            f"could not load Keras dataset {dataset!r} (no network? the first use downloads it): "
            f"{error}. Download it elsewhere, or {FALLBACK_HINT}."
        ) from None
