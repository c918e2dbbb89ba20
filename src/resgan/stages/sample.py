"""The sample stage: ``sample.num`` images from the EMA generator with fixed seeds.

Writes ``samples.npz`` (``images`` uint8 NHWC, ``seed``, and ``labels`` for a class-conditional
generator, which draws every class in turn) and ``grid.png``; logs the grid into the pipeline's
MLflow run (MLflow is imported only then: a run without one never starts it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resgan import files, tracking
from resgan.config import Params
from resgan.loading import load_generator
from resgan.sampling import draw, grid_images
from resgan.terminal import progress_bar


def run(params: Params, generator_path: Path, run_file: Path | None, out_dir: Path) -> dict[str, Any]:
    """Draw ``sample.num`` images of ``sample.seed``; write ``samples.npz`` and ``grid.png`` into
    ``out_dir``, log the grid into the run of ``run_file`` (None: no MLflow); return the count and grid path."""
    model = load_generator(generator_path)
    sp = params.sample
    with progress_bar(sp.num, "sampling") as advance:
        images, labels = draw(model, sp.num, sp.seed, sp.batch_size, progress=advance)
    extra = {} if labels is None else {"labels": labels.astype(np.int64)}
    files.save_npz(out_dir / "samples.npz", images=images, seed=np.int64(sp.seed), **extra)
    grid_path = out_dir / "grid.png"
    # Conditional: a class per column. At least 512 pixels wide: small images enlarged for a person to see
    # (samples.npz keeps the true pixels).
    files.save_grid(grid_path, *grid_images(images, labels, sp.grid), min_width=512)
    if run_file is not None and str(run_file):
        import mlflow

        with tracking.resume_run(run_file, params.mlflow.experiment):
            retries = params.mlflow.tracking_retries
            tracking.retry(lambda: mlflow.log_params({f"sample.{k}": v for k, v in sp.model_dump().items()}),
                           "log sample params", retries)
            tracking.retry(lambda: mlflow.log_artifact(str(grid_path), "samples"), "log grid", retries)
    print(f"sampled {len(images)} images -> {out_dir / 'samples.npz'}, grid -> {grid_path}", flush=True)
    return {"num": len(images), "grid": str(grid_path)}
