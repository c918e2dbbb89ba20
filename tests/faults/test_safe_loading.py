"""Safe loading: a model file that carries code is refused before the code can run, whichever way it
comes in (a local ``.keras``, a registered MLflow model, the CLI), and the CLI never unpickles anything
from the registry.

Each hostile file is checked to be really hostile first: loaded the unsafe way, it runs its payload
(writes a marker file). Loaded the resgan way, it must be refused and the marker must not appear.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from resgan.errors import ResganError
from resgan.loading import load_generator

BIN = Path(sys.executable).parent
MARKER = "pwned.txt"  # relative: a payload writes it in the working directory of whoever runs it


def _lambda_generator(path: Path) -> None:
    """A model shaped like a generator (latent 16 -> 16x16x1) whose Lambda layer writes MARKER when run."""
    z = keras.Input((16,))
    x = keras.layers.Reshape((16, 16, 1))(keras.layers.Dense(256)(z))
    x = keras.layers.Lambda(lambda t: (__import__("pathlib").Path("pwned.txt").write_text("ran"), t)[1])(x)
    keras.Model(z, x).save(path)


@pytest.fixture
def hostile(tmp_path, monkeypatch) -> Path:
    """``evil.keras`` with the Lambda payload; checked to run its payload when loaded with safe_mode off."""
    workshop = tmp_path / "workshop"
    workshop.mkdir()
    monkeypatch.chdir(workshop)
    _lambda_generator(workshop / "evil.keras")
    (workshop / MARKER).unlink()  # building the model ran the layer once
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.chdir(probe)
    keras.saving.load_model(workshop / "evil.keras", safe_mode=False)
    assert (probe / MARKER).read_text() == "ran", "the payload must run when loaded unsafely"
    victim = tmp_path / "victim"
    victim.mkdir()
    monkeypatch.chdir(victim)
    return workshop / "evil.keras"


def _resgan(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("DVC_ROOT", None)
    return subprocess.run([str(BIN / "resgan"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_a_lambda_layer_is_refused_and_never_runs(hostile):
    with pytest.raises(ResganError) as error:
        load_generator(hostile)
    message = str(error.value)
    assert message.startswith(f"{hostile} holds arbitrary code (e.g. a Lambda layer) and is refused")
    assert "safe_mode" in message and "\n" not in message
    assert not Path(MARKER).exists()


def test_a_config_naming_code_outside_keras_is_refused_with_the_culprit(tmp_path):
    """A hand-edited config.json that points an activation at ``os.system`` (the shape of CVE-2025-1550)."""
    from resgan.nn.networks import build_generator

    good = tmp_path / "good.keras"
    build_generator(latent_dim=16, width=8, image_size=16, channels=1).save(good)
    with zipfile.ZipFile(good) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    text = json.dumps(config)
    assert '"activation": "tanh"' in text or '"tanh"' in text
    config_text = text.replace(
        '"tanh"',
        json.dumps({"module": "os", "class_name": "function", "config": "system", "registered_name": "system"}),
        1,
    )
    assert config_text != text
    files["config.json"] = config_text.encode()
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with pytest.raises(ResganError) as error:
        load_generator(bad)
    message = str(error.value)
    assert (
        message == f"{bad} names code that is neither Keras' nor resgan's and is refused: "
        "Could not locate function 'system'"
    ), message  # one line, naming what it refused


@pytest.mark.slow
def test_the_cli_refuses_a_lambda_file_and_a_lambda_model_from_the_registry(hostile, tmp_path):
    victim = Path.cwd()
    message = _one_line_error(
        _resgan("generate", "--model", str(hostile), "--num", "4", "--out", "grid.png", cwd=victim)
    )
    assert "holds arbitrary code (e.g. a Lambda layer) and is refused" in message
    assert sorted(p.name for p in victim.iterdir()) == [], "no marker, no output"

    # The same file registered in MLflow as a Keras model: models:/evil/1 is refused the same way.
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    os.chdir(tmp_path / "probe")  # (monkeypatch's chdir in the fixture restores the working directory)
    model = keras.saving.load_model(hostile, safe_mode=False)  # runs the payload, here in the probe folder
    with mlflow.start_run():
        info = mlflow.keras.log_model(model, name="generator")
    mlflow.register_model(info.model_uri, "evil")
    message = _one_line_error(
        _resgan("generate", "--model", "models:/evil/1", "--num", "4", "--out", "grid.png", cwd=victim)
    )
    assert "models:/evil/1 holds arbitrary code (e.g. a Lambda layer) and is refused" in message
    assert sorted(p.name for p in victim.iterdir()) == []


class _Payload:
    """Unpickling this writes the marker: what a hostile ``python_model.pkl`` would do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "ran"))


def _pickled_model_folder(folder: Path, marker: Path, keras_file: Path | None) -> None:
    """An MLflow model whose pyfunc is a cloudpickled python_model (the payload), optionally beside a
    genuine generator ``.keras`` file."""
    folder.mkdir(parents=True)
    (folder / "python_model.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    flavors = {
        "python_function": {
            "loader_module": "mlflow.pyfunc.model",
            "python_model": "python_model.pkl",
            "cloudpickle_version": "3.0.0",
            "python_version": "3.11",
            "env": {},
        }
    }
    if keras_file is not None:
        (folder / "data").mkdir()
        (folder / "data" / "model.keras").write_bytes(keras_file.read_bytes())
    import yaml

    (folder / "MLmodel").write_text(
        yaml.safe_dump({"artifact_path": "generator", "flavors": flavors, "mlflow_version": mlflow.__version__})
    )


@pytest.mark.slow
def test_the_cli_never_unpickles_a_registered_model(tmp_path, monkeypatch):
    from resgan.nn.networks import build_generator

    marker = tmp_path / MARKER
    genuine = tmp_path / "genuine.keras"
    build_generator(latent_dim=16, width=8, image_size=16, channels=1).save(genuine)
    pickled_only, with_keras = tmp_path / "pickled_only", tmp_path / "with_keras"
    _pickled_model_folder(pickled_only, marker, None)
    _pickled_model_folder(with_keras, marker, genuine)
    with open(pickled_only / "python_model.pkl", "rb") as handle:  # the bait is real: unpickling runs it
        pickle.load(handle)
    assert marker.read_text() == "ran"
    marker.unlink()

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(pickled_only), "pickled_only")
        mlflow.log_artifacts(str(with_keras), "with_keras")
    mlflow.register_model(f"runs:/{run.info.run_id}/pickled_only", "pickled")
    mlflow.register_model(f"runs:/{run.info.run_id}/with_keras", "pickled")
    victim = tmp_path / "victim"
    victim.mkdir()

    message = _one_line_error(_resgan("generate", "--model", "models:/pickled/1", "--out", "a.png", cwd=victim))
    assert "models:/pickled/1 holds no .keras file: it is not a resgan generator" in message
    assert not marker.exists()

    done = _resgan("generate", "--model", "models:/pickled/2", "--num", "4", "--out", "b.npz", cwd=victim)
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "the CLI unpickled python_model.pkl"
    with np.load(victim / "b.npz") as data:
        images = data["images"]
    assert images.shape == (4, 16, 16, 1) and images.dtype == np.uint8
    # ... and they are the genuine generator's images (its weights, from the .keras file beside the pickle).
    from resgan.generate import generate

    generate(str(genuine), tmp_path / "direct.npz", num=4)
    with np.load(tmp_path / "direct.npz") as data:
        np.testing.assert_array_equal(images, data["images"])
