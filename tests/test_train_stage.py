"""The train stage in-process against a real SQLite MLflow store: what it logs, what it writes, resume
after Ctrl-C and after SIGKILL, no retraining when done, a new run for new params, divergence."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_params
from PIL import Image
from project import train_paths

from resgan.config import Params
from resgan.gan import checkpoint
from resgan.gan.loop import FID_SEED_OFFSET, DivergenceError
from resgan.gan.trainer import GAN, Shapes
from resgan.loading import load_generator
from resgan.stages import train

pytestmark = pytest.mark.slow  # every test here runs the train stage (make test-fast leaves them out)

DATA_HASH = "0123456789abcdef"
METRICS = ("loss/d", "loss/g", "d/real", "d/fake", "perf/img_per_s")
CSV_COLUMNS = ["step", "loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "img_per_s"]


def make_project(root: Path, params: Params) -> SimpleNamespace:
    """A tiny project: prepared 16x16 grey data, params.yaml, dvc.yaml + dvc.lock (so ``root`` is the
    project root), and the output paths the stage takes on the command line."""
    data = root / "data" / "prepared"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    # Bright discs on a dark background with noise: a learnable, deterministic data set.
    yy, xx = np.mgrid[:16, :16]
    centres = rng.integers(5, 11, size=(48, 2))
    discs = ((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) < 16
    images = np.clip(discs * 200 + rng.integers(0, 40, size=discs.shape), 0, 255).astype(np.uint8)[..., None]
    np.savez(data / "train.npz", images=images)
    (data / "summary.json").write_text(json.dumps({"data_hash": DATA_HASH, "train": len(images)}))
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    return SimpleNamespace(
        root=root,
        data=data,
        params_path=root / "params.yaml",
        models=root / "models",
        checkpoints=root / "checkpoints",
        metrics=root / "metrics" / "train.json",
        plots=root / "plots" / "train.csv",
    )


def run_stage(project: SimpleNamespace, params: Params) -> dict:
    return train.run(
        params,
        train_paths(project.root, project.data),
    )


def run_info(project: SimpleNamespace) -> dict:
    return json.loads((project.models / "mlflow_run.json").read_text())


def steps_of(client: mlflow.MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.fixture(autouse=True)
def _clean_global_state(monkeypatch):
    """The stage sets Keras' global dtype policy and MLflow's tracking URI; leave neither behind.
    (Torn down before ``monkeypatch``, which then restores the environment.)"""
    yield
    if mlflow.active_run():
        mlflow.end_run()
    keras.mixed_precision.set_global_policy("float32")
    mlflow.set_tracking_uri(None)


# ---- one complete run, shared by the tests that only read it ---------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    params = tiny_params(
        train={"steps": 4, "log_every": 1, "sample_every": 2, "checkpoint_every": 2}, sample={"grid": 64}
    )  # the grids logged while training have sample.grid images
    project = make_project(root, params)
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(root)
        try:
            figures = run_stage(project, params)
        finally:
            if mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)
            keras.mixed_precision.set_global_policy("float32")
    info = run_info(project)
    return SimpleNamespace(
        project=project,
        params=params,
        uri=uri,
        figures=figures,
        info=info,
        client=mlflow.MlflowClient(tracking_uri=uri),
    )


def test_outputs_on_disk(trained):
    project, figures = trained.project, trained.figures
    saved = json.loads(project.metrics.read_text())
    assert saved == {k: figures[k] for k in saved}
    assert list(saved) == ["steps", "wall_s", "img_per_s", "loss_d", "loss_g", "exported_step"], (
        "numbers only: DVC compares them"
    )
    assert saved["steps"] == 4 and figures["steps_this_run"] == 4
    assert saved["exported_step"] == 4, "no FID over training: the last step is exported"
    assert figures["precision"] == "float32" and figures["stopped_by_budget"] is False
    assert saved["img_per_s"] > 0 and np.isfinite(saved["loss_d"]) and np.isfinite(saved["loss_g"])

    curve = pd.read_csv(project.plots)
    assert list(curve.columns) == CSV_COLUMNS
    assert curve["step"].tolist() == [1, 2, 3, 4]
    assert np.isfinite(curve.drop(columns="step").to_numpy()).all()
    assert curve["loss_d"].iloc[-1] == pytest.approx(saved["loss_d"], rel=1e-12)

    info = trained.info
    assert set(info) == {"run_id", "experiment_id", "tracking_uri", "model_uri", "checkpoint"}
    assert info["tracking_uri"] == trained.uri
    key = train.run_key(trained.params, DATA_HASH)
    assert Path(info["checkpoint"]) == project.checkpoints / key
    assert json.loads((project.checkpoints / key / "latest.json").read_text()) == {
        "checkpoint": "ckpt-00000004",
        "step": 4,
    }


def test_generator_keras_is_the_float32_ema_generator(trained):
    path = trained.project.models / "generator.keras"
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    z = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    images = model(z, training=False)
    assert tuple(images.shape) == (5, 16, 16, 1) and images.dtype == "float32"
    assert float(np.min(images)) >= -1.0 and float(np.max(images)) <= 1.0
    # Its weights are the EMA's of the final checkpoint, not the raw generator's.
    with np.load(Path(trained.info["checkpoint"]) / "ckpt-00000004.npz") as ckpt:
        ema = [ckpt[f"ema_generator/{i}"] for i in range(len(model.weights))]
        raw_dense = ckpt["generator/0"]
    for mine, want in zip(model.get_weights(), ema):
        np.testing.assert_array_equal(mine, want)
    assert not np.array_equal(model.get_weights()[0], raw_dense)


def test_mlflow_run_params_tags_and_artifacts(trained):
    client, run_id = trained.client, trained.info["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "resgan" and run.info.experiment_id == trained.info["experiment_id"]
    assert run.info.artifact_uri.startswith((trained.project.root / "mlruns").as_uri())
    assert run.data.params["train.lr_g"] == "0.0002"
    assert run.data.params["model.width"] == "8"
    assert run.data.params["train.steps"] == "4"
    assert run.data.params["train.loss"] == "hinge"
    # What the train stage reads, no more: sample.num or evaluate.* changed later must not collide with it.
    assert set(run.data.params) == {
        k for k in trained.params.flat() if k.split(".")[0] in ("prepare", "model", "train", "mlflow")
    } | {"sample.grid", "evaluate.features", "evaluate.inception_weights", "evaluate.max_real", "evaluate.seed"}
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == DATA_HASH[:36]
    assert inputs[0].tags[0].value == "training"
    tags = run.data.tags
    assert tags["data_hash"] == DATA_HASH
    assert tags["checkpoint_key"] == train.run_key(trained.params, DATA_HASH)
    assert tags["precision"] == "float32" and tags["replicas"] == "1"

    assert tags["trained_steps"] == "4" and float(tags["train_wall_s"]) >= 0
    # Curves only as metrics: the one-value figures (steps, timings) are train.json and tags.
    assert {k.split("/")[0] for k in run.data.metrics} <= {"loss", "d", "grad_norm", "perf", "eval"}, sorted(
        run.data.metrics
    )
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"params.yaml", "dvc.lock", "images", "plots", "train.json"} <= top
    logged = json.loads(
        Path(client.download_artifacts(run_id, "train.json", str(trained.project.root / "dl"))).read_text()
    )
    assert logged["steps"] == 4 and logged["wall_s"] > 0 and logged["img_per_s"] > 0
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/train.csv"]
    # mlflow.log_image(key="samples", step=s) writes images/samples+step+<s>+timestamp+...png (+ a .webp preview).
    pngs = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    assert sorted(int(re.search(r"samples\+step\+(\d+)\+", p).group(1)) for p in pngs) == [2, 4]
    local = client.download_artifacts(run_id, pngs[0], str(trained.project.root / "downloaded"))
    grid = np.asarray(Image.open(local))
    assert grid.shape[:2] == (8 * 17 + 1, 8 * 17 + 1)  # 64 images of 16x16 in 8 columns, 1-pixel gaps


def test_mlflow_metrics_have_one_value_per_logged_step(trained):
    client, run_id = trained.client, trained.info["run_id"]
    curve = pd.read_csv(trained.project.plots)
    for key in METRICS:
        assert steps_of(client, run_id, key) == [1, 2, 3, 4], key
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "loss/d")}
    assert [logged[s] for s in (1, 2, 3, 4)] == pytest.approx(curve["loss_d"].tolist(), rel=1e-12)
    assert all(np.isfinite(m.value) for key in METRICS for m in client.get_metric_history(run_id, key))


def test_logged_model_is_the_exported_generator(trained, monkeypatch):
    client, run_id, model_uri = trained.client, trained.info["run_id"], trained.info["model_uri"]
    assert model_uri.startswith("models:/m-")
    logged = client.get_logged_model(model_uri.removeprefix("models:/"))
    assert logged.source_run_id == run_id and logged.name == "generator"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    from_mlflow = load_generator(model_uri)  # downloads the files, loads with safe_mode=True
    on_disk = keras.saving.load_model(trained.project.models / "generator.keras", safe_mode=True, compile=False)
    z = np.random.default_rng(2).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_array_equal(from_mlflow(z, training=False).numpy(), on_disk(z, training=False).numpy())


def test_second_call_after_completion_does_not_retrain(trained, monkeypatch):
    """Last in this group on purpose: it runs the stage again on the shared project (what it
    checks must hold for the others too, and does)."""
    project, client = trained.project, trained.client
    before = np.load(Path(trained.info["checkpoint"]) / "ckpt-00000004.npz")["generator/0"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    monkeypatch.chdir(project.root)
    again = run_stage(project, trained.params)
    assert again["steps"] == 4 and again["steps_this_run"] == 0
    assert again["loss_d"] == trained.figures["loss_d"]
    info = run_info(project)
    assert info["run_id"] == trained.info["run_id"] and info["model_uri"] == trained.info["model_uri"]
    runs = client.search_runs([info["experiment_id"]])
    assert [r.info.run_id for r in runs] == [info["run_id"]]
    assert runs[0].info.status == "FINISHED"
    assert len(client.search_logged_models([info["experiment_id"]])) == 1
    assert steps_of(client, info["run_id"], "loss/d") == [1, 2, 3, 4]
    after = np.load(Path(info["checkpoint"]) / "ckpt-00000004.npz")["generator/0"]
    np.testing.assert_array_equal(before, after)


def test_a_learning_rate_decay_is_logged_per_step_to_mlflow_and_the_curve(tmp_path, monkeypatch):
    """train.lr_decay linear from half of 4 steps: steps 1-3 (0-based 0-2) at lr_g, step 4 at half of it."""
    lr = 3e-4
    params = tiny_params(train={"steps": 4, "log_every": 1, "lr_g": lr, "lr_decay": "linear", "lr_decay_start": 0.5})
    project = make_project(tmp_path, params)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    run_stage(project, params)
    client = mlflow.MlflowClient()
    logged = sorted((m.step, m.value) for m in client.get_metric_history(run_info(project)["run_id"], "lr/g"))
    assert logged == [
        (1, pytest.approx(lr)),
        (2, pytest.approx(lr)),
        (3, pytest.approx(lr)),
        (4, pytest.approx(lr / 2)),
    ]
    assert pd.read_csv(project.plots)["lr_g"].tolist() == pytest.approx([lr, lr, lr, lr / 2])


# ---- resume ---------------------------------------------------------------------------------------


def test_ctrl_c_then_resume_continues_the_same_run(tmp_path, monkeypatch):
    params = tiny_params(train={"steps": 6, "checkpoint_every": 2, "log_every": 1, "sample_every": 3})
    project = make_project(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    real_save = checkpoint.save

    def save_then_ctrl_c(folder, gan, record):
        path = real_save(folder, gan, record)
        if int(gan.step.numpy()) == 4:
            raise KeyboardInterrupt  # the user presses Ctrl-C just after checkpoint 4
        return path

    monkeypatch.setattr(checkpoint, "save", save_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_stage(project, params)
    monkeypatch.setattr(checkpoint, "save", real_save)

    client = mlflow.MlflowClient()
    key = train.run_key(params, DATA_HASH)
    run_id = json.loads((project.checkpoints / key / "run.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "KILLED"
    assert steps_of(client, run_id, "loss/d") == [1, 2, 3, 4]
    assert not (project.models / "generator.keras").exists()

    figures = run_stage(project, params)
    assert figures["steps"] == 6 and figures["steps_this_run"] == 2
    info = run_info(project)
    assert info["run_id"] == run_id
    experiment_id = info["experiment_id"]
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"
    for key_ in METRICS:
        assert steps_of(client, run_id, key_) == [1, 2, 3, 4, 5, 6], key_
    curve = pd.read_csv(project.plots)  # rows 1-4 come from the checkpoint's record, 5-6 from this call
    assert curve["step"].tolist() == [1, 2, 3, 4, 5, 6]
    logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss/d"))
    assert [v for _, v in logged] == pytest.approx(curve["loss_d"].tolist(), rel=1e-12)
    # The optimizers' own step counters went on from the checkpoint: 6 updates in all, not 2.
    restored = _restore_latest(project.checkpoints / key, params)
    assert int(restored.step.numpy()) == 6
    assert int(restored.g_optimizer.iterations.numpy()) == 6 and int(restored.d_optimizer.iterations.numpy()) == 6


def test_run_key_ignores_only_how_often_we_look():
    base = tiny_params()
    key = train.run_key(base, DATA_HASH)
    assert train.run_key(tiny_params(), DATA_HASH) == key
    for changed in ({"lr_g": 1e-4}, {"loss": "minimax"}, {"seed": 1}, {"d_steps": 2}, {"steps": 5}):
        assert train.run_key(tiny_params(train=changed), DATA_HASH) != key, changed
    assert train.run_key(tiny_params(model={"width": 16}), DATA_HASH) != key
    assert train.run_key(base, "another data hash") != key
    for same in ({"checkpoint_every": 7}, {"log_every": 3}, {"sample_every": 9}, {"max_minutes": 1.5}):
        assert train.run_key(tiny_params(train=same), DATA_HASH) == key, same


def _restore_latest(folder: Path, params: Params, policy: str = "float32") -> GAN:
    keras.mixed_precision.set_global_policy(policy)
    gan = GAN(params.model, params.train, Shapes(16, 1))
    path, _ = checkpoint.latest(folder)
    checkpoint.restore(path, gan)
    return gan


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume(tmp_path, monkeypatch):
    """A real process killed with SIGKILL (no cleanup at all) right after checkpoint 4 of 6."""
    params = tiny_params(train={"steps": 6, "checkpoint_every": 2, "log_every": 1, "sample_every": 3})
    project = make_project(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    # The child holds still once checkpoint 4 is on disk, so the kill lands between checkpoints 4 and 6
    # every time instead of racing the last two steps.
    script = textwrap.dedent("""
        import time
        from pathlib import Path
        from resgan.config import load_params
        from resgan.gan import checkpoint
        from resgan.stages import train

        real_save = checkpoint.save
        def save(folder, gan, record):
            path = real_save(folder, gan, record)
            if int(gan.step.numpy()) == 4:
                time.sleep(600)
            return path
        checkpoint.save = save
        root = Path.cwd()
        train.run(load_params(root / "params.yaml"), train.TrainPaths(root / "params.yaml", root / "data/prepared",
                  root / "models", root / "checkpoints", root / "metrics/train.json", root / "plots/train.csv"))
    """)
    key = train.run_key(params, DATA_HASH)
    pointer = project.checkpoints / key / "latest.json"
    with open(tmp_path / "child.log", "wb") as log:
        child = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not (pointer.exists() and json.loads(pointer.read_text())["step"] == 4):
                assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint 4 within 300 s"
                time.sleep(0.2)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    client = mlflow.MlflowClient()
    run_id = json.loads((project.checkpoints / key / "run.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody could close it
    assert steps_of(client, run_id, "loss/d") == [1, 2, 3, 4]

    figures = run_stage(project, params)
    assert figures["steps"] == 6 and figures["steps_this_run"] == 2
    assert json.loads(project.metrics.read_text())["steps"] == 6
    info = run_info(project)
    assert info["run_id"] == run_id
    assert [r.info.run_id for r in client.search_runs([info["experiment_id"]])] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert steps_of(client, run_id, "loss/d") == [1, 2, 3, 4, 5, 6]
    restored = _restore_latest(project.checkpoints / key, params)
    assert int(restored.step.numpy()) == 6 and int(restored.d_optimizer.iterations.numpy()) == 6
    assert len(client.search_logged_models([info["experiment_id"]])) == 1


# ---- precision and divergence --------------------------------------------------------------------


def test_divergence_fails_the_run_then_lower_rates_start_a_new_run(tmp_path, monkeypatch):
    # A learning rate of 1 without spectral normalization drives D's activations past float16's
    # 65504 within a few steps: the losses become inf/NaN.
    params = tiny_params(
        model={"spectral_norm": False},
        train={
            "steps": 8,
            "lr_d": 1.0,
            "lr_g": 1.0,
            "precision": "mixed_float16",
            "checkpoint_every": 1,
            "log_every": 1,
            "sample_every": 8,
        },
    )
    project = make_project(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DivergenceError) as error:
        run_stage(project, params)
    message = str(error.value)
    match = re.search(r"non-finite (.+) at step (\d+); last good checkpoint: (\S+) \(step (\d+)\)", message)
    assert match, message
    bad_step, good_path, good_step = int(match.group(2)), Path(match.group(3)), int(match.group(4))
    # Which figure overflows first depends on the CPU's float16 kernels (a loss, or D's mean real
    # logit); the message names every non-finite figure with its value.
    assert re.fullmatch(r"[\w/]+=(-?inf|nan)(, [\w/]+=(-?inf|nan))*", match.group(1)), match.group(1)
    assert 1 < bad_step <= 8 and good_step == bad_step - 1  # a checkpoint every step
    assert good_path == project.checkpoints / train.run_key(params, DATA_HASH) / f"ckpt-{good_step:08d}.npz"

    client = mlflow.MlflowClient()
    run_id = json.loads((good_path.parent / "run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert f"at step {bad_step}" in run.data.tags["failure_reason"]
    assert "non-finite" in run.data.tags["failure_reason"]
    assert steps_of(client, run_id, "loss/d") == list(range(1, bad_step))  # the bad step is not logged
    assert not (project.models / "generator.keras").exists()

    # The last good checkpoint is the one latest.json names, and it loads with finite weights.
    restored = _restore_latest(good_path.parent, params, "mixed_float16")
    assert int(restored.step.numpy()) == good_step
    for model in (restored.generator, restored.ema_generator, restored.discriminator):
        assert all(np.isfinite(w.numpy()).all() for w in model.weights)

    # As the message says: lower the learning rates and re-run. Other params make another checkpoint
    # key, a fresh start and a new MLflow run; the failed run stays as it was.
    safer = tiny_params(
        model={"spectral_norm": False},
        train={"steps": 3, "precision": "mixed_float16", "checkpoint_every": 3, "log_every": 1, "sample_every": 3},
    )
    assert train.run_key(safer, DATA_HASH) != train.run_key(params, DATA_HASH)
    figures = run_stage(project, safer)
    assert figures["steps"] == 3 and figures["steps_this_run"] == 3 and figures["precision"] == "mixed_float16"
    assert np.isfinite(figures["loss_d"]) and np.isfinite(figures["loss_g"])
    new_id = run_info(project)["run_id"]
    assert new_id != run_id
    assert {r.info.run_id for r in client.search_runs([run.info.experiment_id])} == {run_id, new_id}
    assert client.get_run(new_id).info.status == "FINISHED" and client.get_run(run_id).info.status == "FAILED"
    assert client.get_run(new_id).data.params["train.lr_g"] == "0.0002"
    assert sorted(p.name for p in project.checkpoints.iterdir()) == sorted(
        [train.run_key(params, DATA_HASH), train.run_key(safer, DATA_HASH)]
    )
    # Dynamic loss scaling starts at 2**15; the first scaled gradients overflow float16, the optimizer
    # skips those updates and lowers the scale. That is not divergence, and training goes on.
    restored = _restore_latest(project.checkpoints / train.run_key(safer, DATA_HASH), safer, "mixed_float16")
    for optimizer in (restored.d_optimizer, restored.g_optimizer):
        skipped = 15 - int(np.log2(float(optimizer.dynamic_scale.numpy())))  # each skip halves the scale
        assert int(optimizer.iterations.numpy()) + skipped == 3  # applied + skipped updates
    assert float(restored.d_optimizer.dynamic_scale.numpy()) < 2.0**15  # at least one update was skipped


def test_a_crash_mid_training_marks_the_run_failed(tmp_path, monkeypatch):
    """Any error in the loop (here: checkpoint 2 cannot be written) must not leave the run RUNNING,
    for MLflow's exit handler would then close it as FINISHED."""
    params = tiny_params(train={"steps": 4, "checkpoint_every": 2, "log_every": 1, "sample_every": 4})
    project = make_project(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    blocker = project.checkpoints / train.run_key(params, DATA_HASH) / "ckpt-00000002.npz"
    blocker.mkdir(parents=True)  # a folder where the checkpoint file must go
    with pytest.raises(OSError):
        run_stage(project, params)
    assert mlflow.active_run() is None
    client = mlflow.MlflowClient()
    run_id = json.loads((blocker.parent / "run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert "ckpt-00000002.npz" in run.data.tags["failure_reason"]
    assert steps_of(client, run_id, "loss/d") == [1, 2]


# ---- FID over training -----------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [True, False])
def test_fid_over_training_is_logged_and_the_best_generator_is_exported(tmp_path, monkeypatch, trusted):
    """With trusted features the best step's generator is exported; with features that failed their fitness
    check the curve is logged under a name that says so and the last step's generator is exported."""
    from resgan.metrics.classifier import FEATURE_LAYER
    from resgan.metrics.evaluation import FidScore, reference_set
    from resgan.metrics.features import LearnedFeatures
    from resgan.sampling import generate_images, latents

    params = tiny_params(
        train={"steps": 6, "log_every": 2, "sample_every": 6, "checkpoint_every": 3, "eval_every": 2, "eval_num": 40},
        evaluate={"features": "classifier"},
    )
    project = make_project(tmp_path, params)
    keras.utils.set_random_seed(0)  # an untrained classifier: its features are a fixed random projection
    inputs = keras.Input((16, 16, 1))
    features = keras.layers.Dense(8, name=FEATURE_LAYER)(keras.layers.Flatten()(inputs))
    classifier = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(features))
    classifier.save(tmp_path / "classifier.keras")
    (tmp_path / "classifier.json").write_text(
        json.dumps({"kind": "classifier", "trusted": trusted, "fitness": "written by the test"})
    )
    key = "fid_classifier" if trusted else "fid_classifier_untrusted"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    curve_path = tmp_path / "plots" / "fid.csv"
    figures = train.run(
        params,
        train_paths(
            project.root,
            project.data,
            classifier=tmp_path / "classifier.keras",
            fid=curve_path,
        ),
    )

    curve = pd.read_csv(curve_path)
    assert curve["step"].tolist() == [2, 4, 6] and curve["fid"].gt(0).all()
    best_step = int(curve["step"][curve["fid"].idxmin()])
    fid_at = dict(zip(curve["step"], curve["fid"]))
    exported_step = figures["exported_step"]
    assert figures["best_step"] == best_step
    assert figures["fid_noise"] > 0 and figures[f"{key}_last"] == pytest.approx(fid_at[6])
    beats = fid_at[6] - curve["fid"].min() > 2 * figures["fid_noise"]  # the best only above 2 x the noise
    assert figures["export"]["which"] == ("best" if trusted and beats else "last")
    assert exported_step == (best_step if trusted and beats else 6)
    assert 0 < figures["fid_seconds"] < figures["wall_s"]  # the cost of FID over training, timed apart
    saved = json.loads(project.metrics.read_text())
    assert saved[f"{key}_best"] == pytest.approx(curve["fid"].min()) and saved["best_step"] == best_step
    assert saved["exported_step"] == exported_step
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = run_info(project)["run_id"]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"train/{key}"))
    assert not client.get_metric_history(run_id, f"eval/{key}")  # the evaluation's name: not the curve's
    assert [step for step, _ in history] == [2, 4, 6]
    assert [value for _, value in history] == pytest.approx(curve["fid"].tolist())
    tags = client.get_run(run_id).data.tags
    assert tags["export_reason"].startswith(f"{figures['export']['which']} step exported: ")
    assert f"{fid_at[6]:.3g}" in tags["export_reason"]  # the last step's FID, beside the best's
    if not (trusted and beats):
        assert (tags["exported"], tags["exported_step"]) == ("last", "6")
        return
    assert (tags["exported"], tags["exported_step"]) == ("best", str(exported_step))
    # The exported generator is that step's: scored again the same way, it gives that step's FID.
    exported = load_generator(project.models / "generator.keras")
    score = FidScore(
        LearnedFeatures(tmp_path / "classifier.keras"),
        reference_set(np.load(project.data / "train.npz")["images"], None, params.evaluate)[0],
    )
    images = generate_images(exported, latents(40, params.model.latent_dim, params.train.seed + FID_SEED_OFFSET))
    assert score(images)["fid_classifier"] == pytest.approx(fid_at[exported_step], rel=1e-4)
    model = client.get_logged_model(run_info(project)["model_uri"].removeprefix("models:/"))
    assert model.tags["exported_step"] == str(exported_step) and model.tags["step"] == "6"
