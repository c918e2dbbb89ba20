"""The real ``dvc repro prepare`` in a copy of the project: outputs, then a no-op second run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: `resgan` and `dvc` live here


def sh(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """dvc.yaml, params.yaml (16x16 images), src/ and data/raw/ in a fresh git + DVC repo."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "data" / "raw", repo / "data" / "raw")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"].update(image_size=16, source="digits", fit="resize")  # the small built-in set: fast
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    return repo


@pytest.mark.slow
def test_dvc_repro_prepare_then_nothing_changes(project: Path):
    sh("dvc", "repro", "prepare", cwd=project)
    out = project / "data" / "prepared"
    summary = json.loads((out / "summary.json").read_text())
    with np.load(out / "train.npz") as train, np.load(out / "test.npz") as test:
        assert train["images"].shape == (summary["counts"]["train"], 16, 16, 1)
        assert test["images"].shape == (summary["counts"]["test"], 16, 16, 1)
        assert train["images"].dtype == np.uint8 and len(train["labels"]) == len(train["images"])
    assert summary["source"] == "digits" and summary["counts"]["total"] == 1797 - summary["duplicates"]
    assert (out / "manifest.csv").is_file() and (out / "preview.png").is_file()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["prepare"]["params"]["params.yaml"]["prepare"]["image_size"] == 16

    again = sh("dvc", "repro", "prepare", cwd=project)
    assert "Stage 'prepare' didn't change, skipping" in again.stdout
    assert "Data and pipelines are up to date." in again.stdout
    status = sh("dvc", "status", "prepare", cwd=project)
    assert status.stdout.strip() == "Data and pipelines are up to date."
