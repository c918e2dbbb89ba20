"""Concurrent experiments: two experiments queued with ``dvc exp run --queue`` and run at once with
``dvc queue start -j 2``, in a real git + DVC copy of the project. Both share the project's ``mlflow.db``
(DVC_ROOT points there from the queue's temporary copies): each gets its own complete run and model
version, and the store stays consistent."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from project import make_project, project_env, run
from registrations import register_at_once

from resgan import model_registry

TINY = {
    "prepare": {"image_size": 16, "max_images": 300},
    "classifier": {"epochs": 15, "batch_size": 32, "width": 8, "feature_dim": 16},  # enough to pass its fitness check
    "model": {"latent_dim": 16, "width": 8},
    "train": {
        "steps": 4,
        "batch_size": 16,
        "log_every": 1,
        "sample_every": 4,
        "checkpoint_every": 2,
        "precision": "float32",
    },
    "sample": {"num": 100, "grid": 16},
    "evaluate": {"kid_subset_size": 50, "kid_subsets": 5, "ssim_pairs": 50, "is_splits": 2, "max_real": 200},
}
EXPERIMENTS = {"exp-four": 4, "exp-six": 6}  # name -> train.steps


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run(args, cwd, env)


@pytest.fixture
def repo(tmp_path: Path):
    """A copy of the project (pipeline, tiny params, code, raw-data folder) as a fresh git + DVC repo."""
    env = project_env(TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("MLFLOW_TRACKING_URI", None)  # the default: <DVC_ROOT>/mlflow.db, as a user gets it
    repo = make_project(tmp_path / "project", TINY, env)
    # One domain classifier for both: FIDs from two classifiers are never compared (see model_registry.py).
    _run(["dvc", "repro", "classifier"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "prepared data and classifier"], repo, env)
    yield repo, env
    subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, env=env, capture_output=True, timeout=120)


def _queue_status(repo: Path, env: dict[str, str]) -> dict[str, str]:
    """name -> status (Queued, Running, Success, Failed) from `dvc queue status`."""
    out = _run(["dvc", "queue", "status"], repo, env).stdout
    status = {}
    for line in out.splitlines():
        words = line.split()
        for name in EXPERIMENTS:
            if name in words:
                status[name] = words[-1]
    return status


@pytest.mark.slow
def test_two_queued_experiments_run_at_once_each_with_its_own_run_and_version(repo):
    repo, env = repo
    for name, steps in EXPERIMENTS.items():
        _run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.steps={steps}"], repo, env)
    _run(["dvc", "queue", "start", "-j", "2"], repo, env)
    deadline = time.monotonic() + 1200
    while True:
        status = _queue_status(repo, env)
        if len(status) == 2 and all(s in ("Success", "Failed") for s in status.values()):
            break
        assert time.monotonic() < deadline, f"queue not done within 1200 s: {status}"
        time.sleep(5)
    if status != {name: "Success" for name in EXPERIMENTS}:
        logs = {
            n: subprocess.run(["dvc", "queue", "logs", n], cwd=repo, env=env, capture_output=True, text=True).stdout[
                -4000:
            ]
            for n in EXPERIMENTS
        }
        pytest.fail(f"{status}\n" + "\n".join(f"--- {n}\n{text}" for n, text in logs.items()))

    db = repo / "mlflow.db"
    assert db.is_file() and not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))  # one store: the project's
    assert not list(repo.rglob("mlflow.db-journal"))
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("resgan")
    found = client.search_runs([experiment.experiment_id])
    runs = {r.data.tags.get("dvc_exp_name"): r for r in found if r.data.tags.get("stage") == "train"}
    evaluations = {r.data.tags["mlflow.parentRunId"]: r for r in found if r.data.tags.get("stage") == "evaluate"}
    assert len(found) == 2 * len(EXPERIMENTS)  # a train run and the evaluation under it, each
    assert set(runs) == set(EXPERIMENTS), list(runs)
    versions = {}
    for name, steps in EXPERIMENTS.items():
        run = runs[name]
        assert run.info.status == "FINISHED", name
        assert run.info.run_name == name and run.data.params["train.steps"] == str(steps)
        assert run.data.tags["trained_steps"] == str(steps)
        for key in ("loss/d", "loss/g", "d/real", "d/fake"):  # every step, once
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(
                range(1, steps + 1)
            ), (name, key)
        evaluation = evaluations[run.info.run_id]
        assert evaluation.info.status == "FINISHED" and evaluation.data.tags["dvc_exp_name"] == name
        assert "eval/fid_classifier" in evaluation.data.metrics and evaluation.data.params["sample.num"] == "100"
        assert run.info.artifact_uri.startswith((repo / "mlruns").as_uri())  # not inside the queue's copy
        version = client.get_model_version("resgan", evaluation.data.tags["registered_version"])
        assert version.run_id == run.info.run_id and version.tags["source_run"] == run.info.run_id
        assert float(version.tags["eval/fid_classifier"]) == pytest.approx(
            evaluation.data.metrics["eval/fid_classifier"], rel=1e-3
        )  # the tag: 4 significant digits
        versions[name] = int(version.version)
    assert sorted(versions.values()) == [1, 2]  # one version each, no gap, no extra
    assert len(client.search_model_versions("name='resgan'")) == 2
    assert len({evaluations[runs[n].info.run_id].data.tags["feature_extractor"] for n in EXPERIMENTS}) == 1
    # candidate: the version registered last; champion: the better FID (registered in either order).
    model = client.get_registered_model("resgan")
    assert int(model.aliases["candidate"]) == 2
    fid = {v: float(client.get_model_version("resgan", str(v)).tags["eval/fid_classifier"]) for v in (1, 2)}
    first_better = fid[2] >= fid[1]  # v2 takes champion only when strictly better (lower)
    assert int(model.aliases["champion"]) == (1 if first_better else 2), (fid, model.aliases)
    # The SQLite file itself: intact, nothing left running.
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert con.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0] == 0
        assert con.execute("select count(*) from model_versions").fetchone()[0] == 2
    # Each experiment's outputs were committed by DVC: its metrics name its own run.
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    assert {
        name for entry in shown for exp in (entry.get("experiments") or []) for name in [exp.get("name")] if name
    } >= set(EXPERIMENTS)


@pytest.mark.parametrize("seed", [1, 2])
def test_concurrent_registrations_keep_candidate_newest_and_champion_best(seed):
    """Eight registrations at once into one SQLite store (threads stand in for concurrent ``evaluate``
    processes: the rows and the lock file they contend for are the same). Registered one after another,
    the rules give: candidate = the newest version, champion = the best FID. Concurrently, unserialized,
    they did not (an alias insert collided, or champion was decided from a stale one)."""
    fids, errors = register_at_once(
        seed, {"feature_extractor": "classifier", model_registry.EXTRACTOR_TAG: "classifier:1"}, timeout=120
    )
    assert errors == []
    client = MlflowClient()
    versions = client.search_model_versions("name='race'")
    assert sorted(int(v.version) for v in versions) == list(range(1, 9))
    assert sorted(float(v.tags["eval/fid_classifier"]) for v in versions) == sorted(fids)  # one version each
    aliases = client.get_registered_model("race").aliases
    best = min(versions, key=lambda v: float(v.tags["eval/fid_classifier"]))
    assert int(aliases["candidate"]) == 8
    assert int(aliases["champion"]) == int(best.version), (
        aliases,
        {v.version: v.tags["eval/fid_classifier"] for v in versions},
    )
