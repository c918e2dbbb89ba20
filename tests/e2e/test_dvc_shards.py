"""The real ``dvc repro prepare`` with shards on: the shard folder is a DVC output, a second run is a
no-op, another shard size replaces the files and DVC sees a clean workspace."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from project import make_project, project_env, run


def shard_out(repo: Path) -> dict:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(out for out in lock["stages"]["prepare"]["outs"] if out["path"] == "data/prepared/shards")


@pytest.mark.slow
def test_dvc_repro_prepare_with_shards(tmp_path: Path):
    env = project_env()
    repo = make_project(
        tmp_path / "repo", {"prepare": {"source": "digits", "fit": "resize", "image_size": 16, "shard_size": 500}}, env
    )
    run(["dvc", "repro", "prepare"], repo, env)
    out = repo / "data" / "prepared"
    n_train = json.loads((out / "summary.json").read_text())["counts"]["train"]
    index = json.loads((out / "shards" / "index.json").read_text())
    assert index["count"] == n_train and len(index["shards"]) == math.ceil(n_train / 500)
    assert shard_out(repo)["nfiles"] == len(index["shards"]) + 1  # the shards and index.json

    again = run(["dvc", "repro", "prepare"], repo, env)
    assert "Stage 'prepare' didn't change, skipping" in again.stdout

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"]["shard_size"] = 1000
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro", "prepare"], repo, env)
    names = sorted(p.name for p in (out / "shards").iterdir())
    assert names == ["index.json", "train-00000-of-00002.bin", "train-00001-of-00002.bin"]
    assert shard_out(repo)["nfiles"] == 3
    status = run(["dvc", "status", "prepare"], repo, env)
    assert status.stdout.strip() == "Data and pipelines are up to date."
