"""Team mode: the pipeline against a shared ``mlflow server`` (SQLite backend, proxied artifacts) on
127.0.0.1, and a DVC remote (a local directory here; S3/GCS/Azure work the same way) that a teammate's
clone pulls the prepared data and the models from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow_server import MlflowServer
from project import make_project, project_env, run

from resgan.loading import load_generator

TINY = {
    "prepare": {"source": "digits", "fit": "resize", "image_size": 16, "max_images": 300},
    "classifier": {"epochs": 15, "batch_size": 32, "width": 8, "feature_dim": 16},  # enough to pass its fitness check
    "model": {"latent_dim": 16, "width": 8, "conditional": False},
    "train": {"steps": 4, "batch_size": 16, "log_every": 2, "sample_every": 4, "checkpoint_every": 4},
    "sample": {"num": 100, "grid": 16},
    "evaluate": {"kid_subset_size": 50, "kid_subsets": 5, "ssim_pairs": 50, "max_real": 200},
}
# DVC-cached outputs a teammate pulls (the `cache: false` ones are per-machine records).
PULLED = (
    "data/prepared/train.npz",
    "data/prepared/test.npz",
    "data/prepared/manifest.csv",
    "models/classifier.keras",
    "models/generator.keras",
    "samples/samples.npz",
)


_run = run


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_env = project_env


@pytest.fixture
def server(tmp_path):
    """``mlflow server`` on 127.0.0.1: SQLite backend, artifacts proxied to a folder only it writes."""
    with MlflowServer(tmp_path / "server", env=_env()) as running:
        yield running.uri, running.root


@pytest.mark.slow
def test_pipeline_against_a_tracking_server_and_a_dvc_remote_round_trip(tmp_path, server, monkeypatch):
    url, server_root = server
    env = _env(MLFLOW_TRACKING_URI=url)
    repo = make_project(tmp_path / "project", TINY, env)

    _run(["dvc", "repro"], repo, env)

    # ---- MLflow: everything went to the server; nothing to a local store ----
    assert not (repo / "mlflow.db").exists() and not (repo / "mlruns").exists()
    client = MlflowClient(tracking_uri=url)
    info = json.loads((repo / "models/mlflow_run.json").read_text())
    assert info["tracking_uri"] == url
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: clients never see the store
    assert run.data.params["train.steps"] == "4" and run.data.params["model.width"] == "8"
    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    [evaluation_run] = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{info['run_id']}'")
    assert evaluation_run.data.metrics["eval/fid_classifier"] == pytest.approx(evaluation["fid_classifier"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/d")] == [2, 4]
    # The server wrote the artifacts under its own destination.
    stored = [p for p in (server_root / "artifacts").rglob("*") if p.is_file()]
    assert any(p.name == "params.yaml" for p in stored) and any(p.name == "train.csv" for p in stored)

    version = client.get_model_version_by_alias("resgan", "champion")
    assert str(version.version) == "1" and version.run_id == info["run_id"]
    assert float(version.tags["eval/fid_classifier"]) == pytest.approx(evaluation["fid_classifier"], rel=1e-3)
    # The registered model, downloaded through the server, is the generator the pipeline wrote.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    served = load_generator("models:/resgan@champion")
    local = keras.saving.load_model(repo / "models/generator.keras", safe_mode=True, compile=False)
    z = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_array_equal(served(z, training=False).numpy(), local(z, training=False).numpy())

    # ---- DVC: push to a remote, a teammate's clone pulls the same bytes ----
    remote = tmp_path / "dvc-remote"
    _run(["dvc", "remote", "add", "-d", "shared", str(remote)], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "pipeline run + remote"], repo, env)
    pushed = _run(["dvc", "push"], repo, env)
    assert "pushed" in pushed.stdout
    assert sum(1 for p in remote.rglob("*") if p.is_file()) >= len(PULLED)

    clone = tmp_path / "teammate"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    for path in PULLED:
        assert not (clone / path).exists(), path  # git carries only the pointers (dvc.lock)
    _run(["dvc", "pull"], clone, env)
    for path in PULLED:
        assert _sha256(clone / path) == _sha256(repo / path), path
    # Nothing to push back: the clone's cache holds exactly what the remote holds.
    status = _run(["dvc", "status", "--cloud"], clone, env)
    assert "up to date" in status.stdout.lower() or "in sync" in status.stdout.lower(), status.stdout
