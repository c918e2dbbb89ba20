"""In-process speed figures: the matmul limit, our train step, the textbook baseline and sampling.

Every benchmark is warmed up (traced, then a few untimed calls) and then measured in rounds: one
call of every benchmark per round, so load from other processes hits all of them alike, and a
ratio taken within a round (MFU, bf16 speedup, ours over the baseline) compares figures measured
seconds apart. Each figure is the median over the rounds.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np


class Bench(Protocol):
    name: str
    work: float  # what one measure() does: FLOPs (matmul) or images (training, sampling)

    def warm(self) -> None: ...

    def measure(self) -> float: ...  # seconds


@contextlib.contextmanager
def policy(name: str) -> Iterator[None]:
    """The Keras global dtype policy ``name`` inside the block (our GAN reads it when built)."""
    import keras

    old = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(old)


class Matmul:
    """A chain of ``chain`` dense (n, n) @ (n, n) products in ``dtype``: the machine's matmul limit.

    The products are chained (each multiplies the previous result) so no graph optimizer can merge
    them; the right factor is scaled by 1/sqrt(n) so values stay near 1 in bfloat16.

    A limit is a peak, so one measure() is the fastest of ``calls`` calls (about 0.2 s each in
    bfloat16 here): load from other processes only ever slows a call, and a single call that
    another process happened to slow would make every same-round fraction of it look too good.
    """

    def __init__(self, dtype: str, n: int, chain: int = 4, calls: int = 5):
        import tensorflow as tf

        self.name, self.dtype, self.n, self.chain, self.calls = f"matmul_{dtype}", dtype, n, chain, calls
        rng = np.random.default_rng(0)
        self.a = tf.cast(tf.constant(rng.standard_normal((n, n), dtype=np.float32)), dtype)
        self.b = tf.cast(tf.constant(rng.standard_normal((n, n), dtype=np.float32) / np.sqrt(n)), dtype)

        @tf.function
        def products(a, b):
            for _ in range(chain):
                a = tf.matmul(a, b)
            return a[0, 0]

        self.products = products
        self.work = 2.0 * n**3 * chain

    def warm(self) -> None:
        for _ in range(2):
            self.measure()

    def measure(self) -> float:
        fastest = float("inf")
        for _ in range(self.calls):
            start = time.perf_counter()
            self.products(self.a, self.b).numpy()
            fastest = min(fastest, time.perf_counter() - start)
        return fastest


class OursTrain:
    """``steps`` calls of :meth:`resgan.gan.trainer.GAN.train_step`, fed by our tf.data pipeline,
    each followed by reading its figures as floats, exactly as the train stage's loop does."""

    def __init__(self, name: str, params, precision: str, images: np.ndarray, steps: int):
        import keras

        from resgan.data.pipeline import train_dataset
        from resgan.gan.plan import DataSummary, plan
        from resgan.gan.trainer import GAN
        from resgan.nn.flops import train_step_flops

        self.name, self.precision, self.steps = name, precision, steps
        self.batch = params.train.batch_size
        with policy(precision):
            keras.utils.set_random_seed(params.train.seed)
            # The plan settles the autos as the train stage does (unlabelled images: an unconditional GAN).
            settled = plan(params, DataSummary(len(images), int(images.shape[1]), int(images.shape[3])))
            self.gan = GAN(settled.model, settled.train, settled.shapes)
        self.iterator = iter(train_dataset(images, self.batch, params.train.seed))
        self.work = float(steps * self.batch)  # images per measure()
        self.step_flops = train_step_flops(self.gan.generator, self.gan.discriminator, self.batch, params.train.d_steps)

    def _step(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.gan.train_step(self.iterator).items()}

    def warm(self) -> None:
        with policy(self.precision):
            for _ in range(3):  # the first call traces
                self._step()

    def measure(self) -> float:
        with policy(self.precision):
            start = time.perf_counter()
            for _ in range(self.steps):
                self._step()
            return time.perf_counter() - start


class Textbook:
    """The same networks trained with ``fit`` in a textbook ``keras.Model`` (see textbook.py), float32.
    One measure() is one epoch of ``steps`` batches, timed from its start to its end by a callback."""

    def __init__(self, name: str, params, images: np.ndarray, steps: int):
        import keras

        from benchmarks.textbook import make_textbook_gan
        from resgan.nn.networks import build_discriminator, build_generator

        self.name, self.steps, self.batch = name, steps, params.train.batch_size
        m = params.model
        size, channels = int(images.shape[1]), int(images.shape[3])
        with policy("float32"):
            keras.utils.set_random_seed(params.train.seed)
            generator = build_generator(m.latent_dim, m.width, size, channels, m.blocks_per_resolution)
            discriminator = build_discriminator(
                size, channels, m.d_width or m.width, m.blocks_per_resolution, m.spectral_norm
            )
            self.gan = make_textbook_gan(generator, discriminator, m.latent_dim, params.train.lr_d)
        reps = -(-steps * self.batch // len(images))
        self.x = np.concatenate([images] * reps)[: steps * self.batch].astype(np.float32) / 127.5 - 1.0
        self.work = float(steps * self.batch)
        self.epoch_s = 0.0

        outer = self

        class EpochTimer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer.epoch_s = time.perf_counter() - self.start

        self.timer = EpochTimer()

    def _epoch(self) -> float:
        with policy("float32"):
            self.gan.fit(self.x, batch_size=self.batch, epochs=1, shuffle=True, verbose=0, callbacks=[self.timer])
        return self.epoch_s

    def warm(self) -> None:
        self._epoch()  # traces the train function

    def measure(self) -> float:
        return self._epoch()


class Draw:
    """:func:`resgan.stages.sample.draw` of ``num`` images from a float32 generator (what is exported)."""

    def __init__(self, name: str, generator, num: int, batch_size: int = 256):
        self.name, self.generator, self.num, self.batch_size = name, generator, num, batch_size
        self.work = float(num)

    def _draw(self) -> None:
        from resgan.sampling import draw

        draw(self.generator, self.num, seed=0, batch_size=self.batch_size)

    def warm(self) -> None:
        self._draw()

    def measure(self) -> float:
        start = time.perf_counter()
        self._draw()
        return time.perf_counter() - start


class FidMeasure:
    """One measurement of FID over training (:class:`resgan.gan.loop.FidTracker`) at ``train.eval_num``
    images: the EMA generator draws them, the domain classifier's features, FID against the reference
    features (extracted once, outside the timing, as the train stage does at its start)."""

    def __init__(self, name: str, gan, params, reference: np.ndarray, classifier_path):
        from resgan.gan.loop import FidTracker
        from resgan.gan.trainer import export_generator
        from resgan.metrics.evaluation import FidScore
        from resgan.metrics.features import LearnedFeatures

        self.name = name
        score = FidScore(LearnedFeatures(classifier_path), reference, params.evaluate.batch_size)
        self.tracker = FidTracker(
            gan,
            score,
            score.key,
            params.train.eval_every,
            params.train.eval_num,
            params.train.seed,
            Path(classifier_path).parent,
            export_generator,
            batch_size=params.sample.batch_size,
        )
        self.tracker.best = {"step": 0, score.key: -1.0}  # never a new best: no export inside the timing
        self.work = float(params.train.eval_num)

    def warm(self) -> None:
        self.tracker.measure(0)

    def measure(self) -> float:
        start = time.perf_counter()
        self.tracker.measure(0)
        return time.perf_counter() - start


def run_rounds(benches: list[Bench], rounds: int, log: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Warm every benchmark, then ``rounds`` rounds of one measure() each; seconds per benchmark."""
    for bench in benches:
        start = time.perf_counter()
        bench.warm()
        log(f"  warmed {bench.name} ({time.perf_counter() - start:.1f} s)")
    seconds: dict[str, list[float]] = {bench.name: [] for bench in benches}
    gc.collect()
    gc.disable()  # as timeit does: no collection pause lands inside one benchmark's timing
    try:
        for r in range(rounds):
            start = time.perf_counter()
            for bench in benches:
                seconds[bench.name].append(bench.measure())
            log(f"  round {r + 1}/{rounds} ({time.perf_counter() - start:.1f} s)")
    finally:
        gc.enable()
    return seconds


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def rate(bench: Bench, seconds: list[float]) -> float:
    """Work per second at the median time."""
    return bench.work / median(seconds)


def per_round(f: Callable[[int], float], rounds: int) -> float:
    """The median over rounds of a figure computed within each round (a same-round ratio)."""
    return median([f(r) for r in range(rounds)])
