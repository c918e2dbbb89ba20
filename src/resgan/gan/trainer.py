"""The GAN: networks, optimizers, EMA generator and a compiled, strategy-aware train step.

One call of :meth:`GAN.train_step` is one generator update preceded by ``d_steps`` discriminator
updates, each on its own real batch. It runs inside ``strategy.run`` so the same code serves one
device, ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy``. What makes N replicas of B/N the
same maths as one replica of B:

- losses are averaged over the global batch with ``tf.nn.compute_average_loss``;
- gradients are summed across replicas once, here (``all_reduce``), before the optimizer sees them,
  so the reported gradient norms are those of the global gradient and every replica (and
  ``LossScaleOptimizer``'s finite check) sees the same numbers; the optimizers do not reduce again;
- latents for the whole global batch are drawn in cross-replica context from one counter-based
  generator (same on every worker) and each replica takes its slice, so the latents do not depend
  on the number of replicas;
- the generator's batch norm is synchronized across replicas (global batch statistics, as
  BigGAN's cross-replica BN) whenever there is more than one replica;
- spectral normalization's power iteration depends on the weights only, so every replica computes
  the same ``u`` and kernel; those variables aggregate with ``ONLY_FIRST_REPLICA``;
- the EMA update runs in cross-replica context so every replica holds the same average.

Per-replica randomness (DiffAugment, the gradient penalty's interpolation factors) comes from
stateful ops: replicas of one process get distinct op seeds; workers of a multi-worker cluster get
a graph seed offset by their worker index, or every worker would draw the same numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from resgan import files
from resgan.config import ModelParams, TrainParams
from resgan.errors import ResganError
from resgan.gan.device import worker_index
from resgan.gan.diffaugment import diff_augment
from resgan.gan.losses import auxiliary_class_loss, get_losses, gradient_penalty
from resgan.gan.plan import Shapes, TrainPlan
from resgan.nn.keras_private import ReducedAdam, first_replica_writes, nested_layers
from resgan.nn.networks import discriminator_from_params, generator_from_params, self_conditioned
from resgan.sampling import model_inputs


class GAN:
    """Generator, discriminator, EMA generator, both Adam optimizers and the train step.

    Build it inside ``strategy.scope()`` (the constructor does this itself). ``model`` and ``train`` are
    settled sections (no ``auto``: :func:`resgan.gan.plan.plan`); :func:`build_gan` makes one from a plan.
    """

    def __init__(
        self,
        model: ModelParams,
        train: TrainParams,
        shapes: Shapes,
        strategy: tf.distribute.Strategy | None = None,
        global_batch_size: int | None = None,
    ):
        for name, value in (("train.diffaugment", train.diffaugment), ("model.conditional", model.conditional)):
            if value == "auto":  # the plan settles every auto (resgan.gan.plan); the GAN settles nothing
                raise ResganError(f"{name.split('.')[1]} is auto: settle it first (resgan.gan.plan.plan)")
        self.model_params, self.train_params, self.shapes = model, train, shapes
        self.strategy = strategy or tf.distribute.get_strategy()
        self.global_batch_size = global_batch_size or train.batch_size
        self.d_loss_fn, self.g_loss_fn = get_losses(train.loss)
        self.policy = keras.mixed_precision.global_policy().name
        self.num_classes = shapes.num_classes if model.conditional else 0
        if model.conditional and self.num_classes < 2:
            raise ResganError(f"model.conditional needs at least 2 classes, got {shapes.num_classes}")
        with self.strategy.scope():
            self.generator = self._build_generator()
            self.ema_generator = self._build_generator(name="ema_generator")
            # AC-GAN's class head where there are classes and train.class_loss weighs it.
            self.class_head = bool(self.num_classes and train.class_loss)
            self.discriminator = discriminator_from_params(
                model, shapes.image_size, shapes.channels, num_classes=self.num_classes, class_head=self.class_head
            )
            self.g_optimizer = self._adam(train.lr_g, train.beta1_g, train.beta2_g, "g_adam")
            self.d_optimizer = self._adam(train.lr_d, train.beta1_d, train.beta2_d, "d_adam")
            self.g_optimizer.build(self.generator.trainable_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            # The probability of each DiffAugment op: 1 without ADA; with it, adjusted by train_step.
            self.ada_p = tf.Variable(
                0.0 if train.ada_target else 1.0,
                dtype=tf.float32,
                trainable=False,
                name="ada_p",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        self._ada_signs: list[float] = []
        _first_replica_writes(self.discriminator)
        # Latents come from a counter-based generator whose state is checkpointed with the weights.
        # Made outside the strategy's scope on purpose: one stream per process, the same on every
        # worker, drawn for the global batch in cross-replica context (see ``_step``).
        self.rng = tf.random.Generator.from_seed(train.seed)
        replicas = self.strategy.num_replicas_in_sync
        if self.global_batch_size % replicas:
            raise ResganError(
                f"train.batch_size {self.global_batch_size} must be a multiple of the {replicas} replicas"
            )
        self.copy_to_ema()
        self._compiled = None

    def _build_generator(self, name: str = "generator") -> keras.Model:
        # More than one replica: batch statistics over the global batch (an all-reduce per BN layer).
        g = generator_from_params(
            self.model_params,
            self.shapes.image_size,
            self.shapes.channels,
            synchronized_bn=self.strategy.num_replicas_in_sync > 1,
            num_classes=self.num_classes,
        )
        g.name = name
        return g

    def _adam(self, lr: float, beta1: float, beta2: float, name: str) -> keras.optimizers.Optimizer:
        optimizer = ReducedAdam(learning_rate=lr, beta_1=beta1, beta_2=beta2, name=name)
        if self.policy == "mixed_float16":  # float16 gradients underflow without dynamic loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{name}_scaled")
        return optimizer

    # ---- EMA ---------------------------------------------------------------------------------
    def copy_to_ema(self) -> None:
        for ema, weight in zip(self.ema_generator.weights, self.generator.weights):
            ema.assign(weight)

    def ema_decay_at(self, step: tf.Tensor) -> tf.Tensor:
        """The EMA's decay for the update that follows generator step ``step`` (0-based).

        Until ``ema_start`` it is 0: the EMA copies the generator (early weights are not worth averaging).
        Then ``ema_decay``, whose half-life is ln 0.5 / ln(ema_decay) steps, but with ``ema_rampup`` r > 0
        the half-life is at most r times the steps averaged so far (stylegan2's ``ema_rampup``): after n
        steps the EMA weighs the last ~r*n steps, so it never holds much of the random initial weights
        and follows a generator that still moves fast early on.
        """
        tp = self.train_params
        decay = tf.constant(tp.ema_decay, tf.float32)
        if tp.ema_rampup > 0 and tp.ema_decay > 0:
            half_life = math.log(0.5) / math.log(tp.ema_decay)  # steps
            averaged = tf.cast(step - tp.ema_start + 1, tf.float32)  # steps the EMA has seen, this one included
            ramped = tf.maximum(tf.minimum(half_life, tp.ema_rampup * averaged), 1e-3)
            decay = tf.pow(0.5, 1.0 / ramped)
        return tf.where(step < tp.ema_start, 0.0, decay)

    # ---- learning rates ----------------------------------------------------------------------
    def lr_factor_at(self, step: tf.Tensor) -> tf.Tensor:
        """The share of ``lr_g`` / ``lr_d`` that generator step ``step`` (0-based) and its D steps use.

        1 until ``lr_decay_start`` x ``train.steps``, then down to ``lr_decay_floor`` (0 by default) at
        ``train.steps``: linearly (``linear``) or along a half cosine (``cosine``); 1 throughout with
        ``lr_decay: none``. The schedule counts G steps, so D's ``d_steps`` updates of one step share its rate.
        """
        tp = self.train_params
        if tp.lr_decay == "none":
            return tf.constant(1.0)
        start = tp.lr_decay_start * tp.steps
        progress = (tf.cast(step, tf.float32) - start) / max(tp.steps - start, 1e-9)
        progress = tf.clip_by_value(progress, 0.0, 1.0)
        left = 1.0 - progress if tp.lr_decay == "linear" else 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tp.lr_decay_floor + (1.0 - tp.lr_decay_floor) * left

    def _set_learning_rates(self) -> tf.Tensor:
        """Assign this step's rates to both optimizers (their ``learning_rate`` variables, so a
        checkpoint holds the same variables whatever the schedule); returns the factor."""
        factor = self.lr_factor_at(self.step)
        self.g_optimizer.learning_rate.assign(self.train_params.lr_g * factor)
        self.d_optimizer.learning_rate.assign(self.train_params.lr_d * factor)
        return factor

    def _update_ema(self) -> None:
        """ema = decay * ema + (1 - decay) * weight for trainable weights (decay: :meth:`ema_decay_at`);
        batch-norm statistics are copied."""
        decay = self.ema_decay_at(self.step)
        trainable = {id(v) for v in self.generator.trainable_weights}
        for ema, weight in zip(self.ema_generator.weights, self.generator.weights):
            if id(weight) in trainable:
                ema.assign(
                    tf.cast(decay, ema.dtype) * ema + tf.cast(1.0 - decay, ema.dtype) * tf.cast(weight, ema.dtype)
                )
            else:
                ema.assign(weight)

    # ---- one step ----------------------------------------------------------------------------
    def _latents(self, batch) -> tf.Tensor:
        """``batch`` latents from the checkpointed generator (called in cross-replica context)."""
        return self.rng.normal((batch, self.model_params.latent_dim))

    def _local(self, global_latents: tf.Tensor) -> tf.Tensor:
        """This replica's slice of latents drawn for the global batch."""
        context = tf.distribute.get_replica_context()
        replicas = self.strategy.num_replicas_in_sync
        if replicas == 1:
            return global_latents
        local = self.global_batch_size // replicas
        start = tf.cast(context.replica_id_in_sync_group, tf.int32) * local
        return global_latents[start : start + local]

    def _augment(self, images: tf.Tensor) -> tf.Tensor:
        if not self.train_params.diffaugment:
            return images
        if not self.train_params.ada_target:
            return diff_augment(images, self.train_params.diffaugment)
        return diff_augment(images, self.train_params.diffaugment, probability=tf.cast(self.ada_p, images.dtype))

    def _average(self, per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(tf.cast(per_example, tf.float32), global_batch_size=self.global_batch_size)

    def _judge(
        self, images: tf.Tensor, labels: tf.Tensor | None, training: bool = True
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """D's logits for ``images`` (of classes ``labels``), and its class logits (None without the class head)."""
        out = self.discriminator(model_inputs(images, labels), training=training)
        return (out[0], out[1]) if self.class_head else (out, None)

    def _reduce_gradients(self, grads, optimizer) -> tuple[list[tf.Tensor], tf.Tensor]:
        """Sum (still loss-scaled) gradients over replicas; also return the global gradient's norm."""
        context = tf.distribute.get_replica_context()
        if self.strategy.num_replicas_in_sync > 1:
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        norm = tf.linalg.global_norm([tf.cast(g, tf.float32) for g in grads]) / _loss_scale(optimizer)
        return grads, norm

    def _d_step(self, batch, latents: tf.Tensor, r1: bool = False) -> dict[str, tf.Tensor]:
        # Conditional: the fakes are drawn for the real batch's labels, so both halves have the data's class mix.
        real, labels = batch if self.num_classes else (batch, None)
        fake = self.generator(model_inputs(self._local(latents), labels), training=True)
        local = tf.shape(real)[0]
        with tf.GradientTape() as tape:
            # One discriminator pass over real and fake together: twice the batch per conv, which
            # the CPU's kernels use better (3-9% more img/s in paired probes at batch 64), and one spectral-norm
            # power iteration per update, so both halves are judged by the same normalized D.
            # D has no batch norm, so each logit is the one a separate pass would give.
            both = tf.concat([self._augment(real), self._augment(fake)], axis=0)  # both float32
            both_labels = None if labels is None else tf.concat([labels, labels], axis=0)
            with tf.GradientTape(watch_accessed_variables=False) as input_tape:
                input_tape.watch(both)
                logits, class_logits = self._judge(both, both_labels)
                real_sum = tf.reduce_sum(tf.cast(logits[:local], tf.float32)) if r1 else None
            real_logits, fake_logits = logits[:local], logits[local:]
            per_example = self.d_loss_fn(real_logits, fake_logits)
            if self.class_head:  # the head learns the real images' classes only (fakes would teach it their flaws)
                class_loss = auxiliary_class_loss(class_logits[:local], labels)
                per_example += self.train_params.class_loss * class_loss
            if r1:  # R1 (Mescheder et al. 2018) on the (augmented) reals, lazily: x r1_every on its steps
                grad = input_tape.gradient(real_sum, both)[:local]
                penalty = tf.reduce_sum(tf.square(tf.cast(grad, tf.float32)), axis=[1, 2, 3])
                per_example += 0.5 * self.train_params.r1_gamma * self.train_params.r1_every * penalty
            if self.train_params.loss == "wasserstein_gp":

                def critic(x, training):
                    return self._judge(x, labels, training)[0]

                per_example += self.train_params.gp_weight * gradient_penalty(critic, real, fake)
            loss = self._average(per_example)
            scaled = self.d_optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.discriminator.trainable_variables)
        grads, norm = self._reduce_gradients(grads, self.d_optimizer)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_variables))
        figures = (
            {"d_real_sign": self._average(tf.sign(tf.reshape(real_logits, [-1])))}
            if self.train_params.ada_target
            else {}
        )
        if self.class_head:
            figures["class_loss_d"] = self._average(class_loss)
        return {
            "loss_d": loss,
            **figures,
            "d_real": self._average(tf.reshape(real_logits, [-1])),
            "d_fake": self._average(tf.reshape(fake_logits, [-1])),
            "grad_norm_d": norm,
        }

    def _g_step(self, latents: tf.Tensor, labels: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            fake = self.generator(model_inputs(self._local(latents), labels), training=True)
            fake_logits, class_logits = self._judge(self._augment(fake), labels)
            per_example = self.g_loss_fn(fake_logits)
            if self.class_head:
                class_loss = auxiliary_class_loss(class_logits, labels)
                per_example += self.train_params.class_loss * class_loss
            loss = self._average(per_example)
            scaled = self.g_optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.generator.trainable_variables)
        grads, norm = self._reduce_gradients(grads, self.g_optimizer)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables))
        figures = {"class_loss_g": self._average(class_loss)} if self.class_head else {}
        return {"loss_g": loss, "grad_norm_g": norm, **figures}

    def seed_graph(self) -> None:
        """Called while tracing a step: on worker k > 0 of a cluster, give the function's graph the
        seed ``train.seed + 1000003 k`` so its stateful random ops (DiffAugment, the gradient
        penalty) draw other numbers than worker 0's. Elsewhere, and when eager, it does nothing."""
        worker = worker_index(self.strategy)
        if worker and not tf.executing_eagerly():
            tf.random.set_seed(self.train_params.seed + 1_000_003 * worker)

    def _step(self, iterator, r1: bool = False) -> dict[str, tf.Tensor]:
        self.seed_graph()
        sum_, mean = tf.distribute.ReduceOp.SUM, tf.distribute.ReduceOp.MEAN
        out: dict[str, tf.Tensor] = {}
        labels = None
        decaying = self.train_params.lr_decay != "none"
        if decaying:
            factor = self._set_learning_rates()
        for _ in range(self.train_params.d_steps):
            latents = self._latents(self.global_batch_size)
            batch = next(iterator)
            if self.num_classes:
                labels = batch[1]  # the G step draws for the last real batch's labels: the data's class mix
            per_replica = self.strategy.run(self._d_step, args=(batch, latents, r1))
            # Losses and logit means are shares of a global average: sum them. The gradient norm is
            # the same number on every replica (computed after the all-reduce).
            out = {
                k: self.strategy.reduce(mean if k.startswith("grad_norm") else sum_, v, axis=None)
                for k, v in per_replica.items()
            }
        latents = self._latents(self.global_batch_size)
        per_replica = self.strategy.run(self._g_step, args=(latents, labels))
        for key, value in per_replica.items():
            out[key] = self.strategy.reduce(mean if key.startswith("grad_norm") else sum_, value, axis=None)
        self._update_ema()
        self.step.assign_add(1)
        if decaying:
            out["lr_g"] = self.train_params.lr_g * factor
        return out

    def train_step(self, iterator) -> dict[str, tf.Tensor]:
        """One generator update (after ``d_steps`` discriminator updates); returns the step's figures.
        With ``train.r1_gamma`` the D updates of every ``train.r1_every``-th step carry the R1 penalty
        (a second traced function: the other steps pay nothing for it)."""
        if self._compiled is None:
            self._compiled = tf.function(self._step)
            self._compiled_r1 = tf.function(lambda iterator: self._step(iterator, r1=True))
        if self.train_params.r1_gamma and int(self.step.numpy()) % self.train_params.r1_every == 0:
            out = self._compiled_r1(iterator)
        else:
            out = self._compiled(iterator)
        if self.train_params.ada_target:
            out = {**out, "ada_p": self._adapt(float(out["d_real_sign"]))}
        return out

    def _adapt(self, real_sign: float) -> tf.Tensor:
        """ADA's overfitting heuristic (Karras et al. 2020): every ``train.ada_interval`` steps, move p by
        ``interval * batch / (ada_kimg * 1000)`` up when the mean sign of D's real logits over those steps
        is above ``train.ada_target`` (D is sure of the reals: it overfits), down otherwise; p stays in 0..1."""
        tp = self.train_params
        self._ada_signs.append(real_sign)
        if len(self._ada_signs) >= tp.ada_interval:
            direction = float(np.sign(np.mean(self._ada_signs) - tp.ada_target))
            adjust = direction * len(self._ada_signs) * self.global_batch_size / (tp.ada_kimg * 1000.0)
            self.ada_p.assign(float(np.clip(float(self.ada_p.numpy()) + adjust, 0.0, 1.0)))
            self._ada_signs = []
        return self.ada_p.value()

    def weights_finite(self) -> bool:
        """True when every weight of G, D and the EMA generator is finite."""
        for model in (self.generator, self.discriminator, self.ema_generator):
            for w in model.weights:
                if not np.all(np.isfinite(np.asarray(w.numpy(), dtype=np.float32))):
                    return False
        return True


def build_gan(plan: TrainPlan) -> GAN:
    """The GAN of ``plan``, as a run builds it: its precision policy and seed set first (Keras' global
    state), under the ``train.distribute`` strategy (:func:`resgan.gan.device.make_strategy`)."""
    from resgan.gan.device import make_strategy

    keras.mixed_precision.set_global_policy(plan.train.precision)
    keras.utils.set_random_seed(plan.train.seed)
    strategy = make_strategy(plan.train.distribute)
    return GAN(plan.model, plan.train, plan.shapes, strategy=strategy, global_batch_size=plan.train.batch_size)


def export_generator(gan: GAN, path: Path, earlier: Path | None = None) -> keras.Model:
    """Save ``gan``'s EMA generator to ``path`` (atomically) as a float32 Keras model, portable whatever
    precision trained it; returns that float32 model. A self-conditioned GAN's generator is saved
    unconditional, drawing its clusters itself (:func:`resgan.nn.networks.self_conditioned`).
    ``earlier``: a generator this function exported before (the best FID's), copied to ``path`` instead."""
    if earlier is not None:
        files.copy_file(earlier, path)
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = generator_from_params(
            gan.model_params, gan.shapes.image_size, gan.shapes.channels, num_classes=gan.num_classes
        )
    finally:
        keras.mixed_precision.set_global_policy(policy)
    model.set_weights([np.asarray(w, dtype=np.float32) for w in gan.ema_generator.get_weights()])
    if gan.shapes.cluster_prior and gan.num_classes:
        model = self_conditioned(model, gan.shapes.cluster_prior)
    with files.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return model


def _first_replica_writes(model: keras.Model) -> None:
    """Spectral normalization assigns its ``u`` vector and normalized kernel during the forward pass,
    in replica context. Every replica computes the same values (they depend on the weights only), so
    the write of the first replica stands (``ONLY_FIRST_REPLICA``)."""
    for layer in nested_layers(model):
        if isinstance(layer, keras.layers.SpectralNormalization):
            for variable in (layer.vector_u, layer.kernel):
                first_replica_writes(variable)


def _loss_scale(optimizer) -> tf.Tensor:
    scale = getattr(optimizer, "dynamic_scale", None)
    if scale is None:
        return tf.constant(1.0)
    return tf.cast(scale, tf.float32)
