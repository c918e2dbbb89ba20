"""The whole pipeline, run by the real `dvc` in a temporary git repository, read back from MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from project import make_project, project_env, run as run_command

TINY = {
    "prepare": {"image_size": 16, "max_images": 400},
    "classifier": {"epochs": 2, "width": 8, "feature_dim": 16},
    "model": {"latent_dim": 16, "width": 8},
    "train": {"steps": 8, "batch_size": 16, "log_every": 2, "sample_every": 4, "checkpoint_every": 4},
    "sample": {"num": 200, "grid": 16},
    "evaluate": {"kid_subset_size": 50, "kid_subsets": 10, "ssim_pairs": 50},
}


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the project as a fresh git + DVC repository, using the default store <root>/mlflow.db."""
    env = project_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the default: <root>/mlflow.db, as a user gets it
    return make_project(tmp_path / "project", TINY, env), env


@pytest.mark.slow
def test_repro_runs_every_stage_tracks_one_run_and_registers_a_champion(project):
    repo, env = project
    run_command(["dvc", "repro"], repo, env)

    for output in ("data/prepared/train.npz", "models/classifier.keras", "models/generator.keras",
                   "samples/samples.npz", "samples/grid.png", "metrics/eval.json", "plots/train.csv",
                   "plots/eval/classes.png", "plots/eval/memorization.csv"):
        assert (repo / output).exists(), output
    assert (repo / "mlflow.db").exists() and (repo / "mlruns").is_dir()
    samples = np.load(repo / "samples/samples.npz")["images"]
    assert samples.shape == (200, 16, 16, 1) and samples.dtype.name == "uint8"

    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    assert evaluation["features"] == "classifier"
    assert evaluation["fid_classifier"] > evaluation["fid_classifier_floor"] >= 0  # 8 steps: far from real
    assert evaluation["n_generated"] == 200

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    run_id = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    runs = client.search_runs([client.get_experiment_by_name("resgan").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # train, sample and evaluate share one run
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "8" and run.data.params["sample.num"] == "200"
    assert run.data.metrics["eval/fid_classifier"] == pytest.approx(evaluation["fid_classifier"])
    history = client.get_metric_history(run_id, "loss/d")
    assert [m.step for m in history] == [2, 4, 6, 8]
    version = client.get_model_version_by_alias("resgan", "champion")
    assert str(version.version) == "1" and version.run_id == run_id
    assert set(client.get_registered_model("resgan").aliases) == {"champion", "candidate"}
    assert float(version.tags["eval/fid_classifier"]) == pytest.approx(evaluation["fid_classifier"])

    again = run_command(["dvc", "repro"], repo, env)
    assert "Data and pipelines are up to date." in again.stdout

    # An experiment with more steps: a new run, a new version; candidate moves to it.
    run_command(["git", "add", "-A"], repo, env)
    run_command(["git", "commit", "-qm", "first run"], repo, env)
    run_command(["dvc", "exp", "run", "-S", "train.steps=16"], repo, env)
    runs = client.search_runs([run.info.experiment_id])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert str(client.get_model_version_by_alias("resgan", "candidate").version) == "2"
    new_fid = float(client.get_model_version("resgan", "2").tags["eval/fid_classifier"])
    champion = str(client.get_model_version_by_alias("resgan", "champion").version)
    assert champion == ("2" if new_fid < evaluation["fid_classifier"] else "1")
