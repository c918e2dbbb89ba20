"""Tracking server faults: a real ``mlflow server`` on 127.0.0.1, down at the start, stopped mid-training
and started again, down while the trainer is killed. Training never waits for the server, and in the end
the server has everything: every step once, in step order, the model, the final figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_params
from mlflow_server import MlflowServer as Server
from mlflow_server import free_port
from test_kill import TRAIN_ARGS, Child, _no_child_left  # noqa: F401 (autouse: no child outlives its test)
from test_train_stage import DATA_HASH, make_project

from resgan.stages import train

BIN = Path(sys.executable).parent
METRICS = ("loss/d", "loss/g", "d/real", "d/fake", "grad_norm/d", "grad_norm/g", "perf/img_per_s")


def test_buffered_logger_waits_while_the_store_is_down_and_delivers_in_step_order(tmp_path, monkeypatch, capsys):
    """In-process: the run lives in a SQLite store; "down" is MLflow pointed at a closed 127.0.0.1 port."""
    from resgan import tracking

    store = os.environ["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(store)
    with mlflow.start_run() as run:
        pass
    run_id = run.info.run_id
    logger = tracking.BufferedLogger(run_id, max_images=2, first_wait=60.0)
    logger.log_metrics({"loss/d": 1.0}, step=1)  # store up: delivered at once
    assert logger.pending == 0

    mlflow.set_tracking_uri(f"http://127.0.0.1:{free_port()}")  # the store goes down
    grid = np.zeros((8, 8, 1), np.uint8)
    for step in range(2, 6):
        logger.log_metrics({"loss/d": float(step), "loss/g": -float(step)}, step=step)
        logger.log_image(grid + step, "samples", step=step)
    err = capsys.readouterr().err
    assert err.count("MLflow: logging failed (") == 1  # one quick try, then it waits (60 s here) to try again
    assert "training goes on" in err and "dropped the sample grid of step 2" in err
    assert "dropped the sample grid of step 3" in err  # at most 2 grids wait: the newest
    assert [(kind, step) for kind, step, *_ in logger.queue] == [
        ("metrics", 2),
        ("metrics", 3),
        ("metrics", 4),
        ("image", 4),
        ("metrics", 5),
        ("image", 5),
    ]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # (MLflow's own retries would take minutes)
    with pytest.raises(tracking.TrackingError, match="deliver 6 waiting metric/image entries failed after 1 attempts"):
        logger.close(retries=0)  # the last word gives up loudly, and keeps what waits
    assert logger.pending == 6

    mlflow.set_tracking_uri(store)  # the store is back
    logger.close(retries=0)
    assert logger.pending == 0
    assert "the store answers again; delivered 6 waiting entries in step order" in capsys.readouterr().err
    client = mlflow.MlflowClient(tracking_uri=store)
    history = client.get_metric_history(run_id, "loss/d")
    assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(1, 6)]
    assert [m.timestamp for m in history] == sorted(m.timestamp for m in history)
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss/g")) == [2, 3, 4, 5]
    images = sorted(a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png"))
    assert [int(p.split("+step+")[1].split("+")[0]) for p in images] == [4, 5]

    # A resumed run: the rows a checkpoint holds but the run lacks are logged, the others are not.
    rows = [(s, {"loss/d": float(s)}) for s in range(1, 8)]
    assert logger.log_missing(rows, probe="loss/d") == 2
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss/d")) == list(range(1, 8))


def test_train_fails_fast_when_the_server_is_down_at_the_start(tmp_path):
    params = tiny_params()
    project = make_project(tmp_path, params)
    uri = f"http://127.0.0.1:{free_port()}"  # bound, then released: nothing listens there
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [str(BIN / "resgan"), *TRAIN_ARGS], cwd=project.root, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"error: MLflow tracking server at {uri} is unreachable (")
    assert "start it or unset MLFLOW_TRACKING_URI" in lines[0] and "retrying" not in done.stderr
    for output in ("checkpoints", "models", "metrics", "plots", "mlruns", "mlflow.db"):
        assert not (project.root / output).exists(), output  # failed before doing anything


@pytest.mark.slow
def test_server_down_mid_training_then_back_loses_nothing(tmp_path, monkeypatch):
    """(A) the server stops at step 2, training goes on, and the trainer is killed at checkpoint 6 with steps
    3-6 never delivered; (B) with the server back, the re-run delivers steps 3-4 from checkpoint 4, trains
    on, the server stops again at step 8, training reaches step 12 and waits (retrying) for the server to
    deliver the rest, the model and the final figures."""
    server = Server(tmp_path / "server")
    params = tiny_params(train={"steps": 12, "checkpoint_every": 2, "log_every": 1, "sample_every": 4})
    project = make_project(tmp_path / "project", params)
    folder = project.checkpoints / train.run_key(params, DATA_HASH)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.chdir(project.root)

    def steps(run_id: str, key: str = "loss/d") -> list[int]:
        return sorted(m.step for m in server.client().get_metric_history(run_id, key))

    server.start()
    try:
        # (A) Held while writing checkpoint 2 (steps 1-2 are on the server); the server stops; released.
        child = Child(
            project.root,
            {"pattern": r"/\.ckpt-00000002\.npz\.", "nth": 2, "release": True},
            {"pattern": r"/\.ckpt-00000006\.npz\.", "nth": 2},
        )
        child.wait_held(0)
        run_id = json.loads((folder / "run.json").read_text())["run_id"]
        assert steps(run_id) == [1, 2]
        server.stop()
        child.release(0)
        child.wait_held(1, timeout=240)  # training went on to checkpoint 6 with the server down
        assert "training goes on" in child.output()
        assert json.loads((folder / "latest.json").read_text())["step"] == 4
        child.kill()  # steps 3-6 die with it: only the checkpoint (history up to step 4) remembers 3-4

        # (B) The server is back; held while writing checkpoint 8; the server stops again; released.
        server.start()
        assert steps(run_id) == [1, 2]
        child = Child(project.root, {"pattern": r"/\.ckpt-00000008\.npz\.", "nth": 2, "release": True})
        child.wait_held(0)
        assert steps(run_id) == list(range(1, 9))  # 3-4 from the checkpoint, 5-8 trained again
        server.stop()
        child.release(0)
        child.wait_until(lambda: "step 12/12" in child.output(), "step 12 with the server down", timeout=240)
        server.start()
        assert child.wait(timeout=600) == 0, child.tail()
        assert "the store answers again" in child.output()

        client = server.client()
        runs = client.search_runs([client.get_experiment_by_name("resgan").experiment_id])
        assert [r.info.run_id for r in runs] == [run_id]
        run = runs[0]
        assert run.info.status == "FINISHED"
        assert run.data.tags["trained_steps"] == "12" and run.data.params["train.steps"] == "12"
        curve = pd.read_csv(project.plots)
        assert curve["step"].tolist() == list(range(1, 13))
        for key in METRICS:
            history = client.get_metric_history(run_id, key)
            assert sorted(m.step for m in history) == list(range(1, 13)), key  # every step, once
        history = sorted(client.get_metric_history(run_id, "loss/d"), key=lambda m: m.step)
        assert [m.value for m in history] == pytest.approx(curve["loss_d"].tolist(), rel=1e-12)
        stamps = [m.timestamp for m in history]
        assert stamps == sorted(stamps), "delivered in step order"
        grids = {
            int(a.path.split("+step+")[1].split("+")[0])
            for a in client.list_artifacts(run_id, "images")
            if a.path.endswith(".png")
        }
        assert {8, 12} <= grids  # 4's grid died with process A (metrics are in the checkpoint; grids are not)
        info = json.loads((project.models / "mlflow_run.json").read_text())
        assert info["run_id"] == run_id and info["tracking_uri"] == server.uri
        assert len(client.search_logged_models([run.info.experiment_id])) == 1
        from resgan.loading import load_generator

        generator = load_generator(info["model_uri"])  # from the server's artifact store
        assert tuple(np.asarray(generator(np.zeros((2, 16), np.float32))).shape) == (2, 16, 16, 1)
        assert not (project.root / "mlflow.db").exists()  # everything went to the server
    finally:
        server.stop()
