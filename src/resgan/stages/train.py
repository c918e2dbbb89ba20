"""The train stage: train the ResNet-GAN, checkpoint and resume, track everything in MLflow.

Outputs (paths from dvc.yaml, :class:`TrainPaths`): ``<models>/generator.keras`` (the EMA generator,
float32), ``<models>/mlflow_run.json``, ``metrics/train.json``, ``plots/train.csv``. Checkpoints live in
``<checkpoints>/<key>/``: the key hashes the data and every param that changes the maths, so a re-run
with the same params resumes (same MLflow run) and a run with other params starts afresh.

:func:`run` reads in sections: plan (:mod:`resgan.gan.plan`), build, resume (:mod:`resgan.gan.checkpoint`),
fit (:mod:`resgan.gan.loop`), export (:mod:`resgan.gan.export`), record. TensorFlow starts once the
tracking store has answered: a store that is down fails in a second, with one line of output.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resgan import files, terminal, tracking
from resgan.config import Params
from resgan.data.pipeline import open_train_data
from resgan.data.prepared import data_name, load_summary
from resgan.gan import checkpoint, device, export, plan
from resgan.gan.clusters import self_condition
from resgan.gan.loop import Callback, StageCallbacks, fit, stage_callbacks
from resgan.gan.plan import run_key  # noqa: F401 (a run's checkpoint folder, for tests and tools)

# The params this stage reads: dvc.yaml gives it the same (tests/test_contract.py holds the two together).
PARAMS = (
    "prepare",
    "model",
    "train",
    "sample.grid",
    "evaluate.features",
    "evaluate.inception_weights",
    "evaluate.max_real",
    "evaluate.seed",
    "mlflow",
)
METRIC_KEYS = ("steps", "wall_s", "img_per_s", "loss_d", "loss_g")  # metrics/train.json: numbers DVC compares


@dataclass(frozen=True)
class TrainPaths:
    """Where the stage reads and writes: what dvc.yaml gives it on the command line."""

    params: Path  # params.yaml, logged with a new run
    data: Path  # the prepared data folder
    models: Path  # generator.keras and mlflow_run.json
    checkpoints: Path  # <checkpoints>/<key>/, kept between runs for resume
    metrics: Path  # metrics/train.json
    plots: Path  # plots/train.csv, the loss curves
    classifier: Path | None = None  # the feature stage's model: FID over training, self-conditioning
    fid: Path | None = None  # FID over training as CSV


def run(params: Params, paths: TrainPaths, more_callbacks: Callable[[Any], list[Callback]] | None = None) -> dict:
    """Train (or resume) to ``train.steps``; write the outputs; return the final figures ({} on a worker
    that is not the chief of a cluster). ``more_callbacks(gan)``: the caller's callbacks, run after the
    stage's own (a benchmark's snapshots)."""
    params = params.view(PARAMS, "train")
    retries = params.mlflow.tracking_retries
    # ---- plan: every auto settled (conditional: true without labels fails before MLflow or a checkpoint)
    the_plan, train_data, summary, experiment_id = _plan(params, paths)
    # ---- build
    from resgan.gan.trainer import build_gan
    from resgan.metrics.evaluation import training_fid

    gan = build_gan(the_plan)
    chief = device.is_chief(gan.strategy)
    # ---- resume: the checkpoint's state, else run.json's run at step 0 (see checkpoint.RunRecord)
    record = checkpoint.RunRecord.from_checkpoint(paths.checkpoints / the_plan.key, gan, clean_up=chief)
    with tracking.StageRun(retries) as session:
        # ---- fit: the stage's callbacks (resgan.gan.loop.stage_callbacks), the caller's, the time budget last
        logger = _open_run(session, the_plan, paths, record, experiment_id, summary, gan) if chief else None
        fid_on = chief and the_plan.train.eval_every  # FID over training's score: None, said in a line, when off
        score = training_fid(params.evaluate, paths.data, paths.classifier) if fid_on else None
        stage = stage_callbacks(the_plan, gan, record, logger, score, params.sample.grid, retries)
        if stage.fid:
            features = stage.fid.key.removeprefix("fid_")
            session.log(lambda: tracking.set_runs_view(experiment_id, features), "save the runs view")
        more = more_callbacks(gan) if more_callbacks else []
        step, wall = _fit(gan, train_data, the_plan, record.step, [*stage.all, *more, stage.budget])
        if not chief:
            return {}
        logger.close(retries)  # what waited for the store, in step order, before the model and final figures
        # ---- export: the lowest FID's generator when it beats the last step's by more than the noise
        decision = export.decide(stage.fid, the_plan.train.export, step)
        model_uri = _export(session, gan, stage, decision, paths.models, experiment_id, record, step)
        # ---- record: final figures, curves, the run pointer, and MLflow's copy of them
        figures = stage.figures(record.step, step, wall, decision)
        pointer = (session.run_id, experiment_id, tracking.tracking_uri(), model_uri, str(record.folder))
        _record(session, figures, stage, decision, wall, paths, dict(zip(checkpoint.POINTER_KEYS, pointer)))
    print(
        f"trained {step} steps ({step - record.step} this run) in {wall:.0f} s; generator "
        f"({export.describe(decision, step)}) -> {paths.models / 'generator.keras'}\n"
        f"MLflow run {session.run_id}: {tracking.run_url(experiment_id, session.run_id)}\n"
        f"every run, with FID columns: {tracking.experiment_url(experiment_id)}",
        flush=True,
    )
    return figures


def _plan(params, paths: TrainPaths):
    """The run's :class:`~resgan.gan.plan.TrainPlan` (printed), its training data (self-conditioning's clusters
    as labels), the data summary and the MLflow experiment's id (None on a worker)."""
    summary = load_summary(paths.data)
    train_data = open_train_data(paths.data, params.train.input)  # train.npz in memory, or the shards streamed
    data = plan.summarize(summary, train_data)
    first = plan.plan(params, data)  # what can be settled before MLflow, TensorFlow or a checkpoint is touched
    chief = device.chief_from_tf_config(params.train.distribute)  # only the chief of a cluster talks to MLflow
    experiment_id = tracking.setup(params.mlflow.experiment) if chief else None  # fails fast when a server is down
    terminal.start_tensorflow()  # TensorFlow only now (see the module docstring), its start-up lines hidden
    if first.wants_clusters:
        clusters, note = self_condition(train_data, first.model.self_condition, paths.classifier, first.train.seed)
        data = plan.with_clusters(data, clusters, note)
        if clusters is not None:  # the clusters stand in for labels
            train_data = dataclasses.replace(train_data, labels=clusters.labels)
    device_kind = device.accelerator() if params.train.precision == "auto" else None  # asked only when needed
    the_plan = plan.plan(params, dataclasses.replace(data, accelerator=device_kind))
    print(the_plan.describe(), flush=True)
    return the_plan, train_data, summary, experiment_id


def _open_run(session, the_plan, paths: TrainPaths, record, experiment_id: str, summary: dict, gan):
    """Open (or adopt, or resume) the train run, a new one with the plan's params; returns the logger of its
    per-step metrics and grids, with which a store that is down never stops training (tracking.BufferedLogger)."""

    def log_setup() -> None:  # what a new run gets; idempotent (the session may adopt a killed call's run)
        # sample.* and evaluate.* belong to the evaluation runs under this one, which DVC re-runs alone.
        session.log_params(the_plan.params)
        data = tracking.dataset(data_name(summary), str(summary.get("data_hash", "")), paths.data.resolve())
        session.log_input(data, context="training")
        for path in (Path(paths.params), tracking.project_root() / "dvc.lock"):
            if path.exists():
                session.log_artifact(path)

    run_name = os.environ.get("DVC_EXP_NAME") or None
    session.open(record.run_file, experiment_id, record.run_id, run_name, tracking.run_tags(summary), log_setup)
    replicas = str(gan.strategy.num_replicas_in_sync)
    tags = {"precision": the_plan.train.precision, "checkpoint_key": the_plan.key, "replicas": replicas}
    session.set_tags({"stage": "train", **tags})
    return tracking.BufferedLogger(session.run_id)


def _fit(gan, train_data, the_plan, start: int, callbacks: list[Callback]) -> tuple[int, float]:
    """Train from step ``start`` to ``train.steps`` on ``train_data``; the last step and the seconds it took."""
    tp = the_plan.train
    with_labels = bool(the_plan.shapes.num_classes)
    dataset = train_data.dataset(
        tp.batch_size, tp.seed, epoch_offset=start, shuffle_buffer=tp.shuffle_buffer, with_labels=with_labels
    )
    wall_start = time.perf_counter()
    step = fit(gan, iter(gan.strategy.experimental_distribute_dataset(dataset)), start, tp.steps, callbacks)
    return step, time.perf_counter() - wall_start


def _export(session, gan, stage: StageCallbacks, decision, models: Path, experiment_id: str, record, step: int) -> str:
    """Write the exported generator (the best FID's, else the EMA generator now) to ``generator.keras``; log it
    once per step (a checkpoint names it) as a Keras-native model whose pyfunc answers seeds with images; its URI."""
    from resgan import serving
    from resgan.gan.trainer import export_generator

    which, exported_step, _ = export.exported(decision, step)
    exported = export_generator(gan, models / "generator.keras", stage.fid.best_model if which == "best" else None)
    if record.model_uri and record.step == step:  # the checkpoint names the model logged at this step
        return record.model_uri
    tags = {"step": str(step), "exported_step": str(exported_step)}
    log = lambda run_id: serving.log_model(  # noqa: E731
        exported, name="generator", run_id=run_id, pip_requirements=serving.requirements(), tags=tags
    )
    model_uri = session.log_model_once(experiment_id, "generator", step, log)
    checkpoint.save(record.folder, gan, {**stage.state(), "model_uri": model_uri})
    return model_uri


def _record(session, figures: dict, stage: StageCallbacks, decision, wall: float, paths: TrainPaths, pointer) -> None:
    """Write the metrics (the numbers DVC compares), the curves and the run pointer; log the figures as
    ``train.json`` and tags, not metrics (MLflow charts every metric)."""
    fid_keys = [k for k in figures if k.startswith("fid_") and k.endswith(("_best", "_last"))]
    kept = (*METRIC_KEYS, *fid_keys, "fid_noise", "best_step", "exported_step")
    files.write_json(paths.metrics, {k: figures[k] for k in kept if k in figures}, sort_keys=False)
    files.write_bytes(paths.plots, stage.metrics.csv())
    if paths.fid is not None:
        files.write_bytes(paths.fid, stage.fid.csv() if stage.fid else b"step,fid\n")
    checkpoint.write_pointer(paths.models / "mlflow_run.json", **pointer)
    session.log_dict(figures, "train.json")
    session.log_artifact(paths.plots, "plots")
    which, exported_step, reason = export.exported(decision, figures["steps"])
    tags = {"exported": which, "exported_step": str(exported_step), "trained_steps": str(figures["steps"])}
    tags |= {"train_wall_s": f"{wall:.0f}", "stopped_by_budget": str(figures["stopped_by_budget"]).lower()}
    session.set_tags({**tags, **({"export_reason": reason} if reason else {})}, "tag export")
