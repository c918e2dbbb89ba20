"""MLflow plumbing: where the store is, which run a stage belongs to, and resilient logging.

- Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<root>/mlflow.db`` with artifacts in
  ``<root>/mlruns``. The root is ``DVC_ROOT`` when DVC sets it (queued and temp experiments run in a
  copy of the repo), else the nearest folder above the working directory holding ``dvc.yaml`` or
  ``.git``, else the working directory.
- ``train`` starts the pipeline's run (it owns the logged model) and writes ``models/mlflow_run.json``;
  each ``evaluate`` execution is a run nested under it (:meth:`StageRun.start_child`), with its own
  ``sample.*``/``evaluate.*`` params, so DVC can re-run evaluation alone as often as it likes. :class:`StageRun` opens (or adopts, or resumes) a stage's run
  and ends it FINISHED, KILLED or FAILED; a kill at any moment leaves no orphan.
- While training, :class:`BufferedLogger` keeps metrics and sample grids that the store cannot take (a
  server that is down) and delivers them in step order when it is back: training never waits for it.
  Everything else (start, model, final figures) goes through :func:`retry`, which retries what can
  succeed on a retry and fails at once when MLflow refuses the request itself (a 4xx answer).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import mlflow
import requests
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus, Metric
from mlflow.exceptions import MlflowException

from resgan import files
from resgan.errors import ResganError, first_line

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
    uri = tracking_uri(root)
    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):  # MLflow creates and migrates a new store's tables on first use: one process at a time
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


# 4xx answers that a later attempt can turn into a success: timeout, too many requests, cancelled.
_RETRYABLE_4XX = {408, 429, 499}


def refused(error: BaseException) -> bool:
    """True when ``error`` is the store refusing the request itself (an HTTP 4xx answer, or an
    ``MlflowException`` whose error code maps to one: INVALID_PARAMETER_VALUE, RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST, BAD_REQUEST, PERMISSION_DENIED ...): the same request would be refused again."""
    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
    elif isinstance(error, requests.HTTPError) and error.response is not None:
        status = error.response.status_code
    elif isinstance(error, urllib.error.HTTPError):
        status = error.code
    else:
        return False
    return 400 <= status < 500 and status not in _RETRYABLE_4XX


def retry(call: Callable[[], T], what: str, retries: int = 5, first_wait: float = 1.0) -> T:
    """Run ``call``; on a failure wait 1, 2, 4 ... seconds and try again, ``retries`` times at most.

    A refusal (see :func:`refused`, e.g. "changing param values is not allowed") fails at once, with
    MLflow's message, as a :class:`TrackingError`; so does the last failed attempt."""
    wait = first_wait
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as error:  # MLflow raises many types for a store that is down
            if refused(error):
                raise TrackingError(f"MLflow refused to {what}: {first_line(error)}") from None
            if attempt == retries:
                raise TrackingError(f"MLflow: {what} failed after {retries + 1} attempts: {error}") from None
            print(f"MLflow: {what} failed ({type(error).__name__}); retrying in {wait:.0f} s", file=sys.stderr)
            time.sleep(wait)
            wait = min(wait * 2, 30.0)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _quick_requests(timeout: int = 10) -> Iterator[None]:
    """One HTTP attempt per MLflow request, ``timeout`` seconds at most (MLflow's own default is 7 retries
    with backoff, minutes against a server that is down). For calls whose failure is handled here."""
    saved = {name: os.environ.get(name) for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class BufferedLogger:
    """Per-step metrics and images for one run, logged so that a store that is down never stops training.

    Each entry joins a queue in step order, and each call tries (once, quickly) to deliver the whole queue
    in that order. When the store refuses, the entries stay queued and training goes on; the next attempt
    comes after 1, 2, 4 ... (at most ``max_wait``) seconds, and the backlog is delivered, oldest first, as
    soon as the store answers again. At most ``max_images`` images wait (the oldest are dropped first, with
    a warning); metrics always wait (they are small, and also in the checkpoint). :meth:`close` is the
    last word: it retries like :func:`retry` and raises :class:`TrackingError` when the queue stays stuck.
    """

    BATCH = 1000  # MLflow's limit of metrics per log_batch

    def __init__(self, run_id: str, max_images: int = 32, first_wait: float = 1.0, max_wait: float = 30.0,
                 timeout: int = 10):
        self.run_id = run_id
        self.max_images, self.first_wait, self.max_wait, self.timeout = max_images, first_wait, max_wait, timeout
        self.queue: collections.deque = collections.deque()
        self.dropped_images = 0
        self._wait = first_wait
        self._next_try = 0.0
        self._down_since: float | None = None

    @property
    def pending(self) -> int:
        return len(self.queue)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.queue.append(("metrics", int(step), int(time.time() * 1000), dict(metrics)))
        self._attempt()

    def log_image(self, image, key: str, step: int) -> None:
        self.queue.append(("image", int(step), int(time.time() * 1000), (key, image)))
        images = [entry for entry in self.queue if entry[0] == "image"]
        if len(images) > self.max_images:
            self.queue.remove(images[0])
            self.dropped_images += 1
            print(f"MLflow: store unreachable; dropped the sample grid of step {images[0][1]} "
                  f"(keeping the newest {self.max_images})", file=sys.stderr)
        self._attempt()

    def log_missing(self, rows: list[tuple[int, dict[str, float]]], probe: str, retries: int = 5) -> int:
        """Queue the ``(step, metrics)`` rows whose step the run lacks for metric ``probe`` (logged while
        the store was down, then the process died); returns how many. Used when a run resumes."""
        have = {m.step for m in retry(lambda: MlflowClient().get_metric_history(self.run_id, probe),
                                      "read metric history", retries)}
        missing = [(step, metrics) for step, metrics in rows if step not in have]
        now = int(time.time() * 1000)
        for step, metrics in missing:
            self.queue.append(("metrics", int(step), now, dict(metrics)))
        if missing:
            print(f"MLflow: logging {len(missing)} step(s) the run lacks: {', '.join(str(s) for s, _ in missing)}",
                  file=sys.stderr)
            self._attempt()
        return len(missing)

    def flush(self) -> None:
        """Deliver the queue in order; raises (keeping what is left) at the first entry the store refuses."""
        client = MlflowClient()
        while self.queue:
            if self.queue[0][0] == "image":
                _, step, timestamp, (key, image) = self.queue[0]
                client.log_image(self.run_id, image, key=key, step=step, timestamp=timestamp, synchronous=True)
                self.queue.popleft()
                continue
            batch: list = []
            count = 0
            for kind, step, timestamp, metrics in self.queue:
                if kind != "metrics" or (batch and len(batch) + len(metrics) > self.BATCH):
                    break
                batch += [Metric(k, float(v), timestamp, step) for k, v in metrics.items()]
                count += 1
            client.log_batch(self.run_id, metrics=batch, synchronous=True)
            for _ in range(count):
                self.queue.popleft()

    def _attempt(self) -> None:
        now = time.monotonic()
        if now < self._next_try:
            return
        backlog = len(self.queue)
        try:
            with _quick_requests(self.timeout):
                self.flush()
        except Exception as error:  # MLflow raises many types for a store that is down
            if self._down_since is None:
                self._down_since = now
            print(f"MLflow: logging failed ({type(error).__name__}: {first_line(error)[:200]}); training goes on, "
                  f"{len(self.queue)} entries wait, next try in {self._wait:.0f} s", file=sys.stderr)
            self._next_try = time.monotonic() + self._wait
            self._wait = min(self._wait * 2, self.max_wait)
            return
        self._delivered(backlog)

    def _delivered(self, backlog: int) -> None:
        if self._down_since is not None:
            print(f"MLflow: the store answers again; delivered {backlog} waiting entries in step order",
                  file=sys.stderr)
        self._down_since, self._wait, self._next_try = None, self.first_wait, 0.0

    def close(self, retries: int = 5) -> None:
        """Deliver everything still queued, retrying longer (see :func:`retry`); raise if it cannot."""
        if self.queue:
            backlog = len(self.queue)
            retry(self.flush, f"deliver {backlog} waiting metric/image entries", retries)
            self._delivered(backlog)


LAUNCH_TAG = "launch_id"


class StageRun:
    """A stage's MLflow run from start to end, in one place: a context manager.

    In ``with StageRun(retries) as session:``, :meth:`open` starts the stage's run (or adopts the one a
    killed call started, or resumes a recorded one), :meth:`start_child` starts an evaluation run nested
    under the train run that a run file names, and :meth:`log` sends a call through :func:`retry`.
    Leaving the block ends the run: FINISHED when the block completed (or at :meth:`finish`), KILLED on
    Ctrl-C (the next call resumes it), FAILED with tag ``failure_reason`` on any other error. (A run left
    active would be ended FINISHED by MLflow's exit handler.) Ending a failed run is best effort, one quick attempt: the store
    may be what failed, and its error never hides the original one. A block that opened no run (a
    worker that is not the chief) ends nothing.
    """

    def __init__(self, retries: int = 5):
        self.retries = retries
        self.run: mlflow.ActiveRun | None = None

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run is not None else None

    def __enter__(self) -> "StageRun":
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

    def open(self, run_file: Path, experiment_id: str, run_id: str | None, run_name: str | None,
             tags: dict[str, str], on_new: Callable[[], None]) -> mlflow.ActiveRun:
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
            self.run = self.log(lambda: mlflow.start_run(run_id=run_id), "resume run")
            return self.run
        token = recorded.get("launch")
        if not token:
            token = uuid.uuid4().hex
            files.write_json(run_file, {"launch": token})

        def find_or_start():  # also right when a lost answer made a try look failed after the run was created
            found = MlflowClient().search_runs([experiment_id], f"tags.{LAUNCH_TAG} = '{token}'", max_results=1)
            if found:
                return mlflow.start_run(run_id=found[0].info.run_id)
            return mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags={**tags, LAUNCH_TAG: token})

        self.run = self.log(find_or_start, "start run")
        on_new()
        files.write_json(run_file, {"run_id": self.run.info.run_id})
        return self.run

    def start_child(self, run_file: str | Path, experiment: str, run_name: str,
                    tags: dict[str, str]) -> mlflow.ActiveRun:
        """Set up MLflow and start a new run nested under the train run that ``run_file`` records.

        Each evaluation is its own run: DVC re-runs ``sample``/``evaluate`` without ``train`` when only
        their params change, and a new child run records those params beside the earlier ones, where
        logging them into the train run would be refused (MLflow's params are write-once).
        """
        info = read_run_file(run_file)
        experiment_id = setup(experiment)
        parent = info["run_id"]
        try:
            parent_run = MlflowClient().get_run(parent)
        except MlflowException as error:
            raise TrackingError(f"the train run {parent} recorded in {run_file} is not in {tracking_uri()}: "
                                f"{first_line(error)} (re-run the train stage: dvc repro --force train)") from None
        self.run = self.log(lambda: mlflow.start_run(experiment_id=parent_run.info.experiment_id or experiment_id,
                                                     run_name=run_name, parent_run_id=parent, tags=tags),
                            "start the evaluation run")
        return self.run

    def log_model_once(self, experiment_id: str, name: str, step: int, log: Callable[[], Any]) -> str:
        """The ``model_uri`` of model ``name`` of this run at ``step``: the one a call killed before it
        could record it logged (see :func:`logged_model_at`), else that of ``log()`` (a ``ModelInfo``)."""
        run_id = self.run_id
        found = self.log(lambda: logged_model_at(run_id, experiment_id, name, step), "find logged model")
        return found or self.log(log, "log model").model_uri

    def finish(self) -> None:
        """End the run FINISHED, retried: its end is part of its record. Nothing when no run is open."""
        run_id = self.run_id
        if run_id is None:
            return
        self.log(lambda: MlflowClient().set_terminated(run_id, "FINISHED"), "end run")
        self.run = None
        with contextlib.suppress(Exception):
            mlflow.end_run()  # the run is FINISHED already: this only pops it

    def _end(self, status: str, reason: str | None = None) -> None:
        self.run = None
        with _quick_requests():
            if reason:
                with contextlib.suppress(Exception):
                    mlflow.set_tag("failure_reason", reason)
            with contextlib.suppress(Exception):
                mlflow.end_run(status=status)


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


VIEW_KEY = "resgan"  # the experiment's saved runs-table view: tag mlflow.sharedViewState.<VIEW_KEY>
VIEW_PARAMS = ("train.steps", "train.loss", "train.lr_g", "model.width", "sample.num")


def _ui_base() -> str:
    uri = tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


def run_url(experiment_id: str, run_id: str) -> str:
    """Where a person sees a run: on the tracking server, or on ``mlflow ui``'s default address for a local
    store, in the model-training view (MLflow 3 opens on its GenAI view otherwise)."""
    return f"{_ui_base()}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def experiment_url(experiment_id: str) -> str:
    """The experiment's runs table in the model-training view with the columns :func:`set_runs_view` saved."""
    return (f"{_ui_base()}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
            "&workflowType=machine_learning")


def set_runs_view(experiment_id: str, features: str) -> None:
    """Save the runs view that :func:`experiment_url` opens. The table: newest first, with FID, KID, the
    classifier or Inception score and class accuracy (measured with ``features``) and the key params as
    columns. The chart view (the runs page's chart toggle): ``loss/d`` with ``loss/g`` and ``d/real`` with
    ``d/fake`` in one chart each, FID over training first; MLflow adds a chart for every other metric.
    MLflow's UI reads a shared view from the experiment tag ``mlflow.sharedViewState.<key>`` (what its
    "Share" button writes); a person's own choices in the browser are untouched."""
    metrics = (f"fid_{features}", f"kid_{features}_mean", f"is_{features}_mean", "class_accuracy")
    columns = [*(f"metrics.`eval/{m}`" for m in metrics), *(f"params.`{p}`" for p in VIEW_PARAMS)]
    sections = [{"uuid": f"resgan-{name}", "name": name, "display": True, "isReordered": False}
                for name in ("eval", "loss", "d", "grad_norm", "perf")]
    state = {"searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False,
             "selectedColumns": [*columns, "attributes.`Models`"], "columnWidths": {c: 130 for c in columns},
             "compareRunSections": sections, "isAccordionReordered": True,
             "compareRunCharts": [
                 _line_chart(f"eval/fid_{features}", f"FID ({features} features) over training, lower is better", "eval"),
                 _line_chart("loss/d", "GAN losses: loss/d and loss/g", "loss", ["loss/d", "loss/g"]),
                 _line_chart("loss/g", "loss/g", "loss", deleted=True),  # drawn in the chart above
                 _line_chart("d/real", "Discriminator outputs: d/real and d/fake", "d", ["d/real", "d/fake"]),
                 _line_chart("d/fake", "d/fake", "d", deleted=True)]}
    MlflowClient().set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(state))


def _line_chart(metric: str, title: str, section: str, metrics: list[str] | None = None,
                deleted: bool = False) -> dict:
    """One line chart of MLflow's chart view (the fields its RunsChartsLineCardConfig serializes)."""
    return {"uuid": f"resgan-{metric.replace('/', '-')}", "type": "LINE", "metricKey": metric,
            "selectedMetricKeys": metrics or [metric], "displayName": title, "metricSectionId": f"resgan-{section}",
            "isGenerated": False, "deleted": deleted, "runsCountToCompare": 10, "lineSmoothness": 0,
            "xAxisKey": "step", "xAxisScaleType": "linear", "scaleType": "linear", "selectedXAxisMetricKey": "",
            "yAxisKey": "metric", "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": True,
            "useGlobalLineSmoothing": True, "range": {}}


def model_id(model_uri: str | None) -> str | None:
    """The logged model's id in a ``models:/m-...`` URI (what MLflow 3's ``log_model`` returns), else None."""
    if model_uri and model_uri.startswith("models:/m-") and "/" not in model_uri.removeprefix("models:/"):
        return model_uri.removeprefix("models:/")
    return None


def data_name(prepare) -> str:
    """A short name for the prepared data of ``PrepareParams`` ``prepare``: its source folder's name
    (``mnist`` for ``data/raw/mnist``), or the built-in source's name."""
    if prepare.source in ("folder", "idx", "npz") and Path(prepare.path).name:
        return Path(prepare.path).name
    return str(prepare.dataset if prepare.source == "keras" else prepare.source)


def dataset(name: str, digest: str, source: str | Path):
    """MLflow's record of a data set (not the data): ``name``, the data hash as digest (MLflow keeps 36
    characters) and where it lies; for ``mlflow.log_input`` and metrics logged against it."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # a local path matches two registered source types; both are the same class
        warnings.simplefilter("ignore")
        found = resolve_dataset_source(str(source))
    return MetaDataset(found, name=name, digest=str(digest)[:36])
