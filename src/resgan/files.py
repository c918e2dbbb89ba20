"""Atomic file output and image grids: every file a stage writes goes through here.

A reader (DVC, MLflow, a resumed run) never sees a half-written file: each writer writes a
temporary file in the destination's folder, flushes it to disk and renames it over the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, outputs should get the usual mode


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    ``suffix`` keeps the extension that some writers need (Keras wants ``.keras``). On an
    exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def copy_file(source: str | Path, path: str | Path) -> None:
    """Copy ``source`` to ``path`` atomically (a reader never sees half a file)."""
    import shutil

    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        shutil.copyfile(source, tmp)


def write_json(path: str | Path, obj: Any, sort_keys: bool = True) -> None:
    """``obj`` as indented JSON, atomically; ``sort_keys=False`` keeps the dict's order (DVC shows a
    metrics file's keys in file order)."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=sort_keys, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` through a temporary file."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile uint8 NHWC images into one HWC image, ``columns`` wide (default: near square)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"image_grid wants a non-empty NHWC batch, got shape {images.shape}")
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=images.dtype)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def to_pil(image: np.ndarray):
    """A uint8 HWC array (1 or 3 channels) as a PIL image."""
    from PIL import Image

    image = np.asarray(image)
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Save a uint8 HWC array as PNG, atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        to_pil(image).save(tmp, format="PNG")


VIEW_WIDTH = 512  # grids and GIFs are for people: small pictures are enlarged to at least this many pixels across


def view_factor(width: int, scale: int = 0, min_width: int = VIEW_WIDTH) -> int:
    """The integer enlargement of a picture ``width`` pixels wide: ``scale`` when it is positive, else the
    smallest factor that makes it at least ``min_width`` pixels wide (1 for a picture already that wide)."""
    return scale if scale > 0 else max(1, -(-min_width // width))


def enlarge(images: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of HW(C) or NHWC ``images`` by an integer ``factor``: pixels stay crisp."""
    if factor == 1:
        return images
    h, w = (0, 1) if images.ndim <= 3 else (1, 2)
    return images.repeat(factor, axis=h).repeat(factor, axis=w)


def save_grid(path: str | Path, images: np.ndarray, columns: int | None = None, min_width: int = 0) -> np.ndarray:
    """Save :func:`image_grid` of ``images`` as a PNG, enlarged by the smallest integer factor (nearest
    neighbour: pixels stay crisp) that makes it at least ``min_width`` pixels wide; return what was saved."""
    grid = image_grid(images, columns)
    grid = enlarge(grid, view_factor(grid.shape[1], min_width=min_width))
    save_png(path, grid)
    return grid
