"""Shared fixtures: tiny params (16x16 images, widths of 8, a handful of steps) and a safe MLflow store."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest

from resgan.config import Params, parse_params

TINY = {
    # scikit-learn's digits (not params.yaml's MNIST files), and an unconditional model unless a test asks:
    # what the tests were written for, and faster.
    "prepare": {"source": "digits", "fit": "resize", "image_size": 16, "max_images": 300},
    "classifier": {"epochs": 1, "batch_size": 64, "width": 8, "feature_dim": 16},
    "model": {"latent_dim": 16, "width": 8, "conditional": False},
    "train": {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 1, "sample_every": 2,
              "precision": "float32", "lr_g": 2e-4, "lr_d": 2e-4, "diffaugment": "color,translation,cutout"},
    "sample": {"num": 64, "batch_size": 32, "grid": 16},
    "evaluate": {"kid_subsets": 5, "kid_subset_size": 32, "is_splits": 2, "ssim_pairs": 50, "max_real": 200},
}


def tiny_params(**overrides: dict) -> Params:
    """TINY with per-section overrides, e.g. ``tiny_params(train={"loss": "minimax"})``."""
    raw = {section: dict(values) for section, values in TINY.items()}
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    return parse_params(raw)


@pytest.fixture
def params() -> Params:
    return tiny_params()


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch):
    """Every test gets its own SQLite MLflow store; no test ever writes to the project's mlflow.db."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    yield
    # The stages set process-wide state (MLflow's URI and active run, Keras' dtype policy): reset it.
    import sys

    if "mlflow" in sys.modules:
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
    if "keras" in sys.modules:
        import keras

        keras.mixed_precision.set_global_policy("float32")
