"""Loading generators safely: from a local ``.keras`` file or from any MLflow model URI.

Models are always deserialized by Keras with ``safe_mode=True`` (no lambdas, no pickle); an MLflow
URI (``models:/name@alias``, ``models:/name/3``, ``runs:/<id>/generator``, a logged-model id
``m-...``) is first downloaded as files into a temporary folder, then loaded the same way.
:func:`model_file` does the fetching and the cheap checks without TensorFlow, so a wrong reference
fails fast; :func:`load_generator` is fetch + load + "is it a generator?". :func:`latent_dim`,
:func:`num_classes` and :func:`image_shape` read a loaded generator's sizes.

Keras (so TensorFlow) is imported only to deserialize a model, and MLflow only to download one: a
wrong path or URI fails in a second, and ``resgan --help`` imports neither.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from resgan.errors import ResganError, first_line

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
            raise ResganError(
                f"{name} holds arbitrary code (e.g. a Lambda layer) and is refused: "
                "resgan loads models with Keras safe_mode"
            ) from None
        if cause.startswith("Could not locate"):  # a config naming a function or class outside Keras and resgan
            raise ResganError(
                f"{name} names code that is neither Keras' nor resgan's and is refused: {cause.split('. ')[0]}"
            ) from None
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


def _check_store(uri: str) -> None:
    """A missing SQLite store is an error here: reading a model must not create an empty mlflow.db."""
    from resgan import tracking  # imports MLflow: only for models that come from it

    tracking.check_reachable(uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise ResganError(
                f"no MLflow store at {db}: train a model first, or set MLFLOW_TRACKING_URI to the store that holds it"
            )


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
        raise ResganError(f"cannot resolve model {uri}: {first_line(error)}") from None
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
    if (
        len(inputs) not in (1, 2)
        or len(inputs[0].shape) != 2
        or (len(inputs) == 2 and not conditional)
        or len(outputs) != 1
        or len(outputs[0].shape) != 4
    ):
        raise ResganError(
            f"{name} is not a generator: it maps {[tuple(i.shape) for i in inputs]} to "
            f"{[tuple(o.shape) for o in outputs]}, expected (batch, latent) -> (batch, H, W, C), "
            "or (batch, latent) and (batch,) class labels for a conditional one"
        )
    if conditional and num_classes(model) < 2:
        raise ResganError(f"{name} is not a resgan generator: it takes labels but has no class embedding")
    return model


def load_generator(ref: str | Path):
    """A generator from a ``.keras`` path, a local MLflow model folder or an MLflow model URI
    (``models:/name@alias``, ``models:/name/3``, ``runs:/<id>/generator``, ``m-<id>``)."""
    with model_file(ref) as path:
        return generator_from_file(path, str(ref))


def latent_dim(model) -> int:
    """The length of a generator's latent vector."""
    return int(model.inputs[0].shape[-1])


def image_shape(model) -> tuple[int, int, int]:
    """(height, width, channels) of the images a generator makes."""
    h, w, c = (int(d) for d in model.outputs[0].shape[1:])
    return h, w, c


def num_classes(model) -> int:
    """The classes a conditional generator draws (its label embedding's size); 0 for an unconditional one."""
    if len(model.inputs) < 2:
        return 0
    from resgan.nn.networks import CLASS_EMBEDDING

    try:
        return int(model.get_layer(CLASS_EMBEDDING).input_dim)
    except ValueError:  # no such layer
        return 0
