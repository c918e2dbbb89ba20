"""Team mode on the parts a team runs (docs/scaling.md): ``mlflow server`` on PostgreSQL with artifacts
proxied to S3 (moto), and a DVC remote on the same S3. One pipeline run, then two teammates' clones that
pull it, and run an experiment each at the same time against the one server, then share one through
``dvc exp push``/``pull``. The MLflow clients hold no S3 keys (the server writes the bucket); DVC reads its
keys from ``.dvc/config.local``, which git does not carry."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient
from project import make_project, project_env, run
from services import BUCKET, S3_KEYS
from test_team import PULLED, TINY

pytestmark = [pytest.mark.slow, pytest.mark.team]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _client_env(server) -> dict[str, str]:
    """A teammate's shell: the server's URL and nothing else of the team's (no S3 keys, no endpoint)."""
    env = project_env(MLFLOW_TRACKING_URI=server.uri)
    for name in (*S3_KEYS, "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    return env


def _use_remote(repo: Path, s3, env: dict[str, str], commit: bool) -> None:
    """``dvc remote add -d team s3://BUCKET/dvc`` + ``endpointurl`` (in git); the keys in config.local."""
    if commit:
        run(["dvc", "remote", "add", "-d", "team", f"s3://{BUCKET}/dvc"], repo, env)
        run(["dvc", "remote", "modify", "team", "endpointurl", s3.endpoint], repo, env)
    run(["dvc", "remote", "modify", "--local", "team", "access_key_id", S3_KEYS["AWS_ACCESS_KEY_ID"]], repo, env)
    run(
        ["dvc", "remote", "modify", "--local", "team", "secret_access_key", S3_KEYS["AWS_SECRET_ACCESS_KEY"]], repo, env
    )


def _train_runs(client: MlflowClient, experiment_id: str) -> list:
    return [r for r in client.search_runs([experiment_id]) if "mlflow.parentRunId" not in r.data.tags]


def test_pipeline_dvc_remote_and_two_teammates_on_postgres_and_s3(tmp_path, team_server, postgres, s3):
    server = team_server
    env = _client_env(server)
    client = MlflowClient(tracking_uri=server.uri)
    repo = make_project(tmp_path / "project", TINY, env)

    run(["dvc", "repro"], repo, env)

    # ---- MLflow through the server: the run, its curves, grids and model ----
    info = json.loads((repo / "models/mlflow_run.json").read_text())
    assert info["tracking_uri"] == server.uri
    train_run = client.get_run(info["run_id"])
    experiment_id = train_run.info.experiment_id
    assert train_run.info.status == "FINISHED"
    assert train_run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: the client never sees S3
    assert [m.step for m in client.get_metric_history(train_run.info.run_id, "loss/d")] == [2, 4]
    images = [a.path for a in client.list_artifacts(train_run.info.run_id, "images")]
    assert any(p.endswith(".png") and "+step+4+" in p for p in images), images
    [model] = client.search_logged_models([experiment_id])
    assert model.source_run_id == train_run.info.run_id and info["model_uri"] == model.model_uri
    champion = client.get_model_version_by_alias("resgan", "champion")
    assert champion.version == "1" and champion.run_id == train_run.info.run_id
    assert client.get_model_version_by_alias("resgan", "candidate").version == "1"

    # ---- the bytes are in the bucket, the rows in PostgreSQL ----
    keys = s3.keys("mlflow/")
    run_prefix = f"mlflow/{experiment_id}/{train_run.info.run_id}/artifacts/"
    assert f"{run_prefix}params.yaml" in keys and f"{run_prefix}plots/train.csv" in keys
    assert any(k.startswith(run_prefix + "images/") and k.endswith(".png") for k in keys)
    assert any(model.model_id in k and k.endswith("MLmodel") for k in keys)  # the logged model's files
    assert postgres.rows(f"SELECT status FROM runs WHERE run_uuid = '{train_run.info.run_id}'") == [("FINISHED",)]
    steps = postgres.rows(
        f"SELECT step FROM metrics WHERE run_uuid = '{train_run.info.run_id}' AND key = 'loss/d' ORDER BY step"
    )
    assert steps == [(2,), (4,)]
    assert postgres.rows(
        "SELECT alias, version FROM registered_model_aliases WHERE name = 'resgan' ORDER BY alias"
    ) == [("candidate", 1), ("champion", 1)]

    # ---- resgan generate and resgan models list through the server ----
    run(["resgan", "generate", "--model", "models:/resgan@champion", "--num", "8", "--out", "served.png"], repo, env)
    run(["resgan", "generate", "--model", "models/generator.keras", "--num", "8", "--out", "local.png"], repo, env)
    assert _sha256(repo / "served.png") == _sha256(repo / "local.png")  # the registered model is the local one
    listed = json.loads(run(["resgan", "models", "list", "--json"], repo, env).stdout)
    assert [(row["version"], row["aliases"]) for row in listed] == [(1, ["candidate", "champion"])]

    # ---- DVC on S3: push; two teammates clone, pull the same bytes, and have nothing to re-run ----
    _use_remote(repo, s3, env, commit=True)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "pipeline run + S3 remote"], repo, env)
    assert "pushed" in run(["dvc", "push"], repo, env).stdout
    assert len(s3.keys("dvc/")) >= len(PULLED)
    assert S3_KEYS["AWS_SECRET_ACCESS_KEY"] not in run(["git", "show", "HEAD:.dvc/config"], repo, env).stdout

    clones = {name: tmp_path / name for name in ("ada", "bob")}
    for clone in clones.values():
        run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
        assert not (clone / ".dvc/config.local").exists()  # keys are each person's own
        _use_remote(clone, s3, env, commit=False)
        run(["dvc", "pull"], clone, env)
        for path in PULLED:
            assert _sha256(clone / path) == _sha256(repo / path), path
    runs_before = len(client.search_runs([experiment_id]))
    status = run(["dvc", "repro"], clones["ada"], env)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    assert len(client.search_runs([experiment_id])) == runs_before  # nothing ran, nothing logged

    # ---- two teammates at once: an experiment each, against the one server ----
    seeds = {"ada": 1, "bob": 2}
    started = {
        name: subprocess.Popen(
            ["dvc", "exp", "run", "-n", f"{name}-seed", "-S", f"train.seed={seeds[name]}"],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, clone in clones.items()
    }
    for name, process in started.items():
        out, _ = process.communicate(timeout=900)
        assert process.returncode == 0, f"{name}'s dvc exp run:\n{out[-3000:]}"
    train_runs = _train_runs(client, experiment_id)
    assert len(train_runs) == 3 and {r.info.status for r in train_runs} == {"FINISHED"}
    for name, clone in clones.items():
        mine = json.loads((clone / "models/mlflow_run.json").read_text())["run_id"]
        record = client.get_run(mine)
        assert record.data.params["train.seed"] == str(seeds[name])  # each clone's run holds its own params
        assert record.data.tags["dvc_exp_name"] == f"{name}-seed"
    versions = client.search_model_versions("name = 'resgan'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]  # numbered without a clash
    assert len({v.source for v in versions}) == 3
    fid = {int(v.version): float(v.tags["eval/fid_classifier"]) for v in versions}
    # champion moves only to a better version: whatever order the two registered in, it ends on the best
    assert int(client.get_model_version_by_alias("resgan", "champion").version) == min(fid, key=fid.get)
    assert int(client.get_model_version_by_alias("resgan", "candidate").version) in (2, 3)

    # ---- dvc exp push / pull: bob gets ada's experiment, code, params and models ----
    run(["dvc", "exp", "push", "origin", "ada-seed"], clones["ada"], env)
    run(["dvc", "exp", "pull", "origin", "ada-seed"], clones["bob"], env)
    assert "ada-seed" in run(["dvc", "exp", "list"], clones["bob"], env).stdout
    run(["dvc", "exp", "apply", "ada-seed"], clones["bob"], env)
    for path in ("models/generator.keras", "samples/samples.npz", "metrics/eval.json", "models/mlflow_run.json"):
        assert _sha256(clones["bob"] / path) == _sha256(clones["ada"] / path), path
