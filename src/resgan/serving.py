"""The generator as an MLflow model that answers seeds with images, with no pickled Python objects.

An MLflow "flavor module" in MLflow's own sense (``mlflow.models.Model.log(flavor=resgan.serving)``):

- :func:`save_model` writes the generator with ``mlflow.keras.save_model`` (so the model stays
  Keras-native: ``mlflow.keras.load_model`` and ``resgan.loading.load_generator`` read it), then
  points the ``python_function`` flavor's ``loader_module`` at this module and sets a signature
  whose input is seeds (:func:`seed_signature`).
- :func:`_load_pyfunc` is what ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` call: it
  loads the ``.keras`` file with Keras ``safe_mode`` and returns a :class:`SeedModel`.
- :func:`log_model` logs it as a LoggedModel (``model_uri`` is ``models:/m-...``).

Request and answer (``POST /invocations``)::

    {"dataframe_split": {"columns": ["seed"], "data": [[1], [2]]}}      or   {"inputs": {"seed": [1, 2]}}
    optional column "truncation" (float > 0), optional "params": {"format": "png" | "array"}
    -> {"predictions": [{"seed": 1, "image": "<base64 PNG>"}, ...]}      (format "array": uint8 HxWxC lists)

A seed means what it means for ``resgan generate``: seed ``s`` gives the first image of
``resgan generate --seed s`` (``resgan.sampling.seed_latent(dim, s, truncation)``), drawn by
``resgan.sampling.generate_images``. Serving needs the ``resgan`` package in the serving environment
(``--env-manager local`` in the project's venv).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any

import keras
import mlflow.keras
import numpy as np
import pandas as pd
import PIL
import tensorflow as tf
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.pyfunc import FLAVOR_NAME as PYFUNC
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema
from PIL import Image

from resgan.errors import ResganError
from resgan.files import to_pil
from resgan.loading import image_shape, latent_dim, load_generator, num_classes
from resgan.sampling import class_labels, generate_images, seed_latent

FORMATS = ("png", "array")
MAX_SEEDS = 4096  # per request: a bigger request is refused (400) rather than exhausting the server
BATCH_SIZE = 256


def seed_signature():
    """Input: ``seed`` (long, required), ``truncation`` (double, optional) and ``label`` (long,
    optional: a class-conditional model's class); params: ``format``."""
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec("long", "seed"),
                ColSpec("double", "truncation", required=False),
                ColSpec("long", "label", required=False),
            ]
        ),
        outputs=Schema([ColSpec("long", "seed"), ColSpec("string", "image")]),
        params=ParamSchema([ParamSpec("format", "string", "png")]),
    )


def default_requirements() -> list[str]:
    """Pinned versions of what loads the model (avoids MLflow's slow requirement inference)."""
    return [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", f"pillow=={PIL.__version__}"]


def save_model(
    path,
    keras_model,
    mlflow_model=None,
    signature=None,
    pip_requirements=None,
    extra_pip_requirements=None,
    conda_env=None,
    metadata=None,
    **kwargs,
) -> None:
    """Save ``keras_model`` as an MLflow model at ``path`` whose pyfunc is :class:`SeedModel`.

    ``signature`` defaults to :func:`seed_signature` (the pyfunc's inputs are seeds, not latents).
    Other keyword arguments go to ``mlflow.keras.save_model``.
    """
    if mlflow_model is None:
        mlflow_model = Model()
    if pip_requirements is None and conda_env is None:
        pip_requirements = default_requirements()
    keras_logger = logging.getLogger("mlflow.keras.save")
    level = keras_logger.level
    keras_logger.setLevel(logging.ERROR)  # its "no signature" warning: the seed signature is set below
    try:
        # The keras flavor accepts only tensor signatures, so it saves without one.
        mlflow.keras.save_model(
            keras_model,
            path,
            mlflow_model=mlflow_model,
            signature=None,
            pip_requirements=pip_requirements,
            extra_pip_requirements=extra_pip_requirements,
            conda_env=conda_env,
            metadata=metadata,
            **kwargs,
        )
    finally:
        keras_logger.setLevel(level)
    mlflow_model.signature = signature if signature is not None else seed_signature()
    pyfunc = mlflow_model.flavors[PYFUNC]
    pyfunc["loader_module"] = __name__
    pyfunc["data"] = mlflow_model.flavors["keras"]["data"]
    mlflow_model.metadata = {
        **(mlflow_model.metadata or {}),
        "resgan": {
            "latent_dim": latent_dim(keras_model),
            "image_shape": list(image_shape(keras_model)),
            "num_classes": num_classes(keras_model),
        },
    }
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))


def requirements() -> list[str]:
    """What a logged generator needs to load: the TensorFlow and Keras that trained it."""
    return [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]


def log_model(
    keras_model,
    name: str = "generator",
    signature=None,
    pip_requirements=None,
    registered_model_name: str | None = None,
    **kwargs,
):
    """Log ``keras_model`` as a LoggedModel of run ``run_id`` (a keyword argument; else MLflow's active
    run); returns its ``ModelInfo``. The model's experiment: see :meth:`resgan.tracking.StageRun.log_model_once`."""
    return Model.log(
        artifact_path=None,
        name=name,
        flavor=sys.modules[__name__],
        keras_model=keras_model,
        signature=signature,
        pip_requirements=pip_requirements,
        registered_model_name=registered_model_name,
        **kwargs,
    )


class SeedModel:
    """The pyfunc implementation: seeds (and optional truncations and class labels) -> images."""

    def __init__(self, generator):
        self.generator = generator
        self.latent_dim = latent_dim(generator)
        self.num_classes = num_classes(generator)

    def predict(self, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Columns ``seed`` and ``image`` (base64 PNG, or uint8 HxWxC lists with format ``array``) for
        the seeds in ``model_input``; a bad input raises MLflow's invalid-parameter error (HTTP 400)."""
        fmt = str((params or {}).get("format") or "png")
        if fmt not in FORMATS:
            raise MlflowException.invalid_parameter_value(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        try:
            seeds, truncations, labels = _read_input(model_input)
            images = self.images(seeds, truncations, labels)
        except (ResganError, ValueError) as error:
            raise MlflowException.invalid_parameter_value(str(error)) from None
        if fmt == "png":
            column = [encode_png(image) for image in images]
        else:
            column = [image.tolist() for image in images]
        return pd.DataFrame({"seed": seeds.astype(np.int64), "image": column})

    def images(
        self, seeds: np.ndarray, truncations: list[float | None], labels: list[int | None] | None = None
    ) -> np.ndarray:
        """uint8 NHWC images, one per seed, as ``resgan generate --seed s --num 1 [--label l]`` draws them."""
        z = np.stack([seed_latent(self.latent_dim, int(s), t) for s, t in zip(seeds, truncations)])
        labels = labels or [None] * len(seeds)
        classes = [class_labels(1, self.num_classes, int(s), label) for s, label in zip(seeds, labels)]
        y = None if self.num_classes == 0 else np.concatenate(classes)
        return generate_images(self.generator, z, y, BATCH_SIZE)


def _read_input(model_input) -> tuple[np.ndarray, list[float | None], list[int | None]]:
    if isinstance(model_input, dict):
        model_input = pd.DataFrame({k: np.atleast_1d(np.asarray(v)) for k, v in model_input.items()})
    if not isinstance(model_input, pd.DataFrame) or "seed" not in model_input.columns:
        raise ValueError("the input needs a column 'seed' (non-negative integers)")
    if len(model_input) == 0:
        raise ValueError("no seeds given")
    if len(model_input) > MAX_SEEDS:
        raise ValueError(f"at most {MAX_SEEDS} seeds per request, got {len(model_input)}")
    raw = model_input["seed"].to_numpy()
    if raw.dtype.kind not in "iu" or (raw < 0).any():
        raise ValueError("seeds must be non-negative integers")
    truncations: list[float | None] = [None] * len(raw)
    if "truncation" in model_input.columns:
        values = pd.to_numeric(model_input["truncation"], errors="coerce").to_numpy(dtype=np.float64)
        truncations = [None if np.isnan(t) else float(t) for t in values]
        if any(t is not None and not t > 0 for t in truncations):
            raise ValueError("truncation must be positive")
    labels: list[int | None] = [None] * len(raw)
    if "label" in model_input.columns:
        values = pd.to_numeric(model_input["label"], errors="coerce").to_numpy(dtype=np.float64)
        if any(not np.isnan(v) and (v != np.floor(v) or v < 0) for v in values):
            raise ValueError("labels must be non-negative integers (class indices)")
        labels = [None if np.isnan(v) else int(v) for v in values]
    return raw.astype(np.int64), truncations, labels


def encode_png(image: np.ndarray) -> str:
    """A uint8 HWC image as base64 PNG text."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    """The inverse of :func:`encode_png`: base64 PNG text -> uint8 HWC array."""
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))
    return image[..., None] if image.ndim == 2 else image


def _load_pyfunc(data_path: str) -> SeedModel:
    """Called by ``mlflow.pyfunc.load_model`` with the model's ``data`` folder (or the model folder)."""
    path = Path(data_path)
    if path.is_dir():
        found = sorted(path.rglob("*.keras"))
        if not found:
            raise MlflowException(f"{data_path} holds no .keras file: not a resgan generator")
        path = found[0]
    return SeedModel(load_generator(path))
