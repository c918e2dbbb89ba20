"""The train stage: train the ResNet-GAN, checkpoint and resume, track everything in MLflow.

Outputs (paths from dvc.yaml): ``<models>/generator.keras`` (the EMA generator, float32),
``<models>/mlflow_run.json``, ``metrics/train.json``, ``plots/train.csv``. Checkpoints live in
``<checkpoints>/<key>/``: the key hashes the data and every param that changes the maths, so a re-run
with the same params resumes (same MLflow run) and a run with other params starts afresh.

:func:`run` reads in sections: plan (:mod:`resgan.gan.plan`), build, resume (:mod:`resgan.gan.checkpoint`),
fit (:mod:`resgan.gan.loop`), export, record. TensorFlow starts once the tracking store has answered: a
store that is down fails in a second, with one line of output.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resgan import files, terminal, tracking
from resgan.config import Params
from resgan.data.pipeline import open_train_data
from resgan.data.prepared import data_name, load_summary
from resgan.gan import checkpoint, device, plan
from resgan.gan.clusters import self_condition
from resgan.gan.loop import (
    Callback,
    Checkpointer,
    DivergenceCheck,
    FidTracker,
    MetricsLogger,
    ProgressBar,
    SampleGrid,
    TimeBudget,
    fit,
)
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
GRID_SEED_OFFSET = 1  # fixed latents for the sample grid: seed train.seed + 1
FID_SEED_OFFSET = 2  # fixed latents for FID over training: seed train.seed + 2
METRIC_KEYS = ("steps", "wall_s", "img_per_s", "loss_d", "loss_g")  # metrics/train.json: numbers DVC compares


def run(
    params: Params,
    params_path: Path,
    data_dir: Path,
    models_dir: Path,
    checkpoint_dir: Path,
    metrics_path: Path,
    plots_path: Path,
    classifier_path: Path | None = None,
    fid_path: Path | None = None,
    more_callbacks: Callable[[Any], list[Callback]] | None = None,
) -> dict[str, Any]:
    """Train (or resume) to ``train.steps``; write the outputs; return the final figures ({} on a worker
    that is not the chief of a cluster). ``classifier_path``: the feature stage's model, for FID over
    training and self-conditioning; ``fid_path``: that curve as CSV; ``more_callbacks(gan)``: callbacks of
    the caller's, run after the stage's own (a benchmark's snapshots)."""
    params = params.view(PARAMS, "train")
    # ---- plan: every auto settled (conditional: true without labels fails before MLflow or a checkpoint)
    the_plan, train_data, summary, experiment_id = _plan(params, data_dir, classifier_path)
    tp, retries = the_plan.train, params.mlflow.tracking_retries
    # ---- build
    from resgan.gan.trainer import build_gan

    gan = build_gan(the_plan)
    chief = device.is_chief(gan.strategy)
    # ---- resume: the checkpoint's state, else run.json's run at step 0 (see checkpoint.RunRecord)
    start, found = checkpoint.resume(checkpoint_dir / the_plan.key, gan, clean_up=chief)
    record = checkpoint.RunRecord.load(checkpoint_dir / the_plan.key, start, found)
    if tp.ada_target and record.ada_p is not None:  # ADA goes on from the checkpoint's augmentation probability
        gan.ada_p.assign(float(record.ada_p))
    with tracking.StageRun(retries) as session:
        # ---- fit
        logger = (
            _open_run(session, the_plan, params_path, data_dir, record, experiment_id, summary, gan) if chief else None
        )
        metrics = MetricsLogger(tp.log_every, tp.batch_size, record.history, logger, retries)
        budget = TimeBudget(tp.max_minutes)
        state = lambda: record.state(session.run_id, metrics.history, fid, gan, the_plan.key)  # noqa: E731
        callbacks, fid = _callbacks(
            params, the_plan, gan, record, metrics, logger, state, data_dir, classifier_path, chief
        )
        if fid:
            session.log(
                lambda: tracking.set_runs_view(experiment_id, fid.key.removeprefix("fid_")), "save the runs view"
            )
        dataset = train_data.dataset(
            tp.batch_size,
            tp.seed,
            epoch_offset=start,
            shuffle_buffer=tp.shuffle_buffer,
            with_labels=bool(the_plan.shapes.num_classes),
        )
        callbacks += more_callbacks(gan) if more_callbacks else []
        wall_start = time.perf_counter()
        step = fit(
            gan, iter(gan.strategy.experimental_distribute_dataset(dataset)), start, tp.steps, [*callbacks, budget]
        )
        wall = time.perf_counter() - wall_start
        if not chief:
            return {}
        logger.close(retries)  # what waited for the store, in step order, before the model and final figures
        # ---- export: the lowest FID's generator when it beats the last step's by more than the noise (trusted
        # features, train.export: best), else the last step's (resgan.gan.export)
        decision = _export_decision(fid, tp.export, step)
        best = decision is not None and decision.which == "best"
        exported_step = decision.step if best else step
        model_uri = _export(
            session,
            gan,
            fid.best_model if best else None,
            models_dir / "generator.keras",
            experiment_id,
            record,
            start,
            step,
            exported_step,
            state,
        )
        # ---- record: final figures, curves, the run pointer, and MLflow's copy of them
        figures = {
            **metrics.figures(start, step, wall),
            "precision": tp.precision,
            "stopped_by_budget": budget.stop_training,
            **(fid.figures(start, wall) if fid else {}),
            **_decision_figures(fid, decision),
            "exported_step": exported_step,
        }
        pointer = {
            "run_id": session.run_id,
            "experiment_id": experiment_id,
            "tracking_uri": tracking.tracking_uri(),
            "model_uri": model_uri,
            "checkpoint": str(record.folder),
        }
        which = _record(
            session,
            figures,
            metrics,
            fid,
            decision,
            wall,
            metrics_path,
            plots_path,
            fid_path,
            models_dir / "mlflow_run.json",
            pointer,
        )
    run_id = pointer["run_id"]
    print(
        f"trained {step} steps ({step - start} this run) in {wall:.0f} s; generator ({which}) "
        f"-> {models_dir / 'generator.keras'}\nMLflow run {run_id}: {tracking.run_url(experiment_id, run_id)}\n"
        f"every run, with FID columns: {tracking.experiment_url(experiment_id)}",
        flush=True,
    )
    return figures


def _plan(params, data_dir: Path, classifier_path: Path | None):
    """The run's :class:`~resgan.gan.plan.TrainPlan` (printed), its training data (self-conditioning's clusters
    as labels), the data summary and the MLflow experiment's id (None on a worker)."""
    summary = load_summary(data_dir)
    train_data = open_train_data(data_dir, params.train.input)  # train.npz in memory, or the shards streamed
    data = plan.summarize(summary, train_data)
    first = plan.plan(params, data)  # what can be settled before MLflow, TensorFlow or a checkpoint is touched
    chief = device.chief_from_tf_config(params.train.distribute)  # only the chief of a cluster talks to MLflow
    experiment_id = tracking.setup(params.mlflow.experiment) if chief else None  # fails fast when a server is down
    terminal.start_tensorflow()  # TensorFlow only now (see the module docstring), its start-up lines hidden
    if first.wants_clusters:
        clusters, note = self_condition(train_data, first.model.self_condition, classifier_path, first.train.seed)
        data = plan.with_clusters(data, clusters, note)
        if clusters is not None:  # the clusters stand in for labels
            train_data = dataclasses.replace(train_data, labels=clusters.labels)
    device_kind = device.accelerator() if params.train.precision == "auto" else None  # asked only when needed
    the_plan = plan.plan(params, dataclasses.replace(data, accelerator=device_kind))
    print(the_plan.describe(), flush=True)
    return the_plan, train_data, summary, experiment_id


def _export_decision(fid: FidTracker | None, export: str, step: int):
    """The best-or-last decision (:func:`resgan.gan.export.choose_export`) on FID over training, or None
    without it. Only ``train.export: best`` with trusted features exports the best step (an untrusted
    extractor's FID may not pick the generator); otherwise the decision says why the last step is."""
    from resgan.gan.export import choose_export

    rows = [row for row in fid.history if row["step"] <= step] if fid else []
    if not rows or rows[-1]["step"] != step:
        return None
    decision = choose_export([(row["step"], row[fid.key]) for row in rows], fid.noise)
    if decision.which == "best" and (
        export != "best"
        or not fid.score.extractor.trusted
        or fid.best is None
        or int(fid.best["step"]) != decision.best_step
    ):
        why = (
            "train.export is last"
            if export != "best"
            else "the features failed their fitness check"
            if not fid.score.extractor.trusted
            else "the best step's generator was not kept"
        )
        decision = dataclasses.replace(decision, which="last", step=step, reason=f"{decision.reason}, but {why}")
    return decision


def _decision_figures(fid: FidTracker | None, decision) -> dict[str, Any]:
    """The lowest FID and its step, the last step's FID, the noise and the whole decision (``export``)."""
    if decision is None:
        return {}
    return {
        f"{fid.key}_best": decision.best_fid,
        "best_step": decision.best_step,
        f"{fid.key}_last": decision.last_fid,
        "fid_noise": round(decision.noise, 6),
        "export": decision.record(),
    }


def _open_run(
    session: tracking.StageRun,
    the_plan: plan.TrainPlan,
    params_path: Path,
    data_dir: Path,
    record: checkpoint.RunRecord,
    experiment_id: str,
    summary: dict[str, Any],
    gan,
) -> tracking.BufferedLogger:
    """Open (or adopt, or resume) the train run, a new one with the plan's params; returns the logger of its
    per-step metrics and grids, with which a store that is down never stops training (tracking.BufferedLogger)."""

    def log_setup() -> None:  # what a new run gets; idempotent (the session may adopt a killed call's run)
        # sample.* and evaluate.* belong to the evaluation runs under this one, which DVC re-runs alone.
        session.log_params(the_plan.params)
        data = tracking.dataset(data_name(summary), str(summary.get("data_hash", "")), data_dir.resolve())
        session.log_input(data, context="training")
        for path in (Path(params_path), tracking.project_root() / "dvc.lock"):
            if path.exists():
                session.log_artifact(path)

    session.open(
        record.run_file,
        experiment_id,
        record.run_id,
        os.environ.get("DVC_EXP_NAME") or None,
        tracking.run_tags(summary),
        log_setup,
    )
    session.set_tags(
        {
            "stage": "train",
            "precision": the_plan.train.precision,
            "checkpoint_key": the_plan.key,
            "replicas": str(gan.strategy.num_replicas_in_sync),
        }
    )
    return tracking.BufferedLogger(session.run_id)


def _callbacks(
    params,
    the_plan: plan.TrainPlan,
    gan,
    record: checkpoint.RunRecord,
    metrics: MetricsLogger,
    logger,
    state,
    data_dir: Path,
    classifier_path: Path | None,
    chief: bool,
):
    """The stage's callbacks in order (``state()``: what a checkpoint records beside the weights) and the FID
    tracker among them, or None (``train.eval_every`` 0, or no extractor: metrics.evaluation.training_fid)."""
    from resgan.gan.trainer import export_generator
    from resgan.metrics.evaluation import training_fid

    tp = the_plan.train
    callbacks = [
        DivergenceCheck(loss_scaled=tp.precision == "mixed_float16", folder=record.folder),
        metrics,
        ProgressBar(tp.log_every),
    ]
    if not chief:
        return callbacks, None
    score = training_fid(params.evaluate, data_dir, classifier_path) if tp.eval_every else None
    fid = score and FidTracker(
        gan,
        score,
        score.key,
        tp.eval_every,
        tp.eval_num,
        tp.seed + FID_SEED_OFFSET,
        record.folder,
        export_generator,
        logger,
        record.fid_history,
    )
    return callbacks + [
        SampleGrid(gan, logger, tp.sample_every, params.sample.grid, tp.seed + GRID_SEED_OFFSET),
        *([fid] if fid else []),
        Checkpointer(record.folder, gan, tp.checkpoint_every, state),
    ], fid


def _export(
    session: tracking.StageRun,
    gan,
    best_model: Path | None,
    path: Path,
    experiment_id: str,
    record: checkpoint.RunRecord,
    start: int,
    step: int,
    exported_step: int,
    state,
) -> str:
    """Write the exported generator (``best_model``, else the EMA generator now) to ``path``; log it once per
    step (a checkpoint names it) as a Keras-native model whose pyfunc answers seeds with images; its URI."""
    from resgan import serving
    from resgan.gan.trainer import export_generator

    exported = export_generator(gan, path, best_model)
    if record.model_uri and start == step:  # the checkpoint names the model logged at this step
        return record.model_uri
    model_uri = session.log_model_once(
        experiment_id,
        "generator",
        step,
        lambda run_id: serving.log_model(
            exported,
            name="generator",
            run_id=run_id,
            pip_requirements=serving.requirements(),
            tags={"step": str(step), "exported_step": str(exported_step)},
        ),
    )
    checkpoint.save(record.folder, gan, {**state(), "model_uri": model_uri})
    return model_uri


def _record(
    session: tracking.StageRun,
    figures: dict[str, Any],
    metrics: MetricsLogger,
    fid: FidTracker | None,
    decision,
    wall: float,
    metrics_path: Path,
    plots_path: Path,
    fid_path: Path | None,
    pointer_path: Path,
    pointer: dict[str, Any],
) -> str:
    """Write the metrics (the numbers DVC compares), the curves and the run pointer; log the figures as
    ``train.json`` and tags, not metrics (MLflow charts every metric); says which generator was exported."""
    fid_keys = [k for k in figures if k.startswith("fid_") and k.endswith(("_best", "_last"))] + [
        "fid_noise",
        "best_step",
        "exported_step",
    ]
    files.write_json(metrics_path, {k: figures[k] for k in (*METRIC_KEYS, *fid_keys) if k in figures}, sort_keys=False)
    files.write_bytes(plots_path, metrics.csv())
    if fid_path is not None:
        files.write_bytes(fid_path, fid.csv() if fid else b"step,fid\n")
    checkpoint.write_pointer(pointer_path, **pointer)
    session.log_dict(figures, "train.json")
    session.log_artifact(plots_path, "plots")
    step, exported = figures["steps"], figures["exported_step"]
    best = decision is not None and decision.which == "best"
    reason = f"{'best' if best else 'last'} step exported: {decision.reason}" if decision else ""
    session.set_tags(
        {
            "exported": "best" if best else "last",
            "exported_step": str(exported),
            "trained_steps": str(step),
            "train_wall_s": f"{wall:.0f}",
            "stopped_by_budget": str(figures["stopped_by_budget"]).lower(),
            **({"export_reason": reason} if reason else {}),
        },
        "tag export",
    )
    which = f"the best FID's, step {exported}" if best else f"step {step}'s"
    return f"{which}; {reason}" if reason else which
