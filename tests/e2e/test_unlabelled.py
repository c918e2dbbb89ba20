"""A flat folder of unlabelled images through `dvc repro`, offline and with no edit to dvc.yaml: the
classifier stage trains a self-supervised encoder, evaluate reports FID with its features, and the model
is registered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from project import make_project, project_env
from project import run as run_command

TINY = {
    "prepare": {"source": "folder", "path": "data/raw/shapes", "image_size": 16, "labels_from_folders": False},
    "classifier": {"width": 8, "feature_dim": 16, "ssl_epochs": 20, "ssl_batch_size": 64},
    "model": {"latent_dim": 16, "width": 8},
    "train": {
        "steps": 8,
        "batch_size": 16,
        "log_every": 2,
        "sample_every": 4,
        "checkpoint_every": 4,
        "eval_every": 4,
        "eval_num": 100,
    },
    "sample": {"num": 200, "grid": 16},
    "evaluate": {"kid_subset_size": 50, "kid_subsets": 10, "ssim_pairs": 50},
}


def _shapes(folder: Path, n: int, seed: int = 0, size: int = 16) -> None:
    """``n`` distinct grey images: one to three filled ellipses each, at random places, sizes, brightness."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    folder.mkdir(parents=True)
    for i in range(n):
        image = np.zeros((size, size))
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(2, size - 2, 2)
            ry, rx = rng.uniform(1.5, 5, 2)
            image[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = rng.uniform(120, 255)
        pixels = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")


@pytest.mark.slow
def test_a_flat_folder_of_unlabelled_images_goes_through_the_pipeline(tmp_path):
    env = project_env(KERAS_HOME=str(tmp_path / "no-keras-cache"))  # no Inception weights: features offline
    env.pop("MLFLOW_TRACKING_URI", None)
    repo = tmp_path / "project"
    make_project(repo, TINY, env)
    _shapes(repo / "data/raw/shapes", 300)
    run_command(["git", "add", "-A"], repo, env)
    run_command(["git", "commit", "-qm", "unlabelled shapes"], repo, env)
    result = run_command(["dvc", "repro"], repo, env)

    summary = json.loads((repo / "data/prepared/summary.json").read_text())
    assert summary["class_names"] is None and summary["counts"] == {"train": 270, "test": 30, "total": 300}
    record = json.loads((repo / "models/classifier.json").read_text())
    assert record["kind"] == "ssl" and "two-view retrieval on 30 held-out images" in record["fitness"]
    name = "ssl" if record["trusted"] else "ssl_untrusted"
    figures = json.loads((repo / "metrics/classifier.json").read_text())
    assert figures["n_train"] == 270 and figures["trusted"] == int(record["trusted"])

    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    info = json.loads((repo / "metrics/eval_info.json").read_text())
    assert list(evaluation)[0] == f"fid_{name}" and np.isfinite(evaluation[f"fid_{name}"])
    assert f"kid_{name}_mean" in evaluation and f"pr_{name}_precision" in evaluation
    assert not any(k.startswith("is_") or k.startswith("class_") for k in evaluation)  # no class probabilities
    assert any("self-supervised encoder" in note for note in info["notes"])
    assert info["features"] == name and info["features_trusted"] is record["trusted"]
    fid_curve = (repo / "plots/fid.csv").read_text().splitlines()
    assert fid_curve[0] == "step,fid" and len(fid_curve) == 3  # steps 4 and 8, with the same features

    # A trusted encoder's features cluster the images (model.self_condition: 10, 27 images a cluster): the
    # exported generator draws its clusters itself, from one more latent coordinate.
    from resgan.loading import latent_dim, load_generator, num_classes

    generator = load_generator(repo / "models/generator.keras")
    conditioned = "self-conditioning: 10 k-means clusters of the ssl features" in result.stdout
    assert conditioned is record["trusted"] and num_classes(generator) == 0
    assert latent_dim(generator) == TINY["model"]["latent_dim"] + conditioned

    registered = json.loads((repo / "models/registered.json").read_text())
    assert registered["version"] == 1 and registered["metric"] == f"eval/fid_{name}"
    assert ("champion" in registered["aliases"]) is record["trusted"]
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    version = client.get_model_version("resgan", "1")
    assert float(version.tags[f"eval/fid_{name}"]) == pytest.approx(evaluation[f"fid_{name}"], rel=1e-3)
    drawn = run_command(
        ["resgan", "generate", "--model", "models:/resgan/1", "--num", "8", "--out", "g.png"], repo, env
    )
    assert Image.open(repo / "g.png").size[0] > 16 and "Traceback" not in drawn.stderr
    assert "dvc.yaml" not in run_command(["git", "status", "--porcelain"], repo, env).stdout  # no edit needed
    assert "Traceback" not in result.stdout + result.stderr
