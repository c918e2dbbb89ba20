"""Sample grids as people look at them: every place that draws a grid (the sample stage's ``grid.png``,
the grids logged to MLflow while training, ``resgan generate``) lays its images out here.

Unconditional images fill a near-square grid. A class-conditional sample with few classes puts a class
per column, 0 to K-1 from left to right. With more classes than fit a row (more than
:data:`MAX_CLASS_COLUMNS`, or wider than :data:`MAX_ROW_WIDTH` pixels), the grid wraps: a block per
class (its images in a small near-square grid), blocks in reading order, each with its class number
written under it, as many blocks a row as make a picture of about 4:3 that a screen shows whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from resgan import files
from resgan.sampling import grid_images

MAX_CLASS_COLUMNS = 16  # a class per column up to this many classes
MAX_ROW_WIDTH = 1600  # pixels at true size: a class per column only while the row fits a screen
GAP = 6  # pixels of background between blocks
LABEL_HEIGHT = 12  # pixels under each block for its class number (Pillow's default font is 11 px high)
ASPECT = 4 / 3  # the wrapped grid's width over its height, about


@dataclass(frozen=True)
class BlockLayout:
    """Where a wrapped grid puts things, in pixels at true size: the picture's ``height`` and ``width``,
    ``block_columns`` blocks a row, each block ``tile_columns`` x ``tile_rows`` images; :meth:`box` gives a
    block's tile area and :meth:`label_box` the strip under it where its class number is written."""

    height: int
    width: int
    classes: int
    block_columns: int
    tile_columns: int
    tile_rows: int
    tile_h: int
    tile_w: int
    pad: int = 1

    @property
    def block_w(self) -> int:
        return self.tile_columns * (self.tile_w + self.pad) + self.pad

    @property
    def block_h(self) -> int:  # the tiles and the label strip under them
        return self.tile_rows * (self.tile_h + self.pad) + self.pad + LABEL_HEIGHT

    def box(self, k: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of class ``k``'s tiles, padding included."""
        row, column = divmod(k, self.block_columns)
        top, left = row * (self.block_h + GAP), column * (self.block_w + GAP)
        return top, left, top + self.block_h - LABEL_HEIGHT, left + self.block_w

    def label_box(self, k: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of the strip under class ``k``'s block that holds its number."""
        _, left, bottom, right = self.box(k)
        return bottom, left, bottom + LABEL_HEIGHT, right

    def tile(self, k: int, i: int) -> tuple[int, int]:
        """(top, left) of the ``i``-th image of class ``k``."""
        top, left, _, _ = self.box(k)
        r, c = divmod(i, self.tile_columns)
        return top + self.pad + r * (self.tile_h + self.pad), left + self.pad + c * (self.tile_w + self.pad)


def wraps(classes: int, width: int, pad: int = 1) -> bool:
    """Whether ``classes`` columns of images ``width`` pixels wide are more than a row holds."""
    return classes > MAX_CLASS_COLUMNS or classes * (width + pad) + pad > MAX_ROW_WIDTH


def block_layout(classes: int, per_class: int, h: int, w: int) -> BlockLayout:
    """The wrapped grid of ``classes`` blocks of up to ``per_class`` images of ``h`` x ``w`` pixels."""
    tile_columns = max(1, math.ceil(math.sqrt(per_class)))
    tile_rows = max(1, math.ceil(per_class / tile_columns))
    shape = BlockLayout(0, 0, classes, 1, tile_columns, tile_rows, h, w)
    # Blocks a row for a picture of about ASPECT: columns * block_w = ASPECT * rows * block_h.
    columns = math.ceil(math.sqrt(classes * ASPECT * shape.block_h / shape.block_w))
    columns = max(1, min(classes, columns, (MAX_ROW_WIDTH + GAP) // (shape.block_w + GAP) or 1))
    rows = math.ceil(classes / columns)
    return BlockLayout(
        rows * (shape.block_h + GAP) - GAP,
        columns * (shape.block_w + GAP) - GAP,
        classes,
        columns,
        tile_columns,
        tile_rows,
        h,
        w,
    )


def class_blocks(images: np.ndarray, labels: np.ndarray, classes: int | None = None) -> np.ndarray:
    """uint8 NHWC ``images`` of classes ``labels`` as a wrapped grid (:func:`block_layout`): class k's
    images, in their order, in block k, its number written under it; returns the uint8 HWC picture."""
    images, labels = np.asarray(images), np.asarray(labels)
    classes = classes or int(labels.max()) + 1
    _n, h, w, c = images.shape
    per_class = max(1, int(np.bincount(labels, minlength=classes).max()))
    layout = block_layout(classes, per_class, h, w)
    picture = np.zeros((layout.height, layout.width, c), dtype=np.uint8)
    for k in range(classes):
        for i, image in enumerate(images[labels == k]):
            top, left = layout.tile(k, i)
            picture[top : top + h, left : left + w] = image
    return _write_labels(picture, layout)


def _write_labels(picture: np.ndarray, layout: BlockLayout) -> np.ndarray:
    """Each block's class number, white, centred in the strip under it (Pillow's default font)."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    draw.fontmode = "1"  # no anti-aliasing: crisp digits when the grid is enlarged
    white = 255 if picture.shape[-1] == 1 else (255,) * picture.shape[-1]
    for k in range(layout.classes):
        top, left, bottom, right = layout.label_box(k)
        x0, y0, x1, y1 = draw.textbbox((0, 0), str(k), font=font)
        draw.text(
            (left + (right - left - (x1 - x0)) // 2 - x0, top + (bottom - top - (y1 - y0)) // 2 - y0),
            str(k),
            fill=white,
            font=font,
        )
    out = np.asarray(canvas)
    return out[..., None] if picture.shape[-1] == 1 else out


def sample_grid(images: np.ndarray, labels: np.ndarray | None, size: int) -> np.ndarray:
    """The grid picture (uint8 HWC, true size) of about ``size`` of a sample's ``images``, drawn with
    :func:`resgan.sampling.class_labels` (``labels`` None: unconditional): near square without classes,
    a class per column for few, a block per class for many (the module docstring)."""
    picked, columns = grid_images(images, labels, size)
    if columns is None or not wraps(columns, images.shape[2]):
        return files.image_grid(picked, columns)
    return class_blocks(picked, np.tile(np.arange(columns), len(picked) // columns), columns)


def shown_size(n: int, h: int, w: int, classes: int, columns: int | None, cycled: bool = True) -> tuple[int, int]:
    """(height, width) at true size of :func:`cycled_grid` of ``n`` images of ``h`` x ``w``; ``cycled``:
    the images are of every one of ``classes`` classes in turn (no single ``--label``)."""
    if classes and cycled and columns is None and n > 1 and wraps(classes, w):
        return (layout := block_layout(classes, math.ceil(n / classes), h, w)).height, layout.width
    columns = columns or int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / columns)) * (h + 1) + 1, columns * (w + 1) + 1


def cycled_grid(
    images: np.ndarray, labels: np.ndarray | None, classes: int = 0, columns: int | None = None
) -> np.ndarray:
    """All of ``images`` as one picture (``resgan generate``): ``columns`` wide (default near square), or,
    when a generator of ``classes`` classes drew every class in turn (``labels``) and they are more than
    fit a row, with no ``columns``, a block per class (:func:`shown_size` gives the size beforehand)."""
    if (
        labels is not None
        and classes
        and columns is None
        and wraps(classes, images.shape[2])
        and len(np.unique(labels)) > 1
    ):
        return class_blocks(images, labels, classes)
    return files.image_grid(images, columns)


def save(path, picture: np.ndarray, min_width: int = files.VIEW_WIDTH) -> np.ndarray:
    """Save ``picture`` as a PNG enlarged (nearest neighbour) to at least ``min_width`` pixels across;
    returns what was saved."""
    picture = files.enlarge(picture, files.view_factor(picture.shape[1], min_width=min_width))
    files.save_png(path, picture)
    return picture
