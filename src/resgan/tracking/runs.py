"""A stage's MLflow run from start to end (:class:`StageRun`), and the run file that names it.

``train`` starts the pipeline's run (it owns the logged model) and writes ``models/mlflow_run.json``;
each ``evaluate`` execution is a run nested under it (:meth:`StageRun.start_child`), with its own
``sample.*``/``evaluate.*`` params, so DVC can re-run evaluation alone as often as it likes.

Every call names its run: an ``MlflowClient`` and the run's id, never MLflow's implicit "active run".
The one exception is contained in :meth:`StageRun.log_model_once` (see there).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Dataset as DatasetRecord
from mlflow.entities import DatasetInput, InputTag, LoggedModelInput, LoggedModelStatus, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking.context import registry as context_registry
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

from resgan import files
from resgan.errors import first_line
from resgan.gan.checkpoint import read_pointer
from resgan.tracking.retries import environ, quick_requests, refused, retry
from resgan.tracking.store import TrackingError, setup, tracking_uri

T = TypeVar("T")
LAUNCH_TAG = "launch_id"


class StageRun:
    """A stage's MLflow run from start to end, in one place: a context manager.

    In ``with StageRun(retries) as session:``, :meth:`open` starts the stage's run (or adopts the one a
    killed call started, or resumes a recorded one), :meth:`start_child` starts an evaluation run nested
    under the train run that a run file names; :meth:`log_params`, :meth:`set_tags`,
    :meth:`log_metrics`, :meth:`log_artifact`, :meth:`log_dict` and :meth:`log_input` write to that run
    through :func:`retry`, and :meth:`log` sends any other call the same way. Leaving the block ends the
    run: FINISHED when the block completed (or at :meth:`finish`), KILLED on Ctrl-C (the next call
    resumes it), FAILED with tag ``failure_reason`` on any other error. Ending a failed run is best
    effort, one quick attempt: the store may be what failed, and its error never hides the original one.
    A block that opened no run (a worker that is not the chief) ends nothing.
    """

    def __init__(self, retries: int = 5):
        self.retries = retries
        self.run: Run | None = None  # the run as it was when opened
        self.parent: Run | None = None  # the train run, for an evaluation run

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run is not None else None

    @property
    def client(self) -> MlflowClient:
        """A client of the store that :func:`resgan.tracking.setup` pointed MLflow at."""
        return MlflowClient()

    def __enter__(self) -> StageRun:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if self.run is None:
            return False
        if kind is None:
            self.finish()
        elif issubclass(kind, KeyboardInterrupt):
            self._end("KILLED")
        else:
            self._end("FAILED", f"{type(error).__name__}: {error}"[:5000])
        return False  # the error goes on

    def log(self, call: Callable[[], T], what: str) -> T:
        """``call()`` through :func:`retry` with this session's retries."""
        return retry(call, what, self.retries)

    def open(
        self,
        run_file: Path,
        experiment_id: str,
        run_id: str | None,
        run_name: str | None,
        tags: dict[str, str],
        on_new: Callable[[], None],
    ) -> Run:
        """Resume ``run_id`` (or the run ``run_file`` names), else start the stage's run; returns it.

        A kill must never leave an orphaned run: before a run is created, ``run_file`` records a launch
        token that the run carries as tag ``launch_id``, so the next call finds the run a killed call
        created and adopts it. ``on_new`` logs what a new run gets (params, artifacts; it must be
        idempotent, for an adopted run may have part of it already); ``run_file`` names the run only once
        ``on_new`` has returned.
        """
        recorded: dict[str, Any] = {}
        if run_file.exists():
            try:
                recorded = json.loads(run_file.read_text())
            except (OSError, json.JSONDecodeError):
                recorded = {}
        run_id = run_id or recorded.get("run_id")
        if run_id:
            self.run = self.log(lambda: self._resume(run_id), "resume run")
            return self.run
        token = recorded.get("launch")
        if not token:
            token = uuid.uuid4().hex
            files.write_json(run_file, {"launch": token})

        def find_or_start() -> Run:  # also right when a lost answer made a try look failed after the run was created
            found = self.client.search_runs([experiment_id], f"tags.{LAUNCH_TAG} = '{token}'", max_results=1)
            if found:
                return self._resume(found[0].info.run_id)
            return self._create(experiment_id, run_name, {**tags, LAUNCH_TAG: token})

        self.run = self.log(find_or_start, "start run")
        on_new()
        files.write_json(run_file, {"run_id": self.run.info.run_id})
        return self.run

    def start_child(self, run_file: str | Path, experiment: str, run_name: str, tags: dict[str, str]) -> Run:
        """Set up MLflow and start a new run nested under the train run that ``run_file`` records
        (:attr:`parent`).

        Each evaluation is its own run: DVC re-runs ``sample``/``evaluate`` without ``train`` when only
        their params change, and a new child run records those params beside the earlier ones, where
        logging them into the train run would be refused (MLflow's params are write-once).
        """
        info = read_pointer(run_file)
        experiment_id = setup(experiment)
        parent = info["run_id"]
        try:
            self.parent = self.client.get_run(parent)
        except MlflowException as error:
            if refused(error):
                raise TrackingError(
                    f"the train run {parent} recorded in {run_file} is not in {tracking_uri()}: "
                    f"{first_line(error)} (re-run the train stage: dvc repro --force train)"
                ) from None
            # the store is down (a 5xx), not the run missing: try again, then one line
            self.parent = self.log(lambda: self.client.get_run(parent), "read the train run")
        child_tags = {**tags, MLFLOW_PARENT_RUN_ID: parent}
        self.run = self.log(
            lambda: self._create(self.parent.info.experiment_id or experiment_id, run_name, child_tags),
            "start the evaluation run",
        )
        return self.run

    def _create(self, experiment_id: str, run_name: str | None, tags: dict[str, str]) -> Run:
        """A new run, with the tags MLflow's ``start_run`` would add (user, source name and type)."""
        return self.client.create_run(experiment_id, run_name=run_name, tags=context_registry.resolve_tags(tags))

    def _resume(self, run_id: str) -> Run:
        """``run_id`` RUNNING again (a run ended KILLED or FAILED goes on); an unknown id is refused."""
        self.client.update_run(run_id, status="RUNNING")
        return self.client.get_run(run_id)

    # ---- writing to the run ------------------------------------------------------------------------

    def log_params(self, params: dict[str, Any], what: str = "log params") -> None:
        run_id = self.run_id
        self.log(lambda: self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()]), what)

    def set_tags(self, tags: dict[str, Any], what: str = "set tags") -> None:
        run_id = self.run_id
        self.log(lambda: self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]), what)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        run_id = self.run_id
        self.log(lambda: self.client.log_artifact(run_id, str(path), folder), f"log {Path(path).name}")

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        run_id = self.run_id
        self.log(lambda: self.client.log_dict(run_id, data, name), f"log {name}")

    def log_input(self, record: DatasetRecord, context: str) -> None:
        """The data set ``record`` (see :func:`resgan.tracking.dataset`) as an input of the run."""
        run_id = self.run_id
        entry = DatasetInput(record, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
        self.log(lambda: self.client.log_inputs(run_id, datasets=[entry]), f"log the {context} data")

    def log_metrics(
        self,
        metrics: dict[str, float],
        step: int = 0,
        model_id: str | None = None,
        record: DatasetRecord | None = None,
        run_id: str | None = None,
        what: str = "log metrics",
    ) -> None:
        """``metrics`` at ``step`` in this run (or ``run_id``); with ``model_id`` and ``record`` they are
        also the logged model's, measured on that data set (the model's page lists them), and both become
        inputs of the run, as MLflow's ``log_metrics(model_id=, dataset=)`` does."""
        run_id = run_id or self.run_id
        now = int(time.time() * 1000)
        rows = [
            Metric(
                k,
                float(v),
                now,
                step,
                model_id=model_id,
                run_id=run_id,
                dataset_name=record.name if record else None,
                dataset_digest=record.digest if record else None,
            )
            for k, v in metrics.items()
        ]

        def send() -> None:
            if model_id or record:
                self.client.log_inputs(
                    run_id,
                    datasets=[DatasetInput(record, tags=[])] if record else None,
                    models=[LoggedModelInput(model_id)] if model_id else None,
                )
            self.client.log_batch(run_id, metrics=rows)

        self.log(send, what)

    def log_model_once(self, experiment_id: str, name: str, step: int, log: Callable[[str], Any]) -> str:
        """The ``model_uri`` of model ``name`` of this run at ``step``: the one a call killed before it
        could record it logged (see :func:`logged_model_at`), else that of ``log(run_id)`` (a ``ModelInfo``).

        ``log`` calls a flavor's ``log_model``, which exists only in MLflow's fluent form: it takes the run
        id, but picks the logged model's experiment from the active experiment, else from
        ``MLFLOW_EXPERIMENT_ID``, else the Default one. The variable names the run's experiment for this
        call alone (no run is made active)."""
        run_id = self.run_id
        found = self.log(lambda: logged_model_at(run_id, experiment_id, name, step), "find logged model")
        if found:
            return found
        with environ(MLFLOW_EXPERIMENT_ID=str(experiment_id), MLFLOW_EXPERIMENT_NAME=None):
            return self.log(lambda: log(run_id), "log model").model_uri

    # ---- the end -----------------------------------------------------------------------------------

    def finish(self) -> None:
        """End the run FINISHED, retried: its end is part of its record. Nothing when no run is open."""
        run_id = self.run_id
        if run_id is None:
            return
        self.log(lambda: self.client.set_terminated(run_id, "FINISHED"), "end run")
        self.run = None

    def _end(self, status: str, reason: str | None = None) -> None:
        run_id, self.run = self.run_id, None
        with quick_requests():
            if reason:
                with contextlib.suppress(Exception):
                    self.client.set_tag(run_id, "failure_reason", reason)
            with contextlib.suppress(Exception):
                self.client.set_terminated(run_id, status)


def logged_model_at(run_id: str, experiment_id: str, name: str, step: int) -> str | None:
    """The ``model_uri`` of the READY model ``name`` that run ``run_id`` logged at ``step`` (tag ``step``),
    or None. A call killed after logging the model but before recording it leaves one; the next call
    reuses it rather than log a second. Models of the run still PENDING were cut short by a kill: they
    are marked FAILED (no orphan stays "in progress")."""
    client = MlflowClient()
    found = None
    for model in client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'"):
        if model.name != name:
            continue
        if model.status == LoggedModelStatus.PENDING:
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        elif model.status == LoggedModelStatus.READY and model.tags.get("step") == str(step):
            found = model
    return found.model_uri if found else None
