"""The sample stage: ``sample.num`` images from the EMA generator with fixed seeds.

Writes ``samples.npz`` (``images`` uint8 NHWC, ``seed``, and ``labels`` for a class-conditional
generator, which draws every class in turn) and ``grid.png``. It records nothing in MLflow: the
evaluate stage's run, which DVC re-runs whenever the samples change, logs the grid and the
``sample.*`` params beside the figures measured on these samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resgan import files, grids
from resgan.config import Params
from resgan.loading import load_generator
from resgan.sampling import draw
from resgan.terminal import progress_bar

PARAMS = ("sample",)  # the params this stage reads: dvc.yaml gives it the same (tests/test_contract.py)


def run(params: Params, generator_path: Path, out_dir: Path) -> dict[str, Any]:
    """Draw ``sample.num`` images of ``sample.seed``; write ``samples.npz`` and ``grid.png`` into
    ``out_dir``; return the count and the grid's path."""
    model = load_generator(generator_path)
    sp = params.view(PARAMS, "sample").sample
    with progress_bar(sp.num, "sampling") as advance:
        images, labels = draw(model, sp.num, sp.seed, sp.batch_size, progress=advance)
    extra = {} if labels is None else {"labels": labels.astype(np.int64)}
    files.save_npz(out_dir / "samples.npz", images=images, seed=np.int64(sp.seed), **extra)
    grid_path = out_dir / "grid.png"
    # Conditional: a class per column, or a block per class for many (resgan.grids). At least 512 pixels
    # wide: small images enlarged for a person to see (samples.npz keeps the true pixels).
    grids.save(grid_path, grids.sample_grid(images, labels, sp.grid), min_width=files.VIEW_WIDTH)
    print(f"sampled {len(images)} images -> {out_dir / 'samples.npz'}, grid -> {grid_path}", flush=True)
    return {"num": len(images), "grid": str(grid_path)}
