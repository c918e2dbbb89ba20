"""The outputs of ``resgan generate`` and ``resgan interpolate``: a grid PNG, an npz, a folder of PNGs
or an animated GIF, none of them ever left half-written.

Files go through :mod:`resgan.files`' atomic writers; a folder of PNGs is written into a temporary
sibling folder that is renamed into place at the end. An existing output is replaced only with
``force``, and a folder only when it holds nothing but the PNGs a folder output writes.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from resgan import files
from resgan.errors import ResganError

FOLDER_NAME = re.compile(r"\d{6,7}\.png")  # what a folder output holds: 000000.png, 000001.png, ...


class OutputError(ResganError):
    """The output exists (without ``force``) or cannot be written."""


def check_output(out: Path, fmt: str, force: bool) -> None:
    """Refuse to overwrite without ``force``, to replace a folder by a file, or to write where we cannot."""
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputError(f"{out} exists; pass --force to replace it")
        if out.is_dir() and fmt != "folder":
            raise OutputError(f"{out} is a folder; not replacing a folder with a {fmt} file (remove it first)")
        if out.is_dir():
            strangers = sorted(p.name for p in out.iterdir() if not FOLDER_NAME.fullmatch(p.name))
            if strangers:
                raise OutputError(
                    f"{out} holds files that resgan generate did not write ({strangers[0]}, ...); "
                    "not replacing it, even with --force"
                )
    folder = out.parent
    while not folder.exists():  # the nearest existing ancestor decides whether we can create the rest
        if folder == folder.parent:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {out}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: no permission to write in {folder}")


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Turn OS errors while writing ``out`` into one readable line."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or str(error)
        raise OutputError(f"cannot write {out}: {reason}") from None


def grid_shape(n: int, h: int, w: int, columns: int | None, pad: int = 1) -> tuple[int, int]:
    """Pixel size (height, width) of ``files.image_grid`` for ``n`` images of ``h`` x ``w``."""
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    return rows * (h + pad) + pad, columns * (w + pad) + pad


def write_grid(out: Path, images: np.ndarray, columns: int | None = None, factor: int = 1) -> None:
    """uint8 NHWC ``images`` tiled into one PNG, ``columns`` wide (default near square), enlarged by
    the integer ``factor`` (nearest neighbour)."""
    with _writing(out):
        files.save_png(out, files.enlarge(files.image_grid(images, columns), factor))


def write_picture(out: Path, picture: np.ndarray, factor: int = 1) -> None:
    """A uint8 HWC ``picture`` (a laid-out grid) as one PNG, enlarged by the integer ``factor``."""
    with _writing(out):
        files.save_png(out, files.enlarge(picture, factor))


def write_npz(out: Path, images: np.ndarray, seed: int, **extra: Any) -> None:
    """An npz of ``images``, ``seed`` (int64) and any ``extra`` arrays (a conditional draw's ``labels``)."""
    with _writing(out):
        files.save_npz(out, images=images, seed=np.int64(seed), **extra)


def write_folder(out: Path, batches: Iterable[np.ndarray], force: bool) -> int:
    """PNGs ``000000.png``, ... into a temporary sibling folder, then renamed to ``out``; returns the count."""
    with _writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            count = 0
            for batch in batches:
                for image in batch:
                    files.to_pil(image).save(tmp / f"{count:06d}.png", format="PNG")
                    count += 1
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a folder output is as any other
            _replace_folder(tmp, out, force)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return count


def _replace_folder(new: Path, out: Path, force: bool) -> None:
    """Rename the folder ``new`` to ``out``; an existing ``out`` (with ``force``) is moved aside first
    and deleted only once ``new`` is in place."""
    if not (out.exists() or out.is_symlink()):
        os.replace(new, out)
        return
    if not force:  # appeared while we were generating
        raise OutputError(f"{out} exists; pass --force to replace it")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old, out)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_gif(out: Path, frames: np.ndarray, duration_ms: int) -> None:
    """An endlessly looping animated GIF of uint8 NHWC ``frames``, ``duration_ms`` milliseconds each."""
    with _writing(out), files.atomic_path(out, suffix=".gif") as tmp:
        pictures = [files.to_pil(frame) for frame in frames]
        pictures[0].save(
            tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0, optimize=False
        )
