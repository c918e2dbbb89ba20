"""The ResNet generator and discriminator (SNGAN / BigGAN layout, one width for every block).

Both end in a float32 layer, so images and logits are float32 under the ``mixed_bfloat16`` and
``mixed_float16`` policies (losses and image writers expect float32).
"""

from __future__ import annotations

import math

import keras
from keras import layers

from resgan.nn.layers import DownBlock, GlobalSumPooling2D, UpBlock


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


def build_generator(latent_dim: int, width: int, image_size: int, channels: int,
                    blocks_per_resolution: int = 1, synchronized_bn: bool = False) -> keras.Model:
    """The generator: latents (N, latent_dim) -> images (N, image_size, image_size, channels) in [-1, 1], float32.

    Dense -> 4x4xwidth -> one upsampling UpBlock per doubling (plus ``blocks_per_resolution - 1``
    same-size blocks after each) -> BN -> ReLU -> Conv3x3 -> tanh.
    ``synchronized_bn``: batch-norm statistics over the global batch of a tf.distribute strategy
    (Keras' ``synchronized=True``); the training maths then does not depend on the replica count.
    Inference (``training=False``) and the weights are the same either way.
    """
    steps = _check(image_size, channels, width, blocks_per_resolution)
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be positive, got {latent_dim!r}")
    z = keras.Input((latent_dim,), name="z")
    x = layers.Dense(4 * 4 * width, name="dense")(z)
    x = layers.Reshape((4, 4, width), name="reshape")(x)
    for step in range(steps):
        size = 8 << step
        x = UpBlock(width, synchronized_bn=synchronized_bn, name=f"up_{size}")(x)
        for extra in range(1, blocks_per_resolution):
            x = UpBlock(width, upsample=False, synchronized_bn=synchronized_bn, name=f"up_{size}_{extra}")(x)
    x = layers.BatchNormalization(synchronized=synchronized_bn, name="bn_out")(x)
    x = layers.ReLU(name="relu_out")(x)
    x = layers.Conv2D(channels, 3, padding="same", name="conv_out")(x)
    images = layers.Activation("tanh", dtype="float32", name="images")(x)
    return keras.Model(z, images, name="generator")


def build_discriminator(image_size: int, channels: int, width: int, blocks_per_resolution: int = 1,
                        spectral_norm: bool = True) -> keras.Model:
    """The discriminator: images (N, image_size, image_size, channels) -> logits (N, 1), float32.

    Optimized first DownBlock -> downsampling DownBlocks to 4x4 (each followed by
    ``blocks_per_resolution - 1`` same-size blocks) -> one more 4x4 block (as SNGAN's last blocks)
    -> ReLU -> global sum pooling -> Dense(1). ``spectral_norm`` wraps every conv and the Dense.
    Images are expected in [-1, 1]. There is no batch normalization, so each example's logit
    depends only on that example (the gradient penalty relies on it).
    """
    steps = _check(image_size, channels, width, blocks_per_resolution)
    images = keras.Input((image_size, image_size, channels), name="images")
    x = images
    for step in range(steps):
        size = image_size >> (step + 1)
        x = DownBlock(width, spectral_norm, first=step == 0, name=f"down_{size}")(x)
        for extra in range(1, blocks_per_resolution):
            x = DownBlock(width, spectral_norm, downsample=False, name=f"down_{size}_{extra}")(x)
    x = DownBlock(width, spectral_norm, downsample=False, name="block_4")(x)
    x = layers.ReLU(name="relu_out")(x)
    x = GlobalSumPooling2D(name="sum_pool")(x)
    dense = layers.Dense(1, name="dense")
    x = (layers.SpectralNormalization(dense, name="sn_dense") if spectral_norm else dense)(x)
    # SpectralNormalization casts back to its input's dtype; this makes the logits float32.
    logits = layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(images, logits, name="discriminator")
