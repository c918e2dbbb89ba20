"""The sample stage: ``sample.num`` images from the EMA generator with fixed seeds.

Writes ``samples.npz`` (``images`` uint8 NHWC, ``seed``) and ``grid.png``; logs the grid into the
pipeline's MLflow run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from resgan import io, tracking
from resgan.config import Params


def draw(model, num: int, seed: int, batch_size: int, truncation: float | None = None,
         show_progress: bool | None = None) -> np.ndarray:
    """``num`` uint8 images from ``model``; the same seed gives the same images."""
    from resgan.gan.trainer import to_uint8
    from resgan.models import latent_dim, latents

    z = latents(num, latent_dim(model), seed, truncation)
    show = sys.stderr.isatty() if show_progress is None else show_progress
    out = np.empty((num, *model.outputs[0].shape[1:]), dtype=np.uint8)
    starts = range(0, num, batch_size)
    if show:
        from rich.progress import track

        starts = track(starts, description="sampling", transient=True)
    for start in starts:
        out[start:start + batch_size] = to_uint8(model(z[start:start + batch_size], training=False))
    return out


def run(params: Params, generator_path: Path, run_file: Path | None, out_dir: Path) -> dict[str, Any]:
    from resgan.models import load_generator

    model = load_generator(generator_path)
    sp = params.sample
    images = draw(model, sp.num, sp.seed, sp.batch_size)
    io.save_npz(out_dir / "samples.npz", images=images, seed=np.int64(sp.seed))
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
