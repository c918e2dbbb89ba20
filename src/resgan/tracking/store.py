"""Where the MLflow store is, whether it answers, and the lock that serializes read-decide-write work on it.

Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<root>/mlflow.db`` with artifacts in
``<root>/mlruns``. The root is ``DVC_ROOT`` when DVC sets it (queued and temp experiments run in a copy
of the repo), else the nearest folder above the working directory holding ``dvc.yaml`` or ``.git``,
else the working directory.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import mlflow
from mlflow import MlflowClient

from resgan.errors import ResganError


class TrackingError(ResganError):
    """The tracking server or store cannot be used."""


def project_root(start: Path | None = None) -> Path:
    """The project root that holds ``mlflow.db`` and ``mlruns/`` (see the module docstring)."""
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


def artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store go to ``mlruns/`` beside it; a server decides for itself."""
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
    uri = tracking_uri(root)
    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # The process-wide URI: every MlflowClient() made later (and the model logging, see
    # resgan.tracking.runs) talks to this store.
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):  # MLflow creates and migrates a new store's tables on first use: one process at a time
        client = MlflowClient()
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(experiment, artifact_location=artifact_location(uri))
        except Exception:  # created meanwhile by a concurrent run: fetch it
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
            return found.experiment_id


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """One process (or thread) at a time in the block, for a local SQLite store ``uri``; nothing for a server.

    For read-decide-write sequences that concurrent pipelines (``dvc queue start -j 2``) would interleave:
    the first use of a new store (two processes creating MLflow's tables at once fail with "table ...
    already exists") and model registration (version, then aliases from the current champion). The lock
    file lives in the artifact folder beside the store (``mlruns/``, git-ignored)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    lock = db.parent / "mlruns" / f".{db.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
