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
from collections.abc import Iterator
from pathlib import Path

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
        raise TrackingError(
            f"MLflow tracking server at {uri} is unreachable ({reason}); "
            "start it or unset MLFLOW_TRACKING_URI to use the local mlflow.db"
        ) from None
    check_credentials(uri, timeout)


# ---- basic auth (``mlflow server --app-name basic-auth``). The user and password come from
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, as MLflow's own client reads them; the password is
# never printed, logged or written anywhere. A 401 (who are you?) or 403 (not allowed) is an answer, not
# an outage: never retried (see resgan.tracking.retries.refused), and said in one line naming the server
# and the user.


def check_credentials(uri: str, timeout: float = 5.0) -> None:
    """One authenticated read (the first experiment) before a stage starts: a server that refuses the
    user fails here, before anything is written, with one line (see :func:`refusal`)."""
    import requests

    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    auth = (user, password) if user and password is not None else None
    try:
        answer = requests.get(
            uri.rstrip("/") + "/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=auth,
            timeout=timeout,
        )
    except requests.RequestException:
        return  # /health answered: a slow read is retried where it happens
    if answer.status_code in (401, 403):
        raise TrackingError(refusal(uri, answer.status_code))


def refusal(uri: str, status: int) -> str:
    """The one line for a 401/403 answer of the tracking server ``uri`` (names the user, never the password)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or None
    if status == 401 and user is None:
        return (
            f"MLflow tracking server at {uri} asks for a user name and password (HTTP 401): "
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if status == 401:
        return (
            f"MLflow tracking server at {uri} refused user {user!r}: wrong user name or password (HTTP 401); "
            "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    return f"MLflow tracking server at {uri} refused user {user!r}: permission denied (HTTP 403)"


def setup(experiment: str, root: Path | None = None) -> str:
    """Point MLflow at the project's store and return the id of ``experiment`` (created if missing)."""
    uri = tracking_uri(root)
    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # The process-wide URI: every MlflowClient() made later (and the model logging, see
    # resgan.tracking.runs) talks to this store.
    mlflow.set_tracking_uri(uri)
    from resgan.tracking.retries import retry  # (retries imports this module)

    with store_lock(uri):  # MLflow creates and migrates a new store's tables on first use: one process at a time
        client = MlflowClient()
        # retried: a server whose database is down answers 5xx (one line after the retries, no traceback)
        found = retry(lambda: client.get_experiment_by_name(experiment), "read the experiment")
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(experiment, artifact_location=artifact_location(uri))
        except Exception:  # created meanwhile by a concurrent run: fetch it
            found = retry(lambda: client.get_experiment_by_name(experiment), "read the experiment")
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
