"""``python -m benchmarks.photos --quick`` on tiny class folders made here (CIFAR-10's layout: train/<class>,
test/<class>, JPEG): one command prepares both, trains the scorer, both runs, keeps their samples and
writes its JSON; without the data it says so in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from project import project_env

ROOT = Path(__file__).resolve().parents[2]
CLASSES = {"blue": (40, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}


def _photos(root: Path, per_class: int, seed: int) -> None:
    """``per_class`` 32x32 JPEGs a class: a disc of the class colour on a random grey background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = np.full((32, 32, 3), rng.integers(60, 200), np.float64)
            cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 9)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour
            image += rng.normal(0, 6, image.shape)
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB").save(root / name / f"{i:04d}.jpg")


def _bench(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.photos", *args],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
    )


@pytest.mark.slow
def test_bench_photos_quick_on_tiny_class_folders(tmp_path):
    _photos(tmp_path / "cifar" / "train", 40, seed=0)
    _photos(tmp_path / "cifar" / "test", 12, seed=1)
    env = project_env()
    results, cache = tmp_path / "results", tmp_path / "cache"
    done = _bench(
        [
            "--quick",
            "--cifar",
            str(tmp_path / "cifar"),
            "--results",
            str(results),
            "--cache",
            str(cache),
            "--work",
            str(tmp_path / "work"),
        ],
        env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    figures = json.loads((results / "photos_quick.json").read_text())
    assert figures["prepare"]["inputs"] == 120 and figures["real"]["n"] == 36
    assert figures["real"]["class_names"] == sorted(CLASSES)
    summary = json.loads((tmp_path / "work" / "data" / "summary.json").read_text())
    assert figures["scorer"]["data_hash"] == summary["data_hash"] and figures["scorer"]["params"]["epochs"] == 1
    assert list(cache.glob(f"cifar10_scorer_{summary['data_hash'][:12]}_*.keras"))  # cached by the data hash
    runs = figures["budgets"]["640"]
    assert runs["resgan"]["steps"] == 640 // 32 and runs["textbook"]["steps"] == 640 // 64
    for name, run in runs.items():
        with np.load(results / f"quick_cifar10_640_{name}.npz") as saved:
            images, labels = saved["images"], saved["labels"]
        assert images.shape == (500, 32, 32, 3) and images.dtype == np.uint8
        np.testing.assert_array_equal(labels, (1234 + np.arange(500)) % 3)  # every class in turn, seed 1234
        assert run["n_samples"] == 500 and 0.0 <= run["class_accuracy"] <= 1.0 and run["fid_classifier"] > 0
        assert run["class_accuracy_over_scorer"] == pytest.approx(
            run["class_accuracy"] / figures["scorer"]["accuracy_real_test"]
        )
    assert "scorer_accuracy" in figures["targets"] and "fid_over_textbook_200k" not in figures["targets"]
    assert "Traceback" not in done.stderr


def test_bench_photos_without_the_data_says_so_in_one_line(tmp_path):
    env = {**project_env(), "RESGAN_CIFAR10": str(tmp_path / "nowhere")}
    done = _bench(["--quick", "--results", str(tmp_path / "results")], env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"no CIFAR-10 folder at {tmp_path / 'nowhere'}: pass --cifar DIR (or set "
        "RESGAN_CIFAR10) to a folder holding train/<class>/*.jpg and test/<class>/*.jpg"
    )
    assert not (tmp_path / "results").exists()
