"""Model FLOPs from layer shapes: hand-computed cases, nested blocks and the train-step rule."""

from __future__ import annotations

import keras
import pytest

from resgan.nn.flops import model_flops, train_step_flops
from resgan.nn.networks import build_discriminator, build_generator


def test_one_conv_and_one_dense_match_the_hand_count():
    conv = keras.Sequential([keras.Input((8, 8, 16)), keras.layers.Conv2D(8, 3, padding="same")])
    dense = keras.Sequential([keras.Input((10,)), keras.layers.Dense(5)])
    assert model_flops(conv) == 2 * 8 * 8 * 8 * 3 * 3 * 16
    assert model_flops(dense) == 2 * 10 * 5
    assert model_flops(conv, batch=4) == 4 * 2 * 8 * 8 * 8 * 3 * 3 * 16


def test_stride_valid_padding_and_dense_on_a_feature_map():
    model = keras.Sequential(
        [
            keras.Input((9, 9, 3)),
            keras.layers.Conv2D(4, 3, strides=2, padding="valid"),  # -> 4x4x4
            keras.layers.Dense(6),
        ]
    )  # applied at each of the 4x4 positions
    assert model_flops(model) == 2 * 4 * 4 * 4 * 3 * 3 * 3 + 2 * 4 * 4 * 4 * 6


def _conv(hw: int, k: int, cin: int, cout: int) -> int:
    return 2 * hw * hw * k * k * cin * cout


def test_generator_count_is_the_hand_sum_over_its_blocks():
    g = build_generator(latent_dim=16, width=8, image_size=16, channels=1)
    expected = (
        2 * 16 * 4 * 4 * 8  # dense -> 4x4x8
        + _conv(8, 3, 8, 8)
        + _conv(8, 3, 8, 8)
        + _conv(4, 1, 8, 8)  # up_8: conv1, conv2, shortcut
        + _conv(16, 3, 8, 8)
        + _conv(16, 3, 8, 8)
        + _conv(8, 1, 8, 8)  # up_16 (shortcut before upsampling)
        + _conv(16, 3, 8, 1)
    )  # conv_out
    assert expected == 4096 + 2 * 73728 + 2048 + 2 * 294912 + 8192 + 36864  # by hand, so _conv cannot hide a typo
    assert model_flops(g) == expected


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_discriminator_count_walks_spectral_norm_wrappers(spectral_norm):
    d = build_discriminator(image_size=16, channels=1, width=8, spectral_norm=spectral_norm)
    expected = (
        _conv(16, 3, 1, 8)
        + _conv(16, 3, 8, 8)
        + _conv(8, 1, 1, 8)  # first block: pools before 1x1
        + _conv(8, 3, 8, 8)
        + _conv(8, 3, 8, 8)
        + _conv(4, 1, 8, 8)  # down_4: pools before 1x1 too
        + _conv(4, 3, 8, 8)
        + _conv(4, 3, 8, 8)  # block_4: identity shortcut
        + 2 * 8 * 1
    )  # dense head
    assert model_flops(d) == expected


def test_train_step_rule():
    g = build_generator(latent_dim=16, width=8, image_size=16, channels=1)
    d = build_discriminator(image_size=16, channels=1, width=8)
    fg, fd = model_flops(g), model_flops(d)
    # D step: G fwd (1x) + D on real and fake into weights (3x each); G step: G into weights (3x) + D to input (2x)
    assert train_step_flops(g, d, batch=4) == 4 * ((fg + 3 * fd + 3 * fd) + (3 * fg + 2 * fd))
    assert train_step_flops(g, d, batch=4, d_steps=2) == 4 * (2 * (fg + 6 * fd) + 3 * fg + 2 * fd)


def test_unbuilt_layers_fail_loudly():
    with pytest.raises(ValueError, match="not built"):
        model_flops(keras.layers.Dense(3))
