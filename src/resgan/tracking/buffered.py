"""Per-step metrics and sample grids of one run, logged so that a store that is down never stops training."""

from __future__ import annotations

import collections
import sys
import time

from mlflow import MlflowClient
from mlflow.entities import Metric

from resgan.errors import first_line
from resgan.tracking.retries import quick_requests, retry


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

    def __init__(
        self, run_id: str, max_images: int = 32, first_wait: float = 1.0, max_wait: float = 30.0, timeout: int = 10
    ):
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
            print(
                f"MLflow: store unreachable; dropped the sample grid of step {images[0][1]} "
                f"(keeping the newest {self.max_images})",
                file=sys.stderr,
            )
        self._attempt()

    def log_missing(self, rows: list[tuple[int, dict[str, float]]], probe: str, retries: int = 5) -> int:
        """Queue the ``(step, metrics)`` rows whose step the run lacks for metric ``probe`` (logged while
        the store was down, then the process died); returns how many. Used when a run resumes."""
        have = {
            m.step
            for m in retry(
                lambda: MlflowClient().get_metric_history(self.run_id, probe), "read metric history", retries
            )
        }
        missing = [(step, metrics) for step, metrics in rows if step not in have]
        now = int(time.time() * 1000)
        for step, metrics in missing:
            self.queue.append(("metrics", int(step), now, dict(metrics)))
        if missing:
            print(
                f"MLflow: logging {len(missing)} step(s) the run lacks: {', '.join(str(s) for s, _ in missing)}",
                file=sys.stderr,
            )
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
            with quick_requests(self.timeout):
                self.flush()
        except Exception as error:  # MLflow raises many types for a store that is down
            if self._down_since is None:
                self._down_since = now
            print(
                f"MLflow: logging failed ({type(error).__name__}: {first_line(error)[:200]}); training goes on, "
                f"{len(self.queue)} entries wait, next try in {self._wait:.0f} s",
                file=sys.stderr,
            )
            self._next_try = time.monotonic() + self._wait
            self._wait = min(self._wait * 2, self.max_wait)
            return
        self._delivered(backlog)

    def _delivered(self, backlog: int) -> None:
        if self._down_since is not None:
            print(
                f"MLflow: the store answers again; delivered {backlog} waiting entries in step order", file=sys.stderr
            )
        self._down_since, self._wait, self._next_try = None, self.first_wait, 0.0

    def close(self, retries: int = 5) -> None:
        """Deliver everything still queued, retrying longer (see :func:`retry`); raise if it cannot."""
        if self.queue:
            backlog = len(self.queue)
            retry(self.flush, f"deliver {backlog} waiting metric/image entries", retries)
            self._delivered(backlog)
