"""Residual building blocks of the ResNet-GAN (SNGAN / BigGAN style).

Both blocks compute ``output = shortcut(x) + residual(x)``: an addition, so the block keeps its
channel count at ``filters`` (the seed article concatenated, which is not a residual block).
Every layer is registered for the ``.keras`` format, so models load with ``safe_mode=True``.
Sub-layers get the block's dtype policy, so a block saved under ``mixed_bfloat16`` loads the same.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

_FUSED_DTYPES = ("float32", "bfloat16", "float16")  # what TensorFlow's FusedBatchNormV3 takes for x


@keras.saving.register_keras_serializable(package="resgan")
class FusedBatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by TensorFlow's fused batch-norm kernel.

    The same weights, config, maths and moving-statistics update as the Keras layer; only the
    kernels differ. Keras 3 builds batch norm from about ten element-wise ops in float32 (casts,
    moments, scale, shift) and as many again in the gradient; ``FusedBatchNormV3`` (oneDNN on CPU,
    cuDNN on GPU) does each direction in one pass and reads bfloat16 directly, keeping its
    statistics in float32. In the reference model's bf16 train step on a 2-core CPU the generator's
    batch norms took 17% of the step with the Keras ops and 3% with the fused kernel.

    The Keras computation is used where the fused kernel does not apply: synchronized (cross-replica)
    statistics, masks, renorm, inputs that are not 4-D channels-last, other dtypes, tiny epsilons.
    """

    def _fused(self, inputs, mask) -> bool:
        return (
            mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.epsilon >= 1.001e-5
            and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, self.compute_dtype)
        scale = self.gamma if self.scale else ops.ones_like(self.moving_mean)
        offset = self.beta if self.center else ops.zeros_like(self.moving_mean)
        if training and self.trainable:
            empty = tf.constant([], tf.float32)
            y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x,
                scale=scale,
                offset=offset,
                mean=empty,
                variance=empty,
                epsilon=self.epsilon,
                exponential_avg_factor=1.0,
                data_format="NHWC",
                is_training=True,
            )
            # The kernel returns the unbiased (n - 1) variance; Keras keeps the biased one, as it normalizes with.
            n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
            variance = variance * ((n - 1.0) / n)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x,
                scale=scale,
                offset=offset,
                mean=self.moving_mean,
                variance=self.moving_variance,
                epsilon=self.epsilon,
                exponential_avg_factor=1.0,
                data_format="NHWC",
                is_training=False,
            )
        return y


def _conv(filters: int, size: int, spectral_norm: bool, name: str, dtype) -> layers.Layer:
    """A 'same'-padded Conv2D, wrapped in Keras' SpectralNormalization when asked."""
    conv = layers.Conv2D(filters, size, padding="same", name=name, dtype=dtype)
    return layers.SpectralNormalization(conv, name=f"sn_{name}", dtype=dtype) if spectral_norm else conv


@keras.saving.register_keras_serializable(package="resgan")
class UpBlock(layers.Layer):
    """Generator block: (N, H, W, C) -> (N, 2H, 2W, filters), or (N, H, W, filters) without upsampling.

    residual: BN -> ReLU -> [Upsample x2 nearest] -> Conv3x3 -> BN -> ReLU -> Conv3x3
    shortcut: Conv1x1 -> [Upsample x2 nearest]; the identity when neither the size nor the
    channel count changes (the extra blocks of ``blocks_per_resolution > 1``). This is the
    textbook upsample-then-conv shortcut in the cheaper order: nearest upsampling copies pixels and
    a 1x1 conv acts on each pixel alone, so both orders are the same map, with 4x fewer multiply-adds.
    ``synchronized_bn``: batch statistics over all replicas of a tf.distribute strategy.
    ``num_classes`` > 0: class-conditional batch norm (SNGAN's categorical conditional BN, de Vries et
    al. 2017): the block is called on ``[x, label]`` and each BN's scale and offset are the label's
    rows of two (num_classes, channels) tables, starting at 1 and 0, in place of one shared pair.
    """

    def __init__(
        self, filters: int, upsample: bool = True, synchronized_bn: bool = False, num_classes: int = 0, **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.upsample = bool(upsample)
        self.synchronized_bn = bool(synchronized_bn)
        self.num_classes = int(num_classes)
        dtype = self.dtype_policy
        affine = not self.num_classes  # with classes the scale and offset come from the label's rows
        self.bn1 = FusedBatchNormalization(
            synchronized=self.synchronized_bn, center=affine, scale=affine, name="bn1", dtype=dtype
        )
        self.bn2 = FusedBatchNormalization(
            synchronized=self.synchronized_bn, center=affine, scale=affine, name="bn2", dtype=dtype
        )
        self.up = layers.UpSampling2D(2, interpolation="nearest", name="up", dtype=dtype)
        self.conv1 = _conv(self.filters, 3, False, "conv1", dtype)
        self.conv2 = _conv(self.filters, 3, False, "conv2", dtype)
        self.shortcut_conv = None  # made in build(): it depends on the input's channel count

    def build(self, input_shape):
        if self.num_classes:
            input_shape = input_shape[0]
        n, h, w, c = input_shape
        if self.upsample or c != self.filters:
            self.shortcut_conv = _conv(self.filters, 1, False, "shortcut_conv", self.dtype_policy)
        if self.num_classes:
            self.class_scale1 = self.add_weight((self.num_classes, c), initializer="ones", name="class_scale1")
            self.class_offset1 = self.add_weight((self.num_classes, c), initializer="zeros", name="class_offset1")
            shape = (self.num_classes, self.filters)
            self.class_scale2 = self.add_weight(shape, initializer="ones", name="class_scale2")
            self.class_offset2 = self.add_weight(shape, initializer="zeros", name="class_offset2")
        # Build the sub-layers here so their weights exist before a saved model's weights load.
        self.bn1.build(input_shape)
        scale = 2 if self.upsample else 1
        big = (n, h * scale if h else None, w * scale if w else None)
        self.conv1.build((*big, c))
        self.bn2.build((*big, self.filters))
        self.conv2.build((*big, self.filters))
        if self.shortcut_conv is not None:
            self.shortcut_conv.build(input_shape)  # it runs before the upsampling
        self.built = True

    def _class_affine(self, h, label, scale, offset):
        """``h * scale[label] + offset[label]``, per example and channel."""
        label = ops.cast(ops.reshape(label, (-1,)), "int32")
        gain = ops.cast(ops.take(scale, label, axis=0), h.dtype)[:, None, None, :]
        shift = ops.cast(ops.take(offset, label, axis=0), h.dtype)[:, None, None, :]
        return h * gain + shift

    def call(self, inputs, training=None):
        x, label = inputs if self.num_classes else (inputs, None)
        h = self.bn1(x, training=training)
        if label is not None:
            h = self._class_affine(h, label, self.class_scale1, self.class_offset1)
        h = ops.relu(h)
        if self.upsample:
            h = self.up(h)
        h = self.bn2(self.conv1(h), training=training)
        if label is not None:
            h = self._class_affine(h, label, self.class_scale2, self.class_offset2)
        h = self.conv2(ops.relu(h))
        shortcut = x if self.shortcut_conv is None else self.shortcut_conv(x)
        if self.upsample:
            shortcut = self.up(shortcut)
        return shortcut + h

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape[0] if self.num_classes else input_shape
        scale = 2 if self.upsample else 1
        return (n, h * scale if h else None, w * scale if w else None, self.filters)

    def get_config(self):
        config = {**super().get_config(), "filters": self.filters, "upsample": self.upsample}
        if self.synchronized_bn:  # only when set: configs of saved models stay as they were
            config["synchronized_bn"] = True
        if self.num_classes:
            config["num_classes"] = self.num_classes
        return config


@keras.saving.register_keras_serializable(package="resgan")
class DownBlock(layers.Layer):
    """Discriminator block: (N, H, W, C) -> (N, H/2, W/2, filters), or (N, H, W, filters) without downsampling.

    residual: ReLU -> Conv3x3 -> ReLU -> Conv3x3 -> [AvgPool 2]
    shortcut: [AvgPool 2] -> Conv1x1; the identity when neither the size nor the channel count changes.
    This is the textbook conv-then-pool shortcut in the cheaper order: both act linearly and the
    bias is the same at every pixel, so both orders are the same affine map, with 4x fewer multiply-adds.
    ``first=True`` is the "optimized" first block of SNGAN: no ReLU on the raw image.
    ``spectral_norm`` wraps every conv in ``keras.layers.SpectralNormalization``.
    """

    def __init__(self, filters: int, spectral_norm: bool, first: bool = False, downsample: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.spectral_norm = bool(spectral_norm)
        self.first = bool(first)
        self.downsample = bool(downsample)
        dtype = self.dtype_policy
        self.conv1 = _conv(self.filters, 3, self.spectral_norm, "conv1", dtype)
        self.conv2 = _conv(self.filters, 3, self.spectral_norm, "conv2", dtype)
        self.pool = layers.AveragePooling2D(2, name="pool", dtype=dtype)
        self.shortcut_conv = None  # made in build(): it depends on the input's channel count

    def build(self, input_shape):
        n, h, w, c = input_shape
        if self.downsample or self.first or c != self.filters:
            self.shortcut_conv = _conv(self.filters, 1, self.spectral_norm, "shortcut_conv", self.dtype_policy)
        # Build the sub-layers here so their weights exist before a saved model's weights load.
        self.conv1.build(input_shape)
        self.conv2.build((n, h, w, self.filters))
        if self.shortcut_conv is not None:  # it runs after the pooling
            small = (n, h // 2 if h else None, w // 2 if w else None, c)
            self.shortcut_conv.build(small if self.downsample else input_shape)
        self.built = True

    def call(self, x, training=None):
        h = x if self.first else ops.relu(x)
        # training=True makes SpectralNormalization run its power iteration (Keras drops the
        # argument for a plain Conv2D).
        h = self.conv2(ops.relu(self.conv1(h, training=training)), training=training)
        if self.downsample:
            h = self.pool(h)
        shortcut = self.pool(x) if self.downsample else x
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_conv(shortcut, training=training)
        return shortcut + h

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        if self.downsample:
            h, w = (h // 2 if h else None), (w // 2 if w else None)
        return (n, h, w, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "spectral_norm": self.spectral_norm,
            "first": self.first,
            "downsample": self.downsample,
        }


@keras.saving.register_keras_serializable(package="resgan")
class GlobalSumPooling2D(layers.Layer):
    """(N, H, W, C) -> (N, C), summing over space (SNGAN's D head: a sum, not a mean, over positions)."""

    def call(self, x):
        return ops.sum(x, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="resgan")
class ClassProjection(layers.Layer):
    """The projection discriminator's class term (Miyato & Koyama 2018): ``[features (N, C), label (N,)]``
    -> ``<embed(label), features>`` of shape (N, 1).

    The embedding is a bias-free Dense on the one-hot label, so Keras' SpectralNormalization can
    normalize it with the rest of the discriminator (as SNGAN does)."""

    def __init__(self, num_classes: int, spectral_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        self.num_classes, self.spectral_norm = int(num_classes), bool(spectral_norm)

    def build(self, input_shape):
        features_shape, _ = input_shape
        embed = layers.Dense(features_shape[-1], use_bias=False, name="embed", dtype=self.dtype_policy)
        self.embed = (
            layers.SpectralNormalization(embed, name="sn_embed", dtype=self.dtype_policy)
            if self.spectral_norm
            else embed
        )
        self.embed.build((features_shape[0], self.num_classes))
        self.built = True

    def call(self, inputs, training=None):
        features, label = inputs
        one_hot = ops.one_hot(ops.cast(label, "int32"), self.num_classes, dtype=features.dtype)
        embedded = self.embed(one_hot, training=training)  # training: SpectralNormalization's power iteration
        return ops.sum(embedded * features, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "spectral_norm": self.spectral_norm}


@keras.saving.register_keras_serializable(package="resgan")
class MinibatchStdDev(layers.Layer):
    """(N, H, W, C) -> (N, H, W, C + 1): the minibatch standard deviation of ProGAN and StyleGAN, the
    discriminator's view of diversity. The batch is cut into consecutive groups of ``group_size`` (the
    largest size up to it that divides N); within a group, the standard deviation of every feature over
    the group's examples, averaged over features and positions, is one number, appended as a constant
    channel to each example of the group. A generator whose samples look alike gets a smaller number
    than real batches do.

    Groups are consecutive examples, not StyleGAN's strided ones, because the discriminator sees
    ``concat([real, fake])``: consecutive groups of a batch size that ``group_size`` divides hold real
    or fake images, never both. The statistic is computed in float32 under a mixed policy.
    """

    def __init__(self, group_size: int = 4, **kwargs):
        super().__init__(**kwargs)
        if int(group_size) < 1:
            raise ValueError(f"group_size must be positive, got {group_size!r}")
        self.group_size = int(group_size)

    def call(self, x):
        n = tf.shape(x)[0]
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        sizes = tf.range(self.group_size, 0, -1)  # the largest of group_size, ..., 1 that divides n
        group = tf.gather(sizes, tf.argmax(tf.cast(tf.equal(n % sizes, 0), tf.int32)))
        y = tf.reshape(tf.cast(x, tf.float32), [-1, group, h, w, c])
        std = tf.sqrt(tf.reduce_mean(tf.square(y - tf.reduce_mean(y, axis=1, keepdims=True)), axis=1) + 1e-8)
        stat = tf.repeat(tf.reduce_mean(std, axis=[1, 2, 3]), group)  # (N,): each group's number, per example
        feature = tf.tile(tf.reshape(stat, [-1, 1, 1, 1]), [1, h, w, 1])
        return tf.concat([x, tf.cast(feature, x.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, h, w, c + 1)

    def get_config(self):
        return {**super().get_config(), "group_size": self.group_size}


@keras.saving.register_keras_serializable(package="resgan")
class ClusterChoice(layers.Layer):
    """A self-conditioned generator's cluster draw: latents (N, D + 1) -> ``[z (N, D), cluster (N,)]``.

    The last coordinate, standard normal, picks the cluster through its normal CDF: cluster ``k`` for
    ``Phi(u)`` in ``[sum(prior[:k]), sum(prior[:k + 1]))``, so clusters come out as often as ``prior``
    says (the training data's cluster sizes) and independently of ``z``. The generator reads ``z`` and
    the cluster; a user samples it as an unconditional generator, with one more latent coordinate.
    """

    def __init__(self, prior, **kwargs):
        super().__init__(**kwargs)
        prior = [float(p) for p in prior]
        if len(prior) < 2 or min(prior) < 0 or abs(sum(prior) - 1.0) > 1e-3:
            raise ValueError(f"prior must be at least 2 non-negative frequencies summing to 1, got {prior!r}")
        self.prior = prior

    def call(self, latents):
        z, u = latents[:, :-1], ops.cast(latents[:, -1], "float32")
        uniform = 0.5 * (1.0 + ops.erf(u / 2.0**0.5))
        edges = ops.convert_to_tensor([sum(self.prior[: k + 1]) for k in range(len(self.prior) - 1)], "float32")
        cluster = ops.sum(ops.cast(uniform[:, None] >= edges[None, :], "int32"), axis=1)
        return [z, cluster]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], input_shape[1] - 1), (input_shape[0],)]

    def get_config(self):
        return {**super().get_config(), "prior": self.prior}
