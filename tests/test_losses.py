"""GAN losses against numbers computed by hand; the gradient penalty's value, gradient and interpolation."""

from __future__ import annotations

import math
import typing

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from resgan.config import TrainParams
from resgan.gan import losses

REAL = [0.0, 2.0, -1.0]
FAKE = [1.0, -2.0, 0.5]


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def check(tensor, expected) -> None:
    assert tensor.shape == (len(expected),) and tensor.dtype == tf.float32
    np.testing.assert_allclose(tensor.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_softplus_reference_values():
    # log(1 + e^0) = log 2; a check of the helper the other tests trust
    assert softplus(0.0) == pytest.approx(0.6931471805599453)
    assert softplus(2.0) == pytest.approx(2.1269280110429727)


def test_minimax_and_non_saturating_discriminator_loss():
    # -(log sigmoid(r) + log(1 - sigmoid(f))) = softplus(-r) + softplus(f)
    expected = [softplus(-r) + softplus(f) for r, f in zip(REAL, FAKE)]
    check(losses.minimax_discriminator_loss(REAL, FAKE), expected)
    check(losses.non_saturating_discriminator_loss(REAL, FAKE), expected)
    # r = 0, f = 1: log 2 + log(1 + e) = 0.693147 + 1.313262
    assert float(losses.minimax_discriminator_loss([0.0], [1.0])[0]) == pytest.approx(2.006409, abs=1e-6)


def test_minimax_generator_loss_is_log_one_minus_d():
    expected = [math.log(1 - 1 / (1 + math.exp(-f))) for f in FAKE]  # log(1 - sigmoid(f))
    check(losses.minimax_generator_loss(FAKE), expected)
    check(losses.minimax_generator_loss([0.0]), [-math.log(2)])


def test_non_saturating_generator_loss_is_minus_log_d():
    expected = [-math.log(1 / (1 + math.exp(-f))) for f in FAKE]  # -log sigmoid(f)
    check(losses.non_saturating_generator_loss(FAKE), expected)


def test_generator_gradients_saturate_only_for_minimax():
    # d/dl log(1 - sigmoid(l)) = -sigmoid(l): tiny when D confidently rejects (l = -5);
    # d/dl -log sigmoid(l) = sigmoid(l) - 1: close to -1 there. Both push l up (negative gradient).
    logits = tf.constant([-5.0, 0.0])
    for fn, expected in [
        (losses.minimax_generator_loss, [-1 / (1 + math.exp(5)), -0.5]),
        (losses.non_saturating_generator_loss, [1 / (1 + math.exp(5)) - 1, -0.5]),
    ]:
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = tf.reduce_sum(fn(logits))
        np.testing.assert_allclose(tape.gradient(loss, logits).numpy(), expected, rtol=1e-5)


def test_hinge_losses():
    # relu(1 - r) = [1, 0, 2]; relu(1 + f) = [2, 0, 1.5]
    check(losses.hinge_discriminator_loss(REAL, FAKE), [3.0, 0.0, 3.5])
    check(losses.hinge_generator_loss(FAKE), [-1.0, 2.0, -0.5])


def test_wasserstein_losses():
    check(losses.wasserstein_discriminator_loss(REAL, FAKE), [1.0, -4.0, 1.5])
    check(losses.wasserstein_generator_loss(FAKE), [-1.0, 2.0, -0.5])


def test_logits_of_shape_n_by_1_and_low_precision_give_float32_n():
    real = tf.constant([[0.0], [2.0], [-1.0]], tf.bfloat16)
    fake = tf.constant([[1.0], [-2.0], [0.5]], tf.float16)
    for d_loss, g_loss in losses.LOSSES.values():
        assert d_loss(real, fake).shape == (3,) and d_loss(real, fake).dtype == tf.float32
        assert g_loss(fake).shape == (3,) and g_loss(fake).dtype == tf.float32
    check(losses.hinge_discriminator_loss(real, fake), [3.0, 0.0, 3.5])  # these values are exact in bf16


def test_extreme_logits_stay_finite():
    # a naive log(sigmoid(l)) gives log(0) = -inf at l = -200 in float32
    check(losses.minimax_discriminator_loss([200.0, -200.0], [-200.0, 200.0]), [0.0, 400.0])
    check(losses.non_saturating_generator_loss([-200.0]), [200.0])
    check(losses.minimax_generator_loss([200.0]), [-200.0])


def test_loss_names_match_the_config_and_unknown_names_fail():
    names = set(typing.get_args(TrainParams.model_fields["loss"].annotation))
    assert set(losses.LOSSES) == names
    assert losses.get_losses("hinge") == (losses.hinge_discriminator_loss, losses.hinge_generator_loss)
    with pytest.raises(ValueError, match="hinge"):
        losses.get_losses("hinje")


def _linear_critic(w: tf.Variable, seen: list):
    def critic(x, training):
        seen.append(training)
        return tf.reduce_sum(x * w, axis=[1, 2, 3])[:, None]  # (N, 1), like the real discriminator

    return critic


def test_gradient_penalty_of_a_linear_critic_is_exact():
    # D(x) = sum(w * x) has gradient w everywhere, so GP = (||w|| - 1)^2 whatever eps is.
    rng = np.random.default_rng(0)
    w = tf.Variable(rng.normal(size=(4, 4, 2)).astype("float32"))
    norm = float(np.linalg.norm(w.numpy()))
    seen = []
    real = rng.normal(size=(5, 4, 4, 2)).astype("float32")
    fake = rng.normal(size=(5, 4, 4, 2)).astype("float32")
    penalty = losses.gradient_penalty(_linear_critic(w, seen), real, fake, training=False)
    check(penalty, [(norm - 1) ** 2] * 5)
    assert seen == [False]


def test_gradient_penalty_is_differentiable_wrt_critic_weights():
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||, per example; summed over 3 examples.
    w = tf.Variable(np.array([3.0, 4.0], "float32").reshape(1, 1, 2))  # ||w|| = 5
    x = np.ones((3, 1, 1, 2), "float32")
    with tf.GradientTape() as tape:
        penalty = tf.reduce_sum(losses.gradient_penalty(_linear_critic(w, []), x, -x))
    assert float(penalty) == pytest.approx(3 * 16.0)
    np.testing.assert_allclose(tape.gradient(penalty, w).numpy().ravel(), [3 * 2 * 4 * 0.6, 3 * 2 * 4 * 0.8], rtol=1e-5)


def test_gradient_penalty_draws_uniform_eps_per_example():
    # With real = 1, fake = 0 and D(x) = x^2 / 2: x_hat = eps, grad = eps, GP = (eps - 1)^2,
    # so eps = 1 - sqrt(GP) can be read back for every example.
    keras.utils.set_random_seed(0)
    n = 20000
    penalty = losses.gradient_penalty(
        lambda x, training: 0.5 * tf.square(x), np.ones((n, 1, 1, 1), "float32"), np.zeros((n, 1, 1, 1), "float32")
    )
    eps = 1.0 - np.sqrt(penalty.numpy())
    assert eps.min() >= -1e-6 and eps.max() <= 1 + 1e-6
    assert eps.mean() == pytest.approx(0.5, abs=0.01)  # the mean's standard error is 0.002
    assert eps.var() == pytest.approx(1 / 12, abs=0.005)
    assert len(np.unique(np.round(eps, 5))) > n // 2  # a fresh eps per example, not one per batch
    assert scipy.stats.kstest(np.clip(eps, 0, 1), "uniform").pvalue > 1e-3


def test_gradient_penalty_on_the_real_discriminator():
    from resgan.nn.networks import build_discriminator

    keras.utils.set_random_seed(1)
    discriminator = build_discriminator(16, 1, 8, spectral_norm=True)
    rng = np.random.default_rng(1)
    real = rng.uniform(-1, 1, size=(4, 16, 16, 1)).astype("float32")
    fake = rng.uniform(-1, 1, size=(4, 16, 16, 1)).astype("float32")
    with tf.GradientTape() as tape:
        penalty = losses.gradient_penalty(discriminator, real, fake)
        total = tf.reduce_mean(penalty)
    assert penalty.shape == (4,) and np.isfinite(penalty.numpy()).all() and (penalty.numpy() >= 0).all()
    # The penalty reaches every kernel; biases only shift a piecewise-linear D, so the input gradient
    # does not depend on them (zero, or None for the last Dense): the train step adds the D loss anyway.
    kernels = [w for w in discriminator.trainable_weights if w.name == "kernel"]
    assert len(kernels) == 9
    for grad in tape.gradient(total, kernels):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0
