"""Only its users get in: ``mlflow server --app-name basic-auth`` on PostgreSQL + S3. resgan reads
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` as MLflow does. The permission matrix tested:

| who                       | models list | generate | pipeline | register a version | move an alias |
| ------------------------- | ----------- | -------- | -------- | ------------------ | ------------- |
| ada (created experiment)  | yes         | yes      | yes      | yes                | yes           |
| bob (READ, the default)   | yes         | yes      |          | no (403)           | no (403)      |
| ada, wrong password       | no (401)    | no (401) | no (401) |                    |               |
| nobody (no user set)      | no (401)    |          |          |                    |               |

Every refusal is one line naming the server and the user, at once (never retried), a non-zero exit code,
and nothing written. No password is anywhere in the store, the bucket or the project's outputs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from project import make_project, project_env, run
from services import ADMIN, ADMIN_PASSWORD, BUCKET, S3_KEYS, TeamServer
from test_team import TINY

pytestmark = [pytest.mark.slow, pytest.mark.team]

PASSWORDS = {"ada": "ada-Pw-7d3e0c51", "bob": "bob-Pw-91aa4f02"}
WRONG = "ada-Pw-wrong-5b7e"


@contextlib.contextmanager
def _as(user: str, password: str):
    """MLflow's client credentials for the block (its client reads them from the environment)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def auth_server(postgres, s3, tmp_path_factory):
    """A basic-auth server (its own database and bucket prefix) with users ada and bob."""
    from mlflow.server import get_app_client

    database = postgres.create_database("mlflow_auth")
    with TeamServer(
        postgres, s3, tmp_path_factory.mktemp("auth-server"), prefix="mlflow-auth", auth=True, database=database
    ) as server:
        print(f"\n[team services] mlflow server --app-name basic-auth started in {server.started_in:.2f} s")
        with _as(ADMIN, ADMIN_PASSWORD):
            admin = get_app_client("basic-auth", tracking_uri=server.uri)
            for user, password in PASSWORDS.items():
                admin.create_user(user, password)
        yield server


def _env(server, user: str | None, password: str | None) -> dict[str, str]:
    env = project_env(MLFLOW_TRACKING_URI=server.uri)
    for name in (*S3_KEYS, "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    if user:
        env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    return env


def _fails(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command that must fail with one readable line; returns that line."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and "retrying" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _tree(repo: Path) -> dict[str, str]:
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in repo.rglob("*")
        if p.is_file() and ".git" not in p.parts and "tmp" not in p.parts
    }


def test_only_its_users_get_in_and_no_password_is_written(tmp_path, auth_server, postgres, s3):
    server = auth_server
    ada = _env(server, "ada", PASSWORDS["ada"])
    repo = make_project(tmp_path / "project", TINY, ada)
    outputs = [run(["dvc", "repro"], repo, ada)]

    with _as("ada", PASSWORDS["ada"]):
        client = MlflowClient(tracking_uri=server.uri)
        assert client.get_model_version_by_alias("resgan", "champion").version == "1"
        experiment = client.get_experiment_by_name("resgan")
        runs = client.search_runs([experiment.experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 2  # train + its evaluation

    # ---- ada with a wrong password: one line naming server and user, nothing written ----
    wrong = _env(server, "ada", WRONG)
    expected = (
        f"error: MLflow tracking server at {server.uri} refused user 'ada': wrong user name or password "
        "(HTTP 401); check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )
    before = _tree(repo)
    assert _fails(["resgan", "models", "list"], repo, wrong) == expected
    assert (
        _fails(["resgan", "generate", "--model", "models:/resgan@champion", "--out", "g.png"], repo, wrong) == expected
    )
    train_cmd = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]["cmd"]
    assert _fails(shlex.split(train_cmd), repo, wrong) == expected
    assert _tree(repo) == before  # no run file, no checkpoint, no image
    nobody = _env(server, None, None)
    assert _fails(["resgan", "models", "list"], repo, nobody) == (
        f"error: MLflow tracking server at {server.uri} asks for a user name and password (HTTP 401): "
        "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )

    # ---- bob (READ): lists and generates; may not register or move an alias ----
    bob = _env(server, "bob", PASSWORDS["bob"])
    outputs.append(run(["resgan", "models", "list", "--json"], repo, bob))
    assert [(row["version"], row["aliases"]) for row in json.loads(outputs[-1].stdout)] == [
        (1, ["candidate", "champion"])
    ]
    outputs.append(
        run(["resgan", "generate", "--model", "models:/resgan@champion", "--num", "8", "--out", "bob.png"], repo, bob)
    )
    outputs.append(
        run(["resgan", "generate", "--model", "models/generator.keras", "--num", "8", "--out", "local.png"], repo, bob)
    )
    assert (repo / "bob.png").read_bytes() == (repo / "local.png").read_bytes()
    assert _fails(["resgan", "models", "promote", "1", "--alias", "champion"], repo, bob) == (
        f"error: cannot set alias 'champion' on resgan v1: MLflow tracking server at {server.uri} refused user "
        "'bob': permission denied (HTTP 403)"
    )
    model_uri = json.loads((repo / "models/mlflow_run.json").read_text())["model_uri"]
    from resgan import model_registry
    from resgan.errors import ResganError

    with _as("bob", PASSWORDS["bob"]), pytest.raises(ResganError) as refused:
        import mlflow

        mlflow.set_tracking_uri(server.uri)
        model_registry.register(model_uri, "resgan", "fid", "fid_classifier", {"fid_classifier": 0.5}, {})
    assert str(refused.value) == (
        f"cannot register {model_uri} as resgan: MLflow tracking server at {server.uri} "
        "refused user 'bob': permission denied (HTTP 403)"
    )
    with _as("ada", PASSWORDS["ada"]):
        client = MlflowClient(tracking_uri=server.uri)
        assert [v.version for v in client.search_model_versions("name = 'resgan'")] == ["1"]
        assert client.get_registered_model("resgan").aliases == {"candidate": "1", "champion": "1"}

    # ---- no password anywhere: the store, the bucket, the project's files and every command's output ----
    secrets = [*PASSWORDS.values(), WRONG]
    places = {
        "pg_dump": postgres.dump(server.database).encode(),
        **{f"s3://{BUCKET}/{k}": v for k, v in s3.objects("mlflow-auth/").items()},
        **{str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()},
        **{f"output {i}": (o.stdout + o.stderr).encode() for i, o in enumerate(outputs)},
    }
    assert any(name.endswith("params.yaml") for name in places) and any("dvc.lock" in name for name in places)
    for name, content in places.items():
        for secret in secrets:
            assert secret.encode() not in content, f"a password in {name}"
