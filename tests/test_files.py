"""resgan.files: image grids as saved for people to look at."""

from __future__ import annotations

import numpy as np
from PIL import Image

from resgan import files


def test_save_grid_enlarges_by_the_smallest_integer_factor_that_reaches_min_width(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 1), dtype=np.uint8)
    plain = files.image_grid(images, 10)  # 10 x (32 + 1) + 1 = 331 pixels wide
    assert plain.shape == (34, 331, 1)
    saved = files.save_grid(tmp_path / "grid.png", images, 10, min_width=512)  # 331 x 2 = 662 >= 512 > 331
    assert saved.shape == (68, 662, 1)
    on_disk = np.asarray(Image.open(tmp_path / "grid.png"))
    np.testing.assert_array_equal(on_disk, plain[..., 0].repeat(2, axis=0).repeat(2, axis=1))
    assert files.save_grid(tmp_path / "same.png", images, 10, min_width=331).shape == plain.shape
    assert files.save_grid(tmp_path / "small.png", images, 10).shape == plain.shape
