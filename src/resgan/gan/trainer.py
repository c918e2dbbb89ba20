"""The GAN: networks, optimizers, EMA generator and a compiled, strategy-aware train step.

One call of :meth:`GAN.train_step` is one generator update preceded by ``d_steps`` discriminator
updates, each on its own real batch. It runs inside ``strategy.run`` so the same code serves one
device, ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy``: losses are averaged over the
global batch with ``tf.nn.compute_average_loss`` and gradients are summed across replicas by the
optimizer. Batch-norm statistics in the generator are per replica (Keras' default, documented in
the README); the EMA update runs in cross-replica context so every replica holds the same average.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from resgan.config import ModelParams, TrainParams
from resgan.gan.diffaugment import diff_augment
from resgan.gan.losses import get_losses, gradient_penalty
from resgan.nn.networks import build_discriminator, build_generator


def cpu_supports_bf16() -> bool:
    """True when the CPU has AVX512_BF16 or AMX-BF16 instructions (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """``auto`` picks mixed_bfloat16 on a GPU of compute capability >= 8 or a BF16-capable CPU,
    mixed_float16 on an older GPU, float32 otherwise."""
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        major = (details.get("compute_capability") or (0, 0))[0]
        return "mixed_bfloat16" if major >= 8 else "mixed_float16"
    return "mixed_bfloat16" if cpu_supports_bf16() else "float32"


def make_strategy(distribute: str) -> tf.distribute.Strategy:
    """``none``: the default strategy (one device); ``mirrored``: all local devices;
    ``multi_worker``: workers from the standard ``TF_CONFIG``."""
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribute == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            from resgan.errors import ResganError

            raise ResganError("train.distribute: multi_worker needs TF_CONFIG describing the cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


@dataclass(frozen=True)
class Shapes:
    image_size: int
    channels: int


class GAN:
    """Generator, discriminator, EMA generator, both Adam optimizers and the train step.

    Build it inside ``strategy.scope()`` (the constructor does this itself).
    """

    def __init__(self, model: ModelParams, train: TrainParams, shapes: Shapes,
                 strategy: tf.distribute.Strategy | None = None, global_batch_size: int | None = None):
        self.model_params, self.train_params, self.shapes = model, train, shapes
        self.strategy = strategy or tf.distribute.get_strategy()
        self.global_batch_size = global_batch_size or train.batch_size
        self.d_loss_fn, self.g_loss_fn = get_losses(train.loss)
        self.policy = keras.mixed_precision.global_policy().name
        with self.strategy.scope():
            self.generator = self._build_generator()
            self.ema_generator = self._build_generator(name="ema_generator")
            self.discriminator = build_discriminator(
                image_size=shapes.image_size, channels=shapes.channels,
                width=model.d_width or model.width, blocks_per_resolution=model.blocks_per_resolution,
                spectral_norm=model.spectral_norm)
            self.g_optimizer = self._adam(train.lr_g, train.beta1_g, train.beta2_g, "g_adam")
            self.d_optimizer = self._adam(train.lr_d, train.beta1_d, train.beta2_d, "d_adam")
            self.g_optimizer.build(self.generator.trainable_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            # Latents come from a counter-based generator whose state is checkpointed with the weights.
            self.rng = tf.random.Generator.from_seed(train.seed)
        self.copy_to_ema()
        self._compiled = None

    def _build_generator(self, name: str = "generator") -> keras.Model:
        g = build_generator(latent_dim=self.model_params.latent_dim, width=self.model_params.width,
                            image_size=self.shapes.image_size, channels=self.shapes.channels,
                            blocks_per_resolution=self.model_params.blocks_per_resolution)
        g.name = name
        return g

    def _adam(self, lr: float, beta1: float, beta2: float, name: str) -> keras.optimizers.Optimizer:
        optimizer = keras.optimizers.Adam(learning_rate=lr, beta_1=beta1, beta_2=beta2, name=name)
        if self.policy == "mixed_float16":  # float16 gradients underflow without dynamic loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{name}_scaled")
        return optimizer

    # ---- EMA ---------------------------------------------------------------------------------
    def copy_to_ema(self) -> None:
        for ema, weight in zip(self.ema_generator.weights, self.generator.weights):
            ema.assign(weight)

    def _update_ema(self) -> None:
        """ema = decay * ema + (1 - decay) * weight for trainable weights; copy batch-norm statistics.
        Until ``ema_start`` steps the EMA copies the generator (early weights are not worth averaging)."""
        decay = tf.where(self.step < self.train_params.ema_start, 0.0, self.train_params.ema_decay)
        trainable = {id(v) for v in self.generator.trainable_weights}
        for ema, weight in zip(self.ema_generator.weights, self.generator.weights):
            if id(weight) in trainable:
                ema.assign(decay * ema + (1.0 - decay) * tf.cast(weight, ema.dtype))
            else:
                ema.assign(weight)

    # ---- one step ----------------------------------------------------------------------------
    def _latents(self, batch: int) -> tf.Tensor:
        return self.rng.normal((batch, self.model_params.latent_dim))

    def _augment(self, images: tf.Tensor) -> tf.Tensor:
        return diff_augment(images, self.train_params.diffaugment) if self.train_params.diffaugment else images

    def _average(self, per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(tf.cast(per_example, tf.float32), global_batch_size=self.global_batch_size)

    def _d_step(self, real: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = tf.shape(real)[0]
        fake = self.generator(self._latents(batch), training=True)
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(self._augment(real), training=True)
            fake_logits = self.discriminator(self._augment(fake), training=True)
            per_example = self.d_loss_fn(real_logits, fake_logits)
            if self.train_params.loss == "wasserstein_gp":
                per_example += self.train_params.gp_weight * gradient_penalty(self.discriminator, real, fake)
            loss = self._average(per_example)
            scaled = self.d_optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.discriminator.trainable_variables)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_variables))
        return {"loss_d": loss,
                "d_real": self._average(tf.reshape(real_logits, [-1])),
                "d_fake": self._average(tf.reshape(fake_logits, [-1])),
                "grad_norm_d": tf.linalg.global_norm(grads) / self.d_optimizer_scale()}

    def _g_step(self, batch: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            fake = self.generator(self._latents(batch), training=True)
            fake_logits = self.discriminator(self._augment(fake), training=True)
            loss = self._average(self.g_loss_fn(fake_logits))
            scaled = self.g_optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.generator.trainable_variables)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables))
        return {"loss_g": loss, "grad_norm_g": tf.linalg.global_norm(grads) / self.g_optimizer_scale()}

    def d_optimizer_scale(self) -> tf.Tensor:
        return _loss_scale(self.d_optimizer)

    def g_optimizer_scale(self) -> tf.Tensor:
        return _loss_scale(self.g_optimizer)

    def _step(self, iterator) -> dict[str, tf.Tensor]:
        sum_ = tf.distribute.ReduceOp.SUM
        out: dict[str, tf.Tensor] = {}
        for _ in range(self.train_params.d_steps):
            per_replica = self.strategy.run(self._d_step, args=(next(iterator),))
            out = {k: self.strategy.reduce(sum_, v, axis=None) for k, v in per_replica.items()}
        # Each replica draws its share of the global batch of latents for the generator update.
        local_batch = self.global_batch_size // self.strategy.num_replicas_in_sync
        per_replica = self.strategy.run(self._g_step, args=(tf.constant(local_batch),))
        for key, value in per_replica.items():
            reduce = sum_ if key.startswith("loss") else tf.distribute.ReduceOp.MEAN
            out[key] = self.strategy.reduce(reduce, value, axis=None)
        # Gradient norms were computed per replica on partial sums; report their mean as a guide.
        self._update_ema()
        self.step.assign_add(1)
        return out

    def train_step(self, iterator) -> dict[str, tf.Tensor]:
        """One generator update (after ``d_steps`` discriminator updates); returns the step's figures."""
        if self._compiled is None:
            self._compiled = tf.function(self._step)
        return self._compiled(iterator)

    # ---- sampling ----------------------------------------------------------------------------
    def fixed_latents(self, n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((n, self.model_params.latent_dim)).astype("float32")


def _loss_scale(optimizer) -> tf.Tensor:
    scale = getattr(optimizer, "dynamic_scale", None)
    if scale is None:
        return tf.constant(1.0)
    return tf.cast(scale, tf.float32)


def to_uint8(images: np.ndarray | tf.Tensor) -> np.ndarray:
    """Generator output in [-1, 1] -> uint8 [0, 255] (round to nearest)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def generate(generator: keras.Model, latents: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run ``generator`` on ``latents`` in batches (inference mode) and return uint8 NHWC images."""
    out = []
    for start in range(0, len(latents), batch_size):
        out.append(to_uint8(generator(latents[start:start + batch_size], training=False)))
    return np.concatenate(out, axis=0)
