"""Colour end to end: a coloured square goes in through ``prepare`` from every kind of file, and the same
colour comes out of the exported generator, ``resgan generate`` (PNG grid and npz), the sample grids and
the served model: channel order, range and no gamma step anywhere.

The generator is a real one (the GAN's EMA generator, exported by the train stage's function) whose
output we set: its last convolution's kernel is zeroed and its bias is the pre-``tanh`` value of the
prepared colour, so every pixel it draws must be that colour, and only a change of channel order,
range or gamma on the way out can make it another.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_params
from PIL import Image

from resgan.data.prepared import load_split
from resgan.stages import prepare

SQUARE = (230, 30, 120)  # R, G, B: three different values, none near 0, 128 or 255, so order and gamma show
BACKGROUND = (20, 140, 210)
SIZE = 16  # the files are 16x16 and so is the run: no resampling between file and array


def _square_rgb(top: int = 4, left: int = 4) -> np.ndarray:
    pixels = np.empty((SIZE, SIZE, 3), np.uint8)
    pixels[:] = BACKGROUND
    pixels[top : top + 8, left : left + 8] = SQUARE  # an 8x8 square, in the middle by default
    return pixels


def _files(root: Path) -> None:
    """The square as RGB PNG and JPEG, palette PNG, CMYK JPEG; a grey PNG beside them."""
    rgb = Image.fromarray(_square_rgb(), "RGB")
    (root / "squares").mkdir(parents=True)
    rgb.save(root / "squares" / "rgb.png")
    rgb.save(root / "squares" / "rgb.jpg", quality=95, subsampling=0)  # 4:4:4: no chroma averaging
    # moved 4 px right: the same pixels as rgb.png would be dropped as a duplicate of it
    moved = Image.fromarray(_square_rgb(left=8), "RGB")
    moved.quantize(colors=2, method=Image.Quantize.MAXCOVERAGE).save(root / "squares" / "palette.png")
    # CMYK with no black: C = 255 - R, M = 255 - G, Y = 255 - B, the inverse of Pillow's conversion
    cmyk = np.concatenate([255 - _square_rgb(), np.zeros((SIZE, SIZE, 1), np.uint8)], axis=-1)
    Image.fromarray(cmyk, "CMYK").save(root / "squares" / "cmyk.jpg", quality=95)
    grey = np.full((SIZE, SIZE), 90, np.uint8)
    grey[4:12, 4:12] = 200
    Image.fromarray(grey, "L").save(root / "squares" / "grey.png")


def _prepared(tmp_path: Path) -> dict[str, np.ndarray]:
    """Each file's pixels as ``prepare`` wrote them (channels 3), by file name."""
    _files(tmp_path / "raw")
    params = tiny_params(
        prepare={
            "source": "folder",
            "path": str(tmp_path / "raw"),
            "image_size": SIZE,
            "channels": 3,
            "fit": "resize",
            "test_fraction": 0.2,
        }
    ).prepare
    summary = prepare.run(params, tmp_path / "prepared")
    assert summary["skipped"] == [] and summary["counts"]["total"] == 5
    import pandas as pd

    manifest = pd.read_csv(tmp_path / "prepared" / "manifest.csv")
    splits = {name: load_split(tmp_path / "prepared", name)[0] for name in ("train", "test")}
    return {Path(row.source).name: splits[row.split][row.split_index] for row in manifest.itertuples()}


def test_a_coloured_square_keeps_its_colour_through_prepare_from_every_kind_of_file(tmp_path):
    pixels = _prepared(tmp_path)
    expected = _square_rgb()
    assert all(image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 for image in pixels.values())
    np.testing.assert_array_equal(pixels["rgb.png"], expected)  # lossless: exact, R first
    np.testing.assert_array_equal(pixels["palette.png"], _square_rgb(left=8))  # two palette entries, looked up
    # JPEG: lossy, and its 8x8 blocks straddle the square's edges (ringing of up to about 10 levels
    # there); the square's middle and the background's corner keep their colour within 4 levels. A
    # gamma step (2.2 would move 30 to 3 or 120 to 53) or swapped channels are tens of levels off.
    for name in ("rgb.jpg", "cmyk.jpg"):
        image = pixels[name].astype(float)
        np.testing.assert_allclose(image[6:10, 6:10].mean(axis=(0, 1)), SQUARE, atol=4, err_msg=name)
        np.testing.assert_allclose(image[:2, :2].mean(axis=(0, 1)), BACKGROUND, atol=4, err_msg=name)
        assert np.abs(image - expected).max() <= 16, name
    grey = pixels["grey.png"]
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])  # grey stays grey: the same value in R, G, B
    assert grey[8, 8].tolist() == [200, 200, 200] and grey[0, 0].tolist() == [90, 90, 90]


def _set_colour_generator(tmp_path: Path, colour: np.ndarray) -> Path:
    """A real GAN's EMA generator (16x16x3, 2 classes) set to draw ``colour`` everywhere, exported as the
    train stage exports it; returns the ``.keras`` path."""
    import keras

    from resgan.gan.trainer import GAN, Shapes, export_generator

    p = tiny_params(model={"conditional": True}, train={"diffaugment": "", "precision": "mixed_bfloat16"})
    keras.utils.set_random_seed(0)
    gan = GAN(p.model, p.train, Shapes(image_size=SIZE, channels=3, num_classes=2))
    conv = gan.ema_generator.get_layer("conv_out")
    kernel, _ = conv.get_weights()
    # tanh(bias) = colour / 127.5 - 1: the inverse of to_uint8's (x + 1) * 127.5
    conv.set_weights([np.zeros_like(kernel), np.arctanh(colour / 127.5 - 1.0).astype(np.float32)])
    path = tmp_path / "generator.keras"
    export_generator(gan, path)
    keras.mixed_precision.set_global_policy("float32")
    return path


@pytest.mark.slow
def test_the_colour_comes_out_of_the_export_generate_grids_and_served_model(tmp_path):
    from resgan.files import save_grid
    from resgan.loading import load_generator
    from resgan.sampling import draw
    from resgan.serving import decode_png, save_model

    colour = _prepared(tmp_path)["rgb.png"][8, 8]  # the square's colour as prepare wrote it
    assert colour.tolist() == list(SQUARE)
    path = _set_colour_generator(tmp_path, colour.astype(np.float64))

    # The exported generator, through the one sampling function every caller uses.
    images, labels = draw(load_generator(path), 6, seed=3)
    assert images.shape == (6, SIZE, SIZE, 3) and labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert (images == colour).all()

    # The sample grids (train stage, sample stage): cells of the colour between black 1-pixel lines.
    grid = save_grid(tmp_path / "grid.png", images, columns=3)
    saved = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    np.testing.assert_array_equal(saved, grid)
    assert saved[1 : 1 + SIZE, 1 : 1 + SIZE].reshape(-1, 3).tolist() == [list(SQUARE)] * SIZE * SIZE
    assert saved[0, 0].tolist() == [0, 0, 0]

    # resgan generate: a PNG grid and an npz, from the model file.
    for out in ("g.png", "g.npz"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "resgan",
                "generate",
                "--model",
                str(path),
                "--num",
                "4",
                "--out",
                str(tmp_path / out),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    with np.load(tmp_path / "g.npz") as saved_npz:
        assert saved_npz["images"].dtype == np.uint8 and (saved_npz["images"] == colour).all()
    png = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    cells = png[(png != 0).any(axis=-1)]  # everything but the black grid lines
    assert len(cells) >= 4 * SIZE * SIZE and (cells == colour).all()

    # The served model: MLflow's pyfunc (what `mlflow models serve` runs), PNG and raw arrays.
    import mlflow

    save_model(str(tmp_path / "served"), load_generator(path))
    served = mlflow.pyfunc.load_model(str(tmp_path / "served"))
    answer = served.predict({"seed": [0, 1]})
    assert all((decode_png(text) == colour).all() for text in answer["image"])
    raw = served.predict({"seed": [2]}, params={"format": "array"})
    assert (np.asarray(raw["image"][0], dtype=np.uint8) == colour).all()
    assert json.loads(json.dumps(raw["image"][0]))[5][7] == list(SQUARE)  # rows, columns, R G B as sent
