"""The retry policy: what is worth trying again, how often, and how long one HTTP attempt may take.

A failure that can succeed on a retry (a store that is down or slow) is retried after 1, 2, 4 ...
seconds; a refusal (an HTTP 4xx answer, or an ``MlflowException`` whose error code maps to one) fails
at once with MLflow's message, since the same request would be refused again.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import urllib.error
from collections.abc import Callable, Iterator
from typing import TypeVar

import mlflow
import requests
from mlflow.exceptions import MlflowException

from resgan.errors import first_line
from resgan.tracking.store import TrackingError, refusal

T = TypeVar("T")

# 4xx answers that a later attempt can turn into a success: timeout, too many requests, cancelled.
_RETRYABLE_4XX = {408, 429, 499}


def refused(error: BaseException) -> bool:
    """True when ``error`` is the store refusing the request itself (an HTTP 4xx answer, or an
    ``MlflowException`` whose error code maps to one: INVALID_PARAMETER_VALUE, RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST, BAD_REQUEST, PERMISSION_DENIED ...): the same request would be refused again."""
    status = status_of(error)
    if status is None:
        return False
    return 400 <= status < 500 and status not in _RETRYABLE_4XX  # 401, 403 included: never retried


def status_of(error: BaseException) -> int | None:
    """The HTTP status an MLflow or HTTP error carries, or None."""
    if isinstance(error, MlflowException):
        return error.get_http_status_code()
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return error.response.status_code
    if isinstance(error, urllib.error.HTTPError):
        return error.code
    return None


def reason(error: BaseException) -> str:
    """What a failed MLflow call says, in one line: :func:`~resgan.tracking.store.refusal` for a 401/403
    from a server (names the server and the user), else the error's first line."""
    status, uri = status_of(error), mlflow.get_tracking_uri()
    if status in (401, 403) and uri.startswith(("http://", "https://")):
        return refusal(uri, status)
    return first_line(error)


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
                if status_of(error) in (401, 403):
                    raise TrackingError(f"{reason(error)} (could not {what})") from None
                raise TrackingError(f"MLflow refused to {what}: {first_line(error)}") from None
            if attempt == retries:
                raise TrackingError(
                    f"MLflow: {what} failed after {retries + 1} attempts: {first_line(error)}"
                ) from None
            print(f"MLflow: {what} failed ({type(error).__name__}); retrying in {wait:.0f} s", file=sys.stderr)
            time.sleep(wait)
            wait = min(wait * 2, 30.0)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def environ(**values: str | None) -> Iterator[None]:
    """Environment variables set (None: unset) inside the block, restored after it. MLflow reads some
    of its settings (HTTP retries and timeout, the default experiment) only from the environment."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        _set_environ(values)
        yield
    finally:
        _set_environ(saved)


def _set_environ(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def quick_requests(timeout: int = 10):
    """One HTTP attempt per MLflow request, ``timeout`` seconds at most (MLflow's own default is 7 retries
    with backoff, minutes against a server that is down). For calls whose failure is handled here."""
    return environ(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(timeout))
