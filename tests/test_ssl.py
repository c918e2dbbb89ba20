"""The self-supervised encoder's parts (NT-Xent, views, retrieval, k-NN) and the fitness rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from resgan.config import load_params
from resgan.errors import ResganError
from resgan.metrics.learned import significant

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
ssl = pytest.importorskip("resgan.metrics.ssl")


def _nt_xent_reference(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """SimCLR's loss written out: for each of the 2N views, -log softmax of its partner's similarity."""
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        logits = np.array([z[i] @ z[j] / t for j in range(2 * n) if j != i])
        others = [j for j in range(2 * n) if j != i]
        total += -(logits[others.index(partner)] - np.log(np.exp(logits).sum()))
    return total / (2 * n)


def test_nt_xent_matches_the_written_out_loss():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    got = float(ssl.nt_xent(tf.constant(z1, tf.float32), tf.constant(z2, tf.float32), 0.5))
    assert got == pytest.approx(_nt_xent_reference(z1, z2, 0.5), rel=1e-4)
    same = float(ssl.nt_xent(tf.constant(z1, tf.float32), tf.constant(z1, tf.float32), 0.5))
    assert same < got  # identical views are the easiest pairs


def test_views_keep_shape_and_range_and_differ():
    images = tf.constant(np.random.default_rng(1).integers(0, 256, (6, 16, 16, 1)), tf.float32)
    for ops in (["crop"], ["flip"], ["color", "translation", "cutout"], list(ssl.SSL_OPS)):
        view = ssl.augment(images, ops, seed=3).numpy()
        assert view.shape == (6, 16, 16, 1) and view.min() >= 0 and view.max() <= 255
        assert not np.allclose(view, images.numpy()), ops
    np.testing.assert_array_equal(ssl.augment(images, [], seed=3).numpy(), images.numpy())
    again = ssl.augment(images, ["crop", "translation"], seed=3).numpy()
    np.testing.assert_array_equal(again, ssl.augment(images, ["crop", "translation"], seed=3).numpy())


def test_retrieval_is_perfect_for_pixels_and_chance_for_a_constant():
    images = np.random.default_rng(2).integers(0, 256, (40, 8, 8, 1)).astype(np.uint8)
    inputs = keras.Input((8, 8, 1))
    pixels = keras.Model(inputs, keras.layers.Flatten()(inputs))
    assert ssl.retrieval_accuracy(pixels, images, ops=[], group=20) == 1.0  # the views are the images
    constant = keras.Model(inputs, keras.layers.Lambda(lambda x: x[:, 0, 0, :] * 0 + 1)(inputs))
    assert ssl.retrieval_accuracy(constant, images, ops=[], group=20) == pytest.approx(2 / 40)  # first of each group


def test_knn_probe_and_skill():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 8)) * 10
    labels = np.repeat(np.arange(3), 20)
    features = centres[labels] + rng.normal(size=(60, 8))
    assert ssl.knn_accuracy(features, labels, features + 0.01, labels) == 1.0
    assert ssl.knn_accuracy(features, labels, features, rng.permutation(labels)) < 0.7
    assert ssl.skill(0.55, 0.1) == pytest.approx(0.5) and ssl.skill(0.1, 0.1) == 0.0


def test_significance_needs_more_than_noise():
    assert not significant(6 / 12, 5 / 12, 12)  # 12 images: too few to prove anything
    assert not significant(0.40, 1 / 3, 60)  # 4 hits above chance's 20 of 60: noise
    assert significant(0.29, 0.143, 1000)  # the real digits' self-supervised encoder
    assert significant(0.99, 0.1, 1000)


def test_unknown_augmentation_names_the_key(tmp_path):
    import yaml

    raw = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    raw["classifier"]["ssl_augment"] = "crop,rotate"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ResganError, match="classifier.ssl_augment.*rotate"):
        load_params(path)


@pytest.mark.slow  # trains the encoder
def test_a_small_data_set_trains_the_encoder_for_at_least_min_steps():
    """A few hundred images are one batch an epoch: ``min_steps`` adds epochs until the steps are there."""
    from resgan.metrics.ssl import train_encoder

    images = np.random.default_rng(0).integers(0, 256, (100, 16, 16, 1), dtype=np.uint8)
    common = dict(batch_size=32, lr=1e-3, width=8, feature_dim=16, temperature=0.5, ops=["translation"], seed=0)
    lines: list[str] = []
    _, exact = train_encoder(images, epochs=2, min_steps=0, log=lines.append, **common)
    assert (exact["epochs"], exact["steps"]) == (2, 6)  # 3 whole batches of 32 in 100 images, twice
    assert len(lines) == 2
    lines.clear()
    _, floored = train_encoder(images, epochs=2, min_steps=40, log=lines.append, **common)
    assert (floored["epochs"], floored["steps"]) == (14, 42)  # ceil(40 / 3) epochs
    assert len(lines) == 7 and lines[-1].startswith("self-supervised encoder: epoch 14/14")  # every 2nd
    _, enough = train_encoder(images, epochs=20, min_steps=40, log=lambda line: None, **common)
    assert (enough["epochs"], enough["steps"]) == (20, 60)  # ssl_epochs already make more steps
