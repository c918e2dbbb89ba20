"""The peer of the photographs benchmark: a class-conditional DCGAN trained the way keras-io teaches it.

    python -m benchmarks.textbook_cgan --data D --out O --images N    (prints BENCH_RESULT {json} last)

Written in our own words from keras-io's ``dcgan_overriding_train_step.py`` (the DCGAN: strided 4x4
convolutions with LeakyReLU 0.2, transposed convolutions up, dropout before D's last layer, binary
cross-entropy, Adam 1e-4 with Keras' default betas, the labels' random noise) and ``conditional_gan.py``
(the class as a one-hot vector beside the latent, and as one-hot image channels beside D's input; a
batch of 64). Two changes for 32x32 colour photographs, said here so that nobody mistakes them for the
tutorial's: G starts at 4x4 and its channels fall with resolution (256, 128, 64, the DCGAN paper's
order; the tutorial's 128, 256, 512 at 64x64 would cost about 10x our generator's multiply-adds), and
its output is ``tanh`` on images in [-1, 1] (the paper's choice; the tutorial uses ``sigmoid`` on
[0, 1]), so that :func:`resgan.sampling.generate_images` turns it into pixels as it does ours. D ends
in a logit and the loss takes logits (the same maths as the tutorial's sigmoid then cross-entropy,
without its float rounding). float32, ``fit`` on a tf.data pipeline, every Keras default otherwise.
No EMA, no spectral normalization, no augmentation: what the textbook does not teach.

The generator takes ``[z, label]`` (``label`` an int32 class), like ours; ``O/generator.keras``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

LATENT_DIM, BATCH_SIZE, LR = 128, 64, 1e-4


def build_generator(num_classes: int, latent_dim: int = LATENT_DIM, size: int = 32, channels: int = 3):
    import keras
    from keras import layers

    z = keras.Input((latent_dim,), name="z")
    label = keras.Input((), dtype="int32", name="label")
    one_hot = layers.CategoryEncoding(num_classes, output_mode="one_hot", name="one_hot")(label)
    x = layers.Concatenate()([z, one_hot])
    start = size // 8  # three 2x upsamplings
    x = layers.Dense(start * start * 256)(x)
    x = layers.Reshape((start, start, 256))(x)
    for filters in (256, 128, 64):
        x = layers.Conv2DTranspose(filters, kernel_size=4, strides=2, padding="same")(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
    images = layers.Conv2D(channels, kernel_size=5, padding="same", activation="tanh")(x)
    return keras.Model([z, label], images, name="textbook_generator")


def build_discriminator(num_classes: int, size: int = 32, channels: int = 3):
    import keras
    from keras import layers

    images = keras.Input((size, size, channels), name="images")
    label = keras.Input((), dtype="int32", name="label")
    one_hot = layers.CategoryEncoding(num_classes, output_mode="one_hot")(label)
    planes = layers.UpSampling2D(size)(layers.Reshape((1, 1, num_classes))(one_hot))  # a constant plane a class
    x = layers.Concatenate()([images, planes])
    for filters in (64, 128, 128):
        x = layers.Conv2D(filters, kernel_size=4, strides=2, padding="same")(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.2)(x)
    return keras.Model([images, label], layers.Dense(1)(x), name="textbook_discriminator")


def make_gan(num_classes: int, size: int = 32, channels: int = 3, seed: int = 0):
    """The conditional GAN as a ``keras.Model`` with its own ``train_step`` (keras-io's pattern), compiled."""
    import keras
    import tensorflow as tf

    class ConditionalGAN(keras.Model):
        def __init__(self, generator, discriminator):
            super().__init__()
            self.generator, self.discriminator = generator, discriminator
            self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
            self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
            self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
            self.seed_generator = keras.random.SeedGenerator(seed)

        @property
        def metrics(self):
            return [self.d_loss_tracker, self.g_loss_tracker]

        def train_step(self, data):
            real, labels = data
            batch = tf.shape(real)[0]
            z = keras.random.normal((batch, LATENT_DIM), seed=self.seed_generator)
            fake = self.generator([z, labels])
            combined = tf.concat([fake, real], axis=0)
            combined_labels = tf.concat([labels, labels], axis=0)
            # The tutorial's targets: 1 for generated, 0 for real, plus uniform noise of 0.05.
            targets = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], axis=0)
            targets += 0.05 * keras.random.uniform(tf.shape(targets), seed=self.seed_generator)
            with tf.GradientTape() as tape:
                d_loss = self.loss_fn(targets, self.discriminator([combined, combined_labels], training=True))
            grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
            self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))

            z = keras.random.normal((batch, LATENT_DIM), seed=self.seed_generator)
            with tf.GradientTape() as tape:
                logits = self.discriminator([self.generator([z, labels], training=True), labels], training=True)
                g_loss = self.loss_fn(tf.zeros((batch, 1)), logits)  # "all real"
            grads = tape.gradient(g_loss, self.generator.trainable_weights)
            self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
            self.d_loss_tracker.update_state(d_loss)
            self.g_loss_tracker.update_state(g_loss)
            return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

    keras.utils.set_random_seed(seed)
    gan = ConditionalGAN(
        build_generator(num_classes, size=size, channels=channels), build_discriminator(num_classes, size, channels)
    )
    gan.compile()
    gan.d_optimizer = keras.optimizers.Adam(LR)
    gan.g_optimizer = keras.optimizers.Adam(LR)
    return gan


def train(data: Path, out: Path, images: int, seed: int = 0) -> dict:
    """Train on ``data``'s train split (prepared: uint8 NHWC, labels) for ``images`` training images
    (``images // 64`` steps); write ``out/generator.keras``; return the steps, wall time and img/s."""
    import numpy as np
    import tensorflow as tf

    from resgan.data.prepared import load_split

    real, labels = load_split(data, "train")
    keep = labels >= 0
    real, labels = real[keep], labels[keep].astype(np.int32)
    steps = max(1, images // BATCH_SIZE)
    pipeline = (
        tf.data.Dataset.from_tensor_slices((real, labels))
        .shuffle(len(real), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(BATCH_SIZE, drop_remainder=True)
        .map(lambda x, y: (tf.cast(x, tf.float32) / 127.5 - 1.0, y))
        .prefetch(tf.data.AUTOTUNE)
    )
    gan = make_gan(int(labels.max()) + 1, real.shape[1], real.shape[3], seed)
    start = time.perf_counter()
    history = gan.fit(pipeline, steps_per_epoch=steps, epochs=1, verbose=2)
    wall = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    gan.generator.save(out / "generator.keras")
    return {
        "steps": steps,
        "images": steps * BATCH_SIZE,
        "wall_s": round(wall, 1),
        "img_per_s": round(steps * BATCH_SIZE / wall, 1),
        "precision": "float32",
        "loss_d": float(history.history["d_loss"][-1]),
        "loss_g": float(history.history["g_loss"][-1]),
    }


def main(argv: list[str] | None = None) -> None:
    from benchmarks.child import RESULT_PREFIX, peak_rss_mib

    parser = argparse.ArgumentParser(prog="python -m benchmarks.textbook_cgan")
    parser.add_argument("--data", type=Path, required=True, help="prepared data (train.npz with labels)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, required=True, help="training images (steps of 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = train(args.data, args.out, args.images, args.seed)
    print(RESULT_PREFIX + json.dumps({"max_rss_mib": peak_rss_mib(), "result": result}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
