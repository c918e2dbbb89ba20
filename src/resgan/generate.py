"""``resgan generate`` and ``resgan interpolate``: their argument checks and what they run.

Every check that needs no model (counts, formats, the output path) runs before the model is loaded,
so a bad command fails in a second, not after TensorFlow has started. Images come from
:mod:`resgan.sampling` and are written by :mod:`resgan.outputs`, which never leaves a half-written
result.

Seeds: ``generate --seed s`` draws ``resgan.sampling.latents(num, dim, s, truncation)``; "the image
of seed s" (``interpolate --seeds``, the served pyfunc) is the first of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resgan import files, grids
from resgan.errors import ResganError
from resgan.loading import generator_from_file, image_shape, latent_dim, model_file, num_classes
from resgan.outputs import check_output, grid_shape, write_folder, write_gif, write_grid, write_npz, write_picture
from resgan.sampling import class_labels, generate_images, iter_images, latents, walk_latents
from resgan.terminal import progress_bar, quiet_tensorflow

MAX_NUM = 1_000_000
MAX_SEED = 2**63 - 1
# Pillow refuses to open images above this many pixels (DecompressionBombError): no bigger grids.
MAX_GRID_PIXELS = 178_956_970
MAX_SCALE = 32
GENERATE_FORMATS = ("grid", "folder", "npz")
INTERPOLATE_FORMATS = ("grid", "gif")


class UsageError(ResganError):
    """A command-line value is out of range or inconsistent (exit code 2, like Click's usage errors)."""

    exit_code = 2


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
            raise UsageError(
                f"cannot tell the output format of {out} from its suffix; use {shown}, or --format {'|'.join(allowed)}"
            )
        return guessed
    fmt = fmt.lower()
    if fmt not in allowed:
        raise UsageError(f"--format must be one of {', '.join(allowed)}, got {fmt!r}")
    expected = {"grid": ".png", "npz": ".npz", "gif": ".gif"}.get(fmt)
    if expected and suffix != expected:
        raise UsageError(f"--format {fmt} writes a {expected} file; give --out a {expected} name, not {out.name}")
    return fmt


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


def _check_image_channels(model, ref: str) -> None:
    channels = image_shape(model)[2]
    if channels not in (1, 3, 4):
        raise ResganError(
            f"{ref} makes images with {channels} channels; PNG and GIF need 1, 3 or 4 (write --format npz instead)"
        )


def _load(model_ref: str):
    """The generator behind ``model_ref``. TensorFlow starts only once the model file is at hand
    (a wrong reference fails in a second), and starts quietly."""
    with model_file(model_ref) as path, quiet_tensorflow():
        return generator_from_file(path, model_ref)


@dataclass(frozen=True)
class Result:
    """What a command wrote. ``shape``: (width, height) of the grid or of a GIF frame; (H, W, C) of one
    image for a folder; (N, H, W, C) for an npz."""

    out: Path
    format: str
    count: int
    shape: tuple[int, ...]

    def line(self) -> str:
        """The one line the command prints."""
        size = "x".join(map(str, self.shape))
        return {
            "grid": f"wrote a grid of {self.count} images ({size} px)",
            "gif": f"wrote a GIF of {self.count} frames ({size} px)",
            "folder": f"wrote {self.count} PNGs ({size})",
            "npz": f"wrote {self.count} images ({size})",
        }[self.format] + f" -> {self.out}"


def generate(
    model_ref: str,
    out: Path,
    num: int = 64,
    seed: int = 0,
    batch_size: int = 256,
    truncation: float | None = None,
    fmt: str | None = None,
    force: bool = False,
    columns: int | None = None,
    show_progress: bool | None = None,
    label: int | None = None,
    scale: int = 0,
) -> Result:
    """``num`` images from the generator ``model_ref`` (file or MLflow URI) written to ``out``.

    A grid is enlarged by the integer ``scale`` (nearest neighbour); 0 enlarges it to at least
    :data:`files.VIEW_WIDTH` pixels across. A folder of PNGs and an npz keep the true pixels.

    A class-conditional generator draws class ``label`` only, or every class in turn (the npz
    then holds ``labels`` too); ``label`` is an error for an unconditional one."""
    check_range("--num", num, 1, MAX_NUM)
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--batch-size", batch_size, 1, 65_536)
    if columns is not None:
        check_range("--columns", columns, 1, MAX_NUM)
    check_range("--scale", scale, 0, MAX_SCALE)
    check_truncation(truncation)
    fmt = resolve_format(out, fmt, GENERATE_FORMATS)
    check_output(out, fmt, force)

    model = _load(model_ref)
    classes = num_classes(model) if label is None else 0  # every class in turn: more than a row holds wrap
    labels = class_labels(num, num_classes(model), seed, label)
    h, w, c = image_shape(model)
    if fmt != "npz":
        _check_image_channels(model, model_ref)
    if fmt == "grid":
        gh, gw = grids.shown_size(num, h, w, classes, columns)
        factor = files.view_factor(gw, scale)
        if not scale:  # enlarging is for viewing: never past what a viewer opens
            factor = max(1, min(factor, math.isqrt(MAX_GRID_PIXELS // (gh * gw))))
        gh, gw = gh * factor, gw * factor
        if gh * gw > MAX_GRID_PIXELS:
            raise UsageError(
                f"a grid of {num:,} images of {h}x{w} would be {gw:,}x{gh:,} pixels, more than "
                "image viewers open; write --format folder or npz instead"
            )
    z = latents(num, latent_dim(model), seed, truncation)
    show = show_progress if num > batch_size else False  # no bar for a single batch
    with progress_bar(num, "generating", show) as advance:
        if fmt == "folder":
            count = write_folder(out, iter_images(model, z, labels, batch_size, advance), force)
            return Result(out, fmt, count, (h, w, c))
        images = generate_images(model, z, labels, batch_size, advance)
    if fmt == "grid":
        write_picture(out, grids.cycled_grid(images, labels, classes, columns), factor)
        return Result(out, fmt, num, (gw, gh))
    write_npz(out, images, seed, **({} if labels is None else {"labels": labels.astype(np.int64)}))
    return Result(out, fmt, num, images.shape)


def interpolate(
    model_ref: str,
    out: Path,
    seeds: list[int],
    steps: int = 8,
    truncation: float | None = None,
    fmt: str | None = None,
    force: bool = False,
    duration_ms: int = 100,
    scale: int = 0,
    label: int | None = None,
) -> Result:
    """A spherical latent walk through ``seeds``: a grid (one row per pair) or an animated GIF, enlarged
    by the integer ``scale`` (nearest neighbour); 0 enlarges it to at least :data:`files.VIEW_WIDTH` px across.

    A class-conditional generator walks within one class: ``label``, or the first seed's class."""
    check_range("--steps", steps, 2, 1000)
    check_range("--duration", duration_ms, 10, 60_000)
    check_range("--scale", scale, 0, MAX_SCALE)
    check_truncation(truncation)
    fmt = resolve_format(out, fmt, INTERPOLATE_FORMATS)
    check_output(out, fmt, force)

    model = _load(model_ref)
    _check_image_channels(model, model_ref)
    walk = walk_latents(latent_dim(model), seeds, steps, truncation)
    pairs = walk.shape[0]
    first = class_labels(1, num_classes(model), seeds[0], label)
    labels = None if first is None else np.full(pairs * steps, first[0], dtype=np.int32)
    images = generate_images(model, walk.reshape(pairs * steps, -1), labels)
    if fmt == "grid":
        gh, gw = grid_shape(len(images), images.shape[1], images.shape[2], steps)
        factor = files.view_factor(gw, scale)
        write_grid(out, images, steps, factor)
        return Result(out, fmt, len(images), (gw * factor, gh * factor))
    # One continuous walk: each pair after the first starts where the previous one ended.
    keep = [i for i in range(len(images)) if i < steps or i % steps != 0]
    frames = files.enlarge(images[keep], files.view_factor(images.shape[2], scale))
    write_gif(out, frames, duration_ms)
    return Result(out, fmt, len(frames), (frames.shape[2], frames.shape[1]))
