"""The ResNet generator and discriminator (SNGAN / BigGAN layout).

By default every block has the same width. ``width_growth`` > 1 tapers the networks the way
DCGAN and BigGAN do: ``width`` channels at the image's resolution, multiplied by ``width_growth``
at each halving (capped at ``max_width``), so the cheap low resolutions get the most channels.

With ``num_classes`` > 0 both are class-conditional, as in SNGAN and BigGAN: the generator takes
``[z, label]`` and starts from ``z`` concatenated with a learned class embedding; the discriminator
takes ``[images, label]`` and adds the projection term ``<embed(label), features>`` to its logit
(Miyato & Koyama 2018), so it judges "is this a real digit 7", not just "is this a real digit".
With ``class_head`` the discriminator also names the class: a second output of class logits from the
same pooled features (AC-GAN's auxiliary classifier, Odena et al. 2017; ``train.class_loss``).

Both end in a float32 layer, so images and logits are float32 under the ``mixed_bfloat16`` and
``mixed_float16`` policies (losses and image writers expect float32).
"""

from __future__ import annotations

import math

import keras
from keras import layers

from resgan.nn.layers import (
    ClassProjection,
    ClusterChoice,
    DownBlock,
    FusedBatchNormalization,
    GlobalSumPooling2D,
    MinibatchStdDev,
    UpBlock,
)

CLASS_EMBEDDING = "class_embedding"  # the conditional generator's label embedding (its input_dim: the classes)


def level_widths(width: int, levels: int, width_growth: float = 1.0, max_width: int = 0) -> list[int]:
    """Channels at each resolution level: index 0 is the image's resolution, index ``levels`` is 4x4.

    ``round(width * width_growth ** level)``, capped at ``max_width`` (0: no cap).
    """
    if width_growth < 1.0:
        raise ValueError(f"width_growth must be at least 1, got {width_growth!r}")
    if max_width and max_width < width:
        raise ValueError(f"max_width ({max_width}) must be 0 or at least width ({width})")
    widths = [int(round(width * width_growth**level)) for level in range(levels + 1)]
    return [min(w, max_width) for w in widths] if max_width else widths


def _check(image_size: int, channels: int, width: int, blocks_per_resolution: int) -> int:
    """Validate the shared arguments; return the number of 2x resolution steps between 4x4 and image_size."""
    if not isinstance(image_size, int) or image_size < 16 or image_size > 256 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two from 16 to 256, got {image_size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if width < 1:
        raise ValueError(f"width must be positive, got {width!r}")
    if blocks_per_resolution < 1:
        raise ValueError(f"blocks_per_resolution must be at least 1, got {blocks_per_resolution!r}")
    return int(math.log2(image_size // 4))


def build_generator(
    latent_dim: int,
    width: int,
    image_size: int,
    channels: int,
    blocks_per_resolution: int = 1,
    synchronized_bn: bool = False,
    width_growth: float = 1.0,
    max_width: int = 0,
    num_classes: int = 0,
    class_norm: bool = False,
) -> keras.Model:
    """The generator: latents (N, latent_dim) -> images (N, image_size, image_size, channels) in [-1, 1], float32.

    With ``num_classes`` > 0 its inputs are ``[z, label]`` (``label`` int32 of shape (N,), 0..K-1):
    the Dense layer reads ``z`` concatenated with the label's ``latent_dim``-wide embedding, and with
    ``class_norm`` every block's batch norms take their scale and offset from the label too
    (class-conditional batch norm, as SNGAN's and BigGAN's generators; :class:`UpBlock`).

    Dense -> 4x4 -> one upsampling UpBlock per doubling (plus ``blocks_per_resolution - 1``
    same-size blocks after each) -> BN -> ReLU -> Conv3x3 -> tanh. Each block has the channels of
    the resolution it outputs (:func:`level_widths`; ``width`` everywhere by default).
    ``synchronized_bn``: batch-norm statistics over the global batch of a tf.distribute strategy
    (Keras' ``synchronized=True``); the training maths then does not depend on the replica count.
    Inference (``training=False``) and the weights are the same either way.
    """
    steps = _check(image_size, channels, width, blocks_per_resolution)
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be positive, got {latent_dim!r}")
    widths = level_widths(width, steps, width_growth, max_width)
    z = keras.Input((latent_dim,), name="z")
    inputs, x = z, z
    norm_classes = num_classes if class_norm else 0
    if num_classes:
        label = keras.Input((), dtype="int32", name="label")
        embedded = layers.Embedding(num_classes, latent_dim, name=CLASS_EMBEDDING)(label)
        inputs, x = [z, label], layers.Concatenate(name="z_and_class")([z, embedded])
    x = layers.Dense(4 * 4 * widths[steps], name="dense")(x)
    x = layers.Reshape((4, 4, widths[steps]), name="reshape")(x)
    for step in range(steps):
        size, filters = 8 << step, widths[steps - 1 - step]
        blocks = [UpBlock(filters, synchronized_bn=synchronized_bn, num_classes=norm_classes, name=f"up_{size}")]
        blocks += [
            UpBlock(
                filters,
                upsample=False,
                synchronized_bn=synchronized_bn,
                num_classes=norm_classes,
                name=f"up_{size}_{extra}",
            )
            for extra in range(1, blocks_per_resolution)
        ]
        for block in blocks:
            x = block([x, label] if norm_classes else x)
    x = FusedBatchNormalization(synchronized=synchronized_bn, name="bn_out")(x)
    x = layers.ReLU(name="relu_out")(x)
    x = layers.Conv2D(channels, 3, padding="same", name="conv_out")(x)
    images = layers.Activation("tanh", dtype="float32", name="images")(x)
    return keras.Model(inputs, images, name="generator")


def build_discriminator(
    image_size: int,
    channels: int,
    width: int,
    blocks_per_resolution: int = 1,
    spectral_norm: bool = True,
    width_growth: float = 1.0,
    max_width: int = 0,
    num_classes: int = 0,
    minibatch_std: int = 0,
    class_head: bool = False,
) -> keras.Model:
    """The discriminator: images (N, image_size, image_size, channels) -> logits (N, 1), float32.

    With ``num_classes`` > 0 its inputs are ``[images, label]`` and the logit gains the projection
    ``<embed(label), pooled features>`` (the embedding spectrally normalized with the rest). With
    ``class_head`` too, its outputs are ``[logits, class_logits]``: class logits (N, num_classes) from
    a (spectrally normalized) Dense on the same pooled features, AC-GAN's auxiliary classifier.

    Optimized first DownBlock -> downsampling DownBlocks to 4x4 (each followed by
    ``blocks_per_resolution - 1`` same-size blocks) -> one more 4x4 block (as SNGAN's last blocks)
    -> ReLU -> global sum pooling -> Dense(1). ``spectral_norm`` wraps every conv and the Dense.
    Each block has the channels of the resolution it outputs (:func:`level_widths`).
    ``minibatch_std`` > 0 puts a :class:`~resgan.nn.layers.MinibatchStdDev` channel (groups of that
    size) before the 4x4 block, where ProGAN and StyleGAN put it.
    Images are expected in [-1, 1]. There is no batch normalization, so without ``minibatch_std``
    each example's logit depends only on that example; with it, on its group's spread too (the
    penalties' gradients then carry that term, as in StyleGAN2).
    """
    steps = _check(image_size, channels, width, blocks_per_resolution)
    if class_head and num_classes < 2:
        raise ValueError(f"class_head needs num_classes of at least 2, got {num_classes!r}")
    widths = level_widths(width, steps, width_growth, max_width)
    images = keras.Input((image_size, image_size, channels), name="images")
    x = images
    for step in range(steps):
        size, filters = image_size >> (step + 1), widths[step + 1]
        x = DownBlock(filters, spectral_norm, first=step == 0, name=f"down_{size}")(x)
        for extra in range(1, blocks_per_resolution):
            x = DownBlock(filters, spectral_norm, downsample=False, name=f"down_{size}_{extra}")(x)
    if minibatch_std:
        x = MinibatchStdDev(minibatch_std, name="minibatch_std")(x)
    x = DownBlock(widths[steps], spectral_norm, downsample=False, name="block_4")(x)
    x = layers.ReLU(name="relu_out")(x)
    features = GlobalSumPooling2D(name="sum_pool")(x)
    dense = layers.Dense(1, name="dense")
    x = (layers.SpectralNormalization(dense, name="sn_dense") if spectral_norm else dense)(features)
    inputs = images
    if num_classes:
        label = keras.Input((), dtype="int32", name="label")
        projection = ClassProjection(num_classes, spectral_norm=spectral_norm, name="projection")([features, label])
        inputs, x = [images, label], layers.Add(name="logit_and_projection")([x, projection])
    # SpectralNormalization casts back to its input's dtype; this makes the logits float32.
    logits = layers.Activation("linear", dtype="float32", name="logits")(x)
    if not class_head:
        return keras.Model(inputs, logits, name="discriminator")
    head = layers.Dense(num_classes, name="class_head")
    head = layers.SpectralNormalization(head, name="sn_class_head") if spectral_norm else head
    class_logits = layers.Activation("linear", dtype="float32", name="class_logits")(head(features))
    return keras.Model(inputs, [logits, class_logits], name="discriminator")


def generator_from_params(
    model, image_size: int, channels: int, synchronized_bn: bool = False, num_classes: int = 0
) -> keras.Model:
    """The generator that ``model`` (:class:`resgan.config.ModelParams`) describes; ``num_classes``
    of the data when ``model.conditional`` (ignored otherwise)."""
    return build_generator(
        latent_dim=model.latent_dim,
        width=model.width,
        image_size=image_size,
        channels=channels,
        blocks_per_resolution=model.blocks_per_resolution,
        synchronized_bn=synchronized_bn,
        width_growth=model.width_growth,
        max_width=model.max_width,
        num_classes=num_classes if model.conditional else 0,
        class_norm=model.class_norm,
    )


def self_conditioned(generator: keras.Model, prior) -> keras.Model:
    """A conditional ``generator`` (inputs ``[z, label]``) as an unconditional one: latents (N, D + 1)
    whose last coordinate draws the cluster with the frequencies ``prior`` (:class:`ClusterChoice`)."""
    latent = int(generator.inputs[0].shape[-1])
    z = keras.Input((latent + 1,), name="z")
    images = generator(ClusterChoice(prior, name="cluster_choice")(z))
    return keras.Model(z, images, name="self_conditioned_generator")


def discriminator_from_params(
    model, image_size: int, channels: int, num_classes: int = 0, class_head: bool = False
) -> keras.Model:
    """The discriminator that ``model`` (:class:`resgan.config.ModelParams`) describes (``d_width`` or
    ``width``); ``class_head``: with AC-GAN's class logits too (``train.class_loss`` > 0)."""
    classes = num_classes if model.conditional else 0
    return build_discriminator(
        image_size=image_size,
        channels=channels,
        width=model.d_width or model.width,
        blocks_per_resolution=model.blocks_per_resolution,
        spectral_norm=model.spectral_norm,
        width_growth=model.width_growth,
        max_width=model.max_width,
        num_classes=classes,
        minibatch_std=model.minibatch_std,
        class_head=class_head and bool(classes),
    )
