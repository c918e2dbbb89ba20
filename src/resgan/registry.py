"""The MLflow Model Registry side of resgan: register evaluated generators and move aliases.

Rules: every registered version gets alias ``candidate``; ``champion`` moves to the new version
only when there is no champion, or when the new version beats it on ``mlflow.champion_metric`` in
the metric's own direction (lower FID/KID, higher IS/precision/recall), both measured with the same
feature extractor. Numbers from different extractors are never compared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from resgan.errors import ResganError

CANDIDATE, CHAMPION = "candidate", "champion"
EXTRACTOR_TAG = "feature_extractor_id"  # which weights produced the features: scores compare only within one


@dataclass(frozen=True)
class Registration:
    name: str
    version: int
    aliases: tuple[str, ...]
    metric: str  # e.g. "eval/fid_classifier"
    value: float | None
    previous_champion: int | None
    previous_value: float | None
    decision: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def champion(name: str):
    """The version holding alias ``champion``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register(model_uri: str, name: str, metric: str, metric_key: str, results: dict[str, Any],
             tags: dict[str, str], run_id: str | None = None) -> Registration:
    """Register ``model_uri`` as a new version of ``name``; set ``candidate``; maybe move ``champion``.

    ``metric`` is a direction name (``fid``); ``metric_key`` the result key it is read from
    (``fid_classifier``). Metric values are stored as version tags ``eval/<key>``. Registrations into one
    SQLite store take turns (:func:`resgan.tracking.store_lock`), so concurrent experiments neither
    collide on an alias nor decide ``champion`` from a stale one.
    """
    import mlflow

    from resgan import tracking

    with tracking.store_lock(mlflow.get_tracking_uri()):
        return _register(model_uri, name, metric, metric_key, results, tags, run_id)


def _register(model_uri: str, name: str, metric: str, metric_key: str, results: dict[str, Any],
              tags: dict[str, str], run_id: str | None) -> Registration:
    import mlflow

    from resgan.metrics.registry import is_better

    version_tags = {**tags, **{f"eval/{k}": str(v) for k, v in results.items() if _is_number(v)}}
    try:
        version = mlflow.register_model(model_uri, name, tags=version_tags)
    except Exception as error:
        raise ResganError(f"cannot register {model_uri} as {name}: {str(error).splitlines()[0]}") from None
    client = _client()
    number = int(version.version)
    if run_id:
        client.set_model_version_tag(name, str(number), "source_run", run_id)
    client.set_registered_model_alias(name, CANDIDATE, str(number))

    tag = f"eval/{metric_key}"
    value = results.get(metric_key)
    current = champion(name)
    previous_value = None
    if current is not None and tag in current.tags:
        previous_value = float(current.tags[tag])
    if value is None:
        decision = f"{metric_key} was not computed, so champion stays"
        move = False
    elif not math.isfinite(float(value)):  # a NaN champion could never be beaten (every comparison is False)
        decision = f"{metric_key} is {value}: not comparable, so champion stays as it is"
        move = False
    elif current is None or int(current.version) == number:
        decision, move = "no champion yet: this version becomes champion", True
    elif tags.get(EXTRACTOR_TAG) and current.tags.get(EXTRACTOR_TAG, tags[EXTRACTOR_TAG]) != tags[EXTRACTOR_TAG]:
        # Scores from two feature extractors (e.g. a retrained classifier) are not on one scale.
        decision = (f"champion v{current.version} was scored with another feature extractor "
                    f"({current.tags[EXTRACTOR_TAG]}, now {tags[EXTRACTOR_TAG]}), so it stays; "
                    f"promote by hand with `resgan models promote {number} --alias champion`")
        move = False
    elif previous_value is not None and not math.isfinite(previous_value):
        decision = f"champion v{current.version}'s {metric_key} is {previous_value}: this version replaces it"
        move = True
    elif previous_value is None:
        decision = (f"champion v{current.version} has no {metric_key} (another feature extractor?); "
                    f"it stays; promote by hand with `resgan models promote {number} --alias champion`")
        move = False
    elif is_better(metric, float(value), previous_value):
        decision, move = f"{metric_key} {value:.4g} beats champion v{current.version}'s {previous_value:.4g}", True
    else:
        decision = f"{metric_key} {value:.4g} does not beat champion v{current.version}'s {previous_value:.4g}"
        move = False
    if move:
        client.set_registered_model_alias(name, CHAMPION, str(number))
    aliases = (CANDIDATE, CHAMPION) if move else (CANDIDATE,)
    return Registration(name=name, version=number, aliases=aliases, metric=tag,
                        value=None if value is None else float(value),
                        previous_champion=None if current is None else int(current.version),
                        previous_value=previous_value, decision=decision)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
