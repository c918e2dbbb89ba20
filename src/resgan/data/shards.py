"""Shard files of the train split, for data sets larger than memory.

With ``prepare.shard_size > 0`` the prepare stage writes the train split, in split order, as
``<out>/shards/train-00000-of-000NN.bin``: each file is a plain run of fixed-length records, one
image each, ``H * W * C`` uint8 bytes in NHWC order, no header (``tf.data.FixedLengthRecordDataset``
and ``np.fromfile`` both read it). ``shards/index.json`` describes them: image shape, count, and per
file its image count, byte size and SHA-256. With shards off the folder holds only an index that
lists no shards, so that DVC always finds the stage output.

Readers trust only the index: :func:`verify` checks every listed file (present, right size, right
SHA-256) and raises one :class:`ShardError` naming the first bad file. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resgan import files
from resgan.errors import ResganError

FOLDER = "shards"
INDEX = "index.json"
FORMAT = "resgan-shards/1"
SPLIT = "train"


class ShardError(ResganError):
    """The shard index is missing or malformed, or a shard file is missing, truncated or altered."""


def shard_name(split: str, i: int, total: int) -> str:
    return f"{split}-{i:05d}-of-{total:05d}.bin"


@dataclass(frozen=True)
class Shard:
    file: str  # name inside the shard folder
    count: int  # images
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardIndex:
    folder: Path
    split: str
    shape: tuple[int, int, int]  # H, W, C
    count: int  # images in all shards
    shards: tuple[Shard, ...]

    @property
    def record_bytes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def paths(self) -> list[Path]:
        return [self.folder / shard.file for shard in self.shards]


class ShardWriter:
    """Write ``total`` images, fed in chunks through :meth:`add`, as ``ceil(total / shard_size)``
    shard files. Each file is written to a temporary name and renamed when complete; leaving the
    ``with`` block by an exception removes the unfinished file. Memory: one chunk, never a shard."""

    def __init__(self, folder: Path, total: int, shard_size: int, shape: tuple[int, int, int], split: str = SPLIT):
        if shard_size < 1:
            raise ValueError("shard_size must be positive")
        self.folder, self.total, self.shard_size, self.shape, self.split = Path(folder), total, shard_size, shape, split
        self.n_shards = math.ceil(total / shard_size)
        self.record = int(np.prod(shape))
        self.shards: list[Shard] = []
        self.written = 0
        self._stack: contextlib.ExitStack | None = None
        self._handle = None
        self._digest = None
        self._in_shard = 0

    def __enter__(self) -> ShardWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, kind, value, traceback) -> None:
        short = None
        if kind is None and self.written != self.total:
            short = ValueError(f"ShardWriter got {self.written} images, expected {self.total}")
            kind, value, traceback = ValueError, short, None
        if self._stack is not None:  # a shard still open: on an error, atomic_path removes its temporary file
            stack, self._stack = self._stack, None
            stack.__exit__(kind, value, traceback)
        if short is not None:
            raise short

    def _open(self) -> None:
        name = shard_name(self.split, len(self.shards), self.n_shards)
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(files.atomic_path(self.folder / name, suffix=".tmp"))
        self._handle = self._stack.enter_context(open(tmp, "wb"))
        self._name, self._digest, self._in_shard = name, hashlib.sha256(), 0

    def _close(self) -> None:
        stack, self._stack = self._stack, None
        stack.close()  # closes the file, then fsyncs and renames it into place
        self.shards.append(Shard(self._name, self._in_shard, self._in_shard * self.record, self._digest.hexdigest()))

    def add(self, images: np.ndarray) -> None:
        """Append uint8 NHWC ``images`` (of the writer's shape) in order."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.shape[1:] != self.shape:
            raise ValueError(f"images of shape {images.shape[1:]}, shards hold {self.shape}")
        if self.written + len(images) > self.total:
            raise ValueError(f"more than the {self.total} announced images")
        start = 0
        while start < len(images):
            if self._stack is None:
                self._open()
            take = min(self.shard_size - self._in_shard, len(images) - start)
            data = images[start : start + take]  # a contiguous view: written and hashed without a copy
            self._handle.write(data)
            self._digest.update(data)
            self._in_shard += take
            self.written += take
            start += take
            if self._in_shard == self.shard_size or self.written == self.total:
                self._close()


def write_index(
    folder: Path, shape: tuple[int, int, int], shards: list[Shard], shard_size: int, split: str = SPLIT
) -> None:
    """Write ``index.json`` (atomically), then delete every other file in ``folder``: shards of an
    earlier run with another count, temporary files of a killed run."""
    folder = Path(folder)
    index = {
        "format": FORMAT,
        "split": split,
        "layout": "fixed-length records, one image each: H*W*C uint8 bytes, NHWC, no header",
        "dtype": "uint8",
        "shape": list(shape),
        "record_bytes": int(np.prod(shape)),
        "shard_size": shard_size,
        "count": sum(s.count for s in shards),
        "shards": [{"file": s.file, "count": s.count, "bytes": s.bytes, "sha256": s.sha256} for s in shards],
    }
    files.write_json(folder / INDEX, index)
    keep = {INDEX, *(s.file for s in shards)}
    for path in folder.iterdir():
        if path.name not in keep and (path.is_file() or path.is_symlink()):
            path.unlink(missing_ok=True)


def read_index(data_dir: Path) -> ShardIndex | None:
    """The shard index of a prepared-data folder; None when it has no ``shards/index.json``."""
    folder = Path(data_dir) / FOLDER
    path = folder / INDEX
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ShardError(f"{path} is unreadable ({error}); re-run the prepare stage") from None
    try:
        if raw["format"] != FORMAT:
            raise ShardError(
                f"{path}: format {raw['format']!r}, this version reads {FORMAT!r}; re-run the prepare stage"
            )
        shape = tuple(int(d) for d in raw["shape"])
        shards = tuple(Shard(str(s["file"]), int(s["count"]), int(s["bytes"]), str(s["sha256"])) for s in raw["shards"])
        index = ShardIndex(folder, str(raw["split"]), shape, int(raw["count"]), shards)  # type: ignore[arg-type]
    except ShardError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise ShardError(
            f"{path} is not a shard index ({type(error).__name__}: {error}); re-run the prepare stage"
        ) from None
    if (
        len(shape) != 3
        or min(shape) < 1
        or index.count != sum(s.count for s in shards)
        or any(Path(s.file).name != s.file or s.bytes != s.count * index.record_bytes for s in shards)
    ):
        raise ShardError(f"{path} is inconsistent (shape {shape}, count {index.count}); re-run the prepare stage")
    return index


def verify(index: ShardIndex, block: int = 1 << 22) -> None:
    """Check every shard against the index: present, the right size, the right SHA-256 (one read of
    the data, ``block`` bytes at a time). Raises :class:`ShardError` naming the first bad file."""
    hint = "re-run the prepare stage (dvc repro prepare, or dvc checkout for a DVC-tracked copy)"
    for shard, path in zip(index.shards, index.paths):
        try:
            size = path.stat().st_size
            if size != shard.bytes:
                raise ShardError(
                    f"shard {path} is truncated or altered: {size} bytes, index.json says "
                    f"{shard.bytes} ({shard.count} images); {hint}"
                )
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(block), b""):
                    digest.update(chunk)
        except FileNotFoundError:
            raise ShardError(f"shard {path} is missing (listed in {index.folder / INDEX}); {hint}") from None
        except OSError as error:
            raise ShardError(f"shard {path} is unreadable ({error.strerror or error}); {hint}") from None
        if digest.hexdigest() != shard.sha256:
            raise ShardError(f"shard {path} is corrupt: its SHA-256 differs from index.json; {hint}")


def read_images(index: ShardIndex) -> np.ndarray:
    """Every image of the shards, in order, as one uint8 NHWC array (for tests and small data)."""
    parts = [np.fromfile(path, dtype=np.uint8).reshape(-1, *index.shape) for path in index.paths]
    return np.concatenate(parts) if parts else np.zeros((0, *index.shape), np.uint8)
