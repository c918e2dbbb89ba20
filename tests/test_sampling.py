"""``resgan.sampling``: seeds and labels -> images, the one path every caller samples through.

Tiny untrained generators (16x16, width 8) built in-process; random weights make distinct, non-flat
images, which is all these tests need. The graph-compiled :func:`generate_images` is compared with
eager Keras calls exactly (0 grey levels of difference): both run the same kernels on this CPU.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from resgan.config import ModelParams
from resgan.errors import ResganError
from resgan.nn.networks import generator_from_params
from resgan.sampling import class_labels, draw, generate_images, iter_images, latents, model_inputs, to_uint8

LATENT, SIZE, CLASSES = 8, 16, 3


def _generator(num_classes: int = 0):
    keras.utils.set_random_seed(0)
    model = ModelParams(latent_dim=LATENT, width=8, conditional=bool(num_classes))
    return generator_from_params(model, image_size=SIZE, channels=1, num_classes=num_classes)


@pytest.fixture(scope="module")
def generator():
    return _generator()


@pytest.fixture(scope="module")
def conditional():
    return _generator(CLASSES)


def _eager(model, z, labels=None) -> np.ndarray:
    return to_uint8(model(model_inputs(z, labels), training=False))


def test_to_uint8_maps_minus_one_to_zero_one_to_255_and_rounds_to_nearest():
    x = np.array([-1.0, 1.0, 0.0, -0.5, 0.25, 0.75, 1.5, -7.0, np.float32(1 / 127.5) - 1], dtype=np.float32)
    # (x + 1) * 127.5 = 0, 255, 127.5 (half to even: 128), 63.75, 159.375, 223.125, 318.75 (clip), -765 (clip), 1
    expected = np.array([0, 255, 128, 64, 159, 223, 255, 0, 1], dtype=np.uint8)
    out = to_uint8(x)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_same_seed_same_pixels_other_seed_other_pixels(generator):
    a, labels = draw(generator, 5, seed=3)
    b, _ = draw(generator, 5, seed=3)
    c, _ = draw(generator, 5, seed=4)
    assert labels is None and a.shape == (5, SIZE, SIZE, 1) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.5
    assert a.std() > 0, "an all-constant output is no image"
    # Row i depends on (seed, i) only: fewer images are the first of more.
    np.testing.assert_array_equal(draw(generator, 2, seed=3)[0], a[:2])


def test_generate_images_equals_eager_keras_calls(generator, conditional):
    z = latents(20, LATENT, seed=1)
    np.testing.assert_array_equal(generate_images(generator, z, batch_size=8), _eager(generator, z))
    labels = class_labels(20, CLASSES, seed=1)
    np.testing.assert_array_equal(generate_images(conditional, z, labels, batch_size=8), _eager(conditional, z, labels))


@pytest.mark.parametrize("batch_size, calls", [(1, [1] * 7), (3, [3, 3, 1]), (7, [7]), (100, [7])])
def test_batch_boundaries_change_nothing(generator, batch_size, calls):
    z = latents(7, LATENT, seed=5)
    seen: list[int] = []
    images = generate_images(generator, z, batch_size=batch_size, progress=seen.append)
    assert seen == calls
    np.testing.assert_array_equal(images, _eager(generator, z))
    streamed = list(iter_images(generator, z, batch_size=batch_size))
    assert [len(batch) for batch in streamed] == calls
    np.testing.assert_array_equal(np.concatenate(streamed), images)


@pytest.mark.parametrize("num_classes", [0, CLASSES])
def test_one_trace_serves_every_batch_size(num_classes):
    """Batches of 3, 3 and 1, then of 2 and 5: one graph, the eager pixels."""
    from resgan.sampling import _COMPILED

    model = _generator(num_classes)
    z = latents(7, LATENT, seed=2)
    labels = class_labels(7, num_classes, seed=2) if num_classes else None
    eager = _eager(model, z, labels)
    np.testing.assert_array_equal(generate_images(model, z, labels, batch_size=3), eager)
    np.testing.assert_array_equal(generate_images(model, z, labels, batch_size=5), eager)
    assert _COMPILED[model].experimental_get_tracing_count() == 1


def test_a_batch_size_below_one_is_refused(generator):
    with pytest.raises(ResganError, match="at least 1, got 0"):
        generate_images(generator, latents(2, LATENT, seed=0), batch_size=0)


def test_class_labels_cycle_classes_from_the_seed():
    np.testing.assert_array_equal(class_labels(7, 3, seed=2), [2, 0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(class_labels(4, 3, seed=0, label=1), [1, 1, 1, 1])
    assert class_labels(4, 3, seed=0).dtype == np.int32
    assert class_labels(4, 0, seed=0) is None
    with pytest.raises(ResganError, match="from 0 to 2, got 3"):
        class_labels(1, 3, seed=0, label=3)
    with pytest.raises(ResganError, match="not class-conditional"):
        class_labels(1, 0, seed=0, label=0)


def test_another_label_another_image_the_same_label_the_same_image(conditional):
    z = latents(1, LATENT, seed=9).repeat(3, axis=0)  # one latent, three times
    images = generate_images(conditional, z, np.array([0, 1, 0], dtype=np.int32))
    np.testing.assert_array_equal(images[0], images[2])
    assert (images[0] != images[1]).mean() > 0.1

    every, labels = draw(conditional, 6, seed=4)
    np.testing.assert_array_equal(labels, [1, 2, 0, 1, 2, 0])  # (4 + i) % 3
    one, ones = draw(conditional, 6, seed=4, label=2)
    np.testing.assert_array_equal(ones, [2] * 6)
    np.testing.assert_array_equal(one[[1, 4]], every[[1, 4]])  # same latents, same class: same pixels
    assert (one[0] != every[0]).any()


def test_the_compiled_call_does_not_keep_a_model_alive():
    import gc
    import weakref

    model = _generator()
    generate_images(model, latents(2, LATENT, seed=0))
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None, "sampling's graph cache holds models that nobody else uses"


def test_a_conditional_grid_has_one_class_per_column_in_order():
    from resgan.sampling import class_labels, grid_images

    images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    labels = class_labels(40, 3, seed=4)  # 1, 2, 0, 1, 2, 0, ...
    picked, columns = grid_images(images, labels, size=8)
    assert columns == 3
    assert picked[:, 0, 0, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 10]  # from the first class 0, 3 rows of 3
    assert labels[2:11].tolist() == [0, 1, 2] * 3
    unconditional, columns = grid_images(images, None, size=8)
    assert columns is None and unconditional[:, 0, 0, 0].tolist() == list(range(8))
    one_label, columns = grid_images(images, np.full(40, 1, dtype=np.int32), size=8)  # --label 1: no class layout
    assert columns is None and len(one_label) == 8
