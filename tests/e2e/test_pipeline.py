"""The whole pipeline, run by the real `dvc` in a temporary git repository, read back from MLflow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from project import make_project, project_env
from project import run as run_command

TINY = {
    "prepare": {"image_size": 16, "max_images": 400},
    "classifier": {"epochs": 15, "batch_size": 32, "width": 8, "feature_dim": 16},  # enough to pass its fitness check
    "model": {"latent_dim": 16, "width": 8},
    "train": {"steps": 8, "batch_size": 16, "log_every": 2, "sample_every": 4, "checkpoint_every": 4},
    "sample": {"num": 200, "grid": 16},
    "evaluate": {"kid_subset_size": 50, "kid_subsets": 10, "ssim_pairs": 50},
}


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the project as a fresh git + DVC repository, using the default store <root>/mlflow.db."""
    env = project_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the default: <root>/mlflow.db, as a user gets it
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it: the stages must keep TensorFlow quiet
    return make_project(tmp_path / "project", TINY, env), env


def _evaluations(client: MlflowClient, experiment_id: str, train_run_id: str) -> list:
    """The evaluation runs nested under a train run, oldest first."""
    found = client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{train_run_id}'", order_by=["attributes.start_time ASC"]
    )
    return list(found)


@pytest.mark.slow
def test_repro_change_evaluation_params_and_compare_experiments(project):
    repo, env = project
    first = run_command(["dvc", "repro"], repo, env)
    # Every stage's output is its own: no TensorFlow start-up lines, no MLflow INFO chatter, no raw JSON.
    output = first.stdout + first.stderr
    for noise in ("oneDNN", "cudart", "absl", "cuInit", "INFO mlflow", "Successfully registered"):
        assert noise not in output, (noise, output[-3000:])
    assert not [line for line in output.splitlines() if line.lstrip().startswith("{")], output[-3000:]
    assert "registered resgan v1" in output and "Running stage 'evaluate'" in output

    for output in (
        "data/prepared/train.npz",
        "models/classifier.keras",
        "models/generator.keras",
        "samples/samples.npz",
        "samples/grid.png",
        "metrics/eval.json",
        "metrics/eval_info.json",
        "plots/train.csv",
        "plots/eval/classes.png",
        "plots/eval/memorization.csv",
    ):
        assert (repo / output).exists(), output
    assert (repo / "mlflow.db").exists() and (repo / "mlruns").is_dir()
    samples = np.load(repo / "samples/samples.npz")["images"]
    assert samples.shape == (200, 16, 16, 1) and samples.dtype.name == "uint8"

    # metrics/eval.json: the figures people compare, FID first; the rest in eval_info.json.
    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    info = json.loads((repo / "metrics/eval_info.json").read_text())
    assert list(evaluation)[0] == "fid_classifier" and "kid_classifier_mean" in evaluation
    assert all(isinstance(v, float) for v in evaluation.values())
    assert info["features"] == "classifier" and info["n_generated"] == 200 and "time_total_s" in info
    assert evaluation["fid_classifier"] > info["fid_classifier_floor"] >= 0  # 8 steps: far from real
    memorization = pd.read_csv(repo / "plots/eval/memorization.csv")
    assert memorization["ssim"].between(0, 1).all() and memorization["generated"].sum() == pytest.approx(1)

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("resgan").experiment_id
    run_id = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    train_run = client.get_run(run_id)
    assert train_run.info.status == "FINISHED" and train_run.data.params["train.steps"] == "8"
    assert "sample.num" not in train_run.data.params  # the evaluation's own params live in its run
    assert [m.step for m in client.get_metric_history(run_id, "loss/d")] == [2, 4, 6, 8]
    # mlflow ui's saved runs view (what the printed URL opens): FID and the key params as columns.
    view = json.loads(client.get_experiment(experiment_id).tags["mlflow.sharedViewState.resgan"])
    assert (
        view["selectedColumns"][0] == "metrics.`eval/fid_classifier`"
        and "params.`train.steps`" in view["selectedColumns"]
    )
    charts = {c["metricKey"]: c for c in view["compareRunCharts"]}  # the chart view: FID first, the losses in one
    assert view["compareRunCharts"][0]["metricKey"] == "train/fid_classifier"
    assert charts["loss/d"]["selectedMetricKeys"] == ["loss/d", "loss/g"] and charts["loss/g"]["deleted"]
    [first] = _evaluations(client, experiment_id, run_id)
    assert first.info.status == "FINISHED" and first.data.params["sample.num"] == "200"
    assert first.data.metrics["eval/fid_classifier"] == pytest.approx(evaluation["fid_classifier"])
    assert "eval/time_total_s" not in first.data.metrics  # timings are in the info artifact
    artifacts = {a.path for a in client.list_artifacts(first.info.run_id, "eval")}
    assert {"eval/eval.json", "eval/eval_info.json", "eval/grid.png", "eval/classes.png"} <= artifacts
    version = client.get_model_version_by_alias("resgan", "champion")
    assert str(version.version) == "1" and version.run_id == run_id
    assert set(client.get_registered_model("resgan").aliases) == {"champion", "candidate"}
    assert float(version.tags["eval/fid_classifier"]) == pytest.approx(evaluation["fid_classifier"], rel=1e-3)
    # The figures are on the logged model's page too, against the evaluation data.
    model = client.get_logged_model(
        json.loads((repo / "models/mlflow_run.json").read_text())["model_uri"].removeprefix("models:/")
    )
    assert any(m.key == "eval/fid_classifier" and m.run_id == first.info.run_id for m in model.metrics)
    # One FID per row: the train run's row shows its evaluation's figures, to 4 significant digits, at
    # the exported step; FID over training (fewer samples) is the curve train/fid_classifier.
    train_run = client.get_run(run_id)
    exported_step = int(train_run.data.tags["exported_step"])
    assert train_run.data.metrics["eval/fid_classifier"] == float(f"{evaluation['fid_classifier']:.4g}")
    assert train_run.data.metrics["eval/kid_classifier_mean"] == float(f"{evaluation['kid_classifier_mean']:.4g}")
    assert "eval/ssim_diversity_generated" not in train_run.data.metrics  # only the table's columns come up
    assert [m.step for m in client.get_metric_history(run_id, "eval/fid_classifier")] == [exported_step]
    assert [m.step for m in client.get_metric_history(run_id, "train/fid_classifier")] == [8]  # at the last step

    again = run_command(["dvc", "repro"], repo, env)
    assert "Data and pipelines are up to date." in again.stdout
    run_command(["git", "add", "-A"], repo, env)
    run_command(["git", "commit", "-qm", "first run"], repo, env)
    tracked = run_command(["git", "ls-files", "metrics", "plots"], repo, env).stdout.split()
    assert {"metrics/eval.json", "metrics/train.json", "plots/train.csv", "plots/eval/classes.csv"} <= set(tracked)

    # Only sample and evaluate params change: DVC re-runs those two; a second evaluation under the same
    # train run records the new params, and the registered version keeps its number with the newest figures.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["sample"]["num"], params["evaluate"]["ssim_pairs"] = 120, 40
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = run_command(["dvc", "repro"], repo, env)
    ran = re.findall(r"Running stage '(\w+)'", changed.stdout)
    assert ran == ["sample", "evaluate"], changed.stdout
    second = _evaluations(client, experiment_id, run_id)[-1]
    assert second.info.run_id != first.info.run_id and second.info.status == "FINISHED"
    assert (second.data.params["sample.num"], second.data.params["evaluate.ssim_pairs"]) == ("120", "40")
    assert client.get_run(first.info.run_id).data.params["sample.num"] == "200"  # history kept
    assert [int(v.version) for v in client.search_model_versions("name='resgan'")] == [1]
    newest = json.loads((repo / "metrics/eval.json").read_text())
    assert float(client.get_model_version("resgan", "1").tags["eval/fid_classifier"]) == pytest.approx(
        newest["fid_classifier"], rel=1e-3
    )
    assert client.get_run(run_id).data.metrics["eval/fid_classifier"] == float(f"{newest['fid_classifier']:.4g}")
    diff = run_command(["dvc", "metrics", "diff", "--json"], repo, env)
    assert "fid_classifier" in json.loads(diff.stdout)["metrics/eval.json"]

    # Experiments: one with other sample params, one with more steps; DVC compares them.
    run_command(["dvc", "exp", "run", "-n", "fewer", "-S", "sample.num=100"], repo, env)
    run_command(["dvc", "exp", "run", "-n", "longer", "-S", "train.steps=16"], repo, env)
    shown = json.loads(run_command(["dvc", "exp", "show", "--json"], repo, env).stdout)
    fids = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                fids[rev["name"]] = rev["data"]["metrics"]["metrics/eval.json"]["data"]["fid_classifier"]
    assert set(fids) == {"fewer", "longer"} and all(v > 0 for v in fids.values()), fids
    diff = json.loads(run_command(["dvc", "metrics", "diff", "fewer", "longer", "--json"], repo, env).stdout)
    assert diff["metrics/eval.json"]["fid_classifier"]["new"] == pytest.approx(fids["longer"])
    plots = run_command(["dvc", "plots", "diff", "fewer", "longer", "--json"], repo, env)
    panels = json.loads(plots.stdout)["data"]
    assert len(panels) == 5, list(panels)  # losses, FID, D outputs, class mix, memorization: each once
    for title, [panel] in panels.items():  # each draws both experiments
        assert {row["rev"] for row in panel["content"]["data"]["values"]} == {"fewer", "longer"}, title
    fid_panel = next(panel for title, [panel] in panels.items() if title.startswith("FID over training"))
    assert sorted(int(r["step"]) for r in fid_panel["content"]["data"]["values"] if r["rev"] == "longer") == [16]
    train_runs = [r for r in client.search_runs([experiment_id]) if r.data.tags.get("stage") == "train"]
    assert len(train_runs) == 2  # "fewer" re-used the trained model; "longer" trained a new one
    model_versions = client.search_model_versions("name='resgan'")
    assert sorted(int(v.version) for v in model_versions) == [1, 2]
    new_fid = float(client.get_model_version("resgan", "2").tags["eval/fid_classifier"])
    old_fid = float(client.get_model_version("resgan", "1").tags["eval/fid_classifier"])
    champion = str(client.get_model_version_by_alias("resgan", "champion").version)
    assert champion == ("2" if new_fid < old_fid else "1")
