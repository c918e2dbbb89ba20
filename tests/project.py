"""A copy of the project (pipeline, params, code) as a fresh git + DVC repository, for the tests that run
DVC end to end (tests/e2e, tests/faults)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a command; fail the test with its output when it exits non-zero."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def project_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell gives: the venv's tools first, a git identity, no DVC_ROOT."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        **extra,
    }
    env.pop("DVC_ROOT", None)
    return env


def make_project(repo: Path, overrides: dict[str, dict], env: dict[str, str]) -> Path:
    """Copy dvc.yaml, params.yaml (with ``overrides`` per section), src/ and data/raw/ into ``repo``,
    then ``git init``, ``dvc init`` and commit."""
    repo.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "data" / "raw", repo / "data" / "raw")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "project"],
    ):
        run(args, repo, env)
    return repo


def train_paths(root: Path, data: Path | None = None, **other: Path):
    """The train stage's paths as dvc.yaml lays them out below ``root`` (the data in ``data/prepared``
    unless ``data``); ``other`` replaces any of them (``classifier=``, ``fid=``: off unless given)."""
    from resgan.stages.train import TrainPaths

    layout = {
        "params": root / "params.yaml",
        "data": data or root / "data" / "prepared",
        "models": root / "models",
        "checkpoints": root / "checkpoints",
        "metrics": root / "metrics" / "train.json",
        "plots": root / "plots" / "train.csv",
    }
    return TrainPaths(**{**layout, **other})
