"""MLflow plumbing, one module per concern:

- :mod:`~resgan.tracking.store`: where the store is (``MLFLOW_TRACKING_URI``, else ``mlflow.db`` at the
  project root), whether a server answers, and the lock for read-decide-write sequences on a SQLite store.
- :mod:`~resgan.tracking.retries`: the retry policy: what a retry can fix, and what MLflow refuses.
- :mod:`~resgan.tracking.buffered`: :class:`BufferedLogger`, per-step metrics and grids that wait for a
  store that is down, so training never does.
- :mod:`~resgan.tracking.runs`: :class:`StageRun`, a stage's run from start (or adoption, or resumption)
  to FINISHED, KILLED or FAILED, and everything the stage writes to it; the run file that names it.
- :mod:`~resgan.tracking.records`: the tags every run carries, logged-model ids, data-set records.
- :mod:`~resgan.tracking.view`: the URLs the stages print and the runs table's saved view.

Every call names its run (an ``MlflowClient`` and a run id); none relies on MLflow's "active run".
The names below are the package's interface: ``from resgan import tracking`` then ``tracking.<name>``.
"""

from resgan.tracking.buffered import BufferedLogger
from resgan.tracking.records import dataset, git_commit, model_id, run_tags
from resgan.tracking.retries import environ, quick_requests, reason, refused, retry, status_of
from resgan.tracking.runs import LAUNCH_TAG, StageRun, logged_model_at
from resgan.tracking.store import (
    TrackingError,
    artifact_location,
    check_credentials,
    check_reachable,
    project_root,
    refusal,
    setup,
    store_lock,
    tracking_uri,
)
from resgan.tracking.view import (
    VIEW_FIGURES,
    VIEW_KEY,
    VIEW_PARAMS,
    experiment_url,
    row_figures,
    run_url,
    set_runs_view,
)

__all__ = [
    "BufferedLogger",
    "LAUNCH_TAG",
    "StageRun",
    "TrackingError",
    "VIEW_FIGURES",
    "VIEW_KEY",
    "VIEW_PARAMS",
    "artifact_location",
    "check_reachable",
    "dataset",
    "environ",
    "experiment_url",
    "git_commit",
    "logged_model_at",
    "model_id",
    "project_root",
    "quick_requests",
    "reason",
    "refusal",
    "refused",
    "retry",
    "check_credentials",
    "status_of",
    "row_figures",
    "run_tags",
    "run_url",
    "set_runs_view",
    "setup",
    "store_lock",
    "tracking_uri",
]
