"""Sampling from a trained generator: ``resgan generate`` and ``resgan interpolate``.

Output writers never leave a half-written result: files go through :mod:`resgan.io`'s atomic
writers, and a folder of PNGs is written into a temporary sibling folder that is renamed into
place at the end. An existing output is replaced only with ``force``. Every check that needs no
model (counts, formats, the output path) runs before the model is loaded, so a bad command fails
in a second, not after TensorFlow has started.

Seeds: ``generate --seed s`` draws ``resgan.models.latents(num, dim, s, truncation)``; "the image
of seed s" (``interpolate --seeds``, the served pyfunc) is the first of them.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from resgan import io
from resgan.errors import ResganError

MAX_NUM = 1_000_000
MAX_SEED = 2**63 - 1
# Pillow refuses to open images above this many pixels (DecompressionBombError): no bigger grids.
MAX_GRID_PIXELS = 178_956_970
GENERATE_FORMATS = ("grid", "folder", "npz")
INTERPOLATE_FORMATS = ("grid", "gif")
FOLDER_NAME = re.compile(r"\d{6,7}\.png")  # what a folder output holds: 000000.png, 000001.png, ...


class UsageError(ResganError):
    """A command-line value is out of range or inconsistent (exit code 2, like Click's usage errors)."""

    exit_code = 2


class OutputError(ResganError):
    """The output exists (without ``force``) or cannot be written."""


# ------------------------------------------------------------------ checks (no model needed)

def check_range(name: str, value: int | float, low: int | float, high: int | float | None = None) -> None:
    if value < low or (high is not None and value > high):
        bound = f"from {low:,} to {high:,}" if high is not None else f"at least {low}"
        raise UsageError(f"{name} must be {bound}, got {value:,}")


def check_truncation(truncation: float | None) -> None:
    if truncation is not None and not (np.isfinite(truncation) and truncation > 0):
        raise UsageError(f"--truncation must be a positive number, got {truncation}")


def resolve_format(out: Path, fmt: str | None, allowed: tuple[str, ...]) -> str:
    """The output format: ``fmt`` when given (checked against the suffix), else from the suffix."""
    suffix = out.suffix.lower()
    by_suffix = {".png": "grid", ".npz": "npz", ".gif": "gif", "": "folder"}
    if fmt is None:
        guessed = by_suffix.get(suffix)
        if guessed not in allowed:
            shown = ", ".join(f"{s or '(no suffix)'} -> {f}" for s, f in by_suffix.items() if f in allowed)
            raise UsageError(f"cannot tell the output format of {out} from its suffix; use {shown}, "
                             f"or --format {'|'.join(allowed)}")
        return guessed
    fmt = fmt.lower()
    if fmt not in allowed:
        raise UsageError(f"--format must be one of {', '.join(allowed)}, got {fmt!r}")
    expected = {"grid": ".png", "npz": ".npz", "gif": ".gif"}.get(fmt)
    if expected and suffix != expected:
        raise UsageError(f"--format {fmt} writes a {expected} file; give --out a {expected} name, not {out.name}")
    return fmt


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
                raise OutputError(f"{out} holds files that resgan generate did not write ({strangers[0]}, ...); "
                                  "not replacing it, even with --force")
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


# ------------------------------------------------------------------ running the generator

def run_generator(model, z: np.ndarray, batch_size: int,
                  progress: Callable[[int], None] | None = None, labels: np.ndarray | None = None) -> np.ndarray:
    """uint8 NHWC images for latents ``z`` (and class ``labels``, for a conditional generator),
    ``batch_size`` at a time (inference mode, graph-compiled).

    The graph gives the same numbers as an eager ``model(z, training=False)``, about twice as fast.
    """
    return np.concatenate(list(iter_images(model, z, batch_size, progress, labels)), axis=0)


_COMPILED: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def compiled(model):
    """``model(x, training=False)`` as a graph, traced once per model (and per batch shape kind)."""
    call = _COMPILED.get(model)
    if call is None:
        import tensorflow as tf

        call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        _COMPILED[model] = call
    return call


def iter_images(model, z: np.ndarray, batch_size: int, progress: Callable[[int], None] | None = None,
                labels: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """uint8 NHWC batches of images for latents ``z`` (and ``labels``, for a conditional generator)."""
    from resgan.gan.trainer import to_uint8
    from resgan.models import model_inputs

    call = compiled(model)
    for start in range(0, len(z), batch_size):
        window = slice(start, start + batch_size)
        batch = to_uint8(call(model_inputs(z[window], None if labels is None else labels[window])))
        if progress is not None:
            progress(len(batch))
        yield batch


@contextmanager
def progress_bar(total: int, description: str, show: bool | None = None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr when it is a terminal (never in pipes, CI or DVC logs)."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def image_shape(model) -> tuple[int, int, int]:
    h, w, c = (int(d) for d in model.outputs[0].shape[1:])
    return h, w, c


def _check_image_channels(model, ref: str) -> None:
    channels = image_shape(model)[2]
    if channels not in (1, 3, 4):
        raise ResganError(f"{ref} makes images with {channels} channels; PNG and GIF need 1, 3 or 4 "
                          "(write --format npz instead)")


def grid_shape(n: int, h: int, w: int, columns: int | None, pad: int = 1) -> tuple[int, int]:
    """Pixel size (height, width) of ``io.image_grid`` for ``n`` images of ``h`` x ``w``."""
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    return rows * (h + pad) + pad, columns * (w + pad) + pad


# ------------------------------------------------------------------ writers

def write_grid(out: Path, images: np.ndarray, columns: int | None = None) -> None:
    with _writing(out):
        io.save_grid(out, images, columns)


def write_npz(out: Path, images: np.ndarray, seed: int, **extra: Any) -> None:
    with _writing(out):
        io.save_npz(out, images=images, seed=np.int64(seed), **extra)


def write_folder(out: Path, batches: Iterator[np.ndarray], force: bool) -> int:
    """PNGs ``000000.png``, ... into a temporary sibling folder, then renamed to ``out``; returns the count."""
    with _writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            count = 0
            for batch in batches:
                for image in batch:
                    io.to_pil(image).save(tmp / f"{count:06d}.png", format="PNG")
                    count += 1
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a folder output is as any other
            _replace(tmp, out, force)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return count


def _replace(new: Path, out: Path, force: bool) -> None:
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
    """An endlessly looping animated GIF of uint8 NHWC ``frames``."""
    with _writing(out), io.atomic_path(out, suffix=".gif") as tmp:
        pictures = [io.to_pil(frame) for frame in frames]
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms,
                         loop=0, optimize=False)


def upscale(images: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of NHWC images by an integer factor (pixels stay crisp)."""
    if factor == 1:
        return images
    return images.repeat(factor, axis=1).repeat(factor, axis=2)


# ------------------------------------------------------------------ latent walks

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
    from resgan.models import latents

    return latents(1, dim, seed, truncation)[0]


def walk_latents(dim: int, seeds: list[int], steps: int, truncation: float | None = None) -> np.ndarray:
    """(pairs, steps, dim): for each consecutive pair of seeds, ``steps`` latents from one to the other."""
    ends = [seed_latent(dim, s, truncation) for s in seeds]
    t = np.linspace(0.0, 1.0, steps)
    return np.stack([slerp(a, b, t) for a, b in zip(ends[:-1], ends[1:])])


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise UsageError(f"--seeds must be integers separated by commas (e.g. 1,5,9), got {text!r}") from None
    if len(seeds) < 2:
        raise UsageError(f"--seeds needs at least two seeds to walk between, got {text!r}")
    for seed in seeds:
        check_range("every seed", seed, 0, MAX_SEED)
    return seeds


# ------------------------------------------------------------------ commands

@contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Keep TensorFlow's C++ start-up lines (oneDNN, CUDA stubs, cuInit) off the terminal.

    TensorFlow 2.21 writes them straight to file descriptor 2 through absl, some before it reads
    ``TF_CPP_MIN_LOG_LEVEL``; a command line tool should print its own output and errors only.
    Errors raised inside still reach the caller (and are printed after stderr is restored).
    ``TF_CPP_MIN_LOG_LEVEL=0`` (or 1) shows everything.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") in ("0", "1"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_quietly(model_ref: str):
    """The generator behind ``model_ref``. TensorFlow starts only once the model file is at hand
    (a wrong reference fails in a second), and starts quietly."""
    from resgan.models import generator_from_file, model_file

    with model_file(model_ref) as path, quiet_tensorflow():
        return generator_from_file(path, model_ref)


@dataclass(frozen=True)
class Result:
    out: Path
    format: str
    count: int
    shape: tuple[int, ...]

    def line(self) -> str:
        size = "x".join(map(str, self.shape))
        return {"grid": f"wrote a grid of {self.count} images ({size} px)",
                "gif": f"wrote a GIF of {self.count} frames ({size} px)",
                "folder": f"wrote {self.count} PNGs ({size})",
                "npz": f"wrote {self.count} images ({size})"}[self.format] + f" -> {self.out}"


def generate(model_ref: str, out: Path, num: int = 64, seed: int = 0, batch_size: int = 256,
             truncation: float | None = None, fmt: str | None = None, force: bool = False,
             columns: int | None = None, show_progress: bool | None = None, label: int | None = None) -> Result:
    """``num`` images from the generator ``model_ref`` (file or MLflow URI) written to ``out``.

    A class-conditional generator draws class ``label`` only, or every class in turn (the npz
    then holds ``labels`` too); ``label`` is an error for an unconditional one."""
    check_range("--num", num, 1, MAX_NUM)
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--batch-size", batch_size, 1, 65_536)
    if columns is not None:
        check_range("--columns", columns, 1, MAX_NUM)
    check_truncation(truncation)
    fmt = resolve_format(out, fmt, GENERATE_FORMATS)
    check_output(out, fmt, force)

    from resgan.models import class_labels, latent_dim, latents, num_classes

    model = load_quietly(model_ref)
    labels = class_labels(num, num_classes(model), seed, label)
    h, w, c = image_shape(model)
    if fmt != "npz":
        _check_image_channels(model, model_ref)
    if fmt == "grid":
        gh, gw = grid_shape(num, h, w, columns)
        if gh * gw > MAX_GRID_PIXELS:
            raise UsageError(f"a grid of {num:,} images of {h}x{w} would be {gw:,}x{gh:,} pixels, more than "
                             "image viewers open; write --format folder or npz instead")
    z = latents(num, latent_dim(model), seed, truncation)
    show = (sys.stderr.isatty() if show_progress is None else show_progress) and num > batch_size
    with progress_bar(num, "generating", show) as advance:
        if fmt == "folder":
            count = write_folder(out, iter_images(model, z, batch_size, advance, labels), force)
            return Result(out, fmt, count, (h, w, c))
        images = run_generator(model, z, batch_size, advance, labels)
    if fmt == "grid":
        write_grid(out, images, columns)
        gh, gw = grid_shape(num, h, w, columns)
        return Result(out, fmt, num, (gw, gh))
    write_npz(out, images, seed, **({} if labels is None else {"labels": labels.astype(np.int64)}))
    return Result(out, fmt, num, images.shape)


def interpolate(model_ref: str, out: Path, seeds: list[int], steps: int = 8, truncation: float | None = None,
                fmt: str | None = None, force: bool = False, duration_ms: int = 100, scale: int = 1,
                label: int | None = None) -> Result:
    """A spherical latent walk through ``seeds``: a grid (one row per pair) or an animated GIF.

    A class-conditional generator walks within one class: ``label``, or the first seed's class."""
    check_range("--steps", steps, 2, 1000)
    check_range("--duration", duration_ms, 10, 60_000)
    check_range("--scale", scale, 1, 32)
    check_truncation(truncation)
    fmt = resolve_format(out, fmt, INTERPOLATE_FORMATS)
    check_output(out, fmt, force)

    from resgan.models import class_labels, latent_dim, num_classes

    model = load_quietly(model_ref)
    _check_image_channels(model, model_ref)
    walk = walk_latents(latent_dim(model), seeds, steps, truncation)
    pairs = walk.shape[0]
    first = class_labels(1, num_classes(model), seeds[0], label)
    labels = None if first is None else np.full(pairs * steps, first[0], dtype=np.int32)
    images = run_generator(model, walk.reshape(pairs * steps, -1), 256, labels=labels)
    images = upscale(images, scale)
    if fmt == "grid":
        write_grid(out, images, columns=steps)
        gh, gw = grid_shape(len(images), images.shape[1], images.shape[2], steps)
        return Result(out, fmt, len(images), (gw, gh))
    # One continuous walk: each pair after the first starts where the previous one ended.
    keep = [i for i in range(len(images)) if i < steps or i % steps != 0]
    frames = images[keep]
    write_gif(out, frames, duration_ms)
    return Result(out, fmt, len(frames), (frames.shape[2], frames.shape[1]))
