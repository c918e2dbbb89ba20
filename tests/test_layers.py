"""Residual blocks, generator and discriminator: shapes, ranges, the residual ADDITION, saving, precision."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from resgan.nn.layers import DownBlock, FusedBatchNormalization, GlobalSumPooling2D, MinibatchStdDev, UpBlock
from resgan.nn.networks import build_discriminator, build_generator, level_widths


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return list(model._flatten_layers(include_self=False, recursive=True))


def _conv_of(layer) -> keras.layers.Conv2D:
    """The Conv2D itself, inside a SpectralNormalization wrapper or not."""
    return layer.layer if isinstance(layer, keras.layers.SpectralNormalization) else layer


def _zero(conv) -> None:
    conv = _conv_of(conv)
    conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
    conv.bias.assign(np.zeros(conv.bias.shape, "float32"))


def _conv1x1(x: np.ndarray, conv) -> np.ndarray:
    """A 1x1 convolution in numpy: a matmul over channels plus the bias."""
    conv = _conv_of(conv)
    return x @ np.asarray(conv.kernel)[0, 0] + np.asarray(conv.bias)


def _avgpool2(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_networks_shapes_dtypes_and_ranges(size, channels):
    keras.utils.set_random_seed(0)
    generator = build_generator(latent_dim=16, width=8, image_size=size, channels=channels)
    discriminator = build_discriminator(image_size=size, channels=channels, width=8)
    assert generator.name == "generator" and discriminator.name == "discriminator"
    z = np.random.default_rng(0).normal(size=(3, 16)).astype("float32")
    images = np.asarray(generator(z, training=False))
    assert images.shape == (3, size, size, channels) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0  # tanh
    assert images.std() > 0  # not a constant image
    logits = discriminator(images, training=False)
    assert tuple(logits.shape) == (3, 1) and logits.dtype == "float32"
    # log2(size / 4) upsampling blocks and as many downsampling ones, plus one 4x4 block in D
    steps = int(np.log2(size // 4))
    assert sum(isinstance(layer, UpBlock) for layer in generator.layers) == steps
    assert sum(isinstance(layer, DownBlock) for layer in discriminator.layers) == steps + 1


def test_parameter_counts_match_a_hand_count():
    # G(latent 16, width 8, 16x16x1): Dense 16*128+128 = 2176; each UpBlock: 2 BN (4*8 each),
    # 2 conv3x3 (9*8*8+8 each), shortcut 1x1 (8*8+8) = 64 + 1168 + 72 = 1304, two of them;
    # bn_out 32; conv_out 9*8+1 = 73.  2176 + 2608 + 32 + 73 = 4889.
    assert build_generator(16, 8, 16, 1).count_params() == 4889
    # D(16x16x1, width 8, no SN): first block 9*1*8+8 + 584 + (1*8+8) = 680; down to 4x4: 584+584+72
    # = 1240; the 4x4 block has an identity shortcut: 1168; Dense 8+1 = 9.  Total 3097.
    assert build_discriminator(16, 1, 8, spectral_norm=False).count_params() == 3097
    # SN adds one vector u of the output size per wrapped layer: 8 convs x 8 + Dense x 1 = 65.
    assert build_discriminator(16, 1, 8, spectral_norm=True).count_params() == 3097 + 65


def test_blocks_per_resolution_adds_same_size_blocks():
    generator = build_generator(16, 8, 16, 1, blocks_per_resolution=2)
    discriminator = build_discriminator(16, 1, 8, blocks_per_resolution=3)
    up = [layer for layer in generator.layers if isinstance(layer, UpBlock)]
    down = [layer for layer in discriminator.layers if isinstance(layer, DownBlock)]
    assert [block.upsample for block in up] == [True, False, True, False]
    assert [block.downsample for block in down] == [True, False, False, True, False, False, False]
    assert generator.output.shape == (None, 16, 16, 1)
    assert discriminator.output.shape == (None, 1)


def test_width_growth_tapers_both_networks_by_resolution():
    # 32x32: width 8 at 32x32, x2 per halving, capped at 48 -> 4x4: 48, 8x8: 32, 16x16: 16, 32x32: 8.
    assert level_widths(8, 3, 2.0, 48) == [8, 16, 32, 48]
    assert level_widths(8, 3, 1.5) == [8, 12, 18, 27]
    generator = build_generator(16, 8, 32, 1, width_growth=2.0, max_width=48)
    discriminator = build_discriminator(32, 1, 8, width_growth=2.0, max_width=48)
    assert generator.get_layer("reshape").output.shape == (None, 4, 4, 48)
    up = {layer.name: layer.output.shape for layer in generator.layers if isinstance(layer, UpBlock)}
    assert up == {"up_8": (None, 8, 8, 32), "up_16": (None, 16, 16, 16), "up_32": (None, 32, 32, 8)}
    down = {layer.name: layer.output.shape for layer in discriminator.layers if isinstance(layer, DownBlock)}
    assert down == {
        "down_16": (None, 16, 16, 16),
        "down_8": (None, 8, 8, 32),
        "down_4": (None, 4, 4, 48),
        "block_4": (None, 4, 4, 48),
    }
    assert generator.output.shape == (None, 32, 32, 1) and discriminator.output.shape == (None, 1)
    # Growth 1 is the untapered network, weight for weight.
    assert (
        build_generator(16, 8, 16, 1, width_growth=1.0).count_params() == build_generator(16, 8, 16, 1).count_params()
    )
    with pytest.raises(ValueError, match="max_width"):
        level_widths(8, 3, 2.0, 4)
    with pytest.raises(ValueError, match="width_growth"):
        level_widths(8, 3, 0.5)


def test_model_params_reject_a_cap_below_the_width():
    from resgan.config import ModelParams

    assert ModelParams(width=8, width_growth=2.0, max_width=64).max_width == 64
    with pytest.raises(ValueError, match="max_width"):
        ModelParams(width=32, max_width=16)
    with pytest.raises(ValueError, match="max_width"):
        ModelParams(width=8, d_width=32, max_width=16)


@pytest.mark.parametrize(
    "kwargs", [dict(image_size=8), dict(image_size=24), dict(image_size=512), dict(channels=2), dict(channels=4)]
)
def test_bad_sizes_and_channels_raise(kwargs):
    args = dict(image_size=16, channels=1) | kwargs
    with pytest.raises(ValueError):
        build_generator(latent_dim=16, width=8, **args)
    with pytest.raises(ValueError):
        build_discriminator(width=8, **args)


def test_upblock_adds_residual_to_shortcut():
    keras.utils.set_random_seed(1)
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 5)).astype("float32")
    block = UpBlock(8)
    out = np.asarray(block(x, training=False))
    assert out.shape == (2, 8, 8, 8)  # filters channels: a concatenation would give 5 + 8 = 13 or 16
    upsampled = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)  # nearest-neighbour x2
    shortcut = _conv1x1(upsampled, block.shortcut_conv)
    assert np.abs(out - shortcut).max() > 1e-3  # the residual branch contributes
    _zero(block.conv2)  # residual branch now outputs exactly 0
    out = np.asarray(block(x, training=False))
    np.testing.assert_allclose(out, shortcut, rtol=0, atol=1e-5)


def test_upblock_without_upsampling_has_identity_shortcut():
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 8)).astype("float32")
    block = UpBlock(8, upsample=False)
    block(x)
    assert block.shortcut_conv is None
    _zero(block.conv2)
    np.testing.assert_array_equal(np.asarray(block(x, training=False)), x)  # x + 0, exactly


@pytest.mark.parametrize("spectral_norm", [False, True])
@pytest.mark.parametrize("first", [False, True])
def test_downblock_adds_residual_to_shortcut(first, spectral_norm):
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 3)).astype("float32")
    block = DownBlock(8, spectral_norm=spectral_norm, first=first)
    out = np.asarray(block(x, training=False))
    assert out.shape == (2, 4, 4, 8)
    # Conv1x1 and 2x2 average pooling commute (both linear), so one numpy expression fits both orders.
    shortcut = _avgpool2(_conv1x1(x, block.shortcut_conv))
    assert np.abs(out - shortcut).max() > 1e-3
    _zero(block.conv2)
    out = np.asarray(block(x, training=False))
    np.testing.assert_allclose(out, shortcut, rtol=0, atol=1e-5)


def _grads(fn, x, variables):
    import tensorflow as tf

    x = tf.constant(x)
    weights = tf.constant(np.random.default_rng(9).normal(size=fn(x).shape).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(fn(x) * weights)
    return [np.asarray(g) for g in tape.gradient(loss, [x, *variables])]


def test_upblock_trains_as_the_textbook_order():
    # The block's shortcut runs its 1x1 conv before upsampling; the textbook block upsamples first.
    # Same outputs and the same gradients for the input and every weight, in the training pass.
    from keras import ops

    keras.utils.set_random_seed(5)
    x = np.random.default_rng(5).normal(size=(4, 4, 4, 6)).astype("float32")
    block = UpBlock(8)
    block(x)
    shortcut_conv = block.shortcut_conv

    def textbook(x):
        h = block.up(ops.relu(block.bn1(x, training=True)))
        h = block.conv2(ops.relu(block.bn2(block.conv1(h), training=True)))
        return shortcut_conv(block.up(x)) + h

    ours = _grads(lambda x: block(x, training=True), x, block.trainable_variables)
    theirs = _grads(textbook, x, block.trainable_variables)
    assert len(ours) == 1 + 4 + 6  # the input, 2 batch norms x (gamma, beta), 3 convs x (kernel, bias)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # 4x fewer multiply-adds in the shortcut: it is built for the 4x4 input, not the 8x8 upsampled one.
    assert tuple(shortcut_conv._build_shapes_dict["input_shape"])[1:3] == (4, 4)


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_downblock_trains_as_the_textbook_order(spectral_norm):
    # The block pools before its shortcut's 1x1 conv; the textbook block convolves first.
    from keras import ops

    keras.utils.set_random_seed(6)
    x = np.random.default_rng(6).normal(size=(4, 8, 8, 5)).astype("float32")
    block = DownBlock(8, spectral_norm=spectral_norm)
    block(x)

    def textbook(x):
        h = block.pool(block.conv2(ops.relu(block.conv1(ops.relu(x)))))
        return block.pool(block.shortcut_conv(x)) + h

    variables = block.trainable_variables
    ours = _grads(lambda x: block(x, training=False), x, variables)
    theirs = _grads(textbook, x, variables)
    assert len(ours) == 1 + 6  # the input, 3 convs x (kernel, bias)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("first", [False, True])
def test_only_the_first_downblock_sees_negative_pixels(first):
    # A non-first block starts with ReLU, so for all-negative inputs its residual branch sees zeros
    # and is the same for any such input; the optimized first block has no leading ReLU.
    keras.utils.set_random_seed(4)
    block = DownBlock(8, spectral_norm=False, first=first)
    rng = np.random.default_rng(4)
    a, b = -rng.uniform(0.1, 1.0, size=(2, 1, 8, 8, 3)).astype("float32")
    block(a)

    def residual(x):
        return np.asarray(block(x, training=False)) - _avgpool2(_conv1x1(x, block.shortcut_conv))

    same = np.allclose(residual(a), residual(b), atol=1e-5)
    assert same != first


def test_global_sum_pooling_sums():
    x = np.arange(2 * 3 * 3 * 2, dtype="float32").reshape(2, 3, 3, 2)
    np.testing.assert_array_equal(np.asarray(GlobalSumPooling2D()(x)), x.sum(axis=(1, 2)))


def _group_std(x: np.ndarray, group: int) -> np.ndarray:
    """The minibatch-std channel written out: per consecutive group, the population std of every
    feature over the group's examples, averaged; one value per example."""
    stats = [x[i : i + group].std(axis=0).mean() for i in range(0, len(x), group)]
    return np.repeat(stats, group)


@pytest.mark.parametrize("n, group", [(8, 4), (6, 3), (5, 1), (2, 2)])
def test_minibatch_std_appends_each_groups_spread(n, group):
    x = (np.random.default_rng(0).normal(size=(n, 3, 3, 5)) * np.arange(1, n + 1)[:, None, None, None]).astype(
        "float32"
    )
    out = np.asarray(MinibatchStdDev(4)(x))
    assert out.shape == (n, 3, 3, 6)
    np.testing.assert_array_equal(out[..., :5], x)
    expected = _group_std(x, group)  # 6 -> groups of 3, 5 (prime) -> of 1
    for i in range(n):
        np.testing.assert_allclose(out[i, ..., 5], expected[i], rtol=1e-5, atol=1e-3 if group == 1 else 0)


def test_minibatch_std_keeps_real_and_fake_groups_apart():
    """D sees concat([real, fake]): each group's number comes from its own half only."""
    rng = np.random.default_rng(1)
    real = rng.normal(size=(8, 2, 2, 3)).astype("float32")
    fake = np.repeat(rng.normal(size=(1, 2, 2, 3)).astype("float32"), 8, axis=0)  # collapsed: all alike
    out = np.asarray(MinibatchStdDev(4)(np.concatenate([real, fake])))[:, 0, 0, -1]
    np.testing.assert_allclose(out[8:], 1e-4, rtol=1e-3)  # sqrt(1e-8): no spread at all
    assert out[:8].min() > 0.5


def test_discriminator_with_minibatch_std_sees_a_collapsed_batch_and_saves(tmp_path):
    keras.utils.set_random_seed(3)
    discriminator = build_discriminator(16, 1, 8, minibatch_std=4)
    assert isinstance(discriminator.get_layer("minibatch_std"), MinibatchStdDev)
    assert discriminator.get_layer("block_4").input.shape[-1] == 9  # 8 channels + the std channel
    rng = np.random.default_rng(3)
    varied = rng.uniform(-1, 1, size=(4, 16, 16, 1)).astype("float32")
    alike = np.repeat(varied[:1], 4, axis=0)
    # The same first image gets another logit when its group is all alike: the logit sees the group.
    assert abs(float(discriminator(varied)[0, 0]) - float(discriminator(alike)[0, 0])) > 1e-4
    discriminator.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(varied)), np.asarray(discriminator(varied)))
    without = build_discriminator(16, 1, 8)
    # block_4 now reads 9 channels: conv1 gains 3*3*8 weights, and the shortcut is no longer the identity
    # but a spectrally normalized 1x1 conv (9*8 weights, 8 biases, SN's vector u of 8)
    assert discriminator.count_params() - without.count_params() == 3 * 3 * 8 + 9 * 8 + 8 + 8


def test_spectral_norm_switch_changes_layer_types():
    with_sn = _all_layers(build_discriminator(16, 1, 8, spectral_norm=True))
    without = _all_layers(build_discriminator(16, 1, 8, spectral_norm=False))
    count = lambda layers, kind: sum(isinstance(layer, kind) for layer in layers)  # noqa: E731
    # 16x16: first block 3 convs, the block down to 4x4 3 convs, the 4x4 block 2 convs = 8, plus Dense
    assert count(with_sn, keras.layers.SpectralNormalization) == 9
    assert count(without, keras.layers.SpectralNormalization) == 0
    assert count(with_sn, keras.layers.Conv2D) == count(without, keras.layers.Conv2D) == 8
    wrapped = {id(layer.layer) for layer in with_sn if isinstance(layer, keras.layers.SpectralNormalization)}
    assert all(
        id(layer) in wrapped for layer in with_sn if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    )


def test_safe_mode_save_load_round_trip(tmp_path):
    keras.utils.set_random_seed(5)
    generator = build_generator(16, 8, 16, 3, blocks_per_resolution=2)
    discriminator = build_discriminator(16, 3, 8)
    z = np.random.default_rng(5).normal(size=(4, 16)).astype("float32")
    # One training-mode call moves BN statistics and SN's vector u away from their initial values,
    # so the round trip must carry non-trainable state too.
    discriminator(generator(z, training=True), training=True)
    images = generator(z, training=False)
    logits = discriminator(images, training=False)
    for model in (generator, discriminator):
        model.save(tmp_path / f"{model.name}.keras")
    generator2 = keras.models.load_model(tmp_path / "generator.keras", safe_mode=True)
    discriminator2 = keras.models.load_model(tmp_path / "discriminator.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(generator2(z, training=False)), np.asarray(images))
    np.testing.assert_array_equal(np.asarray(discriminator2(images, training=False)), np.asarray(logits))
    assert isinstance(generator2.get_layer("up_8_1"), UpBlock)
    assert isinstance(discriminator2.get_layer("sum_pool"), GlobalSumPooling2D)
    for before, after in zip(discriminator.non_trainable_weights, discriminator2.non_trainable_weights):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))


@pytest.fixture
def restore_policy():
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_outputs_are_float32_under_mixed_precision(policy, restore_policy):
    keras.mixed_precision.set_global_policy(policy)
    generator = build_generator(16, 8, 16, 1)
    discriminator = build_discriminator(16, 1, 8)
    block = generator.get_layer("up_8")
    assert block.compute_dtype == block.conv1.compute_dtype == policy.removeprefix("mixed_")  # the policy is on
    images = generator(np.zeros((2, 16), "float32"), training=True)
    logits = discriminator(images, training=True)
    assert images.dtype == "float32" and logits.dtype == "float32"
    assert np.isfinite(np.asarray(logits)).all()


def _bn_pair(shape, dtype, **kwargs):
    """A Keras BatchNormalization and our fused one with the same, non-trivial weights."""
    keras_bn = keras.layers.BatchNormalization(dtype=dtype, **kwargs)
    fused = FusedBatchNormalization(dtype=dtype, **kwargs)
    keras_bn.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(3)
    weights = [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in keras_bn.get_weights()]
    keras_bn.set_weights(weights)
    fused.set_weights(weights)
    return keras_bn, fused


@pytest.mark.parametrize("dtype, atol", [("float32", 1e-5), ("mixed_bfloat16", 0.03)])
def test_fused_batch_norm_matches_keras(dtype, atol):
    import tensorflow as tf

    shape = (8, 4, 4, 5)
    keras_bn, fused = _bn_pair(shape, dtype, momentum=0.9)
    x = tf.cast(np.random.default_rng(4).normal(2.0, 3.0, shape).astype("float32"), keras_bn.compute_dtype)
    weight = tf.constant(np.arange(1, 6, dtype="float32"))  # a loss that weighs the channels differently

    def run(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") ** 3 * weight)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        return [np.asarray(tf.cast(t, "float32")) for t in (y, *grads)], y.dtype

    (expected, expected_dtype), (got, got_dtype) = run(keras_bn), run(fused)
    assert got_dtype == expected_dtype == keras_bn.compute_dtype
    for name, a, b in zip(["output", "d/dx", "d/dgamma", "d/dbeta"], expected, got):
        np.testing.assert_allclose(b, a, rtol=atol, atol=atol * np.abs(a).max(), err_msg=name)
    # The moving statistics moved from their initial values, and the same way (biased variance).
    assert not np.allclose(fused.moving_variance, 1.0)
    np.testing.assert_allclose(fused.moving_mean, keras_bn.moving_mean, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, keras_bn.moving_variance, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(tf.cast(fused(x, training=False), "float32")),
        np.asarray(tf.cast(keras_bn(x, training=False), "float32")),
        rtol=atol,
        atol=atol,
    )


def test_fused_batch_norm_runs_the_fused_kernel_where_it_applies():
    import tensorflow as tf

    def op_types(layer, shape, training):
        layer.build(shape)
        graph = (
            tf.function(lambda x: layer(x, training=training))
            .get_concrete_function(tf.TensorSpec(shape, "float32"))
            .graph
        )
        return {op.type for op in graph.get_operations()}

    assert "FusedBatchNormV3" in op_types(FusedBatchNormalization(), (2, 4, 4, 3), True)
    assert "FusedBatchNormV3" in op_types(FusedBatchNormalization(), (2, 4, 4, 3), False)
    # Where it does not apply, the Keras computation (and its answer) stays.
    assert "FusedBatchNormV3" not in op_types(FusedBatchNormalization(), (2, 3), True)
    assert "FusedBatchNormV3" not in op_types(FusedBatchNormalization(synchronized=True), (2, 4, 4, 3), True)
    keras_bn, fused = _bn_pair((6, 3), "float32")
    x = np.random.default_rng(5).normal(size=(6, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(fused(x, training=True)), np.asarray(keras_bn(x, training=True)), rtol=1e-6)


def test_generator_batch_norms_are_fused_and_survive_saving(tmp_path):
    generator = build_generator(16, 8, 16, 1)
    bns = [layer for layer in _all_layers(generator) if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 5 and all(isinstance(layer, FusedBatchNormalization) for layer in bns)  # 2 blocks x 2, bn_out
    generator.save(tmp_path / "g.keras")
    loaded = keras.models.load_model(tmp_path / "g.keras", safe_mode=True)
    assert isinstance(loaded.get_layer("bn_out"), FusedBatchNormalization)
