"""Loading generators safely: from a local ``.keras`` file or from any MLflow model URI.

Models are always deserialized by Keras with ``safe_mode=True`` (no lambdas, no pickle); an MLflow
URI (``models:/name@alias``, ``models:/name/3``, ``runs:/<id>/generator``, a logged-model id
``m-...``) is first downloaded as files into a temporary folder, then loaded the same way.
:func:`model_file` does the fetching and the cheap checks without TensorFlow, so a wrong reference
fails fast; :func:`load_generator` is fetch + load + "is it a generator?".
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from resgan.errors import ResganError

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
LOGGED_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")  # what MLflow 3 names a LoggedModel


def is_mlflow_ref(ref: str | Path) -> bool:
    """Whether ``ref`` names an MLflow model (URI or logged-model id) rather than a local file."""
    text = str(ref)
    if Path(text).exists():
        return False
    return text.startswith(MLFLOW_SCHEMES) or LOGGED_MODEL_ID.fullmatch(text) is not None


def _check_keras_file(path: Path, name: str) -> None:
    """Cheap checks before Keras (and TensorFlow) start: it exists and is a ``.keras`` archive."""
    if not path.exists():
        raise ResganError(f"{name} not found")
    if not path.is_file() or not zipfile.is_zipfile(path) or not _is_keras_archive(path):
        raise ResganError(f"{name} is not a Keras model file (.keras zip archive)")
    if path.suffix != ".keras":
        raise ResganError(f"{name} looks like a Keras model but Keras loads only files named *.keras: rename it")


def _load_keras(path: Path, name: str | None = None):
    """Deserialize a ``.keras`` file with safe_mode; ``name`` is what error messages call it."""
    name = name or str(path)
    _check_keras_file(path, name)

    import keras

    import resgan.nn.layers  # noqa: F401  (registers the custom layers)

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # a zip that is no Keras archive raises KeyError, BadZipFile, JSON errors...
        text, cause = str(error), _root_cause(error)
        if "safe_mode" in text or (isinstance(error, ValueError) and "lambda" in text.lower()):
            raise ResganError(f"{name} holds arbitrary code (e.g. a Lambda layer) and is refused: "
                              "resgan loads models with Keras safe_mode") from None
        if cause.startswith("Could not locate"):  # a config naming a function or class outside Keras and resgan
            raise ResganError(f"{name} names code that is neither Keras' nor resgan's and is refused: "
                              f"{cause.split('. ')[0]}") from None
        raise ResganError(f"{name} cannot be loaded as a Keras model: {cause}") from None


def _is_keras_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return "config.json" in names and "metadata.json" in names


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost error that Keras chains into its deserialization messages
    ("... could not be deserialized properly ... Exception encountered: <the cause>")."""
    text = str(error)
    if "Exception encountered:" in text:
        text = text.rsplit("Exception encountered:", 1)[1]
    text = text.strip()
    return text.splitlines()[0] if text else type(error).__name__


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_store(uri: str) -> None:
    """A missing SQLite store is an error here: reading a model must not create an empty mlflow.db."""
    from resgan import tracking

    tracking.check_reachable(uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise ResganError(f"no MLflow store at {db}: train a model first, or set MLFLOW_TRACKING_URI "
                              "to the store that holds it")


def _download(uri: str, dst: Path) -> Path:
    """Download the files of an MLflow model URI (or logged-model id) into ``dst``; return the .keras file."""
    import mlflow

    from resgan import tracking

    store = tracking.tracking_uri()
    _check_store(store)
    mlflow.set_tracking_uri(store)
    if LOGGED_MODEL_ID.fullmatch(uri):
        uri = f"models:/{uri}"
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as error:  # MlflowException and friends: unknown model, alias or version
        raise ResganError(f"cannot resolve model {uri}: {_first_line(error)}") from None
    return _keras_file(local, uri)


def _keras_file(local: Path, ref: str) -> Path:
    """The ``.keras`` file of a downloaded or local MLflow model folder."""
    if local.is_file():
        return local
    found = sorted(local.rglob("*.keras"))
    if not found:
        raise ResganError(f"model {ref} holds no .keras file: it is not a resgan generator")
    return found[0]


@contextlib.contextmanager
def model_file(ref: str | Path) -> Iterator[Path]:
    """The checked ``.keras`` file behind ``ref``: a local file, the one inside a local MLflow model
    folder, or one downloaded from MLflow into a temporary folder that is removed on exit.

    Needs no TensorFlow: a bad reference fails before Keras starts.
    """
    text = str(ref)
    if is_mlflow_ref(text):
        tmp = Path(tempfile.mkdtemp(prefix="resgan-model-"))
        try:
            path = _download(text, tmp)
            _check_keras_file(path, text)
            yield path
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        path = Path(text)
        path = _keras_file(path, text) if path.is_dir() else path
        _check_keras_file(path, text)
        yield path


def generator_from_file(path: Path, name: str | None = None):
    """Load a ``.keras`` file and check that it maps latents to images (``name`` for messages)."""
    name = name or str(path)
    model = _load_keras(path, name)
    inputs, outputs = model.inputs, model.outputs
    conditional = len(inputs) == 2 and len(inputs[1].shape) == 1 and "int" in str(inputs[1].dtype)
    if (len(inputs) not in (1, 2) or len(inputs[0].shape) != 2 or (len(inputs) == 2 and not conditional)
            or len(outputs) != 1 or len(outputs[0].shape) != 4):
        raise ResganError(f"{name} is not a generator: it maps {[tuple(i.shape) for i in inputs]} to "
                          f"{[tuple(o.shape) for o in outputs]}, expected (batch, latent) -> (batch, H, W, C), "
                          "or (batch, latent) and (batch,) class labels for a conditional one")
    if conditional and num_classes(model) < 2:
        raise ResganError(f"{name} is not a resgan generator: it takes labels but has no class embedding")
    return model


def load_generator(ref: str | Path):
    """A generator from a ``.keras`` path, a local MLflow model folder or an MLflow model URI
    (``models:/name@alias``, ``models:/name/3``, ``runs:/<id>/generator``, ``m-<id>``)."""
    with model_file(ref) as path:
        return generator_from_file(path, str(ref))


def latent_dim(model) -> int:
    return int(model.inputs[0].shape[-1])


def num_classes(model) -> int:
    """The classes a conditional generator draws (its label embedding's size); 0 for an unconditional one."""
    if len(model.inputs) < 2:
        return 0
    from resgan.nn.networks import CLASS_EMBEDDING

    try:
        return int(model.get_layer(CLASS_EMBEDDING).input_dim)
    except ValueError:  # no such layer
        return 0


def class_labels(num: int, classes: int, seed: int, label: int | None = None) -> np.ndarray | None:
    """Labels for ``num`` images of a generator with ``classes`` classes (None when it has none).

    ``label`` given: that class for every image (a clear error when it is not one). Otherwise row
    ``i`` gets class ``(seed + i) % classes``: every class equally often and, as with
    :func:`latents`, row ``i`` depends only on ``(seed, i)``: ``--num 10`` draws the first ten
    images of ``--num 20``, and ``--seed s --num 1`` draws class ``s % classes``.
    """
    if not classes:
        if label is not None:
            raise ResganError("a label was given, but this generator is not class-conditional (it was "
                              "trained with model.conditional: false)")
        return None
    if label is not None:
        if not 0 <= label < classes:
            raise ResganError(f"the label must be a class from 0 to {classes - 1}, got {label}")
        return np.full(num, label, dtype=np.int32)
    return ((np.arange(num, dtype=np.int64) + seed) % classes).astype(np.int32)


def model_inputs(x, labels):
    """A network's input: ``x`` (latents or images), or ``[x, labels]`` for a class-conditional one."""
    return x if labels is None else [x, labels]


def latents(num: int, dim: int, seed: int, truncation: float | None = None) -> np.ndarray:
    """``num`` standard-normal latents from ``seed``.

    Row ``i`` depends only on ``(seed, i, dim, truncation)``: ``latents(10, ...)`` is the first ten
    rows of ``latents(20, ...)``, so "the image of seed s" is row 0 whatever ``num`` is. With
    ``truncation`` t, each value beyond +-t is replaced by a draw from the normal truncated to
    [-t, t] (inverse CDF of a second stream, seeded ``[seed, 1]``, at the same position), so the
    result is exactly truncated-normal and keeps the row property.
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num, dim)).astype(np.float32)
    if truncation is None:
        return z
    if not truncation > 0:
        raise ResganError("--truncation must be positive")
    from scipy.special import ndtr, ndtri

    low = ndtr(-truncation)
    spread = 1.0 - 2.0 * low
    redraw = np.random.default_rng([seed, 1])
    rows = max(1, 2**20 // max(dim, 1))  # bounded memory for a million latents
    for start in range(0, num, rows):
        block = z[start:start + rows]
        uniform = redraw.random(block.shape)  # drawn for every position: row i's values depend on i only
        outside = np.abs(block) > truncation
        if outside.any():
            block[outside] = ndtri(low + uniform[outside] * spread).astype(np.float32)
    np.clip(z, -truncation, truncation, out=z)  # float32 rounding of a value at the edge
    return z
