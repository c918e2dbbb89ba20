"""The training loop and each of its callbacks alone: the step bookkeeping of ``fit``, the time budget,
divergence checks, history rows and img/s, progress lines, checkpoints and sample grids."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_params
from PIL import Image

from resgan import files, tracking
from resgan.gan import checkpoint
from resgan.gan.loop import (
    FID_SEED_OFFSET,
    GRID_SEED_OFFSET,
    Callback,
    Checkpointer,
    DivergenceCheck,
    DivergenceError,
    FidTracker,
    MetricsLogger,
    ProgressBar,
    SampleGrid,
    TimeBudget,
    fit,
    metric_names,
    stage_callbacks,
)
from resgan.gan.trainer import GAN, Shapes, export_generator
from resgan.metrics.distances import fid
from resgan.metrics.evaluation import FidScore
from resgan.sampling import generate_images, latents

BATCH = 8  # tiny_params' train.batch_size


class StepGAN:
    """Stands in for :class:`GAN` where only the loop's bookkeeping is tested: each step takes the next
    item ``i`` of the iterator and reports ``loss_d = i / 10`` and ``loss_g = -i``."""

    def __init__(self):
        self.calls = 0

    def train_step(self, iterator):
        self.calls += 1
        i = next(iterator)
        return {"loss_d": np.float32(i / 10), "loss_g": np.float32(-i)}


class Recorder(Callback):
    """Writes every hook it sees into the shared list ``log``; stops the loop after step ``stop_at``."""

    def __init__(self, name: str, log: list, stop_at: int | None = None):
        self.name, self.log, self.stop_at = name, log, stop_at

    def on_train_begin(self, step, steps):
        super().on_train_begin(step, steps)
        self.log.append((self.name, "begin", step, steps))

    def on_step_end(self, step, figures):
        self.log.append((self.name, "step", step, dict(figures)))
        if step == self.stop_at:
            self.stop_training = True

    def on_train_end(self, step):
        self.log.append((self.name, "end", step))

    def close(self):
        self.log.append((self.name, "close"))


class Clock:
    """A clock (seconds) that returns the given readings in turn."""

    def __init__(self, *readings: float):
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0)


# ---- fit ------------------------------------------------------------------------------------------


def test_fit_counts_steps_from_start_and_calls_the_callbacks_in_order():
    log: list = []
    gan = StepGAN()
    last = fit(gan, iter(range(100, 200)), start=3, steps=5, callbacks=[Recorder("a", log), Recorder("b", log)])
    assert last == 5 and gan.calls == 2  # steps 4 and 5
    assert log == [
        ("a", "begin", 3, 5),
        ("b", "begin", 3, 5),
        ("a", "step", 4, {"loss_d": pytest.approx(10.0), "loss_g": -100.0}),
        ("b", "step", 4, {"loss_d": pytest.approx(10.0), "loss_g": -100.0}),
        ("a", "step", 5, {"loss_d": pytest.approx(10.1), "loss_g": -101.0}),
        ("b", "step", 5, {"loss_d": pytest.approx(10.1), "loss_g": -101.0}),
        ("a", "end", 5),
        ("b", "end", 5),
        ("a", "close"),
        ("b", "close"),
    ]
    figures = log[2][3]
    assert all(type(v) is float for v in figures.values())  # plain floats, whatever train_step returns


def test_fit_with_nothing_left_to_do_runs_no_step():
    log: list = []
    gan = StepGAN()
    assert fit(gan, iter(range(10)), start=4, steps=4, callbacks=[Recorder("a", log)]) == 4
    assert gan.calls == 0 and log == [("a", "begin", 4, 4), ("a", "end", 4), ("a", "close")]


def test_a_callback_stops_the_loop_after_the_step_and_the_others_still_see_that_step():
    log: list = []
    gan = StepGAN()
    last = fit(
        gan, iter(range(10)), start=0, steps=9, callbacks=[Recorder("stopper", log, stop_at=2), Recorder("b", log)]
    )
    assert last == 2 and gan.calls == 2
    assert [entry[:3] for entry in log if entry[1] in ("step", "end")] == [
        ("stopper", "step", 1),
        ("b", "step", 1),
        ("stopper", "step", 2),
        ("b", "step", 2),
        ("stopper", "end", 2),
        ("b", "end", 2),
    ]


def test_an_error_in_a_callback_ends_the_loop_but_every_callback_is_closed():
    class Boom(Callback):
        def on_step_end(self, step, figures):
            if step == 2:
                raise RuntimeError("boom at 2")

    log: list = []
    with pytest.raises(RuntimeError, match="boom at 2"):
        fit(StepGAN(), iter(range(10)), 0, 5, [Boom(), Recorder("a", log)])
    assert [entry[1:3] for entry in log] == [("begin", 0), ("step", 1), ("close",)]


# ---- the time budget ------------------------------------------------------------------------------


def test_the_time_budget_stops_the_loop_at_the_first_step_past_it(capsys):
    # Readings in seconds: the start, then one per step. 1 minute = 60 s: 30 and 60 are within, 90 is past.
    budget = TimeBudget(minutes=1, clock=Clock(0.0, 30.0, 60.0, 90.0, 120.0))
    gan = StepGAN()
    assert fit(gan, iter(range(10)), 0, 10, [budget]) == 3
    assert gan.calls == 3 and budget.stop_training is True
    assert capsys.readouterr().out == "stopping at step 3: train.max_minutes=1 reached\n"


def test_no_budget_never_stops():
    for minutes in (None, 0):
        budget = TimeBudget(minutes=minutes, clock=Clock(0.0, *[1e9] * 4))
        assert fit(StepGAN(), iter(range(10)), 0, 4, [budget]) == 4 and budget.stop_training is False


def test_the_benchmarks_marks_snapshot_at_both_budgets_then_stop(tmp_path):
    """benchmarks.child.Marks (make bench-quality's two budgets): batch 8, 24 images = step 3; 1 minute
    is passed at step 2 (readings: start 0, then 30, 70, 80, 95 s); training stops at step 3."""
    from benchmarks.child import Marks

    written = []
    marks = Marks(
        BATCH, images=24, minutes=1, folder=tmp_path, export=written.append, clock=Clock(0.0, 30.0, 70.0, 80.0, 95.0)
    )
    assert fit(StepGAN(), iter(range(10)), 0, 100, [marks]) == 3
    assert written == [tmp_path / "at_minutes.keras", tmp_path / "at_images.keras"]
    assert marks.marks == {
        "at_minutes": {"step": 2, "images": 16, "wall_s": 70.0},
        "at_images": {"step": 3, "images": 24, "wall_s": 80.0},
    }
    # Both reached at one step: one step, two snapshots.
    both = Marks(BATCH, images=8, minutes=0.5, folder=tmp_path, export=written.append, clock=Clock(0.0, 40.0))
    assert fit(StepGAN(), iter(range(10)), 0, 100, [both]) == 1 and set(both.marks) == {"at_images", "at_minutes"}
    # train.steps ends the run before 1 minute: the wall budget gets the last step, marked as the run's end.
    early = Marks(
        BATCH, images=16, minutes=1, folder=tmp_path, export=written.append, clock=Clock(0.0, 10.0, 20.0, 30.0)
    )
    assert fit(StepGAN(), iter(range(10)), 0, 3, [early]) == 3
    assert early.marks == {
        "at_images": {"step": 2, "images": 16, "wall_s": 20.0},
        "at_minutes": {"step": 3, "images": 24, "wall_s": 30.0, "ended": True},
    }


def test_the_quality_benchs_decaying_presets_end_their_decay_at_the_image_budget():
    """benchmarks.quality: a preset with train.lr_decay trains the image budget's steps (3,200 images
    of 32: 100), so its rates reach 0 there; a --set still wins; a constant-rate preset keeps the
    budgets' open-ended step count."""
    from benchmarks.quality import BUDGET, CONFIGS, budget_steps, params_for

    assert budget_steps(CONFIGS["plain"], 3_200) == []
    tuned = params_for(CONFIGS["tuned"], Path("mnist"), 0.0, budget_steps(CONFIGS["tuned"], 3_200))
    assert (tuned["train"]["steps"], tuned["train"]["lr_decay"], tuned["train"]["lr_decay_start"]) == (
        100,
        "linear",
        0.75,
    )
    unlabelled = params_for(
        CONFIGS["tuned_uncond"], Path("mnist"), 0.0, [*budget_steps(CONFIGS["tuned_uncond"], 3_200), "train.steps=40"]
    )
    assert (unlabelled["train"]["steps"], unlabelled["train"]["lr_decay_start"]) == (40, 0.5)
    assert params_for(CONFIGS["plain"], Path("mnist"), 0.0, [])["train"]["steps"] == BUDGET["steps"]


# ---- divergence -----------------------------------------------------------------------------------


def test_the_divergence_check_raises_on_nan_and_names_the_figure_and_step():
    check = DivergenceCheck()
    check.on_step_end(6, {"loss_d": 0.5, "grad_norm_d": 3.0})  # finite: nothing
    with pytest.raises(DivergenceError) as error:
        check.on_step_end(7, {"loss_d": 0.5, "loss_g": math.nan, "grad_norm_g": math.inf})
    assert str(error.value) == (
        "training diverged: non-finite loss_g=nan, grad_norm_g=inf at step 7; "
        "no checkpoint was written. Lower the learning rates or change train.loss, then re-run"
    )


def test_the_divergence_check_names_the_last_good_checkpoint(tmp_path):
    # The files checkpoint.latest reads: the pointer, the record, the arrays (content not read here).
    (tmp_path / "latest.json").write_text(json.dumps({"checkpoint": "ckpt-00000006", "step": 6}))
    (tmp_path / "ckpt-00000006.json").write_text(json.dumps({"step": 6}))
    (tmp_path / "ckpt-00000006.npz").write_bytes(b"")
    with pytest.raises(
        DivergenceError,
        match=r"non-finite loss_d=inf at step 7; last good checkpoint: "
        rf"{tmp_path / 'ckpt-00000006.npz'} \(step 6\)",
    ):
        DivergenceCheck(folder=tmp_path).on_step_end(7, {"loss_d": math.inf})


def test_under_loss_scaling_only_a_non_finite_gradient_norm_is_expected():
    scaled = DivergenceCheck(loss_scaled=True)  # mixed_float16: the optimizer skips that update
    scaled.on_step_end(1, {"loss_d": 0.7, "grad_norm_d": math.inf, "grad_norm_g": math.nan})
    with pytest.raises(DivergenceError, match="non-finite loss_d=nan at step 2"):
        scaled.on_step_end(2, {"loss_d": math.nan, "grad_norm_d": math.inf})
    with pytest.raises(DivergenceError, match="non-finite grad_norm_d=inf at step 1"):
        DivergenceCheck(loss_scaled=False).on_step_end(1, {"loss_d": 0.7, "grad_norm_d": math.inf})


# ---- metrics and progress -------------------------------------------------------------------------


def test_metric_names_are_path_style():
    assert metric_names({"loss_d": 1.0, "d_real": 2.0, "grad_norm_g": 3.0, "img_per_s": 4.0, "other": 5.0}) == {
        "loss/d": 1.0,
        "d/real": 2.0,
        "grad_norm/g": 3.0,
        "perf/img_per_s": 4.0,
        "other": 5.0,
    }


def test_the_metrics_logger_writes_history_rows_and_img_per_s_and_logs_them_to_mlflow():
    # The test's own SQLite store (conftest), and an experiment named here: another test may have left
    # MLflow's active experiment pointing at an id of its own store.
    with mlflow.start_run(experiment_id=tracking.setup("loop-test")) as run:
        pass
    logger = tracking.BufferedLogger(run.info.run_id)
    # A resumed run: the checkpoint's row of step 1 never reached MLflow; it is logged at the start.
    resumed = [{"step": 1, "loss_d": 0.25, "loss_g": -1.0, "img_per_s": 3.0}]
    # Readings (s): the start; then per logged step the end of its window (= the start of the next).
    metrics = MetricsLogger(
        every=2, batch_size=BATCH, history=resumed, logger=logger, clock=Clock(0.0, 4.0, 4.0, 10.0, 10.0, 12.0, 12.0)
    )
    fit(StepGAN(), iter(range(100)), start=1, steps=5, callbacks=[metrics])
    # Logged steps 2, 4 and the last (5): windows of 1, 2 and 1 steps of 8 images in 4, 6 and 2 s.
    assert metrics.history == [
        {"step": 1, "loss_d": 0.25, "loss_g": -1.0, "img_per_s": 3.0},
        {"step": 2, "loss_d": pytest.approx(0.0), "loss_g": 0.0, "img_per_s": pytest.approx(1 * 8 / 4)},
        {"step": 4, "loss_d": pytest.approx(0.2), "loss_g": -2.0, "img_per_s": pytest.approx(2 * 8 / 6)},
        {"step": 5, "loss_d": pytest.approx(0.3), "loss_g": -3.0, "img_per_s": pytest.approx(1 * 8 / 2)},
    ]
    assert resumed == [{"step": 1, "loss_d": 0.25, "loss_g": -1.0, "img_per_s": 3.0}]  # the caller's list is kept
    client = mlflow.MlflowClient()
    speed = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "perf/img_per_s")}
    assert speed == pytest.approx({1: 3.0, 2: 2.0, 4: 16 / 6, 5: 4.0})
    loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss/g")}
    assert loss == {1: -1.0, 2: 0.0, 4: -2.0, 5: -3.0}
    assert logger.pending == 0


def test_the_progress_bar_prints_plain_lines_when_not_on_a_terminal(capsys):
    metrics = MetricsLogger(every=2, batch_size=BATCH, clock=Clock(0.0, 2.0, 2.0, 4.0, 4.0, 5.0, 5.0))
    fit(StepGAN(), iter(range(1, 100)), 0, 5, [metrics, ProgressBar(every=2, tty=False)])
    # Steps 2, 4 and the last (5); loss_d = i/10, loss_g = -i for item i; img/s = 8*2/2, 8*2/2, 8*1/1.
    assert capsys.readouterr().out.splitlines() == [
        "step 2/5  loss_d=0.2  loss_g=-2  img_per_s=8",
        "step 4/5  loss_d=0.4  loss_g=-4  img_per_s=8",
        "step 5/5  loss_d=0.5  loss_g=-5  img_per_s=8",
    ]


# ---- checkpoints and sample grids on a real (tiny) GAN ---------------------------------------------


@pytest.fixture
def eager():
    """``train_step`` eagerly: the same Python, much cheaper than tracing for a few steps."""
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


def make_gan(classes: int = 0) -> GAN:
    p = tiny_params(model={"conditional": bool(classes)}, train={"diffaugment": ""})
    keras.utils.set_random_seed(0)
    return GAN(p.model, p.train, Shapes(image_size=16, channels=1, num_classes=classes))


def batches() -> tf.data.Dataset:
    images = np.random.default_rng(0).uniform(-1, 1, size=(BATCH, 16, 16, 1)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices(images).batch(BATCH).repeat()


def test_the_checkpointer_writes_at_the_right_steps_and_refuses_non_finite_weights(tmp_path, eager):
    gan = make_gan()
    saved: list[int] = []

    def record() -> dict:
        saved.append(int(gan.step.numpy()))
        return {"note": "mine"}

    folder = tmp_path / "ckpt"
    iterator = iter(batches())
    fit(gan, iterator, 0, 5, [Checkpointer(folder, gan, every=2, record=record)])
    assert saved == [2, 4, 5]  # every 2 steps and the last
    # Resumed at 5 and stopped early at 7 (between checkpoints): 6, then 7 at the end.
    fit(gan, iterator, 5, 10, [Checkpointer(folder, gan, every=2, record=record), Recorder("stop", [], stop_at=7)])
    assert saved == [2, 4, 5, 6, 7]
    path, kept = checkpoint.latest(folder)
    assert path == folder / "ckpt-00000007.npz" and kept == {"note": "mine", "step": 7}
    assert sorted(p.name for p in folder.glob("ckpt-*.npz")) == ["ckpt-00000006.npz", "ckpt-00000007.npz"]

    weight = gan.generator.trainable_weights[0]
    weight.assign(np.full(weight.shape, np.nan, dtype=np.float32))
    with pytest.raises(
        DivergenceError,
        match=r"non-finite weights at step 8; last good checkpoint: "
        r".*ckpt-00000007\.npz \(step 7\)",
    ):
        Checkpointer(folder, gan, every=1, record=record).save(8)
    assert saved == [2, 4, 5, 6, 7]  # nothing written
    assert json.loads((folder / "latest.json").read_text()) == {"checkpoint": "ckpt-00000007", "step": 7}


def test_the_sample_grid_is_the_ema_generators_images_of_fixed_latents(tmp_path):
    gan = make_gan()
    gan.ema_generator.set_weights([w + 0.01 for w in gan.ema_generator.get_weights()])  # not the raw G
    with mlflow.start_run(experiment_id=tracking.setup("loop-test")) as run:  # see the metrics logger's test
        pass
    grid = SampleGrid(gan, tracking.BufferedLogger(run.info.run_id), every=2, size=6, seed=3)
    z = np.random.default_rng(3).standard_normal((6, 16)).astype(np.float32)  # the fixed latents, by hand
    want = generate_images(gan.ema_generator, z)
    np.testing.assert_array_equal(grid.images(), want)
    assert not np.array_equal(want, generate_images(gan.generator, z))
    assert grid.labels is None

    grid.on_train_begin(0, 3)
    for step in (1, 2, 3):
        grid.on_step_end(step, {})
    client = mlflow.MlflowClient()
    pngs = sorted(a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png"))
    assert [int(p.split("+step+")[1].split("+")[0]) for p in pngs] == [2, 3]  # every 2 steps and the last
    local = client.download_artifacts(run.info.run_id, pngs[0], str(tmp_path))
    logged = np.asarray(Image.open(local))
    np.testing.assert_array_equal(logged, files.image_grid(want)[..., 0])  # 6 images: 3 columns, 2 rows
    assert logged.shape == (2 * 17 + 1, 3 * 17 + 1)


def test_a_conditional_models_grid_draws_every_class_in_turn():
    gan = make_gan(classes=3)
    grid = SampleGrid(gan, None, every=1, size=7, seed=5)
    assert grid.labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    z = np.random.default_rng(5).standard_normal((7, 16)).astype(np.float32)
    np.testing.assert_array_equal(grid.latents, z)
    np.testing.assert_array_equal(grid.images(), generate_images(gan.ema_generator, z, np.array([0, 1, 2, 0, 1, 2, 0])))


class EmaWeights(Callback):
    """Keeps a copy of the EMA generator's weights after each step."""

    def __init__(self, gan):
        self.gan, self.at = gan, {}

    def on_step_end(self, step, figures):
        self.at[step] = [w.copy() for w in self.gan.ema_generator.get_weights()]


@pytest.mark.slow  # exports a generator at every FID measurement
def test_fid_over_training_logs_the_curve_and_keeps_the_best_generator(tmp_path, eager):
    gan = make_gan()
    scripted = iter([5.0, 3.0, 4.0])  # the FIDs of steps 2, 4 and 5: step 4 is the best
    seen: list[np.ndarray] = []

    def score(images):
        seen.append(images)
        return {"fid_test": next(scripted)}

    with mlflow.start_run(experiment_id=tracking.setup("loop-test")) as run:
        pass
    ema = EmaWeights(gan)
    tracker = FidTracker(
        gan,
        score,
        "fid_test",
        every=2,
        num=5,
        seed=7,
        folder=tmp_path,
        export=export_generator,
        logger=tracking.BufferedLogger(run.info.run_id),
    )
    fit(gan, iter(batches()), 0, 5, [ema, tracker])
    assert [(row["step"], row["fid_test"]) for row in tracker.history] == [(2, 5.0), (4, 3.0), (5, 4.0)]
    # A score without halves_gap is noiseless: the lowest FID is kept.
    assert tracker.best == {"step": 4, "fid_test": 3.0, "noise": 0.0}
    assert json.loads((tmp_path / "best.json").read_text()) == tracker.best
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/fid_test")
    assert sorted((m.step, m.value) for m in history) == [(2, 5.0), (4, 3.0), (5, 4.0)]
    # Scored: the EMA generator's images of fixed latents (seed 7); kept: the EMA generator of step 4.
    np.testing.assert_array_equal(seen[-1], generate_images(gan.ema_generator, latents(5, 16, 7)))
    best = keras.saving.load_model(tracker.best_model, compile=False)
    for kept, want in zip(best.get_weights(), ema.at[4]):
        np.testing.assert_array_equal(kept, want)
    assert not all(np.array_equal(a, b) for a, b in zip(best.get_weights(), ema.at[5]))

    # Resumed from a checkpoint of step 3: rows and the best after it are forgotten (trained again).
    again = FidTracker(gan, score, "fid_test", 2, 5, 7, tmp_path, export_generator, history=tracker.history)
    again.on_train_begin(3, 10)
    assert again.best is None and [row["step"] for row in again.history] == [2]
    later = FidTracker(gan, score, "fid_test", 2, 5, 7, tmp_path, export_generator, history=tracker.history)
    later.on_train_begin(5, 10)
    assert later.best == tracker.best and later.best_model == tmp_path / "best_generator.keras"


class Exports:
    """Stands in for ``export_generator``: records the step of each export (the tracker's history)."""

    def __init__(self):
        self.steps, self.tracker = [], None

    def __call__(self, gan, path):
        self.steps.append(self.tracker.history[-1]["step"])


@pytest.mark.parametrize(
    "fids, kept",
    [
        ([5.0, 3.0, 5.5, 4.8, 5.4], [2, 4]),  # the lowest so far is kept, whatever the noise: 3.0 at step 4
        ([5.0, 3.0, 5.5, 3.0, 2.9], [2, 4, 8, 10]),  # equals go to the later step, a new lowest replaces it
    ],
)
@pytest.mark.slow  # exports a generator at every FID measurement
def test_the_kept_generator_is_the_lowest_fids_and_the_noise_is_the_spread_of_two_fids(tmp_path, eager, fids, kept):
    gan = make_gan()
    scores, gaps = iter(fids), iter([2.0, 2.0, 2.0, 2.0, 6.0])  # steps 2, 4, 6, 8, 10
    exports = Exports()
    tracker = FidTracker(
        gan,
        lambda images: {"fid_test": next(scores), "halves_gap": next(gaps)},
        "fid_test",
        every=2,
        num=5,
        seed=7,
        folder=tmp_path,
        export=exports,
    )
    exports.tracker = tracker
    fit(gan, iter(batches()), 0, 10, [tracker])
    assert exports.steps == kept and tracker.best["step"] == kept[-1]
    # The spread of two FIDs of one generator: rms(gap) / sqrt(2), from the gaps up to the kept step
    # (four gaps of 2: sqrt(2) = 1.414; with step 10's 6: rms = sqrt((16 + 36) / 5) = 3.225, / sqrt(2) = 2.28).
    assert tracker.best["noise"] == pytest.approx(2.0 / np.sqrt(2) if kept[-1] < 10 else np.sqrt(52 / 5 / 2), abs=1e-6)
    assert [row["halves_gap"] for row in tracker.history] == [2.0, 2.0, 2.0, 2.0, 6.0]


def test_the_last_step_is_measured_when_training_stops_early(tmp_path, eager):
    gan = make_gan()
    scores = iter([5.0, 4.0, 6.0])
    tracker = FidTracker(
        gan,
        lambda images: {"fid_test": next(scores)},
        "fid_test",
        every=2,
        num=5,
        seed=7,
        folder=tmp_path,
        export=lambda gan, path: None,
    )
    budget = TimeBudget(1 / 60, clock=iter([0.0, 0.5, 0.9, 1.1]).__next__)  # passes 1 s after step 3
    assert fit(gan, iter(batches()), 0, 10, [tracker, budget]) == 3
    assert [(row["step"], row["fid_test"]) for row in tracker.history] == [(2, 5.0), (3, 4.0)]
    # Stopped before the first measurement was due: the last step is still measured, once.
    scores, budget = iter([7.0]), TimeBudget(1 / 60, clock=iter([0.0, 1.1]).__next__)
    first = FidTracker(
        gan,
        lambda images: {"fid_test": next(scores)},
        "fid_test",
        every=5,
        num=5,
        seed=7,
        folder=tmp_path / "first",
        export=lambda gan, path: None,
    )
    assert fit(gan, iter(batches()), 0, 10, [first, budget]) == 1
    assert [(row["step"], row["fid_test"]) for row in first.history] == [(1, 7.0)]


def test_the_fid_score_extracts_the_reference_once_and_matches_fid():
    calls: list[int] = []

    def pixels(images, batch_size):  # a feature extractor: the first 6 pixels (as classifier features are)
        calls.append(len(images))
        return images.reshape(len(images), -1)[:, :6].astype(np.float64), None

    pixels.name = "pixels"
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (300, 4, 4, 1), dtype=np.uint8)
    score = FidScore(pixels, reference)
    assert score.key == "fid_pixels" and calls == [300]
    like = rng.integers(0, 256, (300, 4, 4, 1), dtype=np.uint8)
    unlike = rng.integers(0, 64, (300, 4, 4, 1), dtype=np.uint8)
    near, far = score(like)["fid_pixels"], score(unlike)["fid_pixels"]
    assert calls == [300, 300, 300]  # the reference was not extracted again
    assert near == pytest.approx(fid(pixels(reference, 0)[0], pixels(like, 0)[0]))
    assert near < far / 10


def test_every_step_figure_of_a_real_gan_reaches_the_callbacks(eager):
    log: list = []
    gan = make_gan()
    fit(gan, iter(batches()), 0, 1, [Recorder("a", log)])
    figures = log[1][3]
    assert set(figures) == {"loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g"}
    assert all(math.isfinite(v) for v in figures.values()) and int(gan.step.numpy()) == 1


class KeyedScore:
    """Stands in for FidScore where only the callbacks' wiring is tested: its key, never called."""

    key = "fid_classifier"

    def __call__(self, images):
        raise AssertionError("not measured in this test")


def test_the_stage_callbacks_run_in_order_and_only_the_chief_draws_measures_and_checkpoints(tmp_path):
    gan = make_gan()
    tp = gan.train_params
    plan = SimpleNamespace(train=tp, key="key-1", shapes=gan.shapes)
    record = checkpoint.RunRecord(tmp_path, history=[{"step": 1, "loss_d": 0.5}])
    worker = stage_callbacks(plan, gan, record, None, KeyedScore(), grid=4, retries=0)
    assert [type(c) for c in worker.all] == [DivergenceCheck, MetricsLogger, ProgressBar] and worker.fid is None
    assert worker.metrics is worker.all[1] and worker.metrics.history == record.history
    assert worker.state() == {
        "run_id": None,
        "history": record.history,
        "key": "key-1",
        "fid_history": [],
        "ada_p": 1.0,
    }

    chief = stage_callbacks(plan, gan, record, tracking.BufferedLogger("run-1"), KeyedScore(), grid=4, retries=0)
    kinds = [DivergenceCheck, MetricsLogger, ProgressBar, SampleGrid, FidTracker, Checkpointer]
    assert [type(c) for c in chief.all] == kinds and chief.fid is chief.all[4]
    grid, fid_tracker, checkpointer = chief.all[3:]
    # the grid's latents are seed train.seed + 1, FID over training's train.seed + 2
    assert np.array_equal(grid.latents, latents(4, gan.model_params.latent_dim, tp.seed + GRID_SEED_OFFSET))
    assert np.array_equal(
        fid_tracker.latents, latents(tp.eval_num, gan.model_params.latent_dim, tp.seed + FID_SEED_OFFSET)
    )
    assert (fid_tracker.every, fid_tracker.folder, checkpointer.every) == (tp.eval_every, tmp_path, tp.checkpoint_every)
    assert checkpointer.record() == chief.state() and chief.state()["run_id"] == "run-1"
    no_fid = stage_callbacks(plan, gan, record, tracking.BufferedLogger("run-1"), None, grid=4, retries=0)
    assert [type(c) for c in no_fid.all] == [DivergenceCheck, MetricsLogger, ProgressBar, SampleGrid, Checkpointer]

    figures = worker.figures(0, 0, 1.0)  # nothing trained, no FID: the last step (0) is the exported one
    assert figures["precision"] == tp.precision and figures["stopped_by_budget"] is False
    assert figures["exported_step"] == 0 and "fid_seconds" not in figures
