"""MLflow plumbing: where the store is, failing fast and retrying, run records, and the train stage
talking to a real ``mlflow server`` on 127.0.0.1 over HTTP."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import mlflow
import pytest
from mlflow_server import MlflowServer, free_port

from resgan import tracking
from resgan.errors import ResganError
from resgan.gan import checkpoint
from resgan.tracking import TrackingError


@pytest.fixture(autouse=True)
def _forget_mlflow_uri(monkeypatch):
    """``tracking.setup`` calls ``mlflow.set_tracking_uri``; forget it before ``monkeypatch`` restores the env."""
    yield
    if mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)


# ---- where the store is --------------------------------------------------------------------------


def test_env_tracking_uri_wins_over_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.tracking_uri() == "http://127.0.0.1:5999"
    assert tracking.tracking_uri(root=tmp_path) == "http://127.0.0.1:5999"


def test_dvc_root_wins_over_the_repo_around_the_working_directory(tmp_path, monkeypatch, no_env):
    repo, copy = tmp_path / "repo", tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "run1"
    copy.mkdir(parents=True)
    (repo / "dvc.yaml").write_text("stages: {}\n")
    (copy / "dvc.yaml").write_text("stages: {}\n")  # a queued experiment runs in a copy of the repo
    monkeypatch.chdir(copy)
    assert tracking.project_root() == copy.resolve()
    monkeypatch.setenv("DVC_ROOT", str(repo))
    assert tracking.project_root() == repo.resolve()
    assert tracking.tracking_uri() == f"sqlite:///{repo.resolve()}/mlflow.db"


def test_root_is_the_nearest_folder_with_dvc_yaml_or_git(tmp_path, monkeypatch, no_env):
    outer, inner = tmp_path / "outer", tmp_path / "outer" / "inner"
    deep = inner / "src" / "pkg"
    deep.mkdir(parents=True)
    (outer / ".git").mkdir()
    monkeypatch.chdir(deep)
    assert tracking.project_root() == outer.resolve()
    assert tracking.tracking_uri() == f"sqlite:///{outer.resolve()}/mlflow.db"
    (inner / "dvc.yaml").write_text("stages: {}\n")
    assert tracking.project_root() == inner.resolve()
    assert tracking.project_root(start=outer) == outer.resolve()


def test_without_markers_the_working_directory_is_the_root(tmp_path, monkeypatch, no_env):
    here = tmp_path / "plain"
    here.mkdir()
    if any((p / "dvc.yaml").exists() or (p / ".git").exists() for p in here.resolve().parents):
        pytest.skip("the temporary folder sits inside a repository")
    monkeypatch.chdir(here)
    assert tracking.project_root() == here.resolve()


def test_setup_creates_the_experiment_with_artifacts_in_root_mlruns(tmp_path, monkeypatch, no_env):
    root = tmp_path / "project"
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.chdir(tmp_path)
    experiment_id = tracking.setup("resgan-test")
    assert (root / "mlflow.db").is_file()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root.resolve()}/mlflow.db")
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == "resgan-test"
    assert experiment.artifact_location == (root.resolve() / "mlruns").as_uri()
    assert tracking.setup("resgan-test") == experiment_id  # found, not created twice
    assert [e.name for e in client.search_experiments()].count("resgan-test") == 1


# ---- failing fast and retrying -------------------------------------------------------------------


def test_check_reachable_on_a_closed_port_raises_a_readable_tracking_error():
    uri = f"http://127.0.0.1:{free_port()}"  # bound then released: nothing listens there
    with pytest.raises(TrackingError) as error:
        tracking.check_reachable(uri, timeout=5)
    message = str(error.value)
    assert message.startswith(f"MLflow tracking server at {uri} is unreachable (")
    assert "refused" in message.lower()
    assert "unset MLFLOW_TRACKING_URI" in message
    assert isinstance(error.value, ResganError)
    tracking.check_reachable("sqlite:///nowhere/mlflow.db")  # not a server: nothing to check


def test_setup_fails_fast_when_the_server_is_down(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TrackingError, match="unreachable"):
        tracking.setup("resgan")


def test_retry_retries_then_succeeds(capsys):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("store down")
        return "logged"

    assert tracking.retry(flaky, "log metrics", retries=3, first_wait=0.0) == "logged"
    assert len(calls) == 3
    err = capsys.readouterr().err
    assert err.count("MLflow: log metrics failed (ConnectionError); retrying") == 2


def test_retry_gives_up_with_a_tracking_error_after_retries_plus_one_attempts():
    calls = []

    def down():
        calls.append(1)
        raise OSError("connection reset")

    with pytest.raises(TrackingError, match=r"MLflow: log params failed after 3 attempts: connection reset"):
        tracking.retry(down, "log params", retries=2, first_wait=0.0)
    assert len(calls) == 3
    with pytest.raises(TrackingError, match="after 1 attempts"):
        tracking.retry(down, "log params", retries=0)


@pytest.mark.parametrize(
    ("code", "status", "says"),
    [
        (
            "UNAUTHENTICATED",
            401,
            "refused user 'ada': wrong user name or password (HTTP 401); "
            "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        ),
        ("PERMISSION_DENIED", 403, "refused user 'ada': permission denied (HTTP 403)"),
    ],
)
def test_a_401_or_403_is_never_retried_and_names_the_server_and_user(code, status, says, monkeypatch, capsys):
    """Basic auth's answers are refusals: one attempt, one line naming the server and the user, never the
    password (the slow test against a real basic-auth server is tests/e2e/test_team_auth.py)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    uri = "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ada")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-pw")
    mlflow.set_tracking_uri(uri)
    calls = []

    def refused():
        calls.append(1)
        raise MlflowException("API request failed with error code", error_code=getattr(databricks_pb2, code))

    with pytest.raises(TrackingError) as error:
        tracking.retry(refused, "start run", retries=3, first_wait=0.0)
    assert len(calls) == 1 and "retrying" not in capsys.readouterr().err
    assert str(error.value) == f"MLflow tracking server at {uri} {says} (could not start run)"
    assert "s3cret-pw" not in str(error.value)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    assert tracking.refusal(uri, 401) == (
        f"MLflow tracking server at {uri} asks for a user name and password "
        "(HTTP 401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )


def test_a_refused_request_fails_at_once_with_mlflows_message(capsys):
    """A real SQLite store refuses a param logged again with another value: no retry can change that."""
    tracking.setup("resgan")
    calls = []

    def log_again():
        calls.append(1)
        mlflow.log_param("train.lr_g", 0.001)

    with mlflow.start_run():
        mlflow.log_param("train.lr_g", 0.0002)
        with pytest.raises(TrackingError) as error:
            tracking.retry(log_again, "log params", retries=3, first_wait=0.0)
    assert len(calls) == 1
    message = str(error.value)
    assert message.startswith("MLflow refused to log params: Changing param values is not allowed.")
    assert "key='train.lr_g'" in message and "'0.0002'" in message and "'0.001'" in message
    assert "retrying" not in capsys.readouterr().err


def test_only_4xx_answers_other_than_timeouts_and_rate_limits_are_refusals():
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2 as codes

    for code, refusal in [
        (codes.INVALID_PARAMETER_VALUE, True),
        (codes.RESOURCE_ALREADY_EXISTS, True),
        (codes.BAD_REQUEST, True),
        (codes.RESOURCE_DOES_NOT_EXIST, True),
        (codes.PERMISSION_DENIED, True),
        (codes.REQUEST_LIMIT_EXCEEDED, False),
        (codes.INTERNAL_ERROR, False),
        (codes.TEMPORARILY_UNAVAILABLE, False),
    ]:
        assert tracking.refused(MlflowException("no", error_code=code)) is refusal, codes.ErrorCode.Name(code)
    for status, refusal in [
        (400, True),
        (403, True),
        (404, True),
        (408, False),
        (429, False),
        (500, False),
        (503, False),
    ]:
        answer = requests.Response()
        answer.status_code = status
        assert tracking.refused(requests.HTTPError(response=answer)) is refusal, status
    assert not tracking.refused(ConnectionError("store down")) and not tracking.refused(OSError("reset"))


# ---- the stage's run from start to end -------------------------------------------------------------


def test_stage_run_starts_a_run_and_ends_it_finished(tmp_path):
    experiment_id = tracking.setup("resgan")
    run_file = tmp_path / "run.json"
    with tracking.StageRun(retries=0) as session:
        run = session.open(
            run_file,
            experiment_id,
            None,
            "exp-1",
            {"data_hash": "abc"},
            on_new=lambda: session.log_params({"train.steps": 4}),
        )
        # The run is named by its id in every call: MLflow's implicit active run is never set.
        assert mlflow.active_run() is None and run.info.run_id == session.run_id
        assert run.info.status == "RUNNING" and run.data.tags["mlflow.user"]  # the tags start_run would add
    assert mlflow.active_run() is None
    finished = mlflow.MlflowClient().get_run(run.info.run_id)
    assert finished.info.status == "FINISHED" and finished.info.run_name == "exp-1"
    assert finished.data.params == {"train.steps": "4"} and finished.data.tags["data_hash"] == "abc"
    assert json.loads(run_file.read_text()) == {"run_id": run.info.run_id}
    # Opened again with the same run file: the same run, resumed (on_new is for new runs only).
    with tracking.StageRun(retries=0) as session:
        assert (
            session.open(run_file, experiment_id, None, None, {}, on_new=lambda: 1 / 0).info.run_id == run.info.run_id
        )
    assert len(mlflow.MlflowClient().search_runs([experiment_id])) == 1


def test_stage_run_adopts_the_run_a_killed_call_created(tmp_path):
    """Killed after creating the run, before recording its id: the launch token in the run file finds it."""
    experiment_id = tracking.setup("resgan")
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"launch": "token-1"}))
    client = mlflow.MlflowClient()
    orphan = client.create_run(experiment_id, tags={tracking.LAUNCH_TAG: "token-1"})
    with tracking.StageRun(retries=0) as session:
        assert (
            session.open(run_file, experiment_id, None, None, {}, on_new=lambda: None).info.run_id == orphan.info.run_id
        )
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [orphan.info.run_id]
    assert client.get_run(orphan.info.run_id).info.status == "FINISHED"


def test_stage_run_ends_failed_with_the_reason_or_killed_on_ctrl_c(tmp_path):
    experiment_id = tracking.setup("resgan")
    client = mlflow.MlflowClient()
    with pytest.raises(RuntimeError, match="disk full"):
        with tracking.StageRun(retries=0) as session:
            failed = session.open(tmp_path / "a.json", experiment_id, None, None, {}, on_new=lambda: None)
            raise RuntimeError("disk full")
    assert mlflow.active_run() is None
    run = client.get_run(failed.info.run_id)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == "RuntimeError: disk full"

    with pytest.raises(KeyboardInterrupt):
        with tracking.StageRun(retries=0) as session:
            killed = session.open(tmp_path / "b.json", experiment_id, None, None, {}, on_new=lambda: None)
            raise KeyboardInterrupt
    assert mlflow.active_run() is None
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "KILLED" and "failure_reason" not in run.data.tags

    with pytest.raises(ValueError):  # nothing opened (a worker that is not the chief): nothing to end
        with tracking.StageRun() as session:
            raise ValueError
    assert session.run_id is None


# ---- run records and tags ------------------------------------------------------------------------


def test_run_tags_carry_data_hash_and_dvc_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1234")
    tags = tracking.run_tags({"data_hash": "abc"}, root=tmp_path)  # tmp_path is no git repo
    assert tags == {"dvc_exp_name": "exp-1234", "data_hash": "abc"}
    monkeypatch.delenv("DVC_EXP_NAME")
    assert tracking.run_tags(None, root=tmp_path) == {}


def test_run_pointer_errors_name_the_file(tmp_path):
    missing = tmp_path / "models" / "mlflow_run.json"
    with pytest.raises(ResganError, match=r"mlflow_run.json not found: run the train stage first"):
        checkpoint.read_pointer(missing)
    missing.parent.mkdir()
    missing.write_text("{not json")
    with pytest.raises(ResganError, match="is not a readable run record"):
        checkpoint.read_pointer(missing)
    missing.write_text(json.dumps({"model_uri": "models:/m-1"}))
    with pytest.raises(ResganError, match="holds no run_id"):
        checkpoint.read_pointer(missing)


def test_each_evaluation_is_a_new_run_under_the_train_run(tmp_path):
    experiment_id = tracking.setup("resgan")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_param("train.steps", 4)
    run_file = tmp_path / "mlflow_run.json"
    run_file.write_text(json.dumps({"run_id": run.info.run_id}))
    for num in (200, 100):  # sample.num changed: MLflow's params are write-once, so a new run takes it
        with tracking.StageRun(retries=0) as session:
            child = session.start_child(run_file, "resgan", "evaluate", {"stage": "evaluate"})
            session.log_params({"sample.num": num})
            session.log_metrics({"eval/fid_classifier": num / 10})
    client = mlflow.MlflowClient()
    children = client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'", order_by=["attributes.start_time ASC"]
    )
    assert [c.data.params["sample.num"] for c in children] == ["200", "100"]
    assert [c.data.metrics["eval/fid_classifier"] for c in children] == [20.0, 10.0]
    assert all(c.info.status == "FINISHED" and c.data.tags["stage"] == "evaluate" for c in children)
    assert child.info.run_id == children[-1].info.run_id
    parent = client.get_run(run.info.run_id)
    assert parent.data.params == {"train.steps": "4"} and parent.data.metrics == {}  # untouched
    run_file.write_text(json.dumps({"run_id": "0" * 32}))
    with pytest.raises(TrackingError, match=f"the train run {'0' * 32} recorded in .* is not in"):
        with tracking.StageRun(retries=0) as session:
            session.start_child(run_file, "resgan", "evaluate", {})


def test_a_stage_run_writes_to_its_run_and_its_model_by_id(tmp_path):
    """Metrics against a logged model and a data set make both inputs of the run, as MLflow's fluent
    ``log_metrics(model_id=, dataset=)`` does; a model logged by ``log_model_once`` goes into the run's
    experiment (not MLflow's Default one) with no active run; params, tags, files reach the run."""
    import mlflow.pyfunc
    from mlflow.models import Model

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[str], params=None) -> list[str]:
            return model_input

    experiment_id = tracking.setup("writes")
    client = mlflow.MlflowClient()
    (tmp_path / "plot.csv").write_text("step,fid\n1,2.5\n")
    with tracking.StageRun(retries=0) as session:
        session.open(tmp_path / "run.json", experiment_id, None, None, {}, on_new=lambda: None)
        session.log_params({"train.steps": 4, "model.width": 8})
        session.set_tags({"stage": "train"})
        session.log_dict({"steps": 4}, "train.json")
        session.log_artifact(tmp_path / "plot.csv", "plots")
        data = tracking.dataset("digits", "d" * 64, tmp_path)
        session.log_input(data, context="training")
        # How resgan.serving.log_model logs: Model.log takes the run id (pyfunc.log_model does not).
        uri = session.log_model_once(
            experiment_id,
            "echo",
            4,
            lambda run_id: Model.log(
                None,
                mlflow.pyfunc,
                name="echo",
                python_model=Echo(),
                run_id=run_id,
                pip_requirements=[],
                tags={"step": "4"},
            ),
        )
        assert session.log_model_once(experiment_id, "echo", 4, lambda run_id: 1 / 0) == uri  # found, not again
        model_id = tracking.model_id(uri)
        session.log_metrics({"eval/fid_classifier": 3.25}, step=4, model_id=model_id, record=data)
        run_id = session.run_id
    assert mlflow.active_run() is None
    run = client.get_run(run_id)
    assert run.data.params == {"train.steps": "4", "model.width": "8"} and run.data.tags["stage"] == "train"
    assert run.data.metrics == {"eval/fid_classifier": 3.25} and run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run_id)} >= {"train.json", "plots"}
    assert [(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs] == [("digits", "d" * 36)]
    assert {t.key: t.value for t in run.inputs.dataset_inputs[0].tags}["mlflow.data.context"] == "training"
    model = client.get_logged_model(model_id)
    assert model.experiment_id == experiment_id and model.source_run_id == run_id and model.status == "READY"
    assert [(m.key, m.value, m.step, m.dataset_name) for m in model.metrics] == [
        ("eval/fid_classifier", 3.25, 4, "digits")
    ]
    assert [i.model_id for i in run.inputs.model_inputs] == [model_id]


def test_model_id_and_dataset_records():
    assert tracking.model_id("models:/m-0123abcd") == "m-0123abcd"
    assert tracking.model_id("models:/resgan/3") is None and tracking.model_id("runs:/abc/generator") is None
    assert tracking.model_id(None) is None
    record = tracking.dataset("mnist", "f" * 64, "/data/prepared")
    assert (record.name, record.digest) == ("mnist", "f" * 36)  # MLflow keeps 36 characters of a digest


# ---- a real tracking server on 127.0.0.1 ---------------------------------------------------------


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on a free 127.0.0.1 port with its own SQLite store and proxied artifacts."""
    with MlflowServer(tmp_path / "server") as server:
        yield server.uri


def rest(uri: str, endpoint: str, **query) -> dict:
    with urllib.request.urlopen(f"{uri}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_train_stage_logs_to_a_tracking_server(tmp_path, monkeypatch, mlflow_server):
    import keras
    import numpy as np
    from conftest import tiny_params

    from resgan.loading import load_generator
    from resgan.stages import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    tracking.check_reachable(mlflow_server)  # healthy: no error
    project = tmp_path / "project"
    data = project / "data"
    data.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, size=(24, 16, 16, 1), dtype=np.uint8)
    np.savez(data / "train.npz", images=images)
    (data / "summary.json").write_text(json.dumps({"data_hash": "feedbeef"}))
    (project / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(project)
    params = tiny_params(train={"steps": 3, "log_every": 1, "sample_every": 3, "checkpoint_every": 3})
    try:
        figures = train.run(
            params,
            train.TrainPaths(
                params=project / "params.yaml",
                data=data,
                models=project / "models",
                checkpoints=project / "checkpoints",
                metrics=project / "metrics.json",
                plots=project / "train.csv",
            ),
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert figures["steps"] == 3
    info = json.loads((project / "models" / "mlflow_run.json").read_text())
    assert info["tracking_uri"] == mlflow_server
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()  # all went to the server

    run = rest(mlflow_server, "runs/get", run_id=info["run_id"])["run"]
    assert run["info"]["status"] == "FINISHED"
    params_logged = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params_logged["train.lr_g"] == "0.0002" and params_logged["model.width"] == "8"
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["data_hash"] == "feedbeef"
    history = rest(mlflow_server, "metrics/get-history", run_id=info["run_id"], metric_key="loss/d")["metrics"]
    assert sorted(m["step"] for m in history) == [1, 2, 3]
    csv_loss = [float(line.split(",")[1]) for line in (project / "train.csv").read_text().splitlines()[1:]]
    assert [m["value"] for m in sorted(history, key=lambda m: m["step"])] == pytest.approx(csv_loss, rel=1e-12)
    # The artifacts went through the server's proxy into --artifacts-destination.
    artifacts = rest(mlflow_server, "artifacts/list", run_id=info["run_id"], path="images")["files"]
    assert any(f["path"].startswith("images/samples+step+3+") and f["path"].endswith(".png") for f in artifacts)
    assert list((tmp_path / "server" / "artifacts").rglob("*.keras"))
    model = load_generator(info["model_uri"])
    assert tuple(model(np.zeros((2, 16), np.float32)).shape) == (2, 16, 16, 1)
