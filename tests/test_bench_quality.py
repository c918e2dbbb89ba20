"""The quality benchmark's summary step on tiny fake result files (no training): the docs picture
is drawn from the samples on disk, and a call that trained a subset leaves it alone."""

from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks.quality import summary_picture


def _run(root, name: str, images: np.ndarray) -> dict:
    path = root / "results" / f"mnist_200k_{name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images)
    return {
        "at_images": {
            "samples": f"results/mnist_200k_{name}.npz",
            "images": 200_000,
            "wall_s": 600.0,
            "fid_classifier": 1.5,
        }
    }


def test_summary_picture_shows_each_run_and_leaves_out_none(tmp_path):
    white = np.full((64, 8, 8), 255, np.uint8)  # grey samples as the MNIST runs keep them (N, H, W)
    red = np.zeros((64, 8, 8, 3), np.uint8)
    red[..., 0] = 255  # colour samples (N, H, W, 3) as the photograph runs keep them
    runs = {"plain": _run(tmp_path, "plain", white), "tuned": _run(tmp_path, "tuned", red)}
    picture = tmp_path / "picture.png"
    assert summary_picture(runs, picture, tmp_path) == []
    drawn = np.asarray(Image.open(picture).convert("RGB")).astype(int)
    assert drawn.shape == (540, 1000, 3)  # two panels of 5 x 5.4 inches at 100 dpi
    # Each panel's middle shows its own samples (between black 1-pixel grid lines, 64 of 81 pixels a
    # cell): white on the left, red on the right.
    left, right = drawn[170:370, 150:350].mean(axis=(0, 1)), drawn[170:370, 650:850].mean(axis=(0, 1))
    assert left.min() > 150
    assert right[0] > 150 and right[1] < 40 and right[2] < 40


def test_summary_picture_is_left_alone_when_a_run_has_no_samples_on_disk(tmp_path):
    grey = np.full((64, 8, 8), 128, np.uint8)
    runs = {
        "plain": _run(tmp_path, "plain", grey),
        "tuned": _run(tmp_path, "tuned", grey),
        "tuned_uncond": _run(tmp_path, "tuned_uncond", grey),
    }
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"the published picture")
    (tmp_path / runs["plain"]["at_images"]["samples"]).unlink()  # an earlier call's run: git-ignored, not here
    assert summary_picture(runs, picture, tmp_path) == ["plain"]
    assert picture.read_bytes() == b"the published picture"
