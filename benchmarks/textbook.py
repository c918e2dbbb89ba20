"""The baseline: our networks trained the textbook Keras way, to measure our train step against.

As in keras-io's ``dcgan_overriding_train_step.py``: a ``keras.Model`` whose ``train_step`` makes
one discriminator update on real and generated images (concatenated into one batch) and one
generator update, trained with ``fit`` on a float32 array, float32, every Keras default
(``jit_compile="auto"``, which is off on a CPU-only machine; ``steps_per_execution=1``). The loss
is our hinge loss so both do the same maths; there is no DiffAugment and no EMA here.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class TextbookGAN(keras.Model):
    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int):
        super().__init__()
        self.generator, self.discriminator, self.latent_dim = generator, discriminator, latent_dim
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.seed_generator = keras.random.SeedGenerator(1337)

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def train_step(self, real_images):
        batch = tf.shape(real_images)[0]
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        fake_images = self.generator(z, training=True)
        combined = tf.concat([real_images, fake_images], axis=0)
        with tf.GradientTape() as tape:
            logits = self.discriminator(combined, training=True)
            real_logits, fake_logits = logits[:batch], logits[batch:]
            d_loss = tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))

        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = -tf.reduce_mean(self.discriminator(self.generator(z, training=True), training=True))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))

        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

    def build(self, input_shape=None):  # the networks are built already
        self.built = True


def make_textbook_gan(
    generator: keras.Model, discriminator: keras.Model, latent_dim: int, lr: float = 2e-4
) -> TextbookGAN:
    gan = TextbookGAN(generator, discriminator, latent_dim)
    gan.compile(
        d_optimizer=keras.optimizers.Adam(lr, beta_1=0.0, beta_2=0.9),
        g_optimizer=keras.optimizers.Adam(lr, beta_1=0.0, beta_2=0.9),
    )
    return gan
