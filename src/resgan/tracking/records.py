"""What a run is tagged with, and MLflow's records of a logged model and a data set."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset as DatasetRecord

from resgan.tracking.store import project_root


def git_commit(root: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root or project_root(), capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_tags(data_summary: dict[str, Any] | None = None, root: Path | None = None) -> dict[str, str]:
    """Tags every run carries: git commit, DVC experiment name, data hash."""
    tags: dict[str, str] = {}
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if data_summary and data_summary.get("data_hash"):
        tags["data_hash"] = str(data_summary["data_hash"])
    return tags


def model_id(model_uri: str | None) -> str | None:
    """The logged model's id in a ``models:/m-...`` URI (what MLflow 3's ``log_model`` returns), else None."""
    if model_uri and model_uri.startswith("models:/m-") and "/" not in model_uri.removeprefix("models:/"):
        return model_uri.removeprefix("models:/")
    return None


def dataset(name: str, digest: str, source: str | Path) -> DatasetRecord:
    """MLflow's record of a data set (not the data): ``name``, the data hash as digest (MLflow keeps 36
    characters) and where it lies; a run's input (:meth:`StageRun.log_input`) and what metrics are
    measured on (:meth:`StageRun.log_metrics`)."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # a local path matches two registered source types; both are the same class
        warnings.simplefilter("ignore")
        found = resolve_dataset_source(str(source))
    return DatasetRecord(**MetaDataset(found, name=name, digest=str(digest)[:36]).to_dict())
