"""``resgan.grids``: sample grids for many classes wrap into a block per class, labelled, a screen's shape.

The pure layout is checked with images whose pixels say their class; the sample stage and ``resgan
generate`` are checked on a tiny untrained 40-class generator (16x16, width 8: random weights and
a label embedding make each class's images differ), cutting the saved PNG back into its blocks.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import tiny_params
from PIL import Image

from resgan import files, grids
from resgan.config import ModelParams
from resgan.nn.networks import generator_from_params
from resgan.sampling import class_labels

SIZE, CLASSES = 16, 40


def _by_class(labels: np.ndarray) -> np.ndarray:
    """16x16 tiles, each all one grey level that says its class: 10 + 6 * class (10 to 244)."""
    return np.repeat((10 + 6 * labels).astype(np.uint8), SIZE * SIZE).reshape(len(labels), SIZE, SIZE, 1)


def _check_blocks(picture: np.ndarray, layout: grids.BlockLayout, images: np.ndarray, labels: np.ndarray) -> None:
    """Block k holds class k's images in their order; the strip under it has its number (white text)."""
    for k in range(layout.classes):
        mine = images[labels == k]
        assert len(mine), f"class {k} drew nothing"
        for i, image in enumerate(mine):
            top, left = layout.tile(k, i)
            np.testing.assert_array_equal(picture[top : top + SIZE, left : left + SIZE], image, err_msg=f"class {k}")
        top, left, bottom, right = layout.label_box(k)
        assert picture[top:bottom, left:right].max() == 255, f"no number under block {k}"


def test_forty_classes_wrap_into_labelled_blocks_in_reading_order():
    labels = class_labels(80, CLASSES, seed=0)  # 0..39 twice
    images = _by_class(labels)
    picture = grids.class_blocks(images, labels)
    layout = grids.block_layout(CLASSES, 2, SIZE, SIZE)
    # Blocks of 2 images side by side: 2 x 17 + 1 = 35 px wide, 17 + 1 + 12 = 30 px high; blocks a row
    # for about 4:3: ceil(sqrt(40 * 4/3 * 30 / 35)) = ceil(6.76) = 7, so 6 rows (40 = 5 x 7 + 5).
    assert (layout.block_w, layout.block_h, layout.block_columns) == (35, 30, 7)
    assert picture.shape == (6 * 30 + 5 * grids.GAP, 7 * 35 + 6 * grids.GAP, 1) == (layout.height, layout.width, 1)
    _check_blocks(picture, layout, images, labels)
    assert layout.box(6)[:2] == (0, 6 * (35 + grids.GAP)) and layout.box(7)[:2] == (30 + grids.GAP, 0)  # reading order
    # Numbers differ: block 0's strip is not block 1's.
    a, b = (picture[t:bt, lf:r] for t, lf, bt, r in (layout.label_box(0), layout.label_box(1)))
    assert (a != b).any()


def test_few_classes_keep_a_class_per_column_and_unlabelled_a_square():
    labels = class_labels(40, 10, seed=0)
    images = _by_class(labels)
    picture = grids.sample_grid(images, labels, size=20)  # 2 rows of 10 columns, 17 px cells
    assert picture.shape == (2 * 17 + 1, 10 * 17 + 1, 1)
    assert [picture[1, 1 + 17 * c, 0] for c in range(10)] == [10 + 6 * c for c in range(10)]
    assert grids.sample_grid(images, None, size=9).shape == (3 * 17 + 1, 3 * 17 + 1, 1)
    assert not grids.wraps(16, 64) and grids.wraps(17, 16) and grids.wraps(10, 256)  # 10 x 257 px > 1,600


@pytest.fixture(scope="module")
def forty_class_generator(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = generator_from_params(
        ModelParams(latent_dim=8, width=8, conditional=True), image_size=SIZE, channels=1, num_classes=CLASSES
    )
    path = tmp_path_factory.mktemp("g40") / "generator.keras"
    model.save(path)
    return path


@pytest.mark.slow  # runs the sample stage
def test_the_sample_stages_forty_class_grid_fits_a_screen_with_each_block_its_class(forty_class_generator, tmp_path):
    from resgan.stages import sample

    params = tiny_params(sample={"num": 100, "grid": 64, "batch_size": 50})
    sample.run(params, forty_class_generator, tmp_path)
    saved = np.asarray(Image.open(tmp_path / "grid.png"))
    with np.load(tmp_path / "samples.npz") as npz:
        images, labels = npz["images"], npz["labels"]
    # round(64 / 40) = 2 images a class; the 281 x 210 px picture enlarged x2 to reach 512 px across.
    layout = grids.block_layout(CLASSES, 2, SIZE, SIZE)
    assert saved.shape == (2 * layout.height, 2 * layout.width) == (420, 562)
    assert (
        saved.shape[1] <= 1600 and saved.shape[1] < 2 * saved.shape[0]
    )  # not a strip (it was 2,601 x 131 px at 64x64)
    true = saved[::2, ::2, None]
    np.testing.assert_array_equal(files.enlarge(true, 2)[..., 0], saved)
    first = int(np.argmax(labels == 0))  # seed 1234 starts at class 1234 % 40 = 34: the grid from the first 0
    assert first == 6
    _check_blocks(true, layout, images[first : first + 80], labels[first : first + 80])
    assert len({images[labels == k][0].tobytes() for k in range(CLASSES)}) == CLASSES  # classes draw apart


@pytest.mark.slow  # runs resgan generate's library call on a saved model
def test_generate_wraps_forty_classes_and_keeps_one_labels_grid(forty_class_generator, tmp_path):
    from resgan.generate import generate

    result = generate(str(forty_class_generator), tmp_path / "g.png", num=120, seed=0, scale=1)
    generate(str(forty_class_generator), tmp_path / "g.npz", num=120, seed=0)
    saved = np.asarray(Image.open(tmp_path / "g.png"))[..., None]
    layout = grids.block_layout(CLASSES, 3, SIZE, SIZE)  # 3 a class: a 2 x 2 block with one empty tile
    assert result.shape == (layout.width, layout.height) and saved.shape[:2] == (layout.height, layout.width)
    assert layout.width <= 1600
    with np.load(tmp_path / "g.npz") as npz:
        _check_blocks(saved, layout, npz["images"], npz["labels"])
    one = generate(str(forty_class_generator), tmp_path / "one.png", num=9, label=5, scale=1)
    assert one.shape == (3 * 17 + 1, 3 * 17 + 1)  # one class: the plain near-square grid
