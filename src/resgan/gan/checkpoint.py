"""Checkpoints that an interruption can never break, and the one record of a training run's state.

A checkpoint is one ``.npz`` holding every variable of the GAN (G, D, EMA, both optimizers, the
step counter and the latent RNG state) plus a JSON record (step, MLflow run id, loss history).
Both are written to temporary files and renamed; ``latest.json`` is renamed last, so it always
names a complete checkpoint. The two newest checkpoints are kept.

A run's state lives in a few files, and this module alone reads and writes them (:class:`RunRecord`):
the checkpoint record (the truth up to its step), ``run.json`` in the checkpoint folder (the MLflow run
a call started before its first checkpoint: the tracking session writes it, see :data:`RUN_FILE`),
``best.json`` (the best FID's generator beside it) and the models folder's ``mlflow_run.json`` (the
pointer the evaluate stage reads: :func:`write_pointer`, :func:`read_pointer`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resgan import files
from resgan.errors import ResganError

KEEP = 2
RUN_FILE = "run.json"  # in the checkpoint folder: the run (or launch token) of a call killed before a checkpoint
BEST_RECORD, BEST_MODEL = "best.json", "best_generator.keras"  # the best FID's step and generator
POINTER_KEYS = ("run_id", "experiment_id", "tracking_uri", "model_uri", "checkpoint")  # mlflow_run.json


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
    arrays = {
        f"{group}/{i}": np.asarray(v.numpy())
        for group, variables in _variables(gan).items()
        for i, v in enumerate(variables)
    }
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
    stale = (
        [
            path
            for path in folder.glob(".*")
            if path.is_file() and path.name.startswith((".ckpt-", ".latest.json.", ".run.json."))
        ]
        if folder.is_dir()
        else []
    )
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
        raise ResganError(
            f"checkpoint record in {folder} is unreadable ({error}); move the folder aside to start afresh"
        ) from None
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
            raise ResganError(
                f"checkpoint {path} does not match the model ({group}: {count} arrays for "
                f"{len(variables)} variables); the model params changed?"
            )
        for i, variable in enumerate(variables):
            value = arrays[f"{group}/{i}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise ResganError(
                    f"checkpoint {path}: {group} variable {i} has shape {value.shape}, "
                    f"the model wants {tuple(variable.shape)}"
                )
            variable.assign(value)
    return int(gan.step.numpy())


@dataclass
class RunRecord:
    """One training run's state, as resumed: the step, the MLflow run, the model logged at that step, the
    loss and FID histories, ADA's probability and the best FID's record.

    The precedence is written once, in :meth:`load`: the checkpoint record decides; without one (a call
    killed before its first checkpoint) ``run.json`` names the run, at step 0; ``best.json`` counts only
    when its step is not after the resumed step and its generator is there.
    """

    folder: Path
    step: int = 0
    run_id: str | None = None
    model_uri: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    fid_history: list[dict[str, float]] = field(default_factory=list)
    ada_p: float | None = None

    @classmethod
    def load(cls, folder: Path, step: int, record: dict[str, Any]) -> RunRecord:
        """The state of the run in ``folder`` resumed at ``step`` from checkpoint ``record`` ({} for none)."""
        run_id = record.get("run_id") or _read_json(folder / RUN_FILE).get("run_id")
        return cls(
            folder,
            step,
            run_id,
            record.get("model_uri") if record.get("step") == step else None,
            [row for row in record.get("history", []) if row["step"] <= step],
            [row for row in record.get("fid_history", []) if row["step"] <= step],
            record.get("ada_p"),
        )

    @classmethod
    def from_checkpoint(cls, folder: Path, gan, clean_up: bool = True) -> RunRecord:
        """Restore ``gan`` from the latest checkpoint in ``folder`` (see :func:`resume`), ADA's augmentation
        probability with it; the run's state at the restored step (step 0 without a checkpoint)."""
        step, found = resume(folder, gan, clean_up=clean_up)
        run = cls.load(folder, step, found)
        if gan.train_params.ada_target and run.ada_p is not None:  # ADA goes on from where it was
            gan.ada_p.assign(float(run.ada_p))
        return run

    @property
    def run_file(self) -> Path:
        return self.folder / RUN_FILE

    def best(self) -> dict[str, Any] | None:
        """``best.json``'s record where it still holds at :attr:`step`, else None."""
        best = _read_json(self.folder / BEST_RECORD) or None
        if best is not None and (best.get("step", 0) > self.step or not (self.folder / BEST_MODEL).exists()):
            return None  # from steps that are trained again, or its generator is gone
        return best

    def write_best(self, best: dict[str, Any]) -> None:
        files.write_json(self.folder / BEST_RECORD, best)

    def state(self, run_id: str | None, history: list, fid, gan, key: str, **more: Any) -> dict[str, Any]:
        """What a checkpoint of this run records beside the weights: the run, the loss history, the key, the
        FID history of ``fid`` (a FidTracker or None), ADA's probability, and ``more`` (the logged model)."""
        return {
            "run_id": run_id,
            "history": history,
            "key": key,
            "fid_history": fid.history if fid else [],
            "ada_p": float(gan.ada_p.numpy()),
            **more,
        }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def write_pointer(path: Path, **pointer: Any) -> None:
    """``models/mlflow_run.json``: the run, its experiment and store, the logged model and the checkpoint
    folder (:data:`POINTER_KEYS`), the train stage's output that the evaluate stage reads."""
    files.write_json(path, {key: pointer[key] for key in POINTER_KEYS})


def read_pointer(path: str | Path) -> dict[str, Any]:
    """``models/mlflow_run.json`` as :func:`write_pointer` wrote it; a clear error when it is missing."""
    path = Path(path)
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResganError(f"{path} not found: run the train stage first") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ResganError(f"{path} is not a readable run record: {error}") from None
    if not isinstance(info, dict) or "run_id" not in info:
        raise ResganError(f"{path} holds no run_id")
    return info
