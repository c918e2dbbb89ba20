"""MLflow plumbing: where the store is, which run a stage belongs to, and resilient logging.

- Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<root>/mlflow.db`` with artifacts in
  ``<root>/mlruns``. The root is ``DVC_ROOT`` when DVC sets it (queued and temp experiments run in a
  copy of the repo), else the nearest folder above the working directory holding ``dvc.yaml`` or
  ``.git``, else the working directory.
- One MLflow run per pipeline run: ``train`` starts it and writes ``models/mlflow_run.json``;
  ``sample`` and ``evaluate`` resume it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, TypeVar

from resgan.errors import ResganError

T = TypeVar("T")


class TrackingError(ResganError):
    """The tracking server or store cannot be used."""


def project_root(start: Path | None = None) -> Path:
    """The project root that holds ``mlflow.db`` and ``mlruns/`` (see module docstring)."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() or (folder / ".git").exists():
            return folder
    return here


def tracking_uri(root: Path | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(root or project_root()) / 'mlflow.db'}"


def _artifact_location(uri: str, root: Path | None) -> str | None:
    """Artifacts of a local SQLite store go to ``<root>/mlruns``; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "mlruns").resolve().as_uri()
    return None


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with one clear line, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow tracking server at {uri} answered /health with HTTP {response.status}")
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(f"MLflow tracking server at {uri} is unreachable ({reason}); "
                            "start it or unset MLFLOW_TRACKING_URI to use the local mlflow.db") from None


def setup(experiment: str, root: Path | None = None) -> str:
    """Point MLflow at the project's store and return the id of ``experiment`` (created if missing)."""
    import mlflow

    uri = tracking_uri(root)
    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(experiment, artifact_location=_artifact_location(uri, root))
    except Exception:  # created meanwhile by a concurrent run: fetch it
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


def retry(call: Callable[[], T], what: str, retries: int = 5, first_wait: float = 1.0) -> T:
    """Run ``call``; on a failure wait 1, 2, 4 ... seconds and try again, ``retries`` times at most."""
    wait = first_wait
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as error:  # MLflow raises many types for a store that is down
            if attempt == retries:
                raise TrackingError(f"MLflow: {what} failed after {retries + 1} attempts: {error}") from None
            print(f"MLflow: {what} failed ({type(error).__name__}); retrying in {wait:.0f} s", file=sys.stderr)
            time.sleep(wait)
            wait = min(wait * 2, 30.0)
    raise AssertionError("unreachable")


def git_commit(root: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or project_root(), capture_output=True,
                             text=True, timeout=10)
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


def read_run_file(path: str | Path) -> dict[str, Any]:
    """``models/mlflow_run.json`` as written by train; a clear error when it is missing."""
    path = Path(path)
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResganError(f"{path} not found: run the train stage first") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ResganError(f"{path} is not a readable run record: {error}") from None
    if not isinstance(info, dict) or "run_id" not in info:
        raise ResganError(f"{path} holds no run_id")
    return info


def resume_run(run_file: str | Path, experiment: str):
    """Set up MLflow and resume the pipeline run recorded in ``run_file``; returns ``mlflow.start_run(...)``."""
    import mlflow

    info = read_run_file(run_file)
    setup(experiment)
    try:
        return mlflow.start_run(run_id=info["run_id"])
    except Exception as error:
        raise TrackingError(f"cannot resume MLflow run {info['run_id']} from {run_file} "
                            f"in {tracking_uri()}: {error}") from None
