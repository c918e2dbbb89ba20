"""The training loop and its callbacks.

:func:`fit` runs ``gan.train_step`` from step ``start`` to ``steps`` and hands each step's figures
(``loss_d``, ``loss_g``, ``d_real``, ``d_fake``, ``grad_norm_d``, ``grad_norm_g``) to its callbacks, as
Keras does: ``on_train_begin(step, steps)``, then ``on_step_end(step, figures)`` after every step in
list order (a callback may add figures for those after it: :class:`MetricsLogger` adds ``img_per_s``),
then ``on_train_end(step)``; ``close()`` runs whatever happened. A callback stops the loop after the
current step by setting ``stop_training`` (the time budget does).

The train stage's side effects, each a callback: :class:`DivergenceCheck` (non-finite figures),
:class:`MetricsLogger` (history rows, MLflow metrics, img/s), :class:`ProgressBar`, :class:`SampleGrid`
(images from fixed latents), :class:`FidTracker` (FID over training, keeping the best generator),
:class:`Checkpointer` (refusing non-finite weights) and :class:`TimeBudget`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from resgan import grids, sampling
from resgan.errors import ResganError
from resgan.gan import checkpoint

# Path-style MLflow names of the step's figures.
METRIC_NAMES = {
    "loss_d": "loss/d",
    "loss_g": "loss/g",
    "d_real": "d/real",
    "d_fake": "d/fake",
    "grad_norm_d": "grad_norm/d",
    "grad_norm_g": "grad_norm/g",
    "img_per_s": "perf/img_per_s",
    "ada_p": "aug/p",
    "d_real_sign": "d/real_sign",
    "lr_g": "lr/g",
    "class_loss_d": "class_loss/d",
    "class_loss_g": "class_loss/g",
}


class DivergenceError(ResganError):
    """Losses or weights became non-finite."""


class Callback:
    """Hooks around :func:`fit`; the base class does nothing. Set ``stop_training`` to stop the loop."""

    stop_training = False
    steps = 0

    def on_train_begin(self, step: int, steps: int) -> None:
        """Before the first step; ``step`` is where training starts, ``steps`` where it ends."""
        self.steps = steps

    def on_step_end(self, step: int, figures: dict[str, float]) -> None:
        """After step ``step`` (counted from 1) with that step's figures."""

    def on_train_end(self, step: int) -> None:
        """After the last step (``steps``, or an earlier one when a callback stopped the loop)."""

    def close(self) -> None:
        """After training, also when it raised: release what the callback holds."""

    def due(self, step: int, every: int) -> bool:
        """Every ``every`` steps, and at the last step."""
        return step % every == 0 or step == self.steps


def fit(gan, iterator, start: int, steps: int, callbacks: Sequence[Callback] = ()) -> int:
    """Run ``gan.train_step(iterator)`` for steps ``start + 1`` to ``steps`` (fewer when a callback sets
    ``stop_training``), calling the callbacks' hooks in list order; returns the last step done."""
    step = start
    try:
        for callback in callbacks:
            callback.on_train_begin(start, steps)
        while step < steps:
            figures = {k: float(v) for k, v in gan.train_step(iterator).items()}
            step += 1
            for callback in callbacks:
                callback.on_step_end(step, figures)
            if any(callback.stop_training for callback in callbacks):
                break
        for callback in callbacks:
            callback.on_train_end(step)
    finally:
        for callback in callbacks:
            callback.close()
    return step


def metric_names(figures: dict[str, float]) -> dict[str, float]:
    """Path-style MLflow names: loss_d -> loss/d, d_real -> d/real, img_per_s -> perf/img_per_s."""
    return {METRIC_NAMES.get(k, k): v for k, v in figures.items()}


def diverged(reason: str, folder: Path | None) -> DivergenceError:
    """The error for a run that diverged: ``reason``, the last good checkpoint in ``folder``, what to do."""
    last = checkpoint.latest(folder) if folder is not None else None
    where = f"last good checkpoint: {last[0]} (step {last[1]['step']})" if last else "no checkpoint was written"
    return DivergenceError(
        f"training diverged: {reason}; {where}. Lower the learning rates or change train.loss, then re-run"
    )


def non_finite(figures: dict[str, float], loss_scaled: bool = False) -> str | None:
    """The non-finite figures as ``name=value, ...``, or None. Under dynamic loss scaling (mixed_float16)
    a non-finite gradient is expected: the optimizer skips that update and lowers the scale, so only
    the other figures count."""
    bad = [k for k, v in figures.items() if not math.isfinite(v) and not (loss_scaled and k.startswith("grad_norm"))]
    return ", ".join(f"{k}={figures[k]}" for k in bad) or None


class DivergenceCheck(Callback):
    """Raises :class:`DivergenceError` (naming the figures and the last good checkpoint in ``folder``)
    at the first step with a non-finite figure; ``loss_scaled``: mixed_float16's exemption."""

    def __init__(self, loss_scaled: bool = False, folder: Path | None = None):
        self.loss_scaled, self.folder = loss_scaled, folder

    def on_step_end(self, step: int, figures: dict[str, float]) -> None:
        bad = non_finite(figures, self.loss_scaled)
        if bad:
            raise diverged(f"non-finite {bad} at step {step}", self.folder)


class MetricsLogger(Callback):
    """Every ``every`` steps and at the last: adds ``img_per_s`` to the figures (``batch_size`` images per
    step over the steps since the previous row, timed by ``clock`` in seconds), appends the row
    ``{"step": ..., **figures}`` to :attr:`history` and sends the figures, path-style named, to
    ``logger`` (a :class:`resgan.tracking.BufferedLogger`, or None: no MLflow).

    ``history`` holds the rows of a resumed run (from its checkpoint); those the run lacks in MLflow
    (logged while the store was down, then killed) are logged again at the start."""

    def __init__(
        self,
        every: int,
        batch_size: int,
        history: list[dict[str, float]] | None = None,
        logger=None,
        retries: int = 5,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.every, self.batch_size, self.logger, self.retries, self.clock = every, batch_size, logger, retries, clock
        self.history: list[dict[str, float]] = list(history or [])
        self._window_start, self._window_steps = 0.0, 0

    def on_train_begin(self, step: int, steps: int) -> None:
        super().on_train_begin(step, steps)
        if self.logger is not None and self.history:
            rows = [(row["step"], metric_names({k: v for k, v in row.items() if k != "step"})) for row in self.history]
            self.logger.log_missing(rows, probe="loss/d", retries=self.retries)
        self._window_start, self._window_steps = self.clock(), 0

    def on_step_end(self, step: int, figures: dict[str, float]) -> None:
        self._window_steps += 1
        if not self.due(step, self.every):
            return
        elapsed = self.clock() - self._window_start
        figures["img_per_s"] = self._window_steps * self.batch_size / max(elapsed, 1e-9)
        self._window_start, self._window_steps = self.clock(), 0
        self.history.append({"step": step, **figures})
        if self.logger is not None:
            self.logger.log_metrics(metric_names(figures), step)

    COLUMNS = ["step", "loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "img_per_s"]
    OPTIONAL = ["ada_p", "lr_g"]  # columns where the run has them (ADA, a learning-rate decay)

    def figures(self, start: int, step: int, wall: float) -> dict[str, Any]:
        """A run's final figures from step ``start`` to ``step`` in ``wall`` seconds: steps, img/s of this
        call (the last row's without a step) and the last logged losses."""
        last = self.history[-1] if self.history else {}
        img_per_s = round((step - start) * self.batch_size / wall, 2) if step > start else last.get("img_per_s", 0.0)
        return {
            "steps": step,
            "steps_this_run": step - start,
            "wall_s": round(wall, 2),
            "img_per_s": img_per_s,
            "loss_d": last.get("loss_d"),
            "loss_g": last.get("loss_g"),
        }

    def csv(self) -> bytes:
        """:attr:`history` as CSV: :attr:`COLUMNS`, and :attr:`OPTIONAL` ones where a row has them."""
        import pandas as pd

        columns = self.COLUMNS + [c for c in self.OPTIONAL if any(c in row for row in self.history)]
        return pd.DataFrame(self.history, columns=columns).to_csv(index=False).encode()


class ProgressBar(Callback):
    """A rich progress bar on a terminal (``tty`` None: ask stdout); plain ``step i/n  loss_d=...`` lines
    every ``every`` steps otherwise (DVC, CI)."""

    SHOWN = ("loss_d", "loss_g", "img_per_s")

    def __init__(self, every: int, tty: bool | None = None):
        self.every, self.tty = every, tty
        self.bar: Progress | None = None

    def on_train_begin(self, step: int, steps: int) -> None:
        super().on_train_begin(step, steps)
        if self.tty if self.tty is not None else sys.stdout.isatty():
            self.bar = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
            )
            self.task = self.bar.add_task("train", total=steps, completed=step, info="")
            self.bar.start()

    def on_step_end(self, step: int, figures: dict[str, float]) -> None:
        shown = self.due(step, self.every)
        info = "  ".join(f"{k}={v:.3g}" for k, v in figures.items() if k in self.SHOWN) if shown else ""
        if self.bar is not None:
            self.bar.update(self.task, completed=step, **({"info": info} if info else {}))
        elif shown:
            print(f"step {step}/{self.steps}  {info}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class SampleGrid(Callback):
    """Every ``every`` steps and at the last: a grid of the EMA generator's images of ``size`` fixed
    latents (seed ``seed``; a conditional model draws classes 0, 1, ..., K-1 in turn, laid out a class per
    column or a block per class as :func:`resgan.grids.sample_grid` does), logged to ``logger`` as image
    ``samples`` at that step (MLflow's image slider)."""

    def __init__(self, gan, logger, every: int, size: int, seed: int):
        self.gan, self.logger, self.every = gan, logger, every
        self.latents = sampling.latents(size, gan.model_params.latent_dim, seed)
        self.labels = sampling.class_labels(size, gan.num_classes, seed=0)

    def images(self) -> np.ndarray:
        """The grid's images now: uint8 NHWC."""
        return sampling.generate_images(self.gan.ema_generator, self.latents, self.labels)

    def on_step_end(self, step: int, figures: dict[str, float]) -> None:
        if self.due(step, self.every):
            self.logger.log_image(grids.sample_grid(self.images(), self.labels, len(self.latents)), "samples", step)


# FID over training's metric name in MLflow: ``train/fid_classifier``. Its own name, not the evaluation's
# ``eval/fid_classifier``: it scores train.eval_num images of fixed latents, the evaluation sample.num.
FID_CURVE = "train/{key}"


class FidTracker(Callback):
    """FID over training. Every ``every`` steps and at the last: ``score`` (a
    :class:`resgan.metrics.evaluation.FidScore`) of ``num`` images of the EMA generator from fixed latents
    (seed ``seed``; a conditional model draws every class in turn, a self-conditioned one its clusters as
    its export does), appended to :attr:`history` and logged
    to ``logger`` as :data:`FID_CURVE` at that step (MLflow draws the curve).

    The kept generator: a measurement with the lowest FID so far (the later of equals) exports the EMA
    generator to ``folder/best_generator.keras`` (``export(gan, path)``) and records the step in
    ``folder/best.json`` (:attr:`best`), so the best snapshot outlives the latest weights. The last step
    is always measured (also when a callback stopped training early), so that
    :func:`resgan.gan.export.choose_export` can hold the best against it: a few hundred real images make
    a noisy FID, and a lower figure that is only noise must not pin the export to an early step. The
    noise (:attr:`noise`) comes from the score's ``halves_gap``, pooled over the measurements so far; a
    score without it counts as noiseless. ``history`` holds the rows of a resumed run; a best recorded
    after the step training resumes from is forgotten (those steps are trained again)."""

    BEST_MODEL, BEST_RECORD = checkpoint.BEST_MODEL, checkpoint.BEST_RECORD

    def __init__(
        self,
        gan,
        score: Callable[[np.ndarray], dict[str, float]],
        key: str,
        every: int,
        num: int,
        seed: int,
        folder: Path,
        export: Callable[[Any, Path], Any],
        logger=None,
        history: list[dict[str, float]] | None = None,
        batch_size: int = 256,
    ):
        self.gan, self.score, self.key, self.every, self.folder, self.export = gan, score, key, every, folder, export
        self.logger, self.batch_size = logger, batch_size
        self.latents = sampling.latents(num, gan.model_params.latent_dim, seed)
        self.labels = sampling.class_labels(num, gan.num_classes, seed=0)
        prior = getattr(gan.shapes, "cluster_prior", ()) if gan.num_classes else ()
        if prior:  # self-conditioned: the clusters as the exported generator draws them, by frequency
            from resgan.nn.layers import ClusterChoice

            drawn = ClusterChoice(prior)(sampling.latents(num, gan.model_params.latent_dim + 1, seed))
            self.latents, self.labels = (np.asarray(t) for t in drawn)
        self.history: list[dict[str, float]] = list(history or [])
        self.best: dict[str, float] | None = None
        self.seconds = 0.0  # spent measuring in this process (the cost of FID over training)
        self.start = 0  # the step training starts from

    def on_train_begin(self, step: int, steps: int) -> None:
        super().on_train_begin(step, steps)
        self.start = step
        self.history = [row for row in self.history if row["step"] <= step]
        self.best = checkpoint.RunRecord(self.folder, step).best()

    def on_step_end(self, step: int, figures: dict[str, float]) -> None:
        if self.every and self.due(step, self.every) and not any(row["step"] == step for row in self.history):
            self.measure(step)

    def on_train_end(self, step: int) -> None:
        last = self.history[-1]["step"] if self.history else self.start
        if self.every and step > last:  # stopped early (the time budget): the last step is measured too
            self.measure(step)

    @property
    def noise(self) -> float:
        """The spread of two FIDs of one generator on two sets of ``num`` images, from the history's
        halves gaps (:func:`resgan.gan.export.fid_spread`; 0 without gaps)."""
        from resgan.gan.export import fid_spread

        return fid_spread(row.get("halves_gap", math.nan) for row in self.history)

    def measure(self, step: int) -> float:
        """Score the EMA generator now, as step ``step``; returns the FID."""
        start = time.perf_counter()
        images = sampling.generate_images(self.gan.ema_generator, self.latents, self.labels, self.batch_size)
        result = self.score(images)
        value = float(result[self.key])
        self.seconds += time.perf_counter() - start
        row = {"step": step, self.key: value}
        if "halves_gap" in result:
            row["halves_gap"] = float(result["halves_gap"])
        self.history.append(row)
        if self.logger is not None:
            self.logger.log_metrics({FID_CURVE.format(key=self.key): value}, step)
        if math.isfinite(value) and (self.best is None or value <= self.best[self.key]):  # the later of equals
            self.export(self.gan, self.folder / self.BEST_MODEL)
            self.best = {"step": step, self.key: value, "noise": round(self.noise, 6)}
            checkpoint.RunRecord(self.folder).write_best(self.best)
        return value

    def figures(self, start: int, wall: float) -> dict[str, Any]:
        """The seconds spent measuring (said in one line with their share of ``wall``, this call's training
        seconds; only FID measurements after step ``start`` count). The lowest and the last FID and the
        noise come with the export decision (:func:`resgan.gan.export.choose_export`)."""
        figures: dict[str, Any] = {}
        figures["fid_seconds"] = round(self.seconds, 2)  # its share of wall_s: the cost of FID over training
        print(
            f"FID over training: {sum(1 for row in self.history if row['step'] > start)} measurements, "
            f"{self.seconds:.1f} s ({100 * self.seconds / max(wall, 1e-9):.1f}% of this run's training time)",
            flush=True,
        )
        return figures

    def csv(self) -> bytes:
        """:attr:`history` as CSV: ``step,fid``."""
        import pandas as pd

        rows = [{"step": row["step"], "fid": row[self.key]} for row in self.history]
        return pd.DataFrame(rows, columns=["step", "fid"]).to_csv(index=False).encode()

    @property
    def best_model(self) -> Path | None:
        """The best generator's file, or None when none was measured."""
        return self.folder / self.BEST_MODEL if self.best is not None else None


class Checkpointer(Callback):
    """A checkpoint of ``gan`` in ``folder`` every ``every`` steps, at the last step, and where training
    stopped early; ``record()`` gives what the checkpoint's record holds beside the step. Non-finite
    weights are never saved: :class:`DivergenceError` instead."""

    def __init__(self, folder: Path, gan, every: int, record: Callable[[], dict[str, Any]] = dict):
        self.folder, self.gan, self.every, self.record = folder, gan, every, record
        self.saved_step: int | None = None

    def on_train_begin(self, step: int, steps: int) -> None:
        super().on_train_begin(step, steps)
        self.saved_step = step  # the checkpoint training starts from (or nothing to save at step 0)

    def on_step_end(self, step: int, figures: dict[str, float]) -> None:
        if self.due(step, self.every):
            self.save(step)

    def on_train_end(self, step: int) -> None:
        if step != self.saved_step:  # stopped early between checkpoints
            self.save(step)

    def save(self, step: int) -> Path:
        """Write the checkpoint of step ``step``; returns its path."""
        if not self.gan.weights_finite():
            raise diverged(f"non-finite weights at step {step}", self.folder)
        path = checkpoint.save(self.folder, self.gan, self.record())
        self.saved_step = step
        return path


class TimeBudget(Callback):
    """Stops training after the step that passes ``minutes`` of wall time (``clock``, in seconds) since
    the start; None or 0: no budget. ``stop_training`` then says the budget stopped it."""

    def __init__(self, minutes: float | None, clock: Callable[[], float] = time.perf_counter):
        self.minutes, self.clock = minutes, clock
        self._start = 0.0

    def on_train_begin(self, step: int, steps: int) -> None:
        super().on_train_begin(step, steps)
        self._start = self.clock()

    def on_step_end(self, step: int, figures: dict[str, float]) -> None:
        if self.minutes and self.clock() - self._start > 60 * self.minutes:
            print(f"stopping at step {step}: train.max_minutes={self.minutes} reached", flush=True)
            self.stop_training = True


GRID_SEED_OFFSET = 1  # fixed latents for the sample grid: seed train.seed + 1
FID_SEED_OFFSET = 2  # fixed latents for FID over training: seed train.seed + 2


@dataclass
class StageCallbacks:
    """The train stage's callbacks (:func:`stage_callbacks`): :attr:`all` in the order they run (the caller's
    own go after them, the :attr:`budget` last), the two whose figures the stage reports, and :attr:`state`,
    what a checkpoint records beside the weights."""

    all: list[Callback]
    metrics: MetricsLogger
    budget: TimeBudget
    state: Callable[[], dict[str, Any]]
    fid: FidTracker | None = None
    precision: str = "float32"  # the settled train.precision, reported with the figures

    def figures(self, start: int, step: int, wall: float, decision=None) -> dict[str, Any]:
        """The run's final figures from step ``start`` to ``step`` in ``wall`` seconds: the metrics', the
        precision, whether the time budget stopped it, the cost of FID over training and ``decision``'s (a
        :class:`resgan.gan.export.ExportDecision`, or None), with the exported step."""
        from resgan.gan.export import exported

        return {
            **self.metrics.figures(start, step, wall),
            "precision": self.precision,
            "stopped_by_budget": self.budget.stop_training,
            **(self.fid.figures(start, wall) if self.fid else {}),
            **(decision.figures(self.fid.key) if decision else {}),
            "exported_step": exported(decision, step)[1],
        }


def stage_callbacks(plan, gan, record, logger, score, grid: int, retries: int) -> StageCallbacks:
    """The callbacks of ``plan``'s run (a :class:`resgan.gan.plan.TrainPlan`) of ``gan``, resumed at
    ``record`` (a :class:`resgan.gan.checkpoint.RunRecord`). Every process checks for divergence, keeps
    the figures (sent to ``logger``, a :class:`resgan.tracking.BufferedLogger`, with ``retries``) and shows
    progress; the chief (``logger`` not None) also logs a grid of ``grid`` images, measures FID over
    training with ``score`` (None: off; :func:`resgan.metrics.evaluation.training_fid`) and checkpoints."""
    from resgan.gan.trainer import export_generator

    tp = plan.train
    metrics = MetricsLogger(tp.log_every, tp.batch_size, record.history, logger, retries)
    callbacks = [
        DivergenceCheck(loss_scaled=tp.precision == "mixed_float16", folder=record.folder),
        metrics,
        ProgressBar(tp.log_every),
    ]
    chief = logger is not None  # only the chief of a cluster talks to MLflow, measures and checkpoints
    fid = (
        FidTracker(
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
        if chief and score is not None
        else None
    )
    run_id = logger.run_id if chief else None
    state = lambda: record.state(run_id, metrics.history, fid, gan, plan.key)  # noqa: E731
    if chief:
        callbacks += [
            SampleGrid(gan, logger, tp.sample_every, grid, tp.seed + GRID_SEED_OFFSET),
            *([fid] if fid else []),
            Checkpointer(record.folder, gan, tp.checkpoint_every, state),
        ]
    return StageCallbacks(callbacks, metrics, TimeBudget(tp.max_minutes), state, fid, tp.precision)
