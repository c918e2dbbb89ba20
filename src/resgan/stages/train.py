"""The train stage: train the ResNet-GAN, checkpoint and resume, track everything in MLflow.

Outputs (paths from dvc.yaml): ``<models>/generator.keras`` (the EMA generator, float32),
``<models>/mlflow_run.json``, ``metrics/train.json``, ``plots/train.csv``. Checkpoints live in
``<checkpoints>/<key>/`` where the key hashes the data and every param that changes the maths, so a
re-run with the same params resumes (same MLflow run) and a run with other params starts afresh.
The loop and its side effects (metrics, grids, checkpoints, divergence, budget) are in
:mod:`resgan.gan.loop`; this module wires params to them.

TensorFlow is imported inside :func:`run`, once the tracking store has answered: a store that is down
fails in a second, with one line of output (TensorFlow's import prints its own).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from resgan import files, terminal, tracking
from resgan.config import SMALL_DATA, Params, resolve_diffaugment
from resgan.data.pipeline import open_train_data
from resgan.data.prepared import load_summary
from resgan.errors import ResganError
from resgan.gan import checkpoint, device
from resgan.gan.loop import (Callback, Checkpointer, DivergenceCheck, FidTracker, MetricsLogger, ProgressBar,
                             SampleGrid, TimeBudget, fit)

# Params that only change how often we look, not what is computed: they do not change the key.
_NOT_IN_KEY = {"checkpoint_every", "log_every", "sample_every", "max_minutes", "eval_every", "eval_num", "export"}
GRID_SEED_OFFSET = 1  # fixed latents for the sample grid: seed train.seed + 1
FID_SEED_OFFSET = 2  # fixed latents for FID over training: seed train.seed + 2
METRIC_KEYS = ("steps", "wall_s", "img_per_s", "loss_d", "loss_g")  # metrics/train.json: numbers DVC compares
# The params a train run records: what the stage reads (dvc.yaml lists the same).
TRAIN_SECTIONS = ("prepare", "model", "train", "mlflow")
TRAIN_ALSO = ("sample.grid", "evaluate.features", "evaluate.inception_weights", "evaluate.max_real", "evaluate.seed")
CSV_COLUMNS = ["step", "loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "img_per_s"]
CSV_OPTIONAL = ["ada_p", "lr_g"]  # in plots/train.csv when the run has them (ADA, a learning-rate decay)


def _csv_columns(history: list[dict[str, float]]) -> list[str]:
    return CSV_COLUMNS + [c for c in CSV_OPTIONAL if any(c in row for row in history)]


def run_key(params: Params, data_hash: str) -> str:
    """A short hash of the data and of every model/train param that changes the result."""
    train = {k: v for k, v in params.train.model_dump().items() if k not in _NOT_IN_KEY}
    blob = json.dumps({"model": params.model.model_dump(), "train": train, "data": data_hash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run(params: Params, params_path: Path, data_dir: Path, models_dir: Path, checkpoint_dir: Path,
        metrics_path: Path, plots_path: Path, classifier_path: Path | None = None,
        fid_path: Path | None = None, more_callbacks: Callable[[Any], list[Callback]] | None = None) -> dict[str, Any]:
    """Train (or resume) to ``train.steps``; write the outputs; return the final figures ({} on a worker
    that is not the chief of a cluster). ``classifier_path``: the domain classifier, for FID over
    training with ``evaluate.features`` classifier or auto; ``fid_path``: that curve as CSV;
    ``more_callbacks(gan)``: callbacks of the caller's, run after the stage's own (a benchmark's
    snapshots)."""
    summary = load_summary(data_dir)
    tp = params.train
    train_data = open_train_data(data_dir, tp.input)  # train.npz in memory, or the shards streamed
    # A conditional model's classes (model.conditional: auto decides from the labels); missing labels
    # for conditional: true fail here, before MLflow or a checkpoint is touched.
    num_classes = train_data.classes_for(params.model.conditional, summary.get("class_names"))
    if tp.diffaugment == "auto":  # DiffAugment for small data sets, from the training split's size
        n_train = int((summary.get("counts") or {}).get("train", 0))
        policy = resolve_diffaugment("auto", n_train, adaptive=bool(tp.ada_target))
        params = params.model_copy(update={"train": tp.model_copy(update={"diffaugment": policy})})
        tp = params.train
        why = "train.ada_target is set" if tp.ada_target else (
            f"{n_train} training images, {'below' if policy else 'not below'} {SMALL_DATA}")
        print(f"DiffAugment: {policy or 'off'} (train.diffaugment auto: {why})", flush=True)
    # Fails fast when a server is down. Only the chief of a cluster talks to MLflow.
    experiment_id = tracking.setup(params.mlflow.experiment) if device.chief_from_tf_config(tp.distribute) else None
    terminal.start_tensorflow()  # TensorFlow only now (see the module docstring), its start-up lines hidden
    import keras
    import tensorflow as tf

    resolved: dict[str, Any] = {}
    clusters = None
    if not num_classes and params.model.conditional == "auto" and params.model.self_condition:
        clusters = self_condition(params, train_data, classifier_path)
        resolved["self_condition"] = clusters.k if clusters else 0  # the clusters used: MLflow shows it
    if clusters is not None:  # the clusters stand in for labels
        train_data, num_classes = dataclasses.replace(train_data, labels=clusters.labels), clusters.k
    params = params.model_copy(update={"model": params.model.model_copy(
        update={"conditional": num_classes > 0, **resolved})})
    cluster_hash = hashlib.sha256(clusters.labels.tobytes()).hexdigest()[:12] if clusters else ""
    key = run_key(params, str(summary.get("data_hash", "")) + cluster_hash)
    ckpt_dir = checkpoint_dir / key

    from resgan import serving
    from resgan.gan.trainer import GAN, Shapes, export_generator

    precision = device.resolve_precision(tp.precision)
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(tp.seed)
    strategy = device.make_strategy(tp.distribute)
    chief = device.is_chief(strategy)
    shapes = Shapes(image_size=train_data.image_size, channels=train_data.channels, num_classes=num_classes,
                    cluster_prior=clusters.prior if clusters else ())
    gan = GAN(params.model, tp, shapes, strategy=strategy, global_batch_size=tp.batch_size)
    start, record = checkpoint.resume(ckpt_dir, gan, clean_up=chief)
    if tp.ada_target and "ada_p" in record:  # ADA goes on from the checkpoint's augmentation probability
        gan.ada_p.assign(float(record["ada_p"]))
    retries = params.mlflow.tracking_retries

    with tracking.StageRun(retries) as session:
        tags = {"stage": "train", "precision": precision, "checkpoint_key": key,
                "replicas": str(strategy.num_replicas_in_sync)}
        # The checkpoint's run, else run.json's (killed before the first checkpoint: same run, step 0).
        logger = _open_run(session, params, params_path, data_dir, record.get("run_id"), experiment_id, summary,
                           tags, run_file=ckpt_dir / "run.json") if chief else None
        history = [row for row in record.get("history", []) if row["step"] <= start]
        metrics = MetricsLogger(tp.log_every, tp.batch_size, history, logger, retries)
        budget = TimeBudget(tp.max_minutes)
        callbacks = [DivergenceCheck(loss_scaled=precision == "mixed_float16", folder=ckpt_dir), metrics,
                     ProgressBar(tp.log_every)]
        fid = _fid_tracker(params, data_dir, classifier_path, gan, ckpt_dir, logger, record) if chief else None
        if fid:
            session.log(lambda: tracking.set_runs_view(experiment_id, fid.key.removeprefix("fid_")), "save the runs view")

        def state() -> dict[str, Any]:  # what a checkpoint records beside the weights
            return {"run_id": session.run_id, "history": metrics.history, "key": key,
                    "fid_history": fid.history if fid else [], "ada_p": float(gan.ada_p.numpy())}

        if chief:
            callbacks += [SampleGrid(gan, logger, tp.sample_every, params.sample.grid, tp.seed + GRID_SEED_OFFSET),
                          *([fid] if fid else []), Checkpointer(ckpt_dir, gan, tp.checkpoint_every, state)]
        dataset = train_data.dataset(tp.batch_size, tp.seed, epoch_offset=start, shuffle_buffer=tp.shuffle_buffer,
                                     with_labels=bool(num_classes))
        callbacks += more_callbacks(gan) if more_callbacks else []
        wall_start = time.perf_counter()
        step = fit(gan, iter(strategy.experimental_distribute_dataset(dataset)), start, tp.steps, [*callbacks, budget])
        wall = time.perf_counter() - wall_start
        if not chief:
            return {}
        logger.close(retries)  # what waited for the store, in step order, before the model and final figures

        # Outputs: the EMA generator, the run pointer, final figures, the loss curves.
        models_dir.mkdir(parents=True, exist_ok=True)
        # An untrusted extractor's FID (it failed its fitness check) may not pick the exported generator.
        best = fid.best if fid and tp.export == "best" and fid.score.extractor.trusted else None
        if best:  # the best-FID step's EMA generator, exported when it was measured
            files.copy_file(fid.best_model, models_dir / "generator.keras")
            exported = keras.saving.load_model(models_dir / "generator.keras", compile=False, safe_mode=True)
        else:
            exported = export_generator(gan, models_dir / "generator.keras")
        exported_step = int(best["step"]) if best else step
        model_uri = record.get("model_uri")
        if not model_uri or start < step:  # else the checkpoint names the model logged at this step
            # Keras-native, its pyfunc answers seeds with images (resgan.serving); needs what trained it.
            requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
            model_uri = session.log_model_once(experiment_id, "generator", step, lambda run_id: serving.log_model(
                exported, name="generator", run_id=run_id, pip_requirements=requirements,
                tags={"step": str(step), "exported_step": str(exported_step)}))
            checkpoint.save(ckpt_dir, gan, {**state(), "model_uri": model_uri})
        figures = _figures(metrics.history, start, step, wall, tp.batch_size, precision, budget.stop_training)
        if fid and fid.best:  # the lowest FID measured; the exported step is the latest within noise of it
            figures.update({f"{fid.key}_best": fid.best.get("lowest", fid.best[fid.key]),
                            "best_step": int(fid.best.get("lowest_step", fid.best["step"])),
                            "fid_noise": fid.best.get("noise", 0.0)})
        if fid:
            figures["fid_seconds"] = round(fid.seconds, 2)  # its share of wall_s: the cost of FID over training
            print(f"FID over training: {sum(1 for row in fid.history if row['step'] > start)} measurements, "
                  f"{fid.seconds:.1f} s ({100 * fid.seconds / max(wall, 1e-9):.1f}% of this run's training time)",
                  flush=True)
        figures["exported_step"] = exported_step
        files.write_json(metrics_path, {k: figures[k] for k in (*METRIC_KEYS, *_fid_keys(figures)) if k in figures},
                         sort_keys=False)
        files.write_bytes(plots_path, pd.DataFrame(metrics.history, columns=_csv_columns(metrics.history)).to_csv(index=False).encode())
        if fid_path is not None:
            rows = [{"step": row["step"], "fid": row[fid.key]} for row in fid.history] if fid else []
            files.write_bytes(fid_path, pd.DataFrame(rows, columns=["step", "fid"]).to_csv(index=False).encode())
        files.write_json(models_dir / "mlflow_run.json", {
            "run_id": session.run_id, "experiment_id": experiment_id, "tracking_uri": tracking.tracking_uri(),
            "model_uri": model_uri, "checkpoint": str(ckpt_dir)})
        # One-value figures (steps, timings) are a JSON artifact and tags, not metrics: the run page draws
        # every metric as a chart, and these would be single bars above the loss curves.
        session.log_dict(figures, "train.json")
        session.log_artifact(plots_path, "plots")
        session.set_tags({"exported": "best" if best else "last", "exported_step": str(exported_step),
                          "trained_steps": str(step), "train_wall_s": f"{wall:.0f}",
                          "stopped_by_budget": str(budget.stop_training).lower()}, "tag export")
        run_id = session.run_id
    which = f"step {step}'s"
    if best:
        lowest = figures["best_step"]
        which = (f"the best FID's, step {exported_step}" if exported_step == lowest else
                 f"step {exported_step}'s, the latest within noise of the lowest FID (step {lowest})")
    print(f"trained {step} steps ({step - start} this run) in {wall:.0f} s; generator ({which}) -> "
          f"{models_dir / 'generator.keras'}\nMLflow run {run_id}: {tracking.run_url(experiment_id, run_id)}\n"
          f"every run, with FID columns: {tracking.experiment_url(experiment_id)}", flush=True)
    return figures


def _fid_keys(figures: dict[str, Any]) -> list[str]:
    return [k for k in figures if k.startswith("fid_") and k.endswith("_best")] + ["best_step", "exported_step"]


def _fid_tracker(params: Params, data_dir: Path, classifier_path: Path | None, gan, folder: Path, logger,
                 record: dict[str, Any]) -> FidTracker | None:
    """FID over training with ``evaluate.features`` (see :class:`resgan.gan.loop.FidTracker`), or None when
    ``train.eval_every`` is 0 or no feature extractor can be had (said in one line: training goes on)."""
    tp, ep = params.train, params.evaluate
    if not tp.eval_every:
        return None
    from resgan.data.prepared import load_split
    from resgan.gan.trainer import export_generator
    from resgan.metrics.evaluation import FidScore, reference_set
    from resgan.metrics.features import resolve_extractor

    if classifier_path is None and ep.features != "inception":
        print("FID over training is off: no domain classifier given (--classifier)", flush=True)
        return None
    try:
        extractor = resolve_extractor(ep.features, classifier_path or "", ep.inception_weights)
        reference, _ = reference_set(*load_split(data_dir, "train"), ep)
        score = FidScore(extractor, reference, ep.batch_size)
    except ResganError as error:
        print(f"FID over training is off: {error}", flush=True)
        return None
    if not extractor.trusted:
        print(f"FID over training is logged as {score.key}: the features failed their fitness check "
              f"({extractor.fitness}), so the last step's generator is exported, not the best FID's", flush=True)
    return FidTracker(gan, score, score.key, tp.eval_every, tp.eval_num, tp.seed + FID_SEED_OFFSET, folder,
                      export_generator, logger, record.get("fid_history", []), params.sample.batch_size)


def self_condition(params: Params, train_data, classifier_path: Path | None):
    """The k-means clusters (:mod:`resgan.gan.clusters`) of the training images' features from the
    feature stage's model, for a self-conditioned GAN; None, said in one line, where they cannot be
    had or trusted (training goes on unconditional)."""
    from resgan.gan.clusters import cluster_count, cluster_features
    from resgan.metrics.features import LearnedFeatures

    def off(why: str) -> None:
        print(f"self-conditioning is off ({why}): the model is unconditional", flush=True)

    k = cluster_count(params.model.self_condition, train_data.count)
    if not k:
        return off(f"{train_data.count} training images are too few for 2 clusters")
    if train_data.mode != "memory":
        return off("the training images are streamed from shards; train.input: memory clusters them")
    if classifier_path is None:
        return off("no feature extractor given (--classifier)")
    try:
        extractor = LearnedFeatures(classifier_path)
    except ResganError as error:
        return off(str(error))
    if not extractor.trusted:
        return off(f"the features failed their fitness check: {extractor.fitness}")
    started = time.perf_counter()
    try:
        features, _ = extractor(train_data.images)
    except ResganError as error:  # e.g. an extractor made for images of another shape
        return off(str(error))
    clusters = cluster_features(features, k, params.train.seed)
    sizes = np.bincount(clusters.labels, minlength=k)
    print(f"self-conditioning: {k} k-means clusters of the {extractor.kind} features stand in for labels "
          f"({sizes.max()} to {sizes.min()} images each, {time.perf_counter() - started:.0f} s)", flush=True)
    return clusters


def _open_run(session: tracking.StageRun, params: Params, params_path: Path, data_dir: Path, run_id: str | None,
              experiment_id: str, summary: dict[str, Any], tags: dict[str, str],
              run_file: Path) -> tracking.BufferedLogger:
    """Open (or adopt, or resume) the train run, a new one tagged from the data ``summary``, and set
    ``tags``; returns the logger of its per-step metrics and grids, with which a store that is down never
    stops training (see tracking.BufferedLogger)."""
    def log_setup() -> None:  # what a new run gets; idempotent (the session may adopt a killed call's run)
        # The params this stage reads (dvc.yaml lists the same); sample.* and evaluate.* belong to the
        # evaluation runs under this one, which DVC re-runs alone when only they change.
        session.log_params({k: v for k, v in params.flat().items()
                            if k.split(".")[0] in TRAIN_SECTIONS or k in TRAIN_ALSO})
        data = tracking.dataset(tracking.data_name(params.prepare), str(summary.get("data_hash", "")),
                                data_dir.resolve())
        session.log_input(data, context="training")
        for path in (Path(params_path), tracking.project_root() / "dvc.lock"):
            if path.exists():
                session.log_artifact(path)

    session.open(run_file, experiment_id, run_id, os.environ.get("DVC_EXP_NAME") or None,
                 tracking.run_tags(summary), log_setup)
    session.set_tags(tags)
    return tracking.BufferedLogger(session.run_id)


def _figures(history: list[dict[str, float]], start: int, step: int, wall: float, batch_size: int,
             precision: str, stopped_by_budget: bool) -> dict[str, Any]:
    """The train stage's figures: steps, wall time (s), img/s of this call, the last logged losses, and
    (not in ``metrics/train.json``, which keeps :data:`METRIC_KEYS`) the steps of this call, the precision
    and whether ``train.max_minutes`` stopped it."""
    last = history[-1] if history else {}
    return {
        "steps": step, "steps_this_run": step - start, "wall_s": round(wall, 2),
        "img_per_s": round((step - start) * batch_size / wall, 2) if step > start else last.get("img_per_s", 0.0),
        "loss_d": last.get("loss_d"), "loss_g": last.get("loss_g"), "precision": precision,
        "stopped_by_budget": stopped_by_budget,
    }
