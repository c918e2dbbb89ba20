"""The train stage's plan: every auto settled by a table of hand-made cases, the key, the params it logs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_params

from resgan.config import SMALL_DATA_POLICY
from resgan.gan.clusters import Clusters
from resgan.gan.plan import DataSummary, PlanError, plan, run_key, with_clusters

LABELLED = DataSummary(images=300, image_size=16, channels=1, data_hash="d1", classes=10)
UNLABELLED = DataSummary(
    images=300,
    image_size=16,
    channels=1,
    data_hash="d1",
    no_classes="model.conditional needs labelled images, and the prepared data has no labels",
)
AUTO = {"conditional": "auto"}

# (case, model params, train params, data) -> (conditional, self_condition, classes, diffaugment, precision)
CASES = [
    ("labels: conditional on the classes", AUTO, {}, LABELLED, (True, 10, 10, "color,translation,cutout", "float32")),
    (
        "labels, conditional false",
        {"conditional": False},
        {},
        LABELLED,
        (False, 10, 0, "color,translation,cutout", "float32"),
    ),
    (
        "no labels: 10 clusters to try (300 images hold 15 of 20)",
        AUTO,
        {},
        UNLABELLED,
        (False, 10, 0, "color,translation,cutout", "float32"),
    ),
    (
        "no labels, 60 images: at most 3 clusters of 20",
        AUTO,
        {},
        DataSummary(images=60, image_size=16, channels=1),
        (False, 3, 0, "color,translation,cutout", "float32"),
    ),
    (
        "no labels, 39 images: too few for 2 clusters",
        AUTO,
        {},
        DataSummary(images=39, image_size=16, channels=1),
        (False, 0, 0, "color,translation,cutout", "float32"),
    ),
    (
        "no labels, self_condition 0",
        {"conditional": "auto", "self_condition": 0},
        {},
        UNLABELLED,
        (False, 0, 0, "color,translation,cutout", "float32"),
    ),
    (
        "clusters found: conditional on them",
        AUTO,
        {},
        DataSummary(**{**UNLABELLED.__dict__, "clusters": 4}),
        (True, 4, 4, "color,translation,cutout", "float32"),
    ),
    (
        "clustering failed: unconditional",
        AUTO,
        {},
        DataSummary(**{**UNLABELLED.__dict__, "clusters": 0}),
        (False, 0, 0, "color,translation,cutout", "float32"),
    ),
    (
        "diffaugment auto below 5,000 images",
        {},
        {"diffaugment": "auto"},
        LABELLED,
        (False, 10, 0, SMALL_DATA_POLICY, "float32"),
    ),
    (
        "diffaugment auto at 5,000 images: off",
        {},
        {"diffaugment": "auto"},
        DataSummary(images=5000, image_size=16, channels=1),
        (False, 10, 0, "", "float32"),
    ),
    (
        "diffaugment auto with ADA: on at any size",
        {},
        {"diffaugment": "auto", "ada_target": 0.6},
        DataSummary(images=60000, image_size=16, channels=1),
        (False, 10, 0, SMALL_DATA_POLICY, "float32"),
    ),
    (
        "precision auto before the device is known",
        {},
        {"precision": "auto"},
        LABELLED,
        (False, 10, 0, "color,translation,cutout", "auto"),
    ),
    (
        "precision auto on an Ampere GPU",
        {},
        {"precision": "auto"},
        DataSummary(**{**LABELLED.__dict__, "accelerator": "gpu:8"}),
        (False, 10, 0, "color,translation,cutout", "mixed_bfloat16"),
    ),
    (
        "precision auto on a Volta GPU",
        {},
        {"precision": "auto"},
        DataSummary(**{**LABELLED.__dict__, "accelerator": "gpu:7"}),
        (False, 10, 0, "color,translation,cutout", "mixed_float16"),
    ),
    (
        "precision auto on a BF16 CPU",
        {},
        {"precision": "auto"},
        DataSummary(**{**LABELLED.__dict__, "accelerator": "cpu:bf16"}),
        (False, 10, 0, "color,translation,cutout", "mixed_bfloat16"),
    ),
    (
        "precision auto on a plain CPU",
        {},
        {"precision": "auto"},
        DataSummary(**{**LABELLED.__dict__, "accelerator": "cpu"}),
        (False, 10, 0, "color,translation,cutout", "float32"),
    ),
    (
        "precision given: kept on any device",
        {},
        {"precision": "mixed_float16"},
        DataSummary(**{**LABELLED.__dict__, "accelerator": "gpu:9"}),
        (False, 10, 0, "color,translation,cutout", "mixed_float16"),
    ),
]


@pytest.mark.parametrize("case, model, train, data, want", CASES, ids=[case[0] for case in CASES])
def test_plan_settles_every_auto(case, model, train, data, want):
    p = plan(tiny_params(model=model, train=train), data)
    got = (p.model.conditional, p.model.self_condition, p.shapes.num_classes, p.train.diffaugment, p.train.precision)
    assert got == want
    assert "auto" not in (p.model.conditional, p.train.diffaugment)
    assert (p.shapes.image_size, p.shapes.channels) == (16, 1)
    # What was settled is logged as settled, and every settled auto says why.
    for name, choice in p.choices.items():
        assert p.params[name] == choice.value and choice.reason


def test_the_reasons_are_said():
    p = plan(
        tiny_params(model=AUTO, train={"diffaugment": "auto", "precision": "auto"}),
        DataSummary(**{**LABELLED.__dict__, "accelerator": "cpu"}),
    )
    assert {name: choice.reason for name, choice in p.choices.items()} == {
        "model.conditional": "every training image has one of 10 labels",
        "train.diffaugment": "300 training images, below 5000",
        "train.precision": "no GPU, and the CPU has no BF16 instructions",
    }
    text = p.describe()
    assert text.splitlines()[0] == f"plan: checkpoint key {p.key}; 4 steps of 8 images; 300 training images, 16x16x1"
    assert "  train.diffaugment: color,translation,cutout (auto: 300 training images, below 5000)" in text
    assert "  model.conditional: True (auto: every training image has one of 10 labels)" in text


def test_conditional_true_without_labels_is_a_plan_error_that_says_why():
    with pytest.raises(
        PlanError, match="^model.conditional needs labelled images, and the prepared data has no labels$"
    ):
        plan(tiny_params(model={"conditional": True}), UNLABELLED)


def test_self_conditioning_wants_clusters_until_the_stage_has_tried():
    params = tiny_params(model=AUTO)
    assert plan(params, UNLABELLED).wants_clusters
    labels = np.array([0, 0, 1, 2] * 75, dtype=np.int32)
    found = with_clusters(UNLABELLED, Clusters(labels, (0.5, 0.25, 0.25)), "3 clusters of the ssl features")
    p = plan(params, found)
    assert not p.wants_clusters and p.model.self_condition == 3 and p.model.conditional is True
    assert p.shapes.cluster_prior == (0.5, 0.25, 0.25) and p.shapes.num_classes == 3
    assert p.choices["model.self_condition"].reason == "3 clusters of the ssl features"
    # The clusters are part of the data the key hashes: other clusters, another key.
    other = with_clusters(UNLABELLED, Clusters(labels[::-1].copy(), (0.5, 0.25, 0.25)), "")
    assert plan(params, other).key != p.key
    failed = plan(params, with_clusters(UNLABELLED, None, "self-conditioning is off: no feature extractor"))
    assert (failed.model.self_condition, failed.model.conditional, failed.wants_clusters) == (0, False, False)
    assert failed.shapes == type(failed.shapes)(16, 1, 0, ())
    assert plan(tiny_params(model=AUTO), LABELLED).wants_clusters is False


def test_the_key_hashes_the_settled_sections_and_the_data():
    params = tiny_params(train={"diffaugment": "auto"})
    p = plan(params, LABELLED)
    train = {
        k: v
        for k, v in p.train.model_dump().items()
        if k not in {"checkpoint_every", "log_every", "sample_every", "max_minutes", "eval_every", "eval_num", "export"}
    }
    assert train["diffaugment"] == SMALL_DATA_POLICY  # the settled value, not "auto"
    blob = json.dumps({"model": p.model.model_dump(), "train": train, "data": "d1"}, sort_keys=True)
    assert p.key == hashlib.sha256(blob.encode()).hexdigest()[:12] == run_key(p, "d1")
    assert plan(params, DataSummary(**{**LABELLED.__dict__, "data_hash": "d2"})).key != p.key
    assert plan(tiny_params(train={"diffaugment": "auto", "log_every": 7}), LABELLED).key == p.key
    assert plan(tiny_params(train={"diffaugment": "auto", "lr_g": 1e-4}), LABELLED).key != p.key


def test_the_logged_params_are_what_the_view_declares_with_the_autos_settled():
    view = tiny_params(model=AUTO).view(("model", "train", "sample.grid"), "train")
    p = plan(view, LABELLED)
    assert set(p.params) == {k for k in tiny_params().flat() if k.split(".")[0] in ("model", "train")} | {"sample.grid"}
    assert p.params["model.conditional"] is True and p.params["sample.grid"] == 16
    assert p.params["train.lr_g"] == 2e-4


def test_planning_imports_neither_tensorflow_nor_mlflow():
    code = (
        "import sys; import resgan.gan.plan; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def _data(images: int, size: int, classes: int = 0) -> DataSummary:
    return DataSummary(images=images, image_size=size, channels=1, classes=classes)


# (case, data) -> model.width: auto's value; the built-in digits (9,000 at 32x32) keep the 48 they always had.
WIDTHS = [
    ("the built-in digits: 9,000 at 32x32", _data(9_000, 32, 10), 48),
    ("400 digits at 32x32", _data(400, 32, 10), 48),
    ("a few hundred faces at 64x64", _data(342, 64, 38), 32),
    ("a few thousand at 64x64", _data(4_999, 64), 32),
    ("5,000 at 64x64: not small", _data(5_000, 64), 48),
    ("a few hundred at 128x128", _data(300, 128), 32),
]


@pytest.mark.parametrize("case, data, want", WIDTHS, ids=[case[0] for case in WIDTHS])
def test_width_auto_is_narrow_for_a_few_thousand_images_of_64x64(case, data, want):
    p = plan(tiny_params(model={"width": "auto"}), data)
    assert p.model.width == p.params["model.width"] == want
    assert str(data.images) in p.choices["model.width"].reason
    # A number is kept whatever the data.
    assert plan(tiny_params(model={"width": 40}), data).model.width == 40


# (case, train params) -> train.steps: auto's value; the digits' dvc repro (no time budget) keeps 1,500.
STEPS = [
    ("no time budget: 1,500", {"steps": "auto", "max_minutes": 0}, 1500),
    ("10 minutes: the minutes end the run", {"steps": "auto", "max_minutes": 10}, 10_000_000),
    ("a number is kept under a budget", {"steps": 700, "max_minutes": 10}, 700),
]


@pytest.mark.parametrize("case, train, want", STEPS, ids=[case[0] for case in STEPS])
def test_steps_auto_leaves_a_time_budget_to_end_the_run(case, train, want):
    p = plan(tiny_params(train=train), LABELLED)
    assert p.train.steps == p.params["train.steps"] == want
    assert ("train.steps" in p.choices) == (train["steps"] == "auto")
    assert f"{want:,} steps of 8 images" in p.describe()


def test_the_digits_plan_is_the_one_they_had_before_width_and_steps_were_auto():
    """The project's params.yaml on the built-in digits (9,000 training images of 32x32, 10 classes, no
    time budget) settles to width 48 and 1,500 steps: the same checkpoint key as those numbers written in."""
    from resgan.config import load_params

    digits = DataSummary(images=9_000, image_size=32, channels=1, data_hash="mnist", classes=10, accelerator="cpu")
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert (params.model.width, params.train.steps) == ("auto", "auto")
    p = plan(params, digits)
    assert (p.model.width, p.train.steps) == (48, 1500)
    written = params.model_copy(
        update={
            "model": params.model.model_copy(update={"width": 48}),
            "train": params.train.model_copy(update={"steps": 1500}),
        }
    )
    assert plan(written, digits).key == p.key
