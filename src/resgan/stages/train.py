"""The train stage: train the ResNet-GAN, checkpoint and resume, track everything in MLflow.

Outputs (paths from dvc.yaml): ``<models>/generator.keras`` (the EMA generator, float32),
``<models>/mlflow_run.json``, ``metrics/train.json``, ``plots/train.csv``. Checkpoints live in
``<checkpoints>/<key>/`` where the key hashes the data and every param that changes the maths, so a
re-run with the same params resumes (same MLflow run) and a run with other params starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from resgan import io, serving, tracking
from resgan.config import Params
from resgan.errors import ResganError

# Params that only change how often we look, not what is computed: they do not change the key.
_NOT_IN_KEY = {"checkpoint_every", "log_every", "sample_every", "max_minutes"}
GRID_SEED_OFFSET = 1  # fixed latents for the sample grid: seed train.seed + 1
GRID_SIZE = 64


class DivergenceError(ResganError):
    """Losses or weights became non-finite."""


def run_key(params: Params, data_hash: str) -> str:
    """A short hash of the data and of every model/train param that changes the result."""
    train = {k: v for k, v in params.train.model_dump().items() if k not in _NOT_IN_KEY}
    blob = json.dumps({"model": params.model.model_dump(), "train": train, "data": data_hash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _read_summary(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "summary.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResganError(f"{path} not found: run the prepare stage first") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ResganError(f"{path} is unreadable: {error}") from None


class _Progress:
    """A rich progress bar on a terminal; plain log lines every ``log_every`` steps otherwise (DVC, CI)."""

    def __init__(self, total: int, start: int, log_every: int):
        self.total, self.log_every = total, log_every
        self.bar = None
        if sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                TextColumn("{task.fields[info]}"))
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def update(self, step: int, figures: dict[str, float] | None) -> None:
        info = "" if not figures else "  ".join(
            f"{k}={v:.3g}" for k, v in figures.items() if k in ("loss_d", "loss_g", "img_per_s"))
        if self.bar is not None:
            self.bar.update(self.task, completed=step, **({"info": info} if info else {}))
        elif figures is not None:
            print(f"step {step}/{self.total}  {info}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def is_chief(strategy) -> bool:
    """Only the chief of a multi-worker cluster writes checkpoints and talks to MLflow: the task of
    type ``chief``, or worker 0 when the cluster has no chief (TensorFlow's convention)."""
    from resgan.gan.trainer import worker_index

    return worker_index(strategy) == 0


def chief_from_tf_config(distribute: str) -> bool:
    """The same answer as :func:`is_chief`, from ``TF_CONFIG`` alone (before TensorFlow is imported)."""
    if distribute != "multi_worker":
        return True
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task, cluster = config.get("task", {}), config.get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        return True  # make_strategy reports a bad TF_CONFIG
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in cluster


def _export_generator(gan, path: Path) -> Any:
    """Save the EMA generator as a float32 Keras model (portable whatever precision trained it)."""
    import keras

    from resgan.nn.networks import generator_from_params

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = generator_from_params(gan.model_params, gan.shapes.image_size, gan.shapes.channels,
                                      num_classes=gan.num_classes)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    model.set_weights([np.asarray(w, dtype=np.float32) for w in gan.ema_generator.get_weights()])
    with io.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return model


def _finite(figures: dict[str, float], loss_scaled: bool = False) -> str | None:
    """The non-finite figures, or None. Under dynamic loss scaling (mixed_float16) a non-finite gradient
    is expected: the optimizer skips that update and lowers the scale, so only the other figures count."""
    bad = [k for k, v in figures.items()
           if not math.isfinite(v) and not (loss_scaled and k.startswith("grad_norm"))]
    return ", ".join(f"{k}={figures[k]}" for k in bad) or None


def _weights_finite(gan) -> bool:
    for model in (gan.generator, gan.discriminator, gan.ema_generator):
        for w in model.weights:
            if not np.all(np.isfinite(np.asarray(w.numpy(), dtype=np.float32))):
                return False
    return True


def run(params: Params, params_path: Path, data_dir: Path, models_dir: Path, checkpoint_dir: Path,
        metrics_path: Path, plots_path: Path) -> dict[str, Any]:
    """Train (or resume) to ``train.steps``; write the outputs; return the final figures."""
    from resgan.data.pipeline import open_train_data

    summary = _read_summary(data_dir)
    tp = params.train
    train_data = open_train_data(data_dir, tp.input)  # train.npz in memory, or the shards streamed
    # A conditional model's classes; missing labels fail here, before MLflow or a checkpoint is touched.
    num_classes = train_data.num_classes(summary.get("class_names")) if params.model.conditional else 0
    key = run_key(params, str(summary.get("data_hash", "")))
    ckpt_dir = checkpoint_dir / key

    # Fails fast when a server is down. Only the chief of a cluster talks to MLflow.
    experiment_id = tracking.setup(params.mlflow.experiment) if chief_from_tf_config(tp.distribute) else None

    import keras
    import mlflow
    import tensorflow as tf

    from resgan.gan import checkpoint
    from resgan.gan.trainer import GAN, Shapes, generate, make_strategy, resolve_precision

    precision = resolve_precision(tp.precision)
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(tp.seed)
    strategy = make_strategy(tp.distribute)
    chief = is_chief(strategy)
    shapes = Shapes(image_size=train_data.image_size, channels=train_data.channels, num_classes=num_classes)
    gan = GAN(params.model, tp, shapes, strategy=strategy, global_batch_size=tp.batch_size)

    found = checkpoint.latest(ckpt_dir)
    if chief and checkpoint.clean(ckpt_dir):
        print(f"removed the temporary files of an interrupted checkpoint write in {ckpt_dir}", flush=True)
    record: dict[str, Any] = {}
    if found:
        path, record = found
        start = checkpoint.restore(path, gan)
        print(f"resuming from {path} at step {start}", flush=True)
    else:
        start = 0
    run_file = ckpt_dir / "run.json"
    run_id = record.get("run_id")  # else run.json's (killed before the first checkpoint: same run, step 0)
    history: list[dict[str, float]] = [row for row in record.get("history", []) if row["step"] <= start]

    retries = params.mlflow.tracking_retries

    def log(call, what: str) -> None:
        if chief:
            tracking.retry(call, what, retries=retries)

    active = logger = None
    if chief:
        def log_setup() -> None:  # what a new run gets; idempotent (open_run may adopt a killed call's run)
            log(lambda: mlflow.log_params(params.flat()), "log params")
            root = tracking.project_root()
            for name in (params_path, root / "dvc.lock"):
                if Path(name).exists():
                    log(lambda n=name: mlflow.log_artifact(str(n)), f"log {Path(name).name}")

        active = tracking.open_run(run_file, experiment_id, run_id, os.environ.get("DVC_EXP_NAME") or None,
                                   tracking.run_tags(summary), log_setup, retries)
        run_id = active.info.run_id
        log(lambda: mlflow.set_tags({"precision": precision, "checkpoint_key": key,
                                     "replicas": str(strategy.num_replicas_in_sync)}), "set tags")
        # Per-step metrics and grids: a store that is down never stops training (see tracking.BufferedLogger).
        logger = tracking.BufferedLogger(run_id)
        if history:  # steps the checkpoint holds but the run lacks (logged while the store was down, then killed)
            logger.log_missing([(row["step"], _metric_names({k: v for k, v in row.items() if k != "step"}))
                                for row in history], probe="loss/d", retries=retries)

    dataset = train_data.dataset(tp.batch_size, tp.seed, epoch_offset=start, shuffle_buffer=tp.shuffle_buffer,
                                 with_labels=bool(num_classes))
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    grid_latents = gan.fixed_latents(GRID_SIZE, tp.seed + GRID_SEED_OFFSET)
    grid_labels = gan.fixed_labels(GRID_SIZE)  # a conditional model's grid: classes 0, 1, ..., K-1 in turn

    def save_checkpoint() -> Path:
        if not _weights_finite(gan):
            raise DivergenceError(f"non-finite weights at step {int(gan.step.numpy())}")
        return checkpoint.save(ckpt_dir, gan, {"run_id": run_id, "history": history, "key": key})

    def fail(reason: str) -> None:
        last = checkpoint.latest(ckpt_dir)
        where = f"last good checkpoint: {last[0]} (step {last[1]['step']})" if last else "no checkpoint was written"
        if chief and active is not None:
            tracking.retry(lambda: mlflow.set_tag("failure_reason", reason), "tag failure", retries)
            mlflow.end_run(status="FAILED")
        raise DivergenceError(f"training diverged: {reason}; {where}. Lower the learning rates or "
                              f"change train.loss, then re-run")

    progress = _Progress(tp.steps, start, tp.log_every)
    wall_start = time.perf_counter()
    window_start, window_steps = time.perf_counter(), 0
    step = start
    stopped_by_budget = False
    try:
        while step < tp.steps:
            out = gan.train_step(iterator)
            step += 1
            window_steps += 1
            figures = {k: float(v) for k, v in out.items()}
            bad = _finite(figures, loss_scaled=precision == "mixed_float16")
            if bad:
                fail(f"non-finite {bad} at step {step}")
            is_last = step == tp.steps
            if step % tp.log_every == 0 or is_last:
                elapsed = time.perf_counter() - window_start
                figures["img_per_s"] = window_steps * tp.batch_size / max(elapsed, 1e-9)
                window_start, window_steps = time.perf_counter(), 0
                history.append({"step": step, **figures})
                if logger:
                    logger.log_metrics(_metric_names(figures), step)
                progress.update(step, figures)
            else:
                progress.update(step, None)
            if chief and (step % tp.sample_every == 0 or is_last):
                grid = io.image_grid(generate(gan.ema_generator, grid_latents, labels=grid_labels))
                logger.log_image(grid, "samples", step)
            if chief and (step % tp.checkpoint_every == 0 or is_last):
                try:
                    save_checkpoint()
                except DivergenceError as error:
                    fail(str(error))
            if tp.max_minutes and time.perf_counter() - wall_start > 60 * tp.max_minutes:
                print(f"stopping at step {step}: train.max_minutes={tp.max_minutes} reached", flush=True)
                stopped_by_budget = True
                if chief and step % tp.checkpoint_every:
                    save_checkpoint()
                break
    except KeyboardInterrupt:
        # Ctrl-C: the last checkpoint stands; the run is marked KILLED and resumes on the next call.
        if chief and active is not None:
            mlflow.end_run(status="KILLED")
        raise
    except Exception as error:
        # Any other error: mark the run FAILED (left active, MLflow's exit handler would end it FINISHED).
        # fail() has already ended the run for a divergence. Best effort: the store may be what failed.
        if chief and mlflow.active_run() is not None:
            for close in (lambda: mlflow.set_tag("failure_reason", f"{type(error).__name__}: {error}"[:5000]),
                          lambda: mlflow.end_run(status="FAILED")):
                try:
                    close()
                except Exception:  # never hide the original error behind a tracking one
                    pass
        raise
    finally:
        progress.close()
    wall = time.perf_counter() - wall_start

    if not chief:
        return {}
    logger.close(retries)  # what waited for the store, in step order, before the model and final figures
    # Outputs: the EMA generator, the run pointer, final figures, the loss curves.
    models_dir.mkdir(parents=True, exist_ok=True)
    generator_path = models_dir / "generator.keras"
    exported = _export_generator(gan, generator_path)
    model_uri = record.get("model_uri")
    if not model_uri or start < step:
        # A call killed after logging this model (from this checkpoint) but before recording it: reuse it.
        model_uri = tracking.retry(lambda: tracking.logged_model_at(run_id, experiment_id, "generator", step),
                                   "find logged model", retries)
        if model_uri is None:
            # Keras-native model whose pyfunc answers seeds with images (signature: resgan.serving.seed_signature).
            requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
            logged = tracking.retry(lambda: serving.log_model(
                exported, name="generator", pip_requirements=requirements, tags={"step": str(step)}),
                "log model", retries)
            model_uri = logged.model_uri
        checkpoint.save(ckpt_dir, gan, {"run_id": run_id, "history": history, "key": key, "model_uri": model_uri})
    last = history[-1] if history else {}
    figures = {
        "steps": step, "steps_this_run": step - start, "wall_s": round(wall, 2),
        "img_per_s": round((step - start) * tp.batch_size / wall, 2) if step > start else last.get("img_per_s", 0.0),
        "loss_d": last.get("loss_d"), "loss_g": last.get("loss_g"), "precision": precision,
        "stopped_by_budget": stopped_by_budget,
    }
    io.write_json(metrics_path, figures)
    _write_history(plots_path, history)
    io.write_json(models_dir / "mlflow_run.json", {
        "run_id": run_id, "experiment_id": experiment_id, "tracking_uri": tracking.tracking_uri(),
        "model_uri": model_uri, "checkpoint": str(ckpt_dir)})
    if step > start:
        log(lambda: mlflow.log_metrics({"train/wall_s": wall, "train/steps": step}, step=step), "log final")
    log(lambda: mlflow.log_artifact(str(plots_path), "plots"), "log plots")
    log(lambda: mlflow.MlflowClient().set_terminated(run_id, "FINISHED"), "end run")
    try:
        mlflow.end_run()  # the run is FINISHED already: this only pops it
    except Exception:
        pass
    print(f"trained {step} steps ({step - start} this run) in {wall:.0f} s; run {run_id}; "
          f"generator -> {generator_path}", flush=True)
    return figures


def _metric_names(figures: dict[str, float]) -> dict[str, float]:
    """Path-style MLflow names: loss_d -> loss/d, d_real -> d/real, img_per_s -> perf/img_per_s."""
    names = {"loss_d": "loss/d", "loss_g": "loss/g", "d_real": "d/real", "d_fake": "d/fake",
             "grad_norm_d": "grad_norm/d", "grad_norm_g": "grad_norm/g", "img_per_s": "perf/img_per_s"}
    return {names.get(k, k): v for k, v in figures.items()}


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    import pandas as pd

    frame = pd.DataFrame(history, columns=["step", "loss_d", "loss_g", "d_real", "d_fake",
                                           "grad_norm_d", "grad_norm_g", "img_per_s"])
    io.write_bytes(path, frame.to_csv(index=False).encode())
