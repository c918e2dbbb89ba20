"""The model registry, model references and the served pyfunc, against a real SQLite MLflow store.

One tiny training run (shared with tests/test_cli.py through :func:`registry_store`) logs a
generator; a second, untrained generator is logged beside it; both are registered as versions of
``resgan``: v1 (the trained one, fid 10) holds ``champion``, v2 (fid 12) holds ``candidate``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_params
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from project import train_paths

from resgan import model_registry, serving
from resgan.errors import ResganError
from resgan.loading import load_generator
from resgan.nn.networks import build_generator
from resgan.sampling import generate_images, latents
from resgan.serving import decode_png
from resgan.stages.train import run as train

pytestmark = pytest.mark.slow  # a store built by real training runs

LATENT, SIZE = 16, 16  # tiny_params(): model.latent_dim 16; the prepared images below are 16x16x1


@dataclass(frozen=True)
class Store:
    root: Path
    uri: str  # sqlite:///.../mlflow.db
    run_id: str  # the training run
    trained_uri: str  # models:/m-... logged by the train stage
    trained_file: Path  # models/generator.keras written by the train stage (same weights)
    other_uri: str  # an untrained generator with other weights, logged through resgan.serving
    classifier: Path  # a Keras model that is not a generator

    @property
    def trained_id(self) -> str:
        return self.trained_uri.removeprefix("models:/")


def registry_store(tmp_path_factory) -> Store:
    """Build the store once per test session (test_cli.py and this module share it)."""
    root = tmp_path_factory.getbasetemp() / "registry-store"
    record = root / "store.json"
    if record.exists():
        raw = json.loads(record.read_text())
        return Store(**{k: Path(v) if k in ("root", "trained_file", "classifier") else v for k, v in raw.items()})
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("DVC_ROOT", str(root))  # tracking.project_root(): never the repository's own mlflow.db
        store = _build(root, uri)
    _forget_tracking_uri()
    record.write_text(json.dumps({k: str(v) for k, v in asdict(store).items()}))
    return store


def _build(root: Path, uri: str) -> Store:
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 32)):
        np.savez(
            data / f"{split}.npz",
            images=rng.integers(0, 256, (n, SIZE, SIZE, 1), dtype=np.uint8),
            labels=rng.integers(0, 10, n),
        )
    (data / "summary.json").write_text(json.dumps({"data_hash": "test-data"}))
    params_path = root / "params.yaml"
    params_path.write_text("{}\n")
    train(
        tiny_params(),
        train_paths(root, data),
    )
    info = json.loads((root / "models" / "mlflow_run.json").read_text())

    mlflow.set_tracking_uri(uri)
    keras.utils.set_random_seed(1)
    other = build_generator(latent_dim=LATENT, width=8, image_size=SIZE, channels=1)
    with mlflow.start_run(experiment_id=info["experiment_id"], run_name="other"):
        other_uri = serving.log_model(other, name="generator").model_uri

    model_registry.register(
        info["model_uri"],
        "resgan",
        "fid",
        "fid_classifier",
        {"fid_classifier": 10.0, "features": "classifier"},
        {"feature_extractor": "classifier"},
        run_id=info["run_id"],
    )
    model_registry.register(
        other_uri,
        "resgan",
        "fid",
        "fid_classifier",
        {"fid_classifier": 12.0, "features": "classifier"},
        {"feature_extractor": "classifier"},
    )

    classifier = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    classifier.save(root / "classifier.keras")
    return Store(
        root=root,
        uri=uri,
        run_id=info["run_id"],
        trained_uri=info["model_uri"],
        trained_file=root / "models" / "generator.keras",
        other_uri=other_uri,
        classifier=root / "classifier.keras",
    )


def _forget_tracking_uri() -> None:
    """mlflow.set_tracking_uri is process-global: leave MLflow reading MLFLOW_TRACKING_URI again."""
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return registry_store(tmp_path_factory)


@pytest.fixture
def use_store(store, monkeypatch):
    """Point this test's MLflow at the shared store (the autouse fixture points it at an empty one)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    mlflow.set_tracking_uri(store.uri)
    yield store
    _forget_tracking_uri()


def _client():
    return MlflowClient()


def _alias(name: str, alias: str) -> int:
    return int(_client().get_model_version_by_alias(name, alias).version)


# ---------------------------------------------------------------- registration and alias rules


def test_candidate_always_moves_champion_only_for_a_better_model(use_store):
    store = use_store
    first = model_registry.register(
        store.trained_uri,
        "rules",
        "fid",
        "fid_classifier",
        {"fid_classifier": 10.0},
        {"feature_extractor": "classifier"},
        run_id=store.run_id,
    )
    assert first.version == 1 and first.aliases == ("candidate", "champion") and first.previous_champion is None
    assert _alias("rules", "champion") == 1 and _alias("rules", "candidate") == 1

    worse = model_registry.register(store.other_uri, "rules", "fid", "fid_classifier", {"fid_classifier": 12.5}, {})
    assert worse.aliases == ("candidate",)
    assert (worse.previous_champion, worse.previous_value) == (1, 10.0)
    assert _alias("rules", "champion") == 1 and _alias("rules", "candidate") == 2

    equal = model_registry.register(store.other_uri, "rules", "fid", "fid_classifier", {"fid_classifier": 10.0}, {})
    assert equal.aliases == ("candidate",), "a tie does not take champion"
    assert _alias("rules", "champion") == 1 and _alias("rules", "candidate") == 3

    better = model_registry.register(store.other_uri, "rules", "fid", "fid_classifier", {"fid_classifier": 7.25}, {})
    assert better.aliases == ("candidate", "champion") and "beats champion v1" in better.decision
    assert _alias("rules", "champion") == 4 and _alias("rules", "candidate") == 4

    v1 = _client().get_model_version("rules", "1")
    assert v1.tags["eval/fid_classifier"] == "10.0" and v1.tags["source_run"] == store.run_id
    assert v1.tags["feature_extractor"] == "classifier"
    assert _client().get_model_version("rules", "4").tags["eval/fid_classifier"] == "7.25"


def test_an_evaluated_again_model_keeps_its_version_with_the_newest_figures(use_store):
    store = use_store
    first = model_registry.register(
        store.trained_uri,
        "again",
        "fid",
        "fid_classifier",
        {"fid_classifier": 19.55067478114634, "kid_classifier_mean": 0.012345678},
        {"feature_extractor": "classifier"},
        reuse=True,
        description="first",
    )
    tags = _client().get_model_version("again", "1").tags
    assert tags["eval/fid_classifier"] == "19.55" and tags["eval/kid_classifier_mean"] == "0.01235"  # 4 digits
    other = model_registry.register(
        store.other_uri, "again", "fid", "fid_classifier", {"fid_classifier": 15.0}, {}, reuse=True
    )
    assert other.version == 2 and other.aliases == ("candidate", "champion")
    # v1 evaluated again (other sample params): same version, its figures replaced, the rule applied again.
    again = model_registry.register(
        store.trained_uri,
        "again",
        "fid",
        "fid_classifier",
        {"fid_classifier": 12.0},
        {"feature_extractor": "classifier"},
        reuse=True,
        description="second",
    )
    assert (first.version, again.version) == (1, 1) and again.aliases == ("candidate", "champion")
    assert "beats champion v2" in again.decision
    v1 = _client().get_model_version("again", "1")
    assert v1.tags["eval/fid_classifier"] == "12.0" and "eval/kid_classifier_mean" not in v1.tags
    assert v1.description == "second"
    assert len(_client().search_model_versions("name='again'")) == 2
    # The champion evaluated again, a little worse but still the best: it stays.
    still = model_registry.register(
        store.trained_uri, "again", "fid", "fid_classifier", {"fid_classifier": 14.0}, {}, reuse=True
    )
    assert still.aliases == ("candidate", "champion") and "it stays champion" in still.decision
    # Evaluated again and now worse than v2's newest figures: champion moves to v2, v1 stays candidate.
    worse = model_registry.register(
        store.trained_uri, "again", "fid", "fid_classifier", {"fid_classifier": 30.0}, {}, reuse=True
    )
    assert worse.version == 1 and worse.aliases == ("candidate",)
    assert "no longer beats v2's 15" in worse.decision and "champion moves to v2" in worse.decision
    assert _alias("again", "champion") == 2 and _alias("again", "candidate") == 1


def test_figures_from_an_untrusted_extractor_never_make_a_champion(use_store):
    store = use_store
    first = model_registry.register(
        store.trained_uri, "untrusted", "fid", "fid_ssl_untrusted", {"fid_ssl_untrusted": 1.0}, {}, trusted=False
    )
    assert first.aliases == ("candidate",) and "failed its fitness check" in first.decision
    with pytest.raises(MlflowException):  # no champion at all, even with none to beat
        _client().get_model_version_by_alias("untrusted", "champion")
    trusted = model_registry.register(store.other_uri, "untrusted", "fid", "fid_ssl", {"fid_ssl": 30.0}, {})
    assert trusted.aliases == ("candidate", "champion")
    again = model_registry.register(
        store.trained_uri, "untrusted", "fid", "fid_ssl_untrusted", {"fid_ssl_untrusted": 0.5}, {}, trusted=False
    )
    assert again.aliases == ("candidate",) and _alias("untrusted", "champion") == 2


def test_higher_is_better_for_the_inception_score(use_store):
    store = use_store
    model_registry.register(store.trained_uri, "by-is", "is", "is_classifier_mean", {"is_classifier_mean": 2.0}, {})
    lower = model_registry.register(
        store.other_uri, "by-is", "is", "is_classifier_mean", {"is_classifier_mean": 1.5}, {}
    )
    higher = model_registry.register(
        store.other_uri, "by-is", "is", "is_classifier_mean", {"is_classifier_mean": 3.0}, {}
    )
    assert lower.aliases == ("candidate",) and higher.aliases == ("candidate", "champion")
    assert _alias("by-is", "champion") == 3


def test_champion_stays_when_the_numbers_cannot_be_compared(use_store):
    store = use_store
    model_registry.register(store.trained_uri, "mixed", "fid", "fid_inception", {"fid_inception": 30.0}, {})
    # Measured with another feature extractor: the champion has no fid_classifier, so nothing moves.
    other = model_registry.register(store.other_uri, "mixed", "fid", "fid_classifier", {"fid_classifier": 1.0}, {})
    assert other.aliases == ("candidate",) and "another feature extractor" in other.decision
    missing = model_registry.register(store.other_uri, "mixed", "fid", "fid_inception", {"kid_inception_mean": 0.1}, {})
    assert missing.aliases == ("candidate",) and missing.value is None
    assert _alias("mixed", "champion") == 1 and _alias("mixed", "candidate") == 3


def test_scores_from_a_retrained_classifier_are_not_compared_with_the_champion(use_store):
    store = use_store
    old = {"feature_extractor_id": "classifier:aaaaaaaaaaaa"}
    new = {"feature_extractor_id": "classifier:bbbbbbbbbbbb"}
    model_registry.register(store.trained_uri, "refit", "fid", "fid_classifier", {"fid_classifier": 30.0}, old)
    other = model_registry.register(store.other_uri, "refit", "fid", "fid_classifier", {"fid_classifier": 1.0}, new)
    assert other.aliases == ("candidate",) and "another feature extractor" in other.decision
    assert _alias("refit", "champion") == 1
    same = model_registry.register(store.other_uri, "refit", "fid", "fid_classifier", {"fid_classifier": 2.0}, old)
    assert same.aliases == ("candidate", "champion") and _alias("refit", "champion") == 3


def test_a_non_finite_metric_never_takes_champion_and_never_keeps_it(use_store):
    store = use_store
    nan = model_registry.register(
        store.trained_uri, "nan", "fid", "fid_classifier", {"fid_classifier": float("nan")}, {}
    )
    assert nan.aliases == ("candidate",) and model_registry.champion("nan") is None
    finite = model_registry.register(store.other_uri, "nan", "fid", "fid_classifier", {"fid_classifier": 50.0}, {})
    assert finite.aliases == ("candidate", "champion")
    # A NaN champion (promoted by hand, or registered before this rule) loses to any finite number;
    # otherwise every comparison with it is False and it would stay champion for ever.
    _client().set_registered_model_alias("nan", "champion", "1")
    replaced = model_registry.register(store.other_uri, "nan", "fid", "fid_classifier", {"fid_classifier": 60.0}, {})
    assert replaced.aliases == ("candidate", "champion") and _alias("nan", "champion") == 3


# ---------------------------------------------------------------- what `resgan models` reads


def test_models_list_show_promote(use_store, capsys):
    rows = model_registry.list_versions("resgan", "fid")
    assert [(r["version"], r["aliases"]) for r in rows] == [(2, ["candidate"]), (1, ["champion"])]
    assert rows[1]["tags"]["eval/fid_classifier"] == "10.0" and rows[1]["run_id"] == use_store.run_id
    assert rows[1]["source"] == use_store.trained_uri
    table = capsys.readouterr().out
    assert "eval/fid_classifier" in table and "champion" in table and use_store.run_id in table

    shown = model_registry.show_version("resgan", "champion")
    assert shown["version"] == 1 and shown["aliases"] == ["champion"]
    assert model_registry.show_version("resgan", "2")["aliases"] == ["candidate"]

    assert model_registry.promote("resgan", "candidate", "reviewed") == (2, None)
    assert _alias("resgan", "reviewed") == 2
    assert model_registry.promote("resgan", "1", "reviewed") == (1, 2)
    assert _alias("resgan", "reviewed") == 1 and _alias("resgan", "champion") == 1
    _client().delete_registered_model_alias("resgan", "reviewed")


def test_models_list_reads_the_params_as_strictly_as_a_stage_and_imports_no_tensorflow(use_store, tmp_path):
    # In a fresh process: whether TensorFlow was imported, and the exit code, are the behaviour.
    code = (
        "import sys\nfrom resgan.cli import main\nsys.argv = ['resgan', *sys.argv[1:]]\ncode = 0\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code or 0\n"
        "print('exit', code, 'tensorflow' in sys.modules)\n"
    )
    params = tmp_path / "params.yaml"
    params.write_text("mlflow:\n  registered_model: resgan\n  champion_metric: kid\n")
    listed = subprocess.run(
        [sys.executable, "-c", code, "models", "list"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert listed.stdout.splitlines()[-1] == "exit 0 False", listed.stderr
    assert "resgan: 2 versions (champion metric: kid)" in listed.stdout
    params.write_text("mlflow:\n  registered_model: resgan\n  champion_metrc: kid\n")
    typo = subprocess.run(
        [sys.executable, "-c", code, "models", "list"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert typo.stdout.strip() == "exit 1 False"
    assert typo.stderr.strip() == (
        "error: params: unknown key 'mlflow.champion_metrc' (did you mean 'mlflow.champion_metric'?)"
    )


def test_the_list_columns_are_the_tags_of_the_champion_metric():
    tags = [
        "eval/fid_classifier",
        "eval/fid_inception",
        "eval/fid_classifier_floor",
        "eval/kid_classifier_mean",
        "eval/kid_classifier_std",
        "eval/is_inception_mean",
        "eval/pr_classifier_precision",
        "eval/pr_n",
    ]
    columns = {
        metric: [t for t in tags if re.fullmatch(model_registry.metric_tag_pattern(metric), t)]
        for metric in ("fid", "kid", "is", "pr_precision", "unknown")
    }
    assert columns == {
        "fid": ["eval/fid_classifier", "eval/fid_inception"],
        "kid": ["eval/kid_classifier_mean"],
        "is": ["eval/is_inception_mean"],
        "pr_precision": ["eval/pr_classifier_precision"],
        "unknown": tags,
    }


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r: r.list_versions("nomodel"), "no registered model named 'nomodel'"),
        (lambda r: r.show_version("resgan", "99"), "resgan has no version 99 (versions 1 to 2)"),
        (
            lambda r: r.show_version("resgan", "nope"),
            "resgan has no alias 'nope'; its aliases: candidate (v2), champion (v1)",
        ),
        (lambda r: r.promote("resgan", "99", "champion"), "resgan has no version 99"),
        (lambda r: r.promote("resgan", "1", "latest"), "'latest' cannot be an alias"),
    ],
)
def test_registry_errors_are_one_clear_line(use_store, call, message):
    with pytest.raises(ResganError) as caught:
        call(model_registry)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert _alias("resgan", "champion") == 1


# ---------------------------------------------------------------- model references


def _weights(model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


def test_every_kind_of_model_reference_loads_the_same_generator(use_store, tmp_path):
    store = use_store
    reference = _weights(load_generator(store.trained_file))
    local_folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=store.trained_uri, dst_path=str(tmp_path)))
    for ref in (
        "models:/resgan@champion",
        "models:/resgan/1",
        store.trained_id,
        store.trained_uri,
        f"runs:/{store.run_id}/generator",
        str(local_folder),
    ):
        model = load_generator(ref)
        assert model.inputs[0].shape[-1] == LATENT and tuple(model.outputs[0].shape[1:]) == (SIZE, SIZE, 1), ref
        for got, want in zip(_weights(model), reference):
            np.testing.assert_array_equal(got, want, err_msg=ref)
    other = _weights(load_generator("models:/resgan@candidate"))
    assert any(not np.array_equal(a, b) for a, b in zip(other, reference))


def test_downloads_are_removed_after_loading(use_store, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    load_generator("models:/resgan/2")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("resgan-model-")] == []


@pytest.mark.parametrize(
    "ref, message",
    [
        ("models:/nomodel@champion", "cannot resolve model models:/nomodel@champion"),
        ("models:/resgan@nope", "alias nope not found"),
        ("models:/resgan/99", "version=99"),
        ("m-" + "0" * 32, "cannot resolve model models:/m-00000000000000000000000000000000"),
    ],
)
def test_unknown_models_are_one_clear_line(use_store, ref, message):
    with pytest.raises(ResganError) as caught:
        load_generator(ref)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_sqlite_store_is_an_error_and_is_not_created(tmp_path, monkeypatch):
    db = tmp_path / "nowhere" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    with pytest.raises(ResganError, match="no MLflow store at"):
        load_generator("models:/resgan@champion")
    assert not db.exists() and not db.parent.exists()


def test_files_that_are_not_generators_are_refused(store, tmp_path):
    with pytest.raises(ResganError, match="is not a generator: it maps"):
        load_generator(store.classifier)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(ResganError, match="is not a Keras model file"):
        load_generator(junk)
    with pytest.raises(ResganError, match="not found"):
        load_generator(tmp_path / "missing.keras")


# ---------------------------------------------------------------- the logged model and its pyfunc


def test_logged_generator_is_keras_native_with_a_seed_pyfunc_and_no_pickle(use_store, tmp_path):
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/resgan@champion", dst_path=str(tmp_path)))
    meta = yaml.safe_load((local / "MLmodel").read_text())
    assert meta["flavors"]["keras"]["data"] == "data" and (local / "data" / "model.keras").is_file()
    assert meta["flavors"]["python_function"]["loader_module"] == "resgan.serving"
    assert meta["metadata"]["resgan"] == {"latent_dim": LATENT, "image_shape": [SIZE, SIZE, 1], "num_classes": 0}
    inputs = json.loads(meta["signature"]["inputs"])
    assert [(c["name"], c["type"], c["required"]) for c in inputs] == [
        ("seed", "long", True),
        ("truncation", "double", False),
        ("label", "long", False),
    ]
    assert json.loads(meta["signature"]["params"])[0]["name"] == "format"
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    assert isinstance(mlflow.keras.load_model("models:/resgan@champion"), keras.Model)
    assert use_store.trained_uri.startswith("models:/m-")


def test_pyfunc_turns_seeds_into_the_images_generate_draws(use_store):
    generator = load_generator(use_store.trained_file)
    expected = {s: generate_images(generator, latents(1, LATENT, s), batch_size=8)[0] for s in (1, 2)}
    tame = generate_images(generator, latents(1, LATENT, 1, 0.5), batch_size=8)[0]

    model = mlflow.pyfunc.load_model("models:/resgan@champion")
    out = model.predict(pd.DataFrame({"seed": [1, 2]}))
    assert list(out.columns) == ["seed", "image"] and out["seed"].tolist() == [1, 2]
    for seed, text in zip(out["seed"], out["image"]):
        np.testing.assert_array_equal(decode_png(text), expected[seed])
    arrays = model.predict({"seed": [2, 1]}, params={"format": "array"})
    np.testing.assert_array_equal(np.asarray(arrays["image"][0], dtype=np.uint8), expected[2])
    truncated = model.predict(pd.DataFrame({"seed": [1, 1], "truncation": [0.5, None]}))
    np.testing.assert_array_equal(decode_png(truncated["image"][0]), tame)
    np.testing.assert_array_equal(decode_png(truncated["image"][1]), expected[1])
    for bad, params in (
        (pd.DataFrame({"seed": [-1]}), None),
        (pd.DataFrame({"seed": [1]}), {"format": "jpeg"}),
        (pd.DataFrame({"seed": [1], "truncation": [-2.0]}), None),
    ):
        with pytest.raises(MlflowException):
            model.predict(bad, params=params)
