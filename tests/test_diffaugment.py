"""DiffAugment: shapes and dtypes, what each op does to the pixels, gradients, determinism."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_params

from resgan.config import DIFFAUGMENT_OPS, ParamsError, TrainParams, parse_params
from resgan.gan.diffaugment import OPS, diff_augment, parse_policy

FULL = "color,translation,cutout"


def images(n=8, size=16, channels=3, low=-1.0, high=1.0, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, size=(n, size, size, channels)).astype("float32")


def shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """x moved down by dy and right by dx pixels, zeros where nothing moved in."""
    out = np.zeros_like(x)
    h, w = x.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", FULL, "cutout, color"])
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_and_dtype_are_kept(policy, dtype, channels):
    x = tf.cast(images(channels=channels), dtype)
    out = diff_augment(x, policy)
    assert out.shape == x.shape and out.dtype == dtype
    assert np.isfinite(tf.cast(out, tf.float32).numpy()).all()
    assert not np.array_equal(tf.cast(out, tf.float32).numpy(), tf.cast(x, tf.float32).numpy())


def test_empty_policy_is_the_identity_and_unknown_ops_fail():
    x = tf.constant(images())
    assert diff_augment(x, "") is x
    assert parse_policy(" color , cutout ") == ["color", "cutout"]
    with pytest.raises(ValueError, match="colour"):
        diff_augment(x, "colour")


def test_the_config_accepts_exactly_the_implemented_ops():
    assert tuple(OPS) == DIFFAUGMENT_OPS == ("color", "translation", "cutout")
    assert TrainParams(diffaugment=" , ".join(reversed(OPS))).diffaugment == "cutout , translation , color"
    with pytest.raises(ParamsError) as caught:
        parse_params({"train": {"diffaugment": "color,zoom"}})
    with pytest.raises(ValueError) as parsed:
        parse_policy("color,zoom")
    assert str(caught.value) == f"params: train.diffaugment: {parsed.value} (got 'color,zoom')"
    assert str(parsed.value) == "unknown DiffAugment op 'zoom'; use any of color, translation, cutout"


def test_translation_is_a_zero_filled_shifted_copy():
    keras.utils.set_random_seed(0)
    x = images(n=256, channels=2, low=0.5, high=1.0)  # positive, so the zero fill is visible
    out = diff_augment(tf.constant(x), "translation").numpy()
    shifts = set()
    for image, result in zip(x, out):
        # 16 * 1/8 = 2 pixels at most per axis
        matches = [
            (dy, dx)
            for dy, dx in itertools.product(range(-2, 3), repeat=2)
            if np.array_equal(result, shifted(image, dy, dx))
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) == 25  # every shift in [-2, 2]^2 occurs among 256 images


def test_cutout_zeros_one_square_of_half_the_size():
    keras.utils.set_random_seed(1)
    out = diff_augment(tf.ones((256, 16, 16, 1)), "cutout").numpy()[..., 0]
    assert set(np.unique(out)) <= {0.0, 1.0}  # the rest is untouched
    inside = 0
    for image in out:
        rows, cols = np.nonzero(image == 0)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width  # one filled rectangle
        assert height <= 8 and width <= 8
        if rows.min() > 0 and cols.min() > 0 and rows.max() < 15 and cols.max() < 15:
            assert (height, width) == (8, 8)  # fully inside: exactly (16 / 2)^2 = 64 pixels
            inside += 1
        else:  # a square clipped by the border is smaller only along the clipped axis
            assert height == 8 or rows.min() == 0 or rows.max() == 15
            assert width == 8 or cols.min() == 0 or cols.max() == 15
    assert inside > 25  # centres are uniform on 17 positions per axis; 7 of them are strictly inside


def test_color_is_an_affine_map_per_image_in_the_stated_ranges():
    # Gray images: saturation does nothing, so out = c * (x - mean x) + mean x + b with
    # brightness b in [-0.5, 0.5) and contrast c in [0.5, 1.5).
    keras.utils.set_random_seed(2)
    gray = images(n=64, channels=1)
    for x in (gray, np.repeat(gray, 3, axis=-1)):
        out = diff_augment(tf.constant(x), "color").numpy()
        for image, result in zip(x, out):
            c, intercept = np.polyfit(image.ravel(), result.ravel(), 1)
            np.testing.assert_allclose(result, c * image + intercept, atol=1e-5)  # affine
            b = result.mean() - image.mean()
            assert 0.5 <= c < 1.5 + 1e-5 and -0.5 - 1e-5 <= b < 0.5 + 1e-5
        assert np.ptp([np.ptp(r) / np.ptp(i) for i, r in zip(x, out)]) > 0.5  # contrasts vary


def test_saturation_scales_colour_around_the_channel_mean():
    # out - mean_c(out) = s * c * (x - mean_c(x)), with s in [0, 2) and c in [0.5, 1.5): a ratio in [0, 3)
    keras.utils.set_random_seed(3)
    x = images(n=64, channels=3)
    out = diff_augment(tf.constant(x), "color").numpy()
    chroma_in = x - x.mean(axis=-1, keepdims=True)
    chroma_out = out - out.mean(axis=-1, keepdims=True)
    ratios = [np.linalg.norm(o) / np.linalg.norm(i) for i, o in zip(chroma_in, chroma_out)]
    for i, o, ratio in zip(chroma_in, chroma_out, ratios):
        np.testing.assert_allclose(o, ratio * i, atol=1e-5)
    assert min(ratios) >= 0 and max(ratios) < 3 and np.std(ratios) > 0.2


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", FULL])
def test_gradients_flow_to_the_input(policy):
    keras.utils.set_random_seed(4)
    x = tf.constant(images(n=4))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = diff_augment(x, policy)
        loss = tf.reduce_sum(out * images(n=4, seed=9))
    grad = tape.gradient(loss, x)
    assert grad is not None and np.isfinite(grad.numpy()).all() and float(tf.reduce_max(tf.abs(grad))) > 0


def test_cutout_gradient_is_its_mask():
    keras.utils.set_random_seed(5)
    x = tf.ones((4, 16, 16, 1))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = diff_augment(x, "cutout")
        total = tf.reduce_sum(out)
    np.testing.assert_array_equal(tape.gradient(total, x).numpy(), out.numpy())


def test_seeded_runs_repeat_and_unseeded_calls_differ():
    x = tf.constant(images())
    keras.utils.set_random_seed(6)
    first, second = diff_augment(x, FULL).numpy(), diff_augment(x, FULL).numpy()
    keras.utils.set_random_seed(6)
    again = diff_augment(x, FULL).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)


def test_works_inside_tf_function_with_unknown_batch_size():
    augment = tf.function(
        lambda x: diff_augment(x, FULL), input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.bfloat16)]
    )
    for n in (1, 5):
        out = augment(tf.cast(images(n=n), tf.bfloat16))
        assert out.shape == (n, 16, 16, 3) and out.dtype == tf.bfloat16


def test_auto_turns_diffaugment_on_for_small_data_sets_only():
    from resgan.config import SMALL_DATA, SMALL_DATA_POLICY, resolve_diffaugment

    assert TrainParams().diffaugment == "auto"
    assert resolve_diffaugment("auto", 270) == SMALL_DATA_POLICY == "color,translation,cutout"
    assert resolve_diffaugment("auto", SMALL_DATA - 1) == SMALL_DATA_POLICY
    assert resolve_diffaugment("auto", SMALL_DATA) == "" and resolve_diffaugment("auto", 9000) == ""
    assert resolve_diffaugment("translation", 9000) == "translation" and resolve_diffaugment("", 10) == ""


def test_the_gan_refuses_an_unresolved_auto_policy():
    from resgan.errors import ResganError
    from resgan.gan.trainer import GAN, Shapes

    p = tiny_params(train={"diffaugment": "auto"})
    with pytest.raises(ResganError, match="diffaugment is auto"):
        GAN(p.model, p.train, Shapes(16, 1))


def test_with_a_probability_each_op_applies_to_that_share_of_the_examples():
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (400, 16, 16, 1)), tf.float32)
    tf.random.set_seed(1)
    changed = lambda y: np.any(np.abs(y.numpy() - x.numpy()) > 1e-6, axis=(1, 2, 3))  # noqa: E731
    assert not changed(diff_augment(x, "cutout", probability=0.0)).any()
    assert changed(diff_augment(x, "cutout", probability=1.0)).all()
    share = changed(diff_augment(x, "cutout", probability=0.3)).mean()
    assert 0.22 < share < 0.38  # 400 draws of p = 0.3: sd 0.023


def test_ada_needs_ops_to_adapt():
    with pytest.raises(ParamsError, match="train.ada_target.*train.diffaugment"):
        tiny_params(train={"ada_target": 0.6, "diffaugment": ""})
    assert tiny_params(train={"ada_target": 0.6}).train.diffaugment == "color,translation,cutout"
    from resgan.config import SMALL_DATA_POLICY, resolve_diffaugment

    # auto with ADA: the ops are on whatever the data size; ADA decides how often they apply
    assert resolve_diffaugment("auto", 9000, adaptive=True) == SMALL_DATA_POLICY
    assert resolve_diffaugment("auto", 9000, adaptive=False) == ""
