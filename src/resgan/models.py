"""Loading generators safely: from a local ``.keras`` file or from any MLflow model URI.

Models are always deserialized by Keras with ``safe_mode=True`` (no lambdas, no pickle); an MLflow
URI is first downloaded as files, then loaded the same way.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from resgan.errors import ResganError

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "m-")


def _load_keras(path: Path):
    import keras

    import resgan.nn.layers  # noqa: F401  (registers the custom layers)

    if not path.exists():
        raise ResganError(f"{path} not found")
    if not zipfile.is_zipfile(path):
        raise ResganError(f"{path} is not a Keras model file (.keras zip archive)")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as error:
        text = str(error)
        if "safe_mode" in text or "lambda" in text.lower():
            raise ResganError(f"{path} holds arbitrary code (e.g. a Lambda layer) and is refused: "
                              "resgan loads models with Keras safe_mode") from None
        raise ResganError(f"{path} cannot be loaded as a Keras model: {text.splitlines()[0]}") from None
    except (OSError, KeyError, TypeError) as error:
        raise ResganError(f"{path} cannot be loaded as a Keras model: {error}") from None


def _download(uri: str) -> Path:
    """Download the files of an MLflow model URI (or logged-model id) and return the .keras file."""
    import mlflow

    from resgan import tracking

    tracking.check_reachable(tracking.tracking_uri())
    mlflow.set_tracking_uri(tracking.tracking_uri())
    if uri.startswith("m-"):
        uri = f"models:/{uri}"
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as error:  # MlflowException and friends: unknown model, alias or version
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ResganError(f"cannot resolve model {uri}: {message}") from None
    found = sorted(local.rglob("*.keras"))
    if not found:
        raise ResganError(f"model {uri} holds no .keras file: it is not a resgan generator")
    return found[0]


def load_generator(ref: str | Path):
    """A generator from a ``.keras`` path or an MLflow model URI; checks that it maps latents to images."""
    text = str(ref)
    path = _download(text) if text.startswith(MLFLOW_SCHEMES) else Path(text)
    model = _load_keras(path)
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1 or len(inputs[0].shape) != 2 or len(outputs) != 1 or len(outputs[0].shape) != 4:
        raise ResganError(f"{ref} is not a generator: it maps {[tuple(i.shape) for i in inputs]} to "
                          f"{[tuple(o.shape) for o in outputs]}, expected (batch, latent) -> (batch, H, W, C)")
    return model


def latent_dim(model) -> int:
    return int(model.inputs[0].shape[-1])


def latents(num: int, dim: int, seed: int, truncation: float | None = None) -> np.ndarray:
    """``num`` standard-normal latents from ``seed``; with ``truncation`` values beyond +-t are redrawn."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num, dim)).astype(np.float32)
    if truncation is not None:
        if truncation <= 0:
            raise ResganError("--truncation must be positive")
        outside = np.abs(z) > truncation
        while outside.any():
            z[outside] = rng.standard_normal(int(outside.sum())).astype(np.float32)
            outside = np.abs(z) > truncation
    return z
