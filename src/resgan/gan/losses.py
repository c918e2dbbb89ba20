"""GAN losses as pure functions of discriminator logits.

Every function returns a PER-EXAMPLE loss of shape (N,) in float32; the train step averages it with
``tf.nn.compute_average_loss`` so the mean is right under tf.distribute. Logits of shape (N, 1) are
flattened. ``sigmoid(l)`` is D's probability that an image is real; with ``softplus(l) = log(1 + e^l)``:
``-log sigmoid(l) = softplus(-l)`` and ``-log(1 - sigmoid(l)) = softplus(l)``, computed without overflow.
Names follow ``<kind>_discriminator_loss`` / ``<kind>_generator_loss``; ``LOSSES`` maps ``train.loss``.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

LossFn = Callable[..., tf.Tensor]


def _flat(logits) -> tf.Tensor:
    """(N,) or (N, 1) logits of any float dtype -> (N,) float32."""
    return tf.reshape(tf.cast(logits, tf.float32), [-1])


def minimax_discriminator_loss(real_logits, fake_logits) -> tf.Tensor:
    """-(log D(x) + log(1 - D(G(z)))) per example: sigmoid cross-entropy with real=1, fake=0."""
    real, fake = _flat(real_logits), _flat(fake_logits)
    return tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.ones_like(real), logits=real
    ) + tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(fake), logits=fake)


def minimax_generator_loss(fake_logits) -> tf.Tensor:
    """log(1 - D(G(z))) = -softplus(l) per example: the original, saturating objective G minimizes."""
    return -tf.nn.softplus(_flat(fake_logits))


def non_saturating_discriminator_loss(real_logits, fake_logits) -> tf.Tensor:
    """The same as :func:`minimax_discriminator_loss` (only G's loss differs)."""
    return minimax_discriminator_loss(real_logits, fake_logits)


def non_saturating_generator_loss(fake_logits) -> tf.Tensor:
    """-log D(G(z)) = softplus(-l) per example: strong gradients while D rejects the fakes."""
    return tf.nn.softplus(-_flat(fake_logits))


def hinge_discriminator_loss(real_logits, fake_logits) -> tf.Tensor:
    """relu(1 - D(x)) + relu(1 + D(G(z))) per example, on logits."""
    return tf.nn.relu(1.0 - _flat(real_logits)) + tf.nn.relu(1.0 + _flat(fake_logits))


def hinge_generator_loss(fake_logits) -> tf.Tensor:
    """-D(G(z)) per example."""
    return -_flat(fake_logits)


def wasserstein_discriminator_loss(real_logits, fake_logits) -> tf.Tensor:
    """D(G(z)) - D(x) per example (the critic's loss; add ``gp_weight * gradient_penalty``)."""
    return _flat(fake_logits) - _flat(real_logits)


def wasserstein_generator_loss(fake_logits) -> tf.Tensor:
    """-D(G(z)) per example."""
    return -_flat(fake_logits)


def gradient_penalty(discriminator: Callable, real, fake, training: bool = True) -> tf.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017) per example: (||grad_x D(x_hat)||_2 - 1)^2, shape (N,).

    ``x_hat = eps * real + (1 - eps) * fake`` with ``eps ~ Uniform[0, 1]`` drawn per example.
    ``discriminator`` is called as ``discriminator(x, training=training)``; it must treat examples
    independently (no batch norm), since the gradient of the summed logits is taken per example.
    Differentiable w.r.t. the discriminator's weights when called under an outer GradientTape.
    """
    real = tf.cast(real, tf.float32)
    fake = tf.cast(fake, tf.float32)
    eps = tf.random.uniform([tf.shape(real)[0]] + [1] * (real.shape.rank - 1))  # (N, 1, 1, 1) for images
    x_hat = eps * real + (1.0 - eps) * fake
    with tf.GradientTape() as tape:  # its own tape: never reuse the tape of a loss
        tape.watch(x_hat)
        # Summing over the batch gives each example's own gradient, as examples are independent.
        total = tf.reduce_sum(tf.cast(discriminator(x_hat, training=training), tf.float32))
    grads = tape.gradient(total, x_hat)
    grads = tf.reshape(grads, [tf.shape(grads)[0], -1])
    # 1e-12 keeps the gradient of sqrt finite where the input gradient is exactly zero.
    norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=1) + 1e-12)
    return tf.square(norm - 1.0)


def auxiliary_class_loss(class_logits, labels) -> tf.Tensor:
    """AC-GAN's class loss (Odena et al. 2017) per example: the softmax cross-entropy of the
    discriminator's class logits (N, K) against the integer ``labels`` (N,)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(class_logits, tf.float32)
    )


LOSSES: dict[str, tuple[LossFn, LossFn]] = {
    "minimax": (minimax_discriminator_loss, minimax_generator_loss),
    "non_saturating": (non_saturating_discriminator_loss, non_saturating_generator_loss),
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
    "wasserstein_gp": (wasserstein_discriminator_loss, wasserstein_generator_loss),
}


def get_losses(name: str) -> tuple[LossFn, LossFn]:
    """(discriminator_loss, generator_loss) for a ``train.loss`` name; ValueError for an unknown name.

    ``wasserstein_gp`` also needs :func:`gradient_penalty` added to the discriminator's loss.
    """
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}") from None
