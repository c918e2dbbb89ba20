"""The GAN train step (what one step changes, every loss, d_steps, bfloat16), to_uint8 and checkpoints."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_params

from resgan.errors import ResganError
from resgan.gan import checkpoint
from resgan.gan.trainer import GAN, Shapes
from resgan.sampling import to_uint8

SHAPES = Shapes(image_size=16, channels=1)
BATCH = 8  # tiny_params' train.batch_size


def make_gan(seed: int = 0, model: dict | None = None, **train) -> GAN:
    """A tiny GAN; DiffAugment off unless asked for, so a step's only randomness is the GAN's own RNG."""
    p = tiny_params(model=model or {}, train={"diffaugment": "", "seed": seed, **train})
    keras.utils.set_random_seed(seed)
    return GAN(p.model, p.train, SHAPES)


def numbered_batches(count: int) -> tf.data.Dataset:
    """``count`` real batches; every pixel of batch i is -1 + 0.1 * i, so a batch tells its position."""
    values = np.repeat(-1.0 + 0.1 * np.arange(count, dtype=np.float32), BATCH)
    images = np.broadcast_to(values[:, None, None, None], (count * BATCH, 16, 16, 1)).copy()
    return tf.data.Dataset.from_tensor_slices(images).batch(BATCH)


def position(batch) -> int:
    return int(round((float(np.asarray(batch).flat[0]) + 1.0) / 0.1))


def snapshot(variables) -> list[np.ndarray]:
    return [np.array(v.numpy(), copy=True) for v in variables]


def all_state(gan: GAN) -> dict[str, list[np.ndarray]]:
    """Every piece of training state, listed here independently of checkpoint.py."""
    return {
        "generator": snapshot(gan.generator.weights),
        "ema_generator": snapshot(gan.ema_generator.weights),
        "discriminator": snapshot(gan.discriminator.weights),
        "g_optimizer": snapshot(gan.g_optimizer.variables),
        "d_optimizer": snapshot(gan.d_optimizer.variables),
        "step": [gan.step.numpy()],
        "rng": [gan.rng.state.numpy()],
    }


@pytest.fixture
def eager():
    """Run ``train_step`` eagerly (TensorFlow's own switch): the same Python, ~10x cheaper than tracing
    for a single step. The compiled path is covered by the first test below and by every train-stage test."""
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


@pytest.fixture
def float32_policy_after():
    """Whatever a test does to the global dtype policy, the next test starts with float32."""
    yield
    keras.mixed_precision.set_global_policy("float32")


# ---- one train step ------------------------------------------------------------------------------


def test_one_step_updates_d_and_g_and_averages_g_into_the_ema():
    decay, lr = 0.9, 2e-4
    assert tf.config.functions_run_eagerly() is False  # this test runs the compiled step
    gan = make_gan(ema_decay=decay, ema_start=0, ema_rampup=0.0)  # the fixed decay; the ramp is tested below
    g_before = snapshot(gan.generator.trainable_weights)
    d_before = snapshot(gan.discriminator.trainable_weights)
    ema_before = snapshot(gan.ema_generator.trainable_weights)
    for ema, g in zip(ema_before, g_before):  # the EMA starts as a copy of G
        np.testing.assert_array_equal(ema, g)

    iterator = iter(numbered_batches(3))
    out = gan.train_step(iterator)

    assert int(gan.step.numpy()) == 1
    assert int(gan.d_optimizer.iterations.numpy()) == 1 and int(gan.g_optimizer.iterations.numpy()) == 1
    assert position(next(iterator)) == 1  # d_steps=1: one real batch consumed
    assert set(out) == {"loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g"}
    assert all(np.isfinite(float(v)) for v in out.values())

    d_after = snapshot(gan.discriminator.trainable_weights)
    g_after = snapshot(gan.generator.trainable_weights)
    for name, before, after in (("D", d_before, d_after), ("G", g_before, g_after)):
        changed = [not np.array_equal(b, a) for b, a in zip(before, after)]
        assert all(changed), f"{name}: {changed.count(False)} of {len(changed)} trainable weights did not move"
    # With beta1 = 0 Adam's first update is lr * g / sqrt(g^2) = lr * sign(g): G's weights move by lr.
    # (D's kernels also get rescaled by spectral normalization, so D has no such bound.)
    steps = np.concatenate([np.abs(a - b).ravel() for b, a in zip(g_before, g_after)])
    assert steps.max() <= lr * 1.001
    assert np.median(steps) == pytest.approx(lr, rel=1e-2)

    ema_after = snapshot(gan.ema_generator.trainable_weights)
    for old, new_g, ema in zip(ema_before, g_after, ema_after):
        expected = decay * old + (1.0 - decay) * new_g
        np.testing.assert_allclose(ema, expected, rtol=1e-6, atol=1e-7)
    assert not np.array_equal(ema_after[0], g_after[0])  # an average, not a copy
    # Batch-norm statistics are copied, not averaged.
    for ema, g in zip(gan.ema_generator.non_trainable_weights, gan.generator.non_trainable_weights):
        np.testing.assert_array_equal(ema.numpy(), g.numpy())


def test_before_ema_start_the_ema_is_an_exact_copy_of_g(eager):
    gan = make_gan(ema_decay=0.9, ema_start=5)
    gan.train_step(iter(numbered_batches(2)))
    assert int(gan.step.numpy()) == 1
    for ema, g in zip(gan.ema_generator.weights, gan.generator.weights):
        np.testing.assert_array_equal(ema.numpy(), g.numpy())


def test_ema_decay_ramps_its_half_life_up_with_the_steps_seen():
    gan = make_gan(ema_decay=0.999, ema_start=10, ema_rampup=0.05)
    half_life = np.log(0.5) / np.log(0.999)  # 692.8 steps
    for step, expected in [
        (0, 0.0),
        (9, 0.0),  # before ema_start: a copy
        (10, 0.5 ** (1 / 0.05)),  # 1 step seen: half-life 0.05 steps
        (209, 0.5 ** (1 / 10.0)),  # 200 seen: 10 steps
        (20_000, 0.999),
    ]:  # 19,991 seen: 0.05 x that is past the 693-step cap
        assert float(gan.ema_decay_at(tf.constant(step, tf.int64))) == pytest.approx(expected, rel=1e-5), step
    assert 0.05 * (20_000 - 10 + 1) > half_life
    fixed = make_gan(ema_decay=0.999, ema_start=10, ema_rampup=0.0)
    assert float(fixed.ema_decay_at(tf.constant(10, tf.int64))) == pytest.approx(0.999)


@pytest.mark.parametrize(
    "decay, expected",
    [
        ("none", [1.0, 1.0, 1.0, 1.0, 1.0]),
        ("linear", [1.0, 1.0, 0.5, 0.1, 0.0]),  # constant to step 50 of 100, then straight down to 0 at 100
        ("cosine", [1.0, 1.0, 0.5, 0.5 * (1 + np.cos(np.pi * 0.9)), 0.0]),
    ],
)
def test_learning_rate_factor_follows_the_schedule_after_its_start(decay, expected):
    gan = make_gan(steps=100, lr_decay=decay, lr_decay_start=0.5)
    got = [float(gan.lr_factor_at(tf.constant(step, tf.int64))) for step in (0, 50, 75, 95, 100)]
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(
    "decay, expected",
    [
        ("linear", [1.0, 1.0, 0.625, 0.325, 0.25]),  # from step 50 of 100 straight down to a quarter at 100
        ("cosine", [1.0, 1.0, 0.625, 0.25 + 0.375 * (1 + np.cos(np.pi * 0.9)), 0.25]),
    ],
)
def test_a_decay_floor_keeps_that_share_of_the_rates_at_the_last_step(decay, expected):
    gan = make_gan(steps=100, lr_decay=decay, lr_decay_start=0.5, lr_decay_floor=0.25)
    got = [float(gan.lr_factor_at(tf.constant(step, tf.int64))) for step in (0, 50, 75, 95, 100)]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_a_decayed_step_moves_g_by_the_decayed_rate_and_reports_it():
    """With beta1 = 0 Adam's first update is lr * sign(g): at step 30 of 40 with linear decay from the
    start, G must move by a quarter of its rate and D's optimizer must hold a quarter of its own."""
    lr = 2e-4
    gan = make_gan(steps=40, lr_g=lr, lr_d=lr, lr_decay="linear", lr_decay_start=0.0)
    gan.step.assign(30)
    g_before = snapshot(gan.generator.trainable_weights)
    out = gan.train_step(iter(numbered_batches(2)))
    moved = np.concatenate([np.abs(a - b).ravel() for b, a in zip(g_before, snapshot(gan.generator.trainable_weights))])
    assert np.median(moved) == pytest.approx(lr / 4, rel=1e-2)
    assert moved.max() <= lr / 4 * 1.001
    assert float(out["lr_g"]) == pytest.approx(lr / 4)
    assert float(gan.d_optimizer.learning_rate.numpy()) == pytest.approx(lr / 4)
    assert len(gan.g_optimizer.variables) == len(make_gan().g_optimizer.variables)  # checkpoints keep their layout


@pytest.mark.slow  # trains beyond a step or two
@pytest.mark.parametrize("rampup, closer_to_g", [(0.05, True), (0.0, False)])
def test_after_a_short_run_the_ema_generator_is_closer_to_g_than_to_its_initial_weights(rampup, closer_to_g):
    """The default EMA (decay 0.999, ramped) must not export mostly initial weights after 200 steps;
    without the ramp 0.999^200 = 82% of the initial weights remain, which is what the second case shows."""
    gan = make_gan(ema_decay=0.999, ema_start=0, ema_rampup=rampup, lr_g=1e-3)
    initial = snapshot(gan.ema_generator.trainable_weights)
    iterator = iter(numbered_batches(4).repeat())
    for _ in range(200):
        gan.train_step(iterator)
    ema, g = snapshot(gan.ema_generator.trainable_weights), snapshot(gan.generator.trainable_weights)
    to_g = np.sqrt(sum(np.sum((e - w) ** 2) for e, w in zip(ema, g)))
    to_initial = np.sqrt(sum(np.sum((e - w) ** 2) for e, w in zip(ema, initial)))
    assert bool(to_g < to_initial) == closer_to_g, (to_g, to_initial)


@pytest.mark.parametrize("loss", ["minimax", "non_saturating", "hinge", "wasserstein_gp"])
def test_every_loss_trains_a_step_with_finite_figures(loss, eager):
    gan = make_gan(loss=loss, diffaugment="color,translation,cutout")
    figures = {k: float(v) for k, v in gan.train_step(iter(numbered_batches(2).repeat())).items()}
    assert all(np.isfinite(v) for v in figures.values()), figures
    assert figures["grad_norm_d"] > 0 and figures["grad_norm_g"] > 0
    # Signs each objective fixes whatever the logits are.
    if loss in ("minimax", "non_saturating"):
        assert figures["loss_d"] > 0  # a sum of two cross-entropies
    if loss == "minimax":
        assert figures["loss_g"] < 0  # log(1 - D(G(z)))
    if loss == "non_saturating":
        assert figures["loss_g"] > 0  # -log D(G(z))
    if loss == "hinge":
        assert figures["loss_d"] >= 0  # relu(1 - r) + relu(1 + f)


def test_d_steps_two_takes_two_real_batches_per_step(eager):
    gan = make_gan(d_steps=2)
    iterator = iter(numbered_batches(5))
    gan.train_step(iterator)
    assert position(next(iterator)) == 2  # batches 0 and 1 went to the two D updates
    assert int(gan.d_optimizer.iterations.numpy()) == 2
    assert int(gan.g_optimizer.iterations.numpy()) == 1
    assert int(gan.step.numpy()) == 1


def test_mixed_bfloat16_step_is_finite_and_images_are_float32(float32_policy_after, eager):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    gan = make_gan(precision="mixed_bfloat16")
    assert gan.policy == "mixed_bfloat16"
    assert gan.generator.layers[1].compute_dtype == "bfloat16"  # really computing in bfloat16
    figures = {k: float(v) for k, v in gan.train_step(iter(numbered_batches(2))).items()}
    assert all(np.isfinite(v) for v in figures.values()), figures
    z = np.random.default_rng(0).standard_normal((4, 16)).astype("float32")
    for model in (gan.generator, gan.ema_generator):
        images = model(z, training=False)
        assert images.dtype == tf.float32 and tuple(images.shape) == (4, 16, 16, 1)
        assert np.all(np.abs(images.numpy()) <= 1.0)
    assert all(w.dtype == "float32" for w in gan.ema_generator.trainable_weights)


def test_tapered_model_params_reach_g_ema_d_and_the_exported_generator(tmp_path, eager):
    from resgan.gan.trainer import export_generator

    gan = make_gan(model={"width": 4, "width_growth": 2.0, "max_width": 12})
    # 16x16: widths 4 (16x16), 8 (8x8), 12 (4x4, capped from 16).
    for g in (gan.generator, gan.ema_generator):
        assert g.get_layer("reshape").output.shape[-1] == 12
        assert [g.get_layer(n).output.shape[-1] for n in ("up_8", "up_16")] == [8, 4]
    assert [gan.discriminator.get_layer(n).output.shape[-1] for n in ("down_8", "down_4", "block_4")] == [8, 12, 12]
    figures = {k: float(v) for k, v in gan.train_step(iter(numbered_batches(2))).items()}
    assert all(np.isfinite(v) for v in figures.values()), figures
    exported = export_generator(gan, tmp_path / "generator.keras")
    loaded = keras.saving.load_model(tmp_path / "generator.keras", safe_mode=True)
    z = np.random.default_rng(0).standard_normal((3, 16)).astype("float32")
    np.testing.assert_allclose(loaded(z, training=False), gan.ema_generator(z, training=False), atol=1e-6)
    assert exported.count_params() == gan.ema_generator.count_params()


@pytest.mark.parametrize("loss, r1_gamma", [("hinge", 0.0), ("wasserstein_gp", 0.0), ("hinge", 1.0)])
def test_minibatch_std_reaches_the_discriminator_and_trains_with_every_penalty(loss, r1_gamma, eager):
    gan = make_gan(model={"minibatch_std": 4}, loss=loss, r1_gamma=r1_gamma, r1_every=1)
    assert gan.discriminator.get_layer("minibatch_std").group_size == 4
    assert (
        gan.discriminator.get_layer("block_4").input.shape[-1]
        == gan.discriminator.get_layer("down_4").output.shape[-1] + 1
    )
    conv = gan.discriminator.get_layer("block_4").conv1.layer  # inside SpectralNormalization
    before = np.array(conv.kernel.numpy()[:, :, -1, :], copy=True)  # the weights reading the std channel
    figures = {k: float(v) for k, v in gan.train_step(iter(numbered_batches(2).repeat())).items()}
    assert all(np.isfinite(v) for v in figures.values()), figures
    assert np.abs(conv.kernel.numpy()[:, :, -1, :] - before).max() > 1e-6  # the std channel gets a gradient


# ---- to_uint8 ------------------------------------------------------------------------------------


def test_to_uint8_maps_the_range_ends_and_rounds_half_to_even():
    out = to_uint8(np.array([-1.0, 1.0, 0.0, -2.0, 3.0, -1.0 + 1 / 127.5], dtype=np.float32))
    assert out.dtype == np.uint8
    # (0 + 1) * 127.5 = 127.5 and numpy's rint rounds half to even: 128. Out-of-range values are clipped.
    assert np.rint(127.5) == 128.0
    assert out.tolist() == [0, 255, 128, 0, 255, 1]
    assert to_uint8(tf.constant([[0.5]])).tolist() == [[191]]  # 1.5 * 127.5 = 191.25


# ---- checkpoints ---------------------------------------------------------------------------------


def test_checkpoint_round_trip_restores_every_variable_and_the_latent_stream(tmp_path, eager):
    original = make_gan(seed=0)
    data = numbered_batches(8).repeat()
    original.train_step(iter(data))
    original.train_step(iter(data))  # optimizer slots and EMA now hold real values
    path = checkpoint.save(tmp_path, original, {"run_id": "abc", "history": [{"step": 2, "loss_d": 1.5}]})
    assert path == tmp_path / "ckpt-00000002.npz"

    copy = make_gan(seed=1)  # other initial weights and another latent RNG
    before = all_state(copy)
    want = all_state(original)
    assert not np.array_equal(before["generator"][0], want["generator"][0])
    assert not np.array_equal(before["rng"][0], want["rng"][0])

    found = checkpoint.latest(tmp_path)
    assert found is not None and found[0] == path
    assert found[1] == {"run_id": "abc", "history": [{"step": 2, "loss_d": 1.5}], "step": 2}
    assert checkpoint.restore(found[0], copy) == 2
    got = all_state(copy)
    for group, arrays in want.items():
        assert len(got[group]) == len(arrays), group
        for i, (a, b) in enumerate(zip(arrays, got[group])):
            np.testing.assert_array_equal(a, b, err_msg=f"{group}[{i}]")
    assert int(copy.g_optimizer.iterations.numpy()) == 2 and int(copy.d_optimizer.iterations.numpy()) == 2

    # The next latents drawn after restore are those the original draws.
    np.testing.assert_array_equal(original._latents(4).numpy(), copy._latents(4).numpy())
    # And the next train step on the same batch continues identically.
    out_a = original.train_step(iter(numbered_batches(1)))
    out_b = copy.train_step(iter(numbered_batches(1)))
    for key in out_a:
        np.testing.assert_allclose(float(out_b[key]), float(out_a[key]), rtol=1e-5, err_msg=key)
    for a, b in zip(original.generator.weights, copy.generator.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)


def test_latest_always_names_a_complete_checkpoint_and_keeps_two(tmp_path):
    gan = make_gan()
    assert checkpoint.latest(tmp_path) is None
    for step in (1, 2, 3):
        gan.step.assign(step)
        checkpoint.save(tmp_path, gan, {"run_id": "r"})
        pointer = json.loads((tmp_path / "latest.json").read_text())
        assert pointer == {"checkpoint": f"ckpt-{step:08d}", "step": step}
        path, record = checkpoint.latest(tmp_path)
        assert path.exists() and record["step"] == step
        with np.load(path) as data:
            assert int(data["step/0"]) == step
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [
        "ckpt-00000002.json",
        "ckpt-00000002.npz",
        "ckpt-00000003.json",
        "ckpt-00000003.npz",
    ]
    # A write killed half-way leaves only a hidden temporary file: latest still names step 3.
    (tmp_path / ".ckpt-00000004.npz.x1y2z3.npz").write_bytes(b"PK\x03\x04 half a zip")
    path, record = checkpoint.latest(tmp_path)
    assert path.name == "ckpt-00000003.npz" and record["step"] == 3
    gan.step.assign(0)
    assert checkpoint.restore(path, gan) == 3
    # The next trainer of the folder removes the killed writer's temporary files, and nothing else.
    (tmp_path / ".latest.json.abc.json").write_text("{")
    (tmp_path / ".keep-me").write_text("not ours")
    removed = checkpoint.clean(tmp_path)
    assert sorted(p.name for p in removed) == [".ckpt-00000004.npz.x1y2z3.npz", ".latest.json.abc.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".keep-me",
        "ckpt-00000002.json",
        "ckpt-00000002.npz",
        "ckpt-00000003.json",
        "ckpt-00000003.npz",
        "latest.json",
    ]


def test_broken_checkpoint_folders_raise_resgan_errors_naming_the_file(tmp_path):
    gan = make_gan()
    gan.step.assign(7)
    checkpoint.save(tmp_path, gan, {})
    (tmp_path / "ckpt-00000007.npz").write_bytes(b"not a zip")
    with pytest.raises(ResganError, match="ckpt-00000007.npz cannot be read"):
        checkpoint.restore(tmp_path / "ckpt-00000007.npz", gan)
    (tmp_path / "ckpt-00000007.npz").unlink()
    with pytest.raises(ResganError, match="names ckpt-00000007.npz, which is missing"):
        checkpoint.latest(tmp_path)
    (tmp_path / "latest.json").write_text("{trunc")
    with pytest.raises(ResganError, match="unreadable"):
        checkpoint.latest(tmp_path)


def test_checkpoint_of_another_shape_is_refused_with_the_reason(tmp_path):
    path = checkpoint.save(tmp_path, make_gan(), {})
    wider = make_gan(model={"width": 16})
    with pytest.raises(ResganError) as error:
        checkpoint.restore(path, wider)
    message = str(error.value)
    # The generator's first variable is the Dense kernel: latent 16 -> 4*4*width.
    assert "generator variable 0 has shape (16, 128)" in message and "wants (16, 256)" in message
    deeper = make_gan(model={"blocks_per_resolution": 2})
    with pytest.raises(ResganError, match=r"does not match the model \(generator: \d+ arrays for \d+ variables\)"):
        checkpoint.restore(path, deeper)


@pytest.mark.slow  # trains beyond a step or two
def test_r1_adds_its_penalty_on_real_images_to_the_discriminator_loss():
    """Lazy R1 (train.r1_gamma, every train.r1_every steps): on an R1 step, loss_d grows by
    gamma/2 * every * E|grad_x D(x)|^2 over the real batch, measured here on a third copy of the same D."""
    gamma, every = 2.0, 4
    real = tf.constant(np.random.default_rng(5).uniform(-1, 1, (BATCH, 16, 16, 1)), tf.float32)
    with_r1 = make_gan(r1_gamma=gamma, r1_every=every)
    without = make_gan(r1_gamma=0.0)
    reference = make_gan()
    with tf.GradientTape() as tape:
        tape.watch(real)
        total = tf.reduce_sum(reference.discriminator(real, training=True))
    grad = tape.gradient(total, real).numpy()
    penalty = 0.5 * gamma * every * np.mean(np.sum(grad**2, axis=(1, 2, 3)))
    assert penalty > 0
    data = tf.data.Dataset.from_tensors(real).repeat()
    got = float(with_r1.train_step(iter(data))["loss_d"]) - float(without.train_step(iter(data))["loss_d"])
    assert got == pytest.approx(penalty, rel=1e-3)
    for _ in range(every - 1):  # the steps between carry no penalty: the plain function, traced once
        with_r1.train_step(iter(data))
    assert with_r1._compiled.experimental_get_tracing_count() == 1
    assert with_r1._compiled_r1.experimental_get_tracing_count() == 1


@pytest.mark.slow  # trains beyond a step or two
def test_ada_moves_p_by_the_sign_of_the_real_logits():
    """Every ada_interval steps p moves by interval * batch / (ada_kimg * 1000): up while the mean sign of
    D's real logits is above the target, down (not below 0) otherwise; figures carry p and the sign."""
    interval, kimg = 2, 0.1  # 2 steps of 8 images: p moves by 0.16 per adjustment
    gan = make_gan(diffaugment="translation", ada_target=0.5, ada_kimg=kimg, ada_interval=interval)
    assert float(gan.ada_p.numpy()) == 0.0
    data = iter(
        tf.data.Dataset.from_tensors(
            tf.constant(np.random.default_rng(4).uniform(-1, 1, (BATCH, 16, 16, 1)), tf.float32)
        ).repeat()
    )
    p, signs = 0.0, []
    for _ in range(3 * interval):
        figures = gan.train_step(data)
        signs.append(float(figures["d_real_sign"]))
        assert -1.0 <= signs[-1] <= 1.0
        if len(signs) == interval:
            p = float(np.clip(p + np.sign(np.mean(signs) - 0.5) * interval * BATCH / (kimg * 1000), 0, 1))
            signs = []
        assert float(figures["ada_p"]) == pytest.approx(p, abs=1e-6)
    plain = make_gan(diffaugment="translation")
    assert float(plain.ada_p.numpy()) == 1.0 and "ada_p" not in plain.train_step(data)
    # The heuristic alone, on given signs: up by 0.16 when sure of the reals, down when not, within 0..1.
    heuristic = make_gan(diffaugment="translation", ada_target=0.5, ada_kimg=kimg, ada_interval=interval)
    assert float(heuristic._adapt(0.9)) == 0.0  # not yet an interval
    assert float(heuristic._adapt(0.7)) == pytest.approx(0.16)
    heuristic._adapt(1.0), heuristic._adapt(1.0)
    assert float(heuristic.ada_p.numpy()) == pytest.approx(0.32)
    heuristic._adapt(-1.0), heuristic._adapt(0.5)  # mean -0.25: below the target
    assert float(heuristic.ada_p.numpy()) == pytest.approx(0.16)
    for _ in range(20):
        heuristic._adapt(1.0)
    assert float(heuristic.ada_p.numpy()) == 1.0
