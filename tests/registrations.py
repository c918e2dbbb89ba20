"""Eight registrations of one model name at the same moment: the race the store lock (SQLite) and the
registry's alias rules (a tracking server) must survive. Shared by the local and the team-mode tests."""

from __future__ import annotations

import threading

import mlflow
import numpy as np
from mlflow import MlflowClient

from resgan import model_registry, tracking

RACERS = 8


def register_at_once(seed: int, tags: dict[str, str], timeout: float) -> tuple[list[float], list[str]]:
    """Register :data:`RACERS` models as versions of ``race`` from as many threads released together (each
    thread stands in for an ``evaluate`` process), with FIDs 10 to 80 in the order ``seed`` shuffles them;
    the FIDs by registration order and the errors the threads raised."""
    experiment_id = tracking.setup("race")
    with mlflow.start_run(experiment_id=experiment_id):
        uris = []
        for _ in range(RACERS):  # LoggedModels without files are enough to register
            model = mlflow.initialize_logged_model(name="generator")
            MlflowClient().finalize_logged_model(model.model_id, "READY")
            uris.append(model.model_uri)
    fids = [float(x) for x in np.random.default_rng(seed).permutation(np.arange(10, 10 * (RACERS + 1), 10))]
    barrier, errors = threading.Barrier(RACERS), []

    def register(i: int) -> None:
        barrier.wait()
        try:
            model_registry.register(uris[i], "race", "fid", "fid_classifier", {"fid_classifier": fids[i]}, tags)
        except Exception as error:  # noqa: BLE001 (reported to the test)
            errors.append(repr(error))

    threads = [threading.Thread(target=register, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return fids, errors
