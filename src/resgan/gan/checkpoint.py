"""Checkpoints that an interruption can never break.

A checkpoint is one ``.npz`` holding every variable of the GAN (G, D, EMA, both optimizers, the
step counter and the latent RNG state) plus a JSON record (step, MLflow run id, loss history).
Both are written to temporary files and renamed; ``latest.json`` is renamed last, so it always
names a complete checkpoint. The two newest checkpoints are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from resgan import files
from resgan.errors import ResganError

KEEP = 2


def _variables(gan) -> dict[str, list]:
    return {
        "generator": list(gan.generator.weights),
        "ema_generator": list(gan.ema_generator.weights),
        "discriminator": list(gan.discriminator.weights),
        "g_optimizer": list(gan.g_optimizer.variables),
        "d_optimizer": list(gan.d_optimizer.variables),
        "step": [gan.step],
        "rng": [gan.rng.state],
    }


def save(folder: Path, gan, record: dict[str, Any]) -> Path:
    """Write checkpoint ``ckpt-<step>.npz`` + its record, then point ``latest.json`` at it."""
    folder.mkdir(parents=True, exist_ok=True)
    step = int(gan.step.numpy())
    arrays = {f"{group}/{i}": np.asarray(v.numpy()) for group, variables in _variables(gan).items()
              for i, v in enumerate(variables)}
    name = f"ckpt-{step:08d}"
    files.save_npz(folder / f"{name}.npz", **arrays)
    files.write_json(folder / f"{name}.json", {**record, "step": step})
    files.write_json(folder / "latest.json", {"checkpoint": name, "step": step})
    for old in sorted(folder.glob("ckpt-*.npz"))[:-KEEP]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return folder / f"{name}.npz"


def clean(folder: Path) -> list[Path]:
    """Remove the temporary files (``.ckpt-*``, ``.latest.json.*``, ``.run.json.*``) that a process
    killed mid-write left in ``folder``; returns them. Only for the one trainer of the folder, before it
    writes: a temporary file is never renamed after its writer died."""
    stale = [path for path in folder.glob(".*") if path.is_file() and path.name.startswith(
        (".ckpt-", ".latest.json.", ".run.json."))] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def latest(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint and its record, or None when there is none."""
    pointer = folder / "latest.json"
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
        record = json.loads((folder / f"{name}.json").read_text())
    except (OSError, ValueError, KeyError) as error:
        raise ResganError(f"checkpoint record in {folder} is unreadable ({error}); "
                          f"move the folder aside to start afresh") from None
    path = folder / f"{name}.npz"
    if not path.exists():
        raise ResganError(f"{pointer} names {path.name}, which is missing; move {folder} aside to start afresh")
    return path, record


def resume(folder: Path, gan, clean_up: bool = True) -> tuple[int, dict[str, Any]]:
    """Restore ``gan`` from the latest checkpoint in ``folder``; returns its step and record (0 and {}
    when there is none). ``clean_up``: first remove what an interrupted write left (see :func:`clean`)."""
    found = latest(folder)
    if clean_up and clean(folder):
        print(f"removed the temporary files of an interrupted checkpoint write in {folder}", flush=True)
    if not found:
        return 0, {}
    path, record = found
    step = restore(path, gan)
    print(f"resuming from {path} at step {step}", flush=True)
    return step, record


def restore(path: Path, gan) -> int:
    """Load every variable from checkpoint ``path`` into ``gan``; returns the restored step."""
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise ResganError(f"checkpoint {path} cannot be read: {error}") from None
    for group, variables in _variables(gan).items():
        count = sum(1 for key in arrays if key.startswith(group + "/"))
        if count != len(variables):
            raise ResganError(f"checkpoint {path} does not match the model ({group}: {count} arrays for "
                              f"{len(variables)} variables); the model params changed?")
        for i, variable in enumerate(variables):
            value = arrays[f"{group}/{i}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise ResganError(f"checkpoint {path}: {group} variable {i} has shape {value.shape}, "
                                  f"the model wants {tuple(variable.shape)}")
            variable.assign(value)
    return int(gan.step.numpy())
