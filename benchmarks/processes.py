"""Figures measured on whole commands: start-up, ``dvc repro`` with nothing to do, ``resgan generate``,
the evaluate stage and peak memory; plus the synthetic inputs they run on.

Every command runs with the virtual environment's bin folder first on PATH (as ``make`` does) and
is timed with ``time.perf_counter`` around ``subprocess.run``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.child import RESULT_PREFIX

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The dvc no-op project: the e2e test's tiny pipeline (seconds per stage).
TINY_PROJECT = {
    "prepare": {"image_size": 16, "max_images": 400},
    "classifier": {"epochs": 2, "width": 8, "feature_dim": 16},
    "model": {"latent_dim": 16, "width": 8},
    "train": {"steps": 8, "batch_size": 16, "log_every": 2, "sample_every": 4, "checkpoint_every": 4},
    "sample": {"num": 200, "grid": 16},
    "evaluate": {"kid_subset_size": 50, "kid_subsets": 10, "ssim_pairs": 50},
}


class BenchError(RuntimeError):
    pass


def command_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    env.update(extra)
    return env


def timed(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> tuple[float, str]:
    """Run ``args``; return (wall seconds, stdout). A failure raises with the output's tail."""
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise BenchError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    return seconds, result.stdout


def child_result(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise BenchError(f"no {RESULT_PREFIX.strip()} line in:\n{stdout[-2000:]}")


# ---------------------------------------------------------------- inputs


def mnist_like(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 (n, size, size, 1) digit images of MNIST's make-up (a 24 px digit on a black canvas,
    jittered by up to 2 px, plus noise) from scikit-learn's 8x8 digits, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(digits.images), n)
    scale = 3 if size >= 28 else max(1, (size - 4) // 8)
    glyphs = np.kron(digits.images[pick] / 16.0, np.ones((1, scale, scale)))  # (n, 8 scale, 8 scale)
    side = glyphs.shape[1]
    images = np.zeros((n, size, size), dtype=np.float32)
    margin = (size - side) // 2
    shifts = rng.integers(-min(2, margin), min(2, margin) + 1, (n, 2))
    for dy in np.unique(shifts[:, 0]):
        for dx in np.unique(shifts[:, 1]):
            rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
            images[rows, margin + dy : margin + dy + side, margin + dx : margin + dx + side] = glyphs[rows]
    images = np.clip(images * 255 + rng.normal(0, 8, images.shape), 0, 255)
    return images.astype(np.uint8)[..., None], digits.target[pick].astype(np.int64)


def write_prepared(folder: Path, n_train: int, n_test: int, size: int = 32) -> Path:
    """A prepared-data folder (train.npz, test.npz, summary.json) as the prepare stage writes it."""
    from resgan import files

    train, train_labels = mnist_like(n_train, size, seed=0)
    test, test_labels = mnist_like(n_test, size, seed=1)
    files.save_npz(folder / "train.npz", images=train, labels=train_labels)
    files.save_npz(folder / "test.npz", images=test, labels=test_labels)
    files.write_json(
        folder / "summary.json",
        {
            "data_hash": f"bench-mnist-like-{n_train}-{n_test}-{size}",
            "channels": 1,
            "image_size": size,
            "counts": {"train": n_train, "test": n_test},
        },
    )
    return folder


def write_params(path: Path, overrides: dict[str, dict[str, Any]]) -> Path:
    """The project's params.yaml with per-section ``overrides``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def write_classifier(path: Path, image_shape: tuple[int, int, int], params) -> Path:
    """An (untrained) domain classifier of the configured size: feature extraction costs the same."""
    from resgan.metrics.classifier import build_classifier

    model = build_classifier(image_shape, 10, width=params.classifier.width, feature_dim=params.classifier.feature_dim)
    model.save(path)
    return path


# ---------------------------------------------------------------- figures


def startup(runs: int) -> dict[str, Any]:
    """``resgan --help`` wall time beside a bare ``python -c pass`` of the same interpreter."""
    env = command_env()
    figures: dict[str, list[float]] = {"help": [], "python": []}
    for i in range(runs + 1):  # the first of each is the warm-up
        for key, args in (("help", [str(BIN / "resgan"), "--help"]), ("python", [sys.executable, "-c", "pass"])):
            seconds, _ = timed(args, ROOT, env)
            if i:
                figures[key].append(seconds)
    return figures


def dvc_noop(work: Path, runs: int) -> dict[str, Any]:
    """``dvc repro`` with nothing to do, in a copy of the tiny pipeline that was just reproduced,
    beside ``dvc --version`` (DVC's own start-up)."""
    repo = work / "tiny-project"
    repo.mkdir()
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    write_params(repo / "params.yaml", TINY_PROJECT)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "data" / "raw", repo / "data" / "raw")
    env = command_env(
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
    )
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own mlflow.db, as a user gets it
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        timed(args, repo, env)
    first_s, _ = timed(["dvc", "repro"], repo, env)
    figures: dict[str, Any] = {"first_repro_s": first_s, "noop": [], "version": []}
    for i in range(runs + 1):
        seconds, out = timed(["dvc", "repro"], repo, env)
        if "up to date" not in out:
            raise BenchError(f"dvc repro had something to do on the second run:\n{out[-2000:]}")
        version_s, _ = timed(["dvc", "--version"], repo, env)
        if i:
            figures["noop"].append(seconds)
            figures["version"].append(version_s)
    return figures


def generate(generator_path: Path, out: Path, num: int) -> float:
    """One ``resgan generate --num N`` into an .npz; seconds. Checks that N images came out."""
    seconds, _ = timed(
        [
            str(BIN / "resgan"),
            "generate",
            "--model",
            str(generator_path),
            "--num",
            str(num),
            "--out",
            str(out),
            "--force",
        ],
        out.parent,
        command_env(),
    )
    with np.load(out) as data:
        if data["images"].shape[0] != num:
            raise BenchError(f"resgan generate wrote {data['images'].shape[0]} images, not {num}")
    return seconds


def stage_child(stage: str, work: Path, args: list[str]) -> tuple[float, dict[str, Any]]:
    """``python -m benchmarks.child STAGE ARGS`` in ``work`` with a private MLflow store; (wall s, its result)."""
    env = command_env(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}", DVC_ROOT=str(work))
    seconds, out = timed([sys.executable, "-m", "benchmarks.child", stage, *args], work, env)
    return seconds, child_result(out)


def warm_imports() -> None:
    """Load the heavy libraries once in a throwaway process (file cache, .pyc) before timed children."""
    timed(
        [sys.executable, "-c", "import tensorflow, keras, mlflow, scipy.linalg, skimage.metrics, sklearn"],
        ROOT,
        command_env(),
    )
