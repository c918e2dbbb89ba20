"""The domain classifier stage and the feature extractors (classifier, InceptionV3 plumbing).

InceptionV3 runs at 299x299 on CPU: a handful of images, random weights written by the test
(no download), each network built as few times as the checks allow.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import tiny_params

from resgan.errors import ResganError
from resgan.metrics.features import (
    INCEPTION_CACHE_FILES,
    InceptionFeatures,
    LearnedFeatures,
    resolve_extractor,
    weights_have_top,
)
from resgan.stages.classifier import run as run_classifier

keras = pytest.importorskip("keras")


def _patterns(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16x16 uint8 images of 3 classes: horizontal stripes, vertical stripes, a bright square."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    yy, xx = np.mgrid[:16, :16]
    for i in range(n_per_class * 3):
        label = i % 3
        phase = rng.integers(0, 4)
        if label == 0:
            image = 200.0 * (((yy + phase) // 2) % 2)
        elif label == 1:
            image = 200.0 * (((xx + phase) // 2) % 2)
        else:
            top, left = rng.integers(0, 9, size=2)
            image = np.zeros((16, 16))
            image[top : top + 7, left : left + 7] = 220.0
        image = image + rng.normal(0, 25, image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8)[..., None])
        labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.int64)


def _write_split(folder, split, images, labels=None):
    arrays = {"images": images}
    if labels is not None:
        arrays.update(labels=labels, class_names=np.array(["horizontal", "vertical", "square"]))
    np.savez(folder / f"{split}.npz", **arrays)


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory):
    """The classifier stage run once on a tiny labelled set: (result, model path, metrics path, test data)."""
    folder = tmp_path_factory.mktemp("prepared")
    train_images, train_labels = _patterns(60, seed=0)
    test_images, test_labels = _patterns(20, seed=1)
    _write_split(folder, "train", train_images, train_labels)
    _write_split(folder, "test", test_images, test_labels)
    params = tiny_params(classifier={"epochs": 6, "batch_size": 32}).classifier  # width 8, feature_dim 16
    model_path, metrics_path = folder / "models" / "classifier.keras", folder / "metrics" / "classifier.json"
    result = run_classifier(params, folder, model_path, metrics_path)
    return result, model_path, metrics_path, test_images, test_labels


@pytest.mark.slow  # trains an extractor or builds InceptionV3
def test_classifier_stage_learns_the_patterns_and_writes_its_outputs(trained_classifier):
    result, model_path, metrics_path, _, _ = trained_classifier
    assert result["accuracy"] >= 0.9
    assert (result["n_train"], result["n_test"], result["num_classes"], result["epochs"]) == (180, 60, 3, 6)
    assert json.loads(metrics_path.read_text()) == result
    assert not [p for p in model_path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_classifier_augment_trains_on_views_and_saves_the_same_network(trained_classifier, tmp_path):
    """classifier.augment (what the photographs' scorer uses): flips and translations keep these
    patterns' classes, so it still learns them; the views live in the input pipeline, never in the
    saved feature extractor, whose layers are those of the unaugmented classifier."""
    _, plain_path, _, test_images, test_labels = trained_classifier
    folder = tmp_path / "prepared"
    folder.mkdir()
    _write_split(folder, "train", *_patterns(60, seed=0))
    _write_split(folder, "test", test_images, test_labels)
    params = tiny_params(classifier={"epochs": 6, "batch_size": 32, "augment": "flip,translation"}).classifier
    result = run_classifier(params, folder, tmp_path / "classifier.keras", tmp_path / "classifier.json")
    assert result["augment"] == "flip,translation" and result["accuracy"] >= 0.9
    augmented = keras.saving.load_model(tmp_path / "classifier.keras", safe_mode=True)
    plain = keras.saving.load_model(plain_path, safe_mode=True)
    assert [layer.name for layer in augmented.layers] == [layer.name for layer in plain.layers]


def test_saved_classifier_loads_safely_and_gives_features_and_probs(trained_classifier):
    result, model_path, _, test_images, test_labels = trained_classifier
    model = keras.models.load_model(model_path, safe_mode=True)
    assert model.get_layer("features").output.shape[-1] == 16
    extractor = LearnedFeatures(model_path)
    features, probs = extractor(test_images, batch_size=7)  # batches of 7: the last one is short
    assert extractor.name == "classifier"
    assert features.shape == (60, 16) and features.dtype == np.float64
    assert probs.shape == (60, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # the saved model is the trained one: its predictions reproduce the stage's accuracy
    assert np.mean(probs.argmax(axis=1) == test_labels) == pytest.approx(result["accuracy"], abs=1e-6)
    # batching changes nothing
    features_one_batch, _ = extractor(test_images, batch_size=256)
    np.testing.assert_allclose(features, features_one_batch, rtol=1e-5, atol=1e-5)


def test_classifier_features_reject_images_of_another_shape(trained_classifier):
    extractor = LearnedFeatures(trained_classifier[1])
    with pytest.raises(ResganError, match="trained on"):
        extractor(np.zeros((2, 32, 32, 1), np.uint8))


def test_classifier_stage_learns_the_patterns_and_writes_its_outputs_record(trained_classifier):
    result, model_path, _, _, _ = trained_classifier
    record = json.loads(model_path.with_suffix(".json").read_text())
    assert record["kind"] == "classifier" and record["trusted"] is True
    assert result["chance"] == pytest.approx(1 / 3) and result["trusted"] == 1
    assert result["skill"] == pytest.approx((result["accuracy"] - 1 / 3) / (2 / 3), abs=1e-5)
    extractor = resolve_extractor("auto", model_path)
    assert (extractor.name, extractor.kind, extractor.trusted, extractor.data_classes) == (
        "classifier",
        "classifier",
        True,
        True,
    )


def test_classifier_kind_classifier_needs_labels_and_writes_nothing(tmp_path):
    images, _ = _patterns(4, seed=2)
    _write_split(tmp_path, "train", images)
    _write_split(tmp_path, "test", images)
    params = tiny_params(classifier={"kind": "classifier"}).classifier
    with pytest.raises(ResganError, match="needs labelled data.*classifier.kind: auto"):
        run_classifier(params, tmp_path, tmp_path / "c.keras", tmp_path / "c.json")
    assert not (tmp_path / "c.keras").exists() and not (tmp_path / "c.json").exists()


@pytest.mark.slow  # trains an extractor or builds InceptionV3
def test_without_labels_the_stage_trains_a_self_supervised_encoder(tmp_path):
    images, _ = _patterns(40, seed=2)
    _write_split(tmp_path, "train", images)
    _write_split(tmp_path, "test", _patterns(10, seed=3)[0])
    params = tiny_params(classifier={"ssl_epochs": 2, "ssl_batch_size": 32}).classifier
    figures = run_classifier(params, tmp_path, tmp_path / "m" / "c.keras", tmp_path / "c.json")
    record = json.loads((tmp_path / "m" / "c.json").read_text())
    assert record["kind"] == "ssl" and figures["n_train"] == 120 and figures["epochs"] == 2
    assert figures["trusted"] == int(record["trusted"]) and "two-view retrieval on 30 held-out" in record["fitness"]
    extractor = resolve_extractor("auto", tmp_path / "m" / "c.keras")
    assert extractor.kind == "ssl" and extractor.name == ("ssl" if record["trusted"] else "ssl_untrusted")
    features, probs = extractor(images[:5])
    assert features.shape == (5, 16) and probs is None and not extractor.data_classes
    with pytest.raises(ResganError, match="evaluate.features is classifier, but .* is a ssl model"):
        resolve_extractor("classifier", tmp_path / "m" / "c.keras")


@pytest.mark.slow  # trains an extractor or builds InceptionV3
def test_a_classifier_that_cannot_learn_is_not_trusted(tmp_path):
    """Random labels: held-out accuracy stays near chance. auto falls back to the self-supervised
    encoder; a forced classifier is kept but untrusted, and its figures are named so."""
    images, _ = _patterns(60, seed=0)
    test_images, _ = _patterns(20, seed=1)
    rng = np.random.default_rng(0)
    _write_split(tmp_path, "train", images, rng.integers(0, 3, len(images)))
    _write_split(tmp_path, "test", test_images, rng.integers(0, 3, len(test_images)))
    forced = tiny_params(classifier={"kind": "classifier", "epochs": 4, "batch_size": 32}).classifier
    figures = run_classifier(forced, tmp_path, tmp_path / "forced" / "c.keras", tmp_path / "forced.json")
    assert figures["skill"] < 0.5 and figures["trusted"] == 0
    extractor = resolve_extractor("classifier", tmp_path / "forced" / "c.keras")
    assert extractor.name == "classifier_untrusted" and not extractor.trusted
    auto = tiny_params(classifier={"epochs": 4, "batch_size": 32, "ssl_epochs": 1, "ssl_batch_size": 32}).classifier
    figures = run_classifier(auto, tmp_path, tmp_path / "auto" / "c.keras", tmp_path / "auto.json")
    assert figures["classifier_skill"] < 0.5 and json.loads((tmp_path / "auto" / "c.json").read_text())["kind"] == "ssl"


def test_a_model_without_its_fitness_record_is_not_trusted(trained_classifier, tmp_path):
    import shutil

    copy = tmp_path / "copied.keras"
    shutil.copy(trained_classifier[1], copy)  # the same weights, without the record beside them
    extractor = resolve_extractor("auto", copy)
    assert extractor.name == "classifier_untrusted" and "no fitness record" in extractor.fitness


def test_classifier_stage_without_prepared_data_says_what_to_run(tmp_path):
    with pytest.raises(ResganError, match="prepare"):
        run_classifier(tiny_params().classifier, tmp_path, tmp_path / "c.keras", tmp_path / "c.json")


def test_missing_classifier_model_says_what_to_run(tmp_path):
    with pytest.raises(ResganError, match="classifier stage"):
        resolve_extractor("classifier", tmp_path / "absent.keras")


# ---------------------------------------------------------------- InceptionV3


def _reference_inception_input(images: np.ndarray):
    """The documented preprocessing, spelled out: float resize (bicubic, anti-aliased), clip, RGB, [-1, 1]."""
    import tensorflow as tf

    x = tf.image.resize(images.astype(np.float32), (299, 299), method="bicubic", antialias=True)
    x = tf.clip_by_value(x, 0.0, 255.0)
    if images.shape[-1] == 1:
        x = tf.repeat(x, 3, axis=-1)
    return x / 127.5 - 1.0


@pytest.fixture(scope="module")
def inception_notop(tmp_path_factory):
    """A randomly initialised no-top InceptionV3 and its weights in Keras 3 and legacy .h5 formats."""
    from keras.src.legacy.saving import legacy_h5_format  # writes the format of Keras' own cache files

    folder = tmp_path_factory.mktemp("inception")
    keras.utils.set_random_seed(11)
    model = keras.applications.InceptionV3(include_top=False, pooling="avg", weights=None, input_shape=(299, 299, 3))
    model.save_weights(folder / "notop.weights.h5")
    cache = folder / "keras_home" / "models"
    cache.mkdir(parents=True)
    with h5py.File(cache / INCEPTION_CACHE_FILES[1], "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    return model, folder


@pytest.mark.slow  # trains an extractor or builds InceptionV3
def test_inception_features_load_weights_from_a_file_and_resize_grayscale(inception_notop):
    model, folder = inception_notop
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    extractor = InceptionFeatures(str(folder / "notop.weights.h5"))
    assert extractor.name == "inception" and extractor.has_top is False
    features, probs = extractor(images, batch_size=2)
    assert features.shape == (3, 2048) and features.dtype == np.float64
    assert probs is None  # no classification head, so no IS
    expected = model(_reference_inception_input(images), training=False).numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * scale)
    # the weights came from the file, not from the extractor's own random initialisation
    for loaded, original in zip(extractor._model.weights, model.weights):
        np.testing.assert_array_equal(loaded.numpy(), original.numpy())


@pytest.mark.slow  # trains an extractor or builds InceptionV3
def test_auto_takes_inception_from_keras_cache_in_the_legacy_format(inception_notop, monkeypatch, tmp_path):
    model, folder = inception_notop
    monkeypatch.setenv("KERAS_HOME", str(folder / "keras_home"))
    extractor = resolve_extractor("auto", tmp_path / "absent.keras", "")  # no classifier needed
    assert extractor.name == "inception"
    assert extractor.weights_path.name == INCEPTION_CACHE_FILES[1]
    assert weights_have_top(extractor.weights_path) is False
    for loaded, original in zip(extractor._model.weights, model.weights):
        np.testing.assert_array_equal(loaded.numpy(), original.numpy())


@pytest.mark.slow  # trains an extractor or builds InceptionV3
def test_inception_with_top_weights_gives_probs(tmp_path):
    keras.utils.set_random_seed(13)
    full = keras.applications.InceptionV3(include_top=True, weights=None, input_shape=(299, 299, 3))
    full.save_weights(tmp_path / "full.weights.h5")
    extractor = InceptionFeatures(tmp_path / "full.weights.h5")
    assert extractor.has_top is True
    images = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    features, probs = extractor(images)
    assert features.shape == (2, 2048) and probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    pool = keras.Model(full.inputs, full.get_layer("avg_pool").output)
    expected = pool(_reference_inception_input(images), training=False).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_missing_inception_weights_say_how_to_provide_them(monkeypatch, tmp_path, trained_classifier):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    with pytest.raises(ResganError, match=r"(?s)no InceptionV3 weights.*Keras' cache.*evaluate.inception_weights"):
        InceptionFeatures()
    with pytest.raises(ResganError, match="not found"):
        InceptionFeatures(str(tmp_path / "typo.h5"))
    # auto falls back to the classifier when there are no Inception weights
    assert resolve_extractor("auto", trained_classifier[1], "").name == "classifier"
