"""Team mode's parts failing under a pipeline: ``mlflow server`` restarted in the middle of training,
PostgreSQL stopped before evaluation, the S3 bucket unreachable. Each either goes on and loses nothing, or
stops with one line, a non-zero exit code and no half-registered version.

MLflow's client retries a 5xx answer 7 times with backoff (minutes); where the server stays broken the
tests set ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` so that resgan's own retries (``mlflow.tracking_retries``,
1 + 2 + 4 ... s) are the whole wait."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pytest
from mlflow import MlflowClient
from mlflow_server import free_port
from project import make_project, project_env, run
from services import S3_KEYS, TeamServer

pytestmark = [pytest.mark.slow, pytest.mark.team]

NAME = "resgan-faults"  # this module's experiment and registered model on the session's server
STEPS = 30
PARAMS = {  # tests/e2e/test_team.py's tiny pipeline, trained longer
    "prepare": {"source": "digits", "fit": "resize", "image_size": 16, "max_images": 300},
    "classifier": {"epochs": 15, "batch_size": 32, "width": 8, "feature_dim": 16},  # enough to pass its fitness check
    "model": {"latent_dim": 16, "width": 8, "conditional": False},
    "train": {"steps": STEPS, "batch_size": 16, "log_every": 1, "sample_every": 10, "checkpoint_every": 10},
    "sample": {"num": 100, "grid": 16},
    "evaluate": {"kid_subset_size": 50, "kid_subsets": 5, "ssim_pairs": 50, "max_real": 200},
    "mlflow": {"experiment": NAME, "registered_model": NAME},
}
QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _env(server_uri: str, **extra: str) -> dict[str, str]:
    env = project_env(MLFLOW_TRACKING_URI=server_uri, **extra)
    for name in (*S3_KEYS, "MLFLOW_S3_ENDPOINT_URL"):
        env.pop(name, None)
    return env


class Output:
    """A process's merged output, read as it comes (a thread), so a test can wait for a line."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.lines = process, []
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(process.stdout.readline, "")), daemon=True)
        self.thread.start()

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None and time.monotonic() < deadline, (
                f"no {text!r} in:\n{''.join(self.lines)[-3000:]}"
            )
            time.sleep(0.2)

    def finish(self, timeout: float = 900) -> str:
        self.process.wait(timeout=timeout)
        self.thread.join(timeout=30)
        return "".join(self.lines)


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def test_server_restart_mid_training_then_postgres_stopped_before_registration(tmp_path, team_server, postgres):
    server = team_server
    env = _env(server.uri)
    repo = make_project(tmp_path / "project", PARAMS, env)
    client = MlflowClient(tracking_uri=server.uri)

    # ---- the server restarts while training: training goes on, buffered metrics arrive, nothing lost ----
    training = Output(
        subprocess.Popen(
            ["dvc", "repro", "train"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    )
    training.wait_for(f"step 2/{STEPS}", timeout=600)
    server.stop()
    training.wait_for("training goes on", timeout=600)
    server.start()
    out = training.finish()
    assert training.process.returncode == 0, out[-3000:]
    print(
        "\n[fault] server restarted mid-training:",
        *[line.strip() for line in training.lines if "MLflow:" in line],
        sep="\n  ",
    )
    info = json.loads((repo / "models/mlflow_run.json").read_text())
    train_run = client.get_run(info["run_id"])
    assert train_run.info.status == "FINISHED"
    for key in ("loss/d", "loss/g"):
        assert sorted(m.step for m in client.get_metric_history(info["run_id"], key)) == list(range(1, STEPS + 1))
    assert len(client.search_logged_models([train_run.info.experiment_id])) == 1
    assert len(client.search_runs([train_run.info.experiment_id])) == 1  # the same run, not a second

    # ---- PostgreSQL stopped before sample + evaluate: one line, no version half-registered ----
    postgres.stop()
    try:
        failed = subprocess.run(
            ["dvc", "repro"], cwd=repo, env={**env, **QUICK}, capture_output=True, text=True, timeout=900
        )
    finally:
        postgres.start()
    assert failed.returncode != 0
    [line] = _error_lines(failed)
    print(f"\n[fault] PostgreSQL stopped before evaluation: {line}")  # what a person sees (pytest -s)
    assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert "MLflow" in line, line
    assert client.search_model_versions(f"name = '{NAME}'") == []  # nothing registered, not half of it
    run(["dvc", "repro"], repo, env)  # PostgreSQL is back: the same command finishes the job
    [version] = client.search_model_versions(f"name = '{NAME}'")
    assert version.version == "1" and client.get_registered_model(NAME).aliases == {"candidate": "1", "champion": "1"}
    assert version.run_id == info["run_id"]

    # ---- the bucket unreachable: one line, nothing registered ----
    down = TeamServer(
        postgres,
        server.s3,
        tmp_path / "no-bucket",
        database=postgres.create_database("mlflow_nobucket"),
        s3_endpoint=f"http://127.0.0.1:{free_port()}",
    )  # nothing listens there
    other = tmp_path / "other"
    shutil.copytree(repo, other, ignore=shutil.ignore_patterns("checkpoints"))
    (other / "models/mlflow_run.json").unlink()
    with down:
        failed = subprocess.run(
            ["dvc", "repro", "--force", "--single-item", "train"],
            cwd=other,
            env={**_env(down.uri), **QUICK},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert failed.returncode != 0
        [line] = _error_lines(failed)
        print(f"\n[fault] bucket unreachable: {line}")
        assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
        assert line.startswith("error: MLflow: log params.yaml failed after"), line
        down_client = MlflowClient(tracking_uri=down.uri)
        [failed_run] = down_client.search_runs([down_client.get_experiment_by_name(NAME).experiment_id])
        assert failed_run.info.status == "FAILED"  # (its failure_reason tag is one best-effort attempt)
        assert down_client.search_registered_models() == []


def test_eight_registrations_at_once_on_the_server_keep_versions_apart_and_champion_best(team_server, monkeypatch):
    """Eight ``evaluate`` registrations at the same moment (threads) through the PostgreSQL-backed server,
    where no file lock can serialize them: every version gets its own number, and champion ends on the best
    FID, as registered one after another."""
    import mlflow
    from registrations import register_at_once

    from resgan import model_registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server.uri)
    mlflow.set_tracking_uri(team_server.uri)
    fids, errors = register_at_once(0, {model_registry.EXTRACTOR_TAG: "classifier:1"}, timeout=300)
    assert errors == []
    client = MlflowClient(tracking_uri=team_server.uri)
    versions = client.search_model_versions("name = 'race'")
    assert sorted(int(v.version) for v in versions) == list(range(1, 9))
    assert sorted(float(v.tags["eval/fid_classifier"]) for v in versions) == sorted(fids)  # one version each
    best = min(versions, key=lambda v: float(v.tags["eval/fid_classifier"]))
    champion = client.get_model_version_by_alias("race", "champion")
    assert champion.version == best.version, {v.version: v.tags["eval/fid_classifier"] for v in versions}
