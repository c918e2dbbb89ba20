"""Self-conditioning (``model.self_condition``): unlabelled data trains a GAN conditioned on k-means
clusters of the feature stage's features, exported as an unconditional generator that draws each
cluster as often as the training data holds it."""

from __future__ import annotations

import json

import keras
import mlflow
import numpy as np
import pytest
from conftest import tiny_params
from project import train_paths
from test_conditional import shapes_dataset

from resgan.gan.clusters import cluster_count, cluster_features
from resgan.gan.trainer import GAN, Shapes, export_generator
from resgan.loading import latent_dim, load_generator, num_classes
from resgan.nn.layers import ClusterChoice
from resgan.sampling import draw


def test_cluster_count_keeps_twenty_images_a_cluster_and_two_clusters_at_least():
    assert cluster_count(10, 270) == 10
    assert cluster_count(10, 100) == 5
    assert cluster_count(10, 39) == 0  # one cluster is no conditioning
    assert cluster_count(3, 10_000) == 3


def test_k_means_finds_separated_groups_numbered_by_size():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 10
    sizes = [20, 50, 30]
    truth = np.repeat(np.arange(3), sizes)
    features = centres[truth] + rng.normal(0, 0.5, (100, 8))
    clusters = cluster_features(features, 3, seed=0)
    assert clusters.k == 3 and clusters.prior == pytest.approx((0.5, 0.3, 0.2))
    # Every group is one cluster, the largest (truth 1) cluster 0, then truth 2, then truth 0.
    assert np.array_equal(clusters.labels, np.array([2, 0, 1])[truth])
    assert np.array_equal(cluster_features(features, 3, seed=0).labels, clusters.labels)  # reproducible


def test_cluster_choice_draws_the_prior_independently_of_z():
    layer = ClusterChoice([0.6, 0.3, 0.1])
    latents = np.random.default_rng(0).standard_normal((40_000, 5)).astype("float32")
    z, cluster = (np.asarray(t) for t in layer(latents))
    assert np.array_equal(z, latents[:, :4])
    assert np.bincount(cluster, minlength=3) / len(cluster) == pytest.approx([0.6, 0.3, 0.1], abs=0.01)
    for k in range(3):  # z given the cluster is still standard normal
        chosen = z[cluster == k]
        assert abs(chosen.mean()) < 0.05 and abs(chosen.std() - 1) < 0.05
    with pytest.raises(ValueError, match="summing to 1"):
        ClusterChoice([0.5, 0.2])


def test_the_exported_self_conditioned_generator_is_the_conditional_one_with_its_cluster_drawn(tmp_path):
    params = tiny_params(model={"conditional": True, "spectral_norm": False}, train={"diffaugment": ""})
    keras.utils.set_random_seed(0)
    prior = (0.5, 0.3, 0.2)
    gan = GAN(params.model, params.train, Shapes(image_size=16, channels=1, num_classes=3, cluster_prior=prior))
    export_generator(gan, tmp_path / "generator.keras")
    model = load_generator(tmp_path / "generator.keras")  # safe_mode: the layer is registered
    assert num_classes(model) == 0 and latent_dim(model) == params.model.latent_dim + 1
    images, labels = draw(model, 64, seed=3)
    assert images.shape == (64, 16, 16, 1) and labels is None
    latents = np.random.default_rng(1).standard_normal((6, latent_dim(model))).astype("float32")
    z, cluster = (np.asarray(t) for t in ClusterChoice(prior)(latents))
    expected = np.asarray(gan.ema_generator([z, cluster], training=False))
    assert np.asarray(model(latents, training=False)) == pytest.approx(expected, abs=1e-5)


# ---- the train stage ------------------------------------------------------------------------------


def _project(root, params, labelled_test: bool = True):
    """Shapes of three kinds, 120 to train (labels removed) and 60 held out with labels; a domain
    classifier trained on the labelled ones by the classifier stage stands in for the feature stage."""
    from resgan.stages import classifier

    data = root / "data"
    data.mkdir(parents=True)
    images, labels = shapes_dataset(180)
    np.savez(data / "train.npz", images=images[:120], labels=labels[:120])
    np.savez(data / "test.npz", images=images[120:], labels=labels[120:])
    (data / "summary.json").write_text(
        json.dumps({"data_hash": "5e1f", "class_names": None, "counts": {"train": 120, "test": 60}})
    )
    classifier.run(
        tiny_params(classifier={"epochs": 15}).classifier,
        data,
        root / "classifier.keras",
        root / "classifier_figures.json",
    )
    np.savez(data / "train.npz", images=images[:120])  # the training images unlabelled
    (root / "params.yaml").write_text("{}\n")
    return data


def _train(root, params, data, monkeypatch):
    from resgan.stages import train

    monkeypatch.chdir(root)
    train.run(params, train_paths(root, data, classifier=root / "classifier.keras"))
    run_id = json.loads((root / "models" / "mlflow_run.json").read_text())["run_id"]
    return load_generator(root / "models" / "generator.keras"), mlflow.MlflowClient().get_run(run_id).data.params


@pytest.mark.slow  # trains the feature stage and the GAN
def test_unlabelled_data_trains_on_clusters_of_trusted_features(tmp_path, monkeypatch, capsys):
    params = tiny_params(model={"conditional": "auto", "self_condition": 3}, train={"steps": 2, "checkpoint_every": 2})
    data = _project(tmp_path, params)
    assert json.loads((tmp_path / "classifier.json").read_text())["trusted"]
    generator, logged = _train(tmp_path, params, data, monkeypatch)
    assert "self-conditioning: 3 k-means clusters of the classifier features" in capsys.readouterr().out
    assert num_classes(generator) == 0 and latent_dim(generator) == params.model.latent_dim + 1
    assert logged["model.self_condition"] == "3" and logged["model.conditional"] == "True"


@pytest.mark.slow  # trains the feature stage and the GAN
def test_untrusted_features_leave_the_model_unconditional(tmp_path, monkeypatch, capsys):
    params = tiny_params(model={"conditional": "auto", "self_condition": 3}, train={"steps": 2, "checkpoint_every": 2})
    data = _project(tmp_path, params)
    record = tmp_path / "classifier.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "trusted": False}))
    generator, logged = _train(tmp_path, params, data, monkeypatch)
    assert "self-conditioning is off (the features failed their fitness check" in capsys.readouterr().out
    assert latent_dim(generator) == params.model.latent_dim
    assert logged["model.self_condition"] == "0" and logged["model.conditional"] == "False"


def test_fid_over_training_draws_the_clusters_as_the_export_does(tmp_path):
    from resgan.gan.loop import FidTracker
    from resgan.sampling import latents

    params = tiny_params(model={"conditional": True, "spectral_norm": False}, train={"diffaugment": ""})
    keras.utils.set_random_seed(0)
    prior = (0.7, 0.2, 0.1)
    gan = GAN(params.model, params.train, Shapes(image_size=16, channels=1, num_classes=3, cluster_prior=prior))
    tracker = FidTracker(
        gan, lambda images: {"fid": 0.0}, "fid", 1, 2000, seed=5, folder=tmp_path, export=export_generator
    )
    assert tracker.latents.shape == (2000, params.model.latent_dim)
    assert np.bincount(tracker.labels, minlength=3) / 2000 == pytest.approx(prior, abs=0.03)
    exported = export_generator(gan, tmp_path / "generator.keras")
    seen = np.asarray(gan.ema_generator([tracker.latents[:8], tracker.labels[:8]], training=False))
    assert np.asarray(exported(latents(2000, params.model.latent_dim + 1, 5)[:8])) == pytest.approx(seen, abs=1e-5)
