"""Class-conditional models (``model.conditional``): the networks, the labels in the train step, the
train and sample stages, ``resgan generate --label`` and the served model's ``label`` column."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import tiny_params
from project import train_paths

from resgan.data.pipeline import TrainData, train_dataset
from resgan.errors import ResganError
from resgan.gan.trainer import GAN, Shapes
from resgan.loading import load_generator, num_classes
from resgan.nn.networks import CLASS_EMBEDDING, build_discriminator, build_generator
from resgan.sampling import class_labels, model_inputs

CLASSES = 3
BATCH = 8


@pytest.fixture
def eager():
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


@pytest.fixture(autouse=True)
def _clean_global_state():
    yield
    if mlflow.active_run():
        mlflow.end_run()
    keras.mixed_precision.set_global_policy("float32")
    mlflow.set_tracking_uri(None)


def shapes_dataset(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """16x16 grey images of three classes told apart by shape: 0 a disc, 1 a square, 2 a horizontal bar."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    labels = np.arange(n) % CLASSES
    images = np.zeros((n, 16, 16, 1), dtype=np.uint8)
    for i, label in enumerate(labels):
        cy, cx = rng.integers(6, 10, size=2)
        if label == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 16
        elif label == 1:
            mask = (abs(yy - cy) < 4) & (abs(xx - cx) < 4)
        else:
            mask = (abs(yy - cy) < 2) & (abs(xx - cx) < 6)
        images[i, ..., 0] = np.clip(mask * 200 + rng.integers(0, 40, size=mask.shape), 0, 255)
    return images, labels.astype(np.int64)


# ---- the networks --------------------------------------------------------------------------------


def test_the_generator_draws_another_image_for_another_label_and_the_same_for_the_same():
    g = build_generator(latent_dim=8, width=8, image_size=16, channels=1, num_classes=CLASSES)
    assert [tuple(i.shape) for i in g.inputs] == [(None, 8), (None,)]
    z = np.repeat(np.random.default_rng(0).standard_normal((1, 8)).astype("float32"), CLASSES, axis=0)
    images = g([z, np.arange(CLASSES, dtype=np.int32)], training=False).numpy()
    for a in range(CLASSES):
        for b in range(a + 1, CLASSES):
            assert np.abs(images[a] - images[b]).max() > 1e-4, (a, b)
    again = g([z[:1], np.array([1], dtype=np.int32)], training=False).numpy()
    np.testing.assert_allclose(again[0], images[1], atol=1e-6)
    assert num_classes(g) == CLASSES
    assert num_classes(build_generator(latent_dim=8, width=8, image_size=16, channels=1)) == 0


def test_the_projection_adds_the_label_embeddings_dot_product_with_the_pooled_features():
    d = build_discriminator(image_size=16, channels=1, width=8, spectral_norm=False, num_classes=CLASSES)
    images = np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 1)).astype("float32")
    labels = np.array([0, 1, 2, 1], dtype=np.int32)
    logits = d([images, labels], training=False).numpy()[:, 0]
    features = keras.Model(d.inputs, d.get_layer("sum_pool").output)([images, labels]).numpy()
    dense = d.get_layer("dense")
    kernel, bias = (w.numpy() for w in dense.weights)
    embed = d.get_layer("projection").embed.kernel.numpy()  # (classes, channels)
    expected = features @ kernel[:, 0] + bias[0] + np.sum(embed[labels] * features, axis=1)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)
    swapped = d([images, (labels + 1) % CLASSES], training=False).numpy()[:, 0]
    assert np.abs(swapped - logits).max() > 1e-4  # the label moves the logit


def test_spectral_norm_wraps_the_class_embedding_too():
    d = build_discriminator(image_size=16, channels=1, width=8, spectral_norm=True, num_classes=CLASSES)
    assert isinstance(d.get_layer("projection").embed, keras.layers.SpectralNormalization)


def test_class_norm_scales_and_shifts_each_examples_batch_norm_by_its_labels_rows(tmp_path):
    """``class_norm``: a block's BN output is ``normalized * scale[label] + offset[label]``, computed
    here by hand from the block's own tables; it survives saving in the ``.keras`` format."""
    from resgan.nn.layers import UpBlock

    block = UpBlock(4, upsample=False, num_classes=CLASSES)
    x = np.random.default_rng(2).standard_normal((3, 4, 4, 4)).astype("float32")
    labels = np.array([2, 0, 1], dtype=np.int32)
    block([x, labels])
    rng = np.random.default_rng(3)
    for table in (block.class_scale1, block.class_offset1, block.class_scale2, block.class_offset2):
        table.assign(rng.standard_normal(table.shape).astype("float32"))
    bn = block.bn1
    normalized = (x - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    expected = (
        normalized * block.class_scale1.numpy()[labels][:, None, None]
        + block.class_offset1.numpy()[labels][:, None, None]
    )
    got = block._class_affine(bn(x, training=False), labels, block.class_scale1, block.class_offset1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert not bn.scale and not bn.center  # no shared pair beside the class rows

    g = build_generator(latent_dim=8, width=8, image_size=16, channels=1, num_classes=CLASSES, class_norm=True)
    table = g.get_layer("up_8").class_offset1
    table.assign(rng.standard_normal(table.shape).astype("float32"))
    z = np.repeat(rng.standard_normal((1, 8)).astype("float32"), CLASSES, axis=0)
    g.get_layer(CLASS_EMBEDDING).embeddings.assign(np.zeros((CLASSES, 8), "float32"))
    without_embedding = g([z, np.arange(CLASSES, dtype=np.int32)], training=False).numpy()
    assert np.abs(without_embedding[0] - without_embedding[1]).max() > 1e-3  # the norms alone tell classes apart
    g.save(tmp_path / "g.keras")
    loaded = keras.saving.load_model(tmp_path / "g.keras", safe_mode=True)
    np.testing.assert_array_equal(
        loaded([z, np.arange(CLASSES, dtype=np.int32)], training=False).numpy(), without_embedding
    )
    assert num_classes(loaded) == CLASSES
    assert without_embedding.shape == (CLASSES, 16, 16, 1)
    plain = build_generator(latent_dim=8, width=8, image_size=16, channels=1, num_classes=CLASSES)
    assert "num_classes" not in plain.get_layer("up_8").get_config()  # saved models without it stay as they were


# ---- the train step ------------------------------------------------------------------------------


def make_gan(class_norm: bool = False, **train) -> GAN:
    p = tiny_params(
        model={"conditional": True, "spectral_norm": False, "class_norm": class_norm},
        train={"diffaugment": "", "seed": 0, **train},
    )
    keras.utils.set_random_seed(0)
    return GAN(p.model, p.train, Shapes(image_size=16, channels=1, num_classes=CLASSES))


@pytest.mark.parametrize("class_norm", [False, True])
def test_a_step_updates_only_the_embeddings_of_the_classes_in_the_batch(class_norm, eager):
    """Labels reach both networks and stay with their images: with a batch of classes 0 and 1 only,
    class 2's rows of D's projection and of G's embedding (and with ``class_norm`` of every block's
    scale and offset tables) get no gradient, so the first Adam step leaves them exactly as they
    were, while the rows of 0 and 1 move."""
    gan = make_gan(class_norm)
    images, labels = shapes_dataset(BATCH)
    labels = np.array([0, 1] * (BATCH // 2))
    batches = train_dataset(images, BATCH, seed=0, labels=labels)
    d_embed = gan.discriminator.get_layer("projection").embed.kernel
    g_embed = gan.generator.get_layer("class_embedding").embeddings
    tables = [d_embed, g_embed]
    if class_norm:
        tables += [w for w in gan.generator.get_layer("up_8").weights if w.name.startswith("class_")]
        assert len(tables) == 6
    snapshots = [t.numpy().copy() for t in tables]
    figures = {k: float(v) for k, v in gan.train_step(iter(batches)).items()}
    assert all(np.isfinite(v) for v in figures.values()), figures
    for before, after in zip(snapshots, [t.numpy() for t in tables]):
        np.testing.assert_array_equal(after[2], before[2])
        assert all(np.abs(after[c] - before[c]).max() > 0 for c in (0, 1))


@pytest.mark.parametrize("loss", ["hinge", "wasserstein_gp"])
@pytest.mark.parametrize("class_loss", [0.0, 0.5])
def test_every_step_kind_trains_with_finite_figures(loss, class_loss, eager):
    gan = make_gan(loss=loss, diffaugment="translation", class_loss=class_loss, r1_gamma=0.01, r1_every=1)
    images, labels = shapes_dataset()
    figures = {k: float(v) for k, v in gan.train_step(iter(train_dataset(images, BATCH, 0, labels=labels))).items()}
    assert all(np.isfinite(v) for v in figures.values()), figures


def test_the_class_head_reads_the_same_pooled_features_as_the_logit():
    d = build_discriminator(16, 1, 8, spectral_norm=False, num_classes=CLASSES, class_head=True)
    images = np.random.default_rng(4).uniform(-1, 1, (4, 16, 16, 1)).astype("float32")
    labels = np.array([2, 1, 0, 1], dtype=np.int32)
    logits, class_logits = (out.numpy() for out in d([images, labels], training=False))
    features = keras.Model(d.inputs, d.get_layer("sum_pool").output)([images, labels]).numpy()
    kernel, bias = (w.numpy() for w in d.get_layer("class_head").weights)
    assert logits.shape == (4, 1) and class_logits.shape == (4, CLASSES)
    np.testing.assert_allclose(class_logits, features @ kernel + bias, rtol=1e-5, atol=1e-4)
    # The class logits do not depend on the label D is told; the projection's logit does.
    np.testing.assert_allclose(d([images, (labels + 1) % CLASSES], training=False)[1].numpy(), class_logits, atol=1e-6)
    assert isinstance(
        build_discriminator(16, 1, 8, num_classes=CLASSES, class_head=True).get_layer("sn_class_head"),
        keras.layers.SpectralNormalization,
    )
    with pytest.raises(ValueError, match="class_head needs num_classes"):
        build_discriminator(16, 1, 8, class_head=True)


def brightness_dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """16x16 grey images of three classes told apart by their brightness alone (dark, mid, light)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    levels = np.array([40, 128, 220])[labels][:, None, None, None]
    return np.clip(levels + rng.integers(-30, 30, (n, 16, 16, 1)), 0, 255).astype(np.uint8), labels.astype(np.int64)


def test_class_loss_is_the_heads_cross_entropy_on_the_real_batch_and_it_falls():
    """``train.class_loss``: the D step's ``class_loss_d`` is the head's cross-entropy on the real
    batch it trained on (computed here by hand from the weights before the step); over 60 steps on
    classes a linear head can tell apart, it falls to under a third of where it began."""
    gan = make_gan(class_loss=1.0)
    assert gan.class_head and make_gan().class_head is False
    images, labels = brightness_dataset(96)
    batch_images, batch_labels = next(iter(train_dataset(images, BATCH, seed=0, labels=labels)))
    class_logits = gan.discriminator([batch_images, batch_labels], training=False)[1].numpy()
    expected = np.mean(-tf.nn.log_softmax(class_logits).numpy()[np.arange(BATCH), batch_labels.numpy()])
    batches = iter(train_dataset(images, BATCH, seed=0, labels=labels))
    first = {k: float(v) for k, v in gan.train_step(batches).items()}
    assert first["class_loss_d"] == pytest.approx(expected, rel=1e-4)
    last = [float(gan.train_step(batches)["class_loss_d"]) for _ in range(60)][-10:]
    assert np.mean(last) < first["class_loss_d"] / 3, (first, last)


def test_the_generators_loss_carries_class_loss_times_the_cross_entropy_of_its_fakes():
    """Two GANs alike but for ``class_loss`` (0 and 0.5; the head is built last, so every other
    weight and the latents are the same) and a discriminator rate too small to move D: the G losses
    of their first step differ by exactly 0.5 x ``class_loss_g``."""
    images, labels = brightness_dataset(BATCH)
    losses = {}
    for weight in (0.0, 0.5):
        gan = make_gan(class_loss=weight, lr_d=1e-12)
        figures = gan.train_step(iter(train_dataset(images, BATCH, seed=0, labels=labels)))
        losses[weight] = {k: float(v) for k, v in figures.items()}
    assert "class_loss_g" not in losses[0.0] and losses[0.5]["class_loss_g"] > 0.1
    assert losses[0.5]["loss_g"] - losses[0.0]["loss_g"] == pytest.approx(0.5 * losses[0.5]["class_loss_g"], rel=1e-3)


def test_a_dataset_with_labels_keeps_each_label_with_its_image():
    images, labels = shapes_dataset(12)
    images[:, 0, 0, 0] = np.arange(12)  # each image says its index
    seen = 0
    for x, y in train_dataset(images, 4, seed=3, labels=labels).take(6):
        index = np.rint((x.numpy()[:, 0, 0, 0] + 1.0) * 127.5).astype(int)
        np.testing.assert_array_equal(y.numpy(), labels[index])
        seen += 1
    assert seen == 6


def test_num_classes_of_the_data_and_its_errors():
    images, labels = shapes_dataset(6)
    data = TrainData("memory", 6, 16, 1, images=images, labels=labels)
    assert data.num_classes() == CLASSES
    assert data.num_classes(["a", "b", "c", "d"]) == 4  # a class without training images still counts
    with pytest.raises(ResganError, match="no labels"):
        TrainData("memory", 6, 16, 1, images=images).num_classes()
    with pytest.raises(ResganError, match="2 of 6 training images have none"):
        TrainData("memory", 6, 16, 1, images=images, labels=np.array([0, 1, -1, 2, -1, 0])).num_classes()
    with pytest.raises(ResganError, match="at least 2 classes"):
        TrainData("memory", 6, 16, 1, images=images, labels=np.zeros(6, dtype=np.int64)).num_classes()
    with pytest.raises(ResganError, match="train.input: memory"):
        TrainData("stream", 6, 16, 1).num_classes()


def test_conditional_auto_follows_the_labels_and_true_keeps_its_errors():
    images, labels = shapes_dataset(6)
    labelled = TrainData("memory", 6, 16, 1, images=images, labels=labels)
    unlabelled = TrainData("memory", 6, 16, 1, images=images)
    partly = TrainData("memory", 6, 16, 1, images=images, labels=np.array([0, 1, -1, 2, -1, 0]))
    one_class = TrainData("memory", 6, 16, 1, images=images, labels=np.zeros(6, dtype=np.int64))
    streamed = TrainData("stream", 6, 16, 1)
    assert labelled.classes_for("auto") == CLASSES and labelled.classes_for(True) == CLASSES
    assert labelled.classes_for(False) == 0
    for data in (unlabelled, partly, one_class, streamed):  # auto: unconditional; false: unconditional
        assert data.classes_for("auto") == 0 and data.classes_for(False) == 0
    with pytest.raises(ResganError, match="model.conditional needs labelled images"):
        unlabelled.classes_for(True)
    with pytest.raises(ResganError, match="at least 2 classes"):
        one_class.classes_for(True)


# ---- labels for sampling --------------------------------------------------------------------------


def test_class_labels_cycle_through_every_class_and_keep_the_row_property():
    np.testing.assert_array_equal(class_labels(7, 3, seed=0), [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(class_labels(4, 3, seed=5), [2, 0, 1, 2])
    np.testing.assert_array_equal(class_labels(20, 3, seed=5)[:4], class_labels(4, 3, seed=5))
    counts = np.bincount(class_labels(10_000, 10, seed=123), minlength=10)
    assert counts.min() == counts.max() == 1000
    np.testing.assert_array_equal(class_labels(3, 3, seed=9, label=2), [2, 2, 2])
    assert class_labels(3, 0, seed=0) is None
    with pytest.raises(ResganError, match="from 0 to 2, got 3"):
        class_labels(3, 3, seed=0, label=3)
    with pytest.raises(ResganError, match="not class-conditional"):
        class_labels(3, 0, seed=0, label=1)


# ---- the stages, the CLI and the served model -----------------------------------------------------


def make_project(root: Path, params) -> dict[str, Path]:
    data = root / "data" / "prepared"
    data.mkdir(parents=True)
    images, labels = shapes_dataset()
    np.savez(data / "train.npz", images=images, labels=labels)
    (data / "summary.json").write_text(json.dumps({"data_hash": "c0ffee", "class_names": ["disc", "square", "bar"]}))
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    return {"data": data, "params": root / "params.yaml", "models": root / "models"}


def train_in(root: Path, params, monkeypatch) -> dict[str, Path]:
    from resgan.stages import train

    paths = make_project(root, params)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    monkeypatch.chdir(root)
    train.run(params, train_paths(root))
    return paths


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("conditional")
    params = tiny_params(model={"conditional": True}, train={"steps": 4, "class_loss": 0.5, "log_every": 2})
    with pytest.MonkeyPatch.context() as patch:
        paths = train_in(root, params, patch)
        mlflow.set_tracking_uri(None)
    return root, paths, params


@pytest.mark.slow  # runs a stage
def test_the_train_stage_exports_a_conditional_generator_for_the_summarys_classes(conditional_run):
    root, paths, _ = conditional_run
    generator = load_generator(paths["models"] / "generator.keras")
    assert num_classes(generator) == CLASSES
    run = json.loads((paths["models"] / "mlflow_run.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    logged = client.get_run(run["run_id"]).data
    assert logged.params["model.conditional"] == "True" and logged.params["train.class_loss"] == "0.5"
    for key in ("class_loss/d", "class_loss/g"):  # the class head's cross-entropies, every log_every steps
        history = client.get_metric_history(run["run_id"], key)
        assert [m.step for m in history] == [2, 4] and all(0 < m.value < 50 for m in history), history


@pytest.mark.slow  # runs a stage
def test_the_sample_stage_writes_balanced_labels_that_match_the_images(conditional_run, tmp_path):
    from resgan.stages import sample

    root, paths, params = conditional_run
    sample.run(params, paths["models"] / "generator.keras", tmp_path)
    with np.load(tmp_path / "samples.npz") as saved:
        images, labels = saved["images"], saved["labels"]
    assert len(labels) == len(images) == params.sample.num
    assert np.bincount(labels, minlength=CLASSES).max() - np.bincount(labels, minlength=CLASSES).min() <= 1
    generator = load_generator(paths["models"] / "generator.keras")
    z = np.random.default_rng(params.sample.seed).standard_normal((4, params.model.latent_dim)).astype("float32")
    again = generator(model_inputs(z, labels[:4].astype(np.int32)), training=False).numpy()
    np.testing.assert_array_equal(np.clip(np.rint((again + 1) * 127.5), 0, 255).astype(np.uint8), images[:4])


@pytest.mark.slow  # runs a stage
def test_generate_label_draws_one_class_and_refuses_a_class_the_model_lacks(conditional_run, tmp_path):
    from typer.testing import CliRunner

    from resgan.cli import app

    _, paths, _ = conditional_run
    model = str(paths["models"] / "generator.keras")
    runner = CliRunner()
    one = runner.invoke(
        app, ["generate", "--model", model, "--num", "6", "--label", "2", "--out", str(tmp_path / "a.npz")]
    )
    assert one.exit_code == 0, one.output
    every = runner.invoke(app, ["generate", "--model", model, "--num", "6", "--out", str(tmp_path / "b.npz")])
    assert every.exit_code == 0, every.output
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        np.testing.assert_array_equal(a["labels"], [2] * 6)
        np.testing.assert_array_equal(b["labels"], [0, 1, 2, 0, 1, 2])
        # Same seed, same latents: the images of class 2 agree where the default draw also asked for 2.
        np.testing.assert_array_equal(a["images"][[2, 5]], b["images"][[2, 5]])
        assert not np.array_equal(a["images"][0], b["images"][0])
    # The console entry point, as users meet it: one line, a non-zero exit, nothing written.
    resgan = Path(sys.executable).parent / "resgan"
    bad = subprocess.run(
        [str(resgan), "generate", "--model", model, "--num", "2", "--label", "3", "--out", str(tmp_path / "c.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1] == "error: the label must be a class from 0 to 2, got 3", bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "c.npz").exists()


@pytest.mark.slow  # runs a stage
def test_the_served_model_takes_a_label_column_and_defaults_to_the_seeds_class(conditional_run, tmp_path):
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from resgan import serving
    from resgan.generate import generate

    _, paths, _ = conditional_run
    model = serving.SeedModel(load_generator(paths["models"] / "generator.keras"))
    out = model.predict(pd.DataFrame({"seed": [4, 4], "label": [0, None]}), {"format": "array"})
    images = [np.asarray(image, dtype=np.uint8) for image in out["image"]]
    generate(str(paths["models"] / "generator.keras"), tmp_path / "s.npz", num=1, seed=4)  # class 4 % 3 = 1
    generate(str(paths["models"] / "generator.keras"), tmp_path / "l.npz", num=1, seed=4, label=0)
    with np.load(tmp_path / "s.npz") as by_seed, np.load(tmp_path / "l.npz") as by_label:
        assert int(by_seed["labels"][0]) == 1
        np.testing.assert_array_equal(images[1], by_seed["images"][0])
        np.testing.assert_array_equal(images[0], by_label["images"][0])
    with pytest.raises(MlflowException, match="from 0 to 2, got 7"):
        model.predict(pd.DataFrame({"seed": [1], "label": [7]}))
    with pytest.raises(MlflowException, match="non-negative integers"):
        model.predict(pd.DataFrame({"seed": [1], "label": [1.5]}))


@pytest.mark.slow  # runs a stage
def test_training_conditional_on_unlabelled_data_fails_before_mlflow_is_touched(tmp_path, monkeypatch):
    from resgan.stages import train

    params = tiny_params(model={"conditional": True})
    paths = make_project(tmp_path, params)
    images, _ = shapes_dataset()
    np.savez(paths["data"] / "train.npz", images=images)  # no labels
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(ResganError, match="no labels"):
        train.run(
            params,
            train.TrainPaths(
                params=paths["params"],
                data=paths["data"],
                models=paths["models"],
                checkpoints=tmp_path / "checkpoints",
                metrics=tmp_path / "m.json",
                plots=tmp_path / "p.csv",
            ),
        )
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "checkpoints").exists()


def test_an_unconditional_served_model_refuses_a_label_and_ignores_an_empty_one():
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from resgan import serving

    model = serving.SeedModel(build_generator(latent_dim=8, width=8, image_size=16, channels=1))
    assert model.num_classes == 0
    with pytest.raises(MlflowException, match="not class-conditional"):
        model.predict(pd.DataFrame({"seed": [1], "label": [0]}))
    out = model.predict(pd.DataFrame({"seed": [1], "label": [None]}), {"format": "array"})
    assert np.asarray(out["image"][0]).shape == (16, 16, 1)


@pytest.mark.slow  # runs a stage
def test_the_train_stage_resolves_conditional_auto_from_the_labels(tmp_path, monkeypatch):
    """auto on labelled data trains a conditional generator (its params say so in MLflow); the same
    data without labels trains an unconditional one."""
    params = tiny_params(model={"conditional": "auto"}, train={"steps": 2, "checkpoint_every": 2})
    labelled = train_in(tmp_path / "labelled", params, monkeypatch)
    assert num_classes(load_generator(labelled["models"] / "generator.keras")) == 3
    run_id = json.loads((labelled["models"] / "mlflow_run.json").read_text())["run_id"]
    assert mlflow.MlflowClient().get_run(run_id).data.params["model.conditional"] == "True"

    root = tmp_path / "unlabelled"
    paths = make_project(root, params)
    with np.load(paths["data"] / "train.npz") as data:
        np.savez(paths["data"] / "train.npz", images=data["images"])  # the labels removed
    from resgan.stages import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    monkeypatch.chdir(root)
    train.run(params, train_paths(root))
    assert num_classes(load_generator(paths["models"] / "generator.keras")) == 0
