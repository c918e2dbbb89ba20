"""Image checks and conversion with Pillow: one file (or array) in, one uint8 HxWxC array out.

Every problem with an input file becomes :class:`BadImage` carrying a short ``reason`` that the
prepare stage writes to ``summary.json`` ("truncated image", "zero-byte file", ...); nothing here
lets a bad file end the run with a traceback.

Conversion, in order (each choice is the one that keeps MNIST-like data as it is):

1. Open and fully decode the first frame (GIF/APNG/TIFF pages after the first are ignored), with a
   decompression-bomb guard, then apply the EXIF orientation.
2. Reject images smaller than ``min_size`` on either side.
3. Bring the pixels to 8 bits: 16-bit modes keep their top 8 bits (``>> 8``, so 65535 -> 255 and
   nothing is clipped); ``I`` and ``F`` are scaled by the range their values show (see
   :func:`to_8bit`); transparency (LA, RGBA, PA, palette or grey/RGB with a transparent colour) is
   composited onto **black**, the background of MNIST-like data; CMYK, YCbCr, LAB and HSV go to RGB.
4. Convert to the configured channels: 1 -> Pillow "L" (ITU-R 601-2 luma), 3 -> "RGB".
5. Fit to a square of ``image_size``: ``resize`` centre-crops non-square images to their shorter
   side, then resamples with Lanczos (anti-aliased; ``reducing_gap=3`` first box-reduces very large
   images, which Pillow documents as indistinguishable from plain Lanczos); ``pad`` centres the image
   on a black canvas, resizing it (Lanczos, aspect kept) only when a side is larger than the canvas.
"""

from __future__ import annotations

import errno
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own default for Image.MAX_IMAGE_PIXELS (about 0.25 GiB as 24-bit RGB). Anything larger is
# treated as a decompression bomb; Pillow raises for twice this before we even see the header.
MAX_PIXELS = 89_478_485

RESIZE_METHOD = {
    "resize": "centre-crop to square, then Pillow LANCZOS resize (reducing_gap=3.0)",
    "pad": "centre on a black square canvas; Pillow LANCZOS downscale (aspect kept) only if larger",
}

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


class BadImage(Exception):
    """An input that cannot become a training image; ``reason`` is a short phrase for the summary."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageSpec:
    """What every converted image looks like: ``image_size`` square, ``channels`` deep, uint8."""

    image_size: int
    channels: Literal[1, 3] = 1
    fit: Literal["resize", "pad"] = "resize"
    min_size: int = 1  # pixels; a smaller side makes the image bad input
    max_pixels: int = MAX_PIXELS  # width * height above this is a decompression bomb

    @classmethod
    def from_params(cls, params) -> ImageSpec:
        """The spec from a :class:`resgan.config.PrepareParams`."""
        return cls(image_size=params.image_size, channels=params.channels, fit=params.fit, min_size=params.min_size)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``path``, decode its first frame fully and apply the EXIF orientation.

    Returns an image detached from the file. Raises :class:`BadImage` with the reason for a
    zero-byte file, a non-image, a truncated or corrupt image, a decompression bomb, a permission
    problem or a symlink loop.
    """
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            # a FIFO or device would block or never end when Pillow reads it
            raise BadImage("not a regular file")
        if info.st_size == 0:
            raise BadImage("zero-byte file")
        # Pillow warns (and only raises at 2x its limit); make the warning an error so a bomb is a
        # bad file, not a long stall followed by an out-of-memory kill.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size  # header only: nothing decoded yet
                if width * height > max_pixels:
                    raise BadImage(
                        f"decompression bomb ({width}x{height} = {width * height} pixels > limit {max_pixels})"
                    )
                img.seek(0)  # first frame of an animation or multi-page file
                img.load()  # decode now, so truncation shows up here and not later
                # exif_transpose returns a new image (a copy when there is nothing to rotate), so the
                # result outlives the closed file.
                return ImageOps.exif_transpose(img)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"decompression bomb ({error})") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (cannot identify)") from None
    except PermissionError:
        raise BadImage("permission denied") from None
    except FileNotFoundError:
        raise BadImage("file not found (removed or a dangling symlink)") from None
    except IsADirectoryError:
        raise BadImage("is a directory") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise BadImage("symlink loop") from None
        if "truncat" in str(error).lower():
            raise BadImage("truncated image") from None
        raise BadImage(f"unreadable image ({error})") from None
    except Exception as error:  # noqa: BLE001 - decoders raise anything (SyntaxError, struct.error, ...)
        raise BadImage(f"corrupt image ({type(error).__name__}: {error})") from None


def from_array(pixels: np.ndarray) -> Image.Image:
    """A uint8 HxW, HxWx1, HxWx3 or HxWx4 array as a PIL image (L, L, RGB, RGBA)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise BadImage(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(pixels), mode="L")
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB" if pixels.shape[-1] == 3 else "RGBA")
    raise BadImage(f"unsupported pixel array shape {pixels.shape}")


def _int_to_8bit(values: np.ndarray) -> np.ndarray:
    """32-bit integer pixels: shift by the smallest bit depth (8, 16, 32) that holds the maximum."""
    values = values.astype(np.int64)
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0:
        bits = 8 if hi <= 0xFF else 16 if hi <= 0xFFFF else 32
        return (values >> (bits - 8)).astype(np.uint8)
    return _stretch(values)  # signed data has no natural black: map its range onto 0..255


def _float_to_8bit(values: np.ndarray) -> np.ndarray:
    """Float pixels: [0, 1] -> x255, [0, 255] as is, anything else stretched to 0..255."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return np.rint(values).astype(np.uint8)
    return _stretch(values)


def _stretch(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _on_black(img: Image.Image) -> Image.Image:
    """Composite an image with transparency onto opaque black; returns RGB."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_8bit(img: Image.Image, channels: int) -> Image.Image:
    """Any Pillow mode to 8-bit "L" (``channels=1``) or "RGB" (``channels=3``).

    16-bit modes (I;16*) keep the top byte. Mode "I" (32-bit int) is shifted by the smallest of
    8/16/32 bits that holds its maximum (so 16-bit data stored as "I" also maps 65535 -> 255);
    negative values are stretched min..max. Mode "F" in [0, 1] is scaled by 255, in [0, 255] kept,
    otherwise stretched. Transparency is composited onto black.
    """
    mode = img.mode
    if mode in _SIXTEEN_BIT:
        img = Image.fromarray((np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8), mode="L")
    elif mode == "I":
        img = Image.fromarray(_int_to_8bit(np.asarray(img)), mode="L")
    elif mode == "F":
        img = Image.fromarray(_float_to_8bit(np.asarray(img)), mode="L")
    elif mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        img = _on_black(img)
    elif mode == "1":
        img = img.convert("L")  # 0/1 bits -> 0/255
    elif mode not in ("L", "RGB"):
        img = img.convert("RGB")  # P without transparency, CMYK, YCbCr, LAB, HSV, RGBX
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def fit_square(img: Image.Image, size: int, fit: str = "resize") -> Image.Image:
    """Make ``img`` ``size`` x ``size``: centre-crop + Lanczos resize, or centre on a black canvas."""
    width, height = img.size
    if fit == "resize":
        if width != height:
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            img = img.crop((left, top, left + side, top + side))
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        return img
    if fit != "pad":
        raise ValueError(f"unknown fit {fit!r}; use resize or pad")
    if max(width, height) > size:
        scale = size / max(width, height)
        new = (max(1, round(width * scale)), max(1, round(height * scale)))
        img = img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new(img.mode, (size, size), 0)
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def convert(img: Image.Image, spec: ImageSpec) -> np.ndarray:
    """Check and convert an opened image; returns uint8 ``spec.shape`` or raises :class:`BadImage`."""
    width, height = img.size
    if width < spec.min_size or height < spec.min_size:
        raise BadImage(f"too small ({width}x{height} < min_size {spec.min_size})")
    try:
        img = fit_square(to_8bit(img, spec.channels), spec.image_size, spec.fit)
        pixels = np.asarray(img, dtype=np.uint8)
    except Exception as error:  # noqa: BLE001 - an odd mode or palette must not end the run
        raise BadImage(f"cannot convert {img.mode} image ({type(error).__name__}: {error})") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return np.ascontiguousarray(pixels)


def load_image(path: str | Path, spec: ImageSpec) -> np.ndarray:
    """Open, check and convert one file; returns uint8 ``spec.shape`` or raises :class:`BadImage`."""
    return convert(open_image(path, spec.max_pixels), spec)


def load_images(paths: list[Path], spec: ImageSpec) -> list[np.ndarray | str]:
    """:func:`load_image` for each of ``paths``, in order; a bad file gives its reason instead of
    pixels. What one worker process of the prepare stage converts per task (nothing here needs
    more than Pillow and numpy, so a worker starts in well under a second)."""
    converted: list[np.ndarray | str] = []
    for path in paths:
        try:
            converted.append(load_image(path, spec))
        except BadImage as bad:
            converted.append(bad.reason)
    return converted
