"""Shared fixtures: tiny params (16x16 images, widths of 8, a handful of steps) and a safe MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest
from services import postgres, s3, team_server  # noqa: F401  (session fixtures of the team-mode tests)

from resgan.config import Params, parse_params

TINY = {
    # scikit-learn's digits (not params.yaml's MNIST files), and an unconditional model unless a test asks:
    # what the tests were written for, and faster.
    "prepare": {"source": "digits", "fit": "resize", "image_size": 16, "max_images": 300},
    "classifier": {"epochs": 1, "batch_size": 64, "width": 8, "feature_dim": 16, "ssl_min_steps": 0},
    "model": {"latent_dim": 16, "width": 8, "conditional": False},
    "train": {
        "steps": 4,
        "batch_size": 8,
        "checkpoint_every": 2,
        "log_every": 1,
        "sample_every": 2,
        "precision": "float32",
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "diffaugment": "color,translation,cutout",
    },
    "sample": {"num": 64, "batch_size": 32, "grid": 16},
    "evaluate": {"kid_subsets": 5, "kid_subset_size": 32, "is_splits": 2, "ssim_pairs": 50, "max_real": 200},
}


def tiny_params(**overrides: dict) -> Params:
    """TINY with per-section overrides, e.g. ``tiny_params(train={"loss": "minimax"})``."""
    raw = {section: dict(values) for section, values in TINY.items()}
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    return parse_params(raw)


SLOW_FOLDERS = ("e2e", "faults")  # whole pipelines, kills, servers: slow wherever a test there is marked


def pytest_collection_modifyitems(config, items):
    """Every test under tests/e2e/ and tests/faults/ is ``slow``, marked or not, so that ``make test-fast``
    (``-m "not slow"``) leaves out what is added there as well as what is marked."""
    here = Path(__file__).resolve().parent
    for item in items:
        parts = Path(item.path).resolve().relative_to(here).parts
        if parts[0] in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def params() -> Params:
    return tiny_params()


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch):
    """Every test gets its own SQLite MLflow store; no test ever writes to the project's mlflow.db."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    # A new SQLite store puts its default experiment's artifacts in ./mlruns of the working directory,
    # which is the project's own when pytest runs from the root. MLflow reads this variable (which its
    # server sets) for that default: the test's folder instead.
    monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", (tmp_path / "mlruns").as_uri())
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


def _store_files() -> set[str]:
    root = Path(__file__).resolve().parents[1]
    found = {str(p.relative_to(root)) for p in (root / "mlruns").rglob("*")} if (root / "mlruns").exists() else set()
    return found | ({"mlflow.db"} if (root / "mlflow.db").exists() else set())


@pytest.fixture(autouse=True, scope="session")
def _project_store_untouched():
    """The suite leaves the project's own MLflow store alone: no new file under mlruns/, no new mlflow.db."""
    before = _store_files()
    yield
    added = sorted(_store_files() - before)
    assert not added, f"tests wrote into the project's MLflow store: {added[:5]}"
