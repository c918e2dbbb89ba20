"""The sample stage: ``sample.num`` images from the EMA generator with fixed seeds.

Writes ``samples.npz`` (``images`` uint8 NHWC, ``seed``, and ``labels`` for a class-conditional
generator, which draws every class in turn) and ``grid.png``; logs the grid into the pipeline's
MLflow run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from resgan import io, tracking
from resgan.config import Params


def draw(model, num: int, seed: int, batch_size: int, truncation: float | None = None,
         show_progress: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``num`` uint8 images from ``model``, and the classes they were drawn for (a class-conditional
    model draws every class in turn; None for an unconditional one). The same seed gives the same images."""
    from resgan.gan.trainer import to_uint8
    from resgan.models import class_labels, latent_dim, latents, model_inputs, num_classes

    z = latents(num, latent_dim(model), seed, truncation)
    labels = class_labels(num, num_classes(model), seed)
    show = sys.stderr.isatty() if show_progress is None else show_progress
    out = np.empty((num, *model.outputs[0].shape[1:]), dtype=np.uint8)
    starts = range(0, num, batch_size)
    if show:
        from rich.progress import track

        starts = track(starts, description="sampling", transient=True)
    for start in starts:
        window = slice(start, start + batch_size)
        inputs = model_inputs(z[window], None if labels is None else labels[window])
        out[window] = to_uint8(model(inputs, training=False))
    return out, labels


def run(params: Params, generator_path: Path, run_file: Path | None, out_dir: Path) -> dict[str, Any]:
    from resgan.models import load_generator

    model = load_generator(generator_path)
    sp = params.sample
    images, labels = draw(model, sp.num, sp.seed, sp.batch_size)
    extra = {} if labels is None else {"labels": labels.astype(np.int64)}
    io.save_npz(out_dir / "samples.npz", images=images, seed=np.int64(sp.seed), **extra)
    grid_path = out_dir / "grid.png"
    io.save_grid(grid_path, images[: sp.grid])
    if run_file is not None and str(run_file):
        import mlflow

        with tracking.resume_run(run_file, params.mlflow.experiment):
            retries = params.mlflow.tracking_retries
            tracking.retry(lambda: mlflow.log_params({f"sample.{k}": v for k, v in sp.model_dump().items()}),
                           "log sample params", retries)
            tracking.retry(lambda: mlflow.log_artifact(str(grid_path), "samples"), "log grid", retries)
    print(f"sampled {len(images)} images -> {out_dir / 'samples.npz'}, grid -> {grid_path}", flush=True)
    return {"num": len(images), "grid": str(grid_path)}
