"""The MLflow Model Registry: register evaluated generators, move aliases, and ``resgan models``.

Rules for :func:`register`: every registered version gets alias ``candidate``; ``champion`` goes where
the champion rule says (:func:`resgan.champion.decide`, pure and tested by table: the new version takes it
when there is no champion, or when it beats the champion on ``mlflow.champion_metric`` in the metric's own
direction, both measured with the same feature extractor). This module reads the versions the rule
needs from the registry and applies its decision. Each version's figures are its newest evaluation's.

For people looking at the registry and overriding it, :func:`list_versions`, :func:`show_version` and
:func:`promote` are what ``resgan models list | show | promote`` do; their every failure (no store,
unreachable server, unknown model, version or alias) is one :class:`~resgan.errors.ResganError` line.
The CLI imports this module inside its commands, so MLflow is imported here at the top.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.table import Table

from resgan import tracking
from resgan.champion import Standing, decide
from resgan.errors import ResganError, first_line
from resgan.metrics.registry import METRIC_DIRECTION, is_better, result_key_pattern, rounded

CANDIDATE, CHAMPION = "candidate", "champion"
EXTRACTOR_TAG = "feature_extractor_id"  # which weights produced the features: scores compare only within one
METRIC_TAG = "eval/{key}"  # the version tag holding a result of resgan.metrics.evaluate_samples
ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,254}")


def metric_tag_pattern(metric: str) -> str:
    """A regular expression that fully matches the version tag of champion metric ``metric`` for any
    feature extractor (``eval/kid_[a-z]+_mean`` for ``kid``), or every evaluation tag for another name."""
    key = result_key_pattern(metric) if metric in METRIC_DIRECTION else r"\w+"
    return re.escape(METRIC_TAG.format(key="")) + key


# ---------------------------------------------------------------- registration; the rule is resgan.champion


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


def champion(name: str):
    """The version of ``name`` holding alias ``champion`` in the current tracking store, or None."""
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register(
    model_uri: str,
    name: str,
    metric: str,
    metric_key: str,
    results: dict[str, Any],
    tags: dict[str, str],
    run_id: str | None = None,
    reuse: bool = False,
    description: str | None = None,
    trusted: bool = True,
) -> Registration:
    """Register ``model_uri`` as a version of ``name``; set ``candidate``; maybe move ``champion``.

    ``metric`` is a champion metric name (``fid``); ``metric_key`` the result key it is read from
    (``fid_classifier``). The numbers of ``results`` are stored as version tags ``eval/<key>``, rounded to
    4 significant digits (the full evaluation is the evaluation run's artifact). ``reuse``: a model that
    is a version already (evaluated again, e.g. with other sample params) keeps its version, whose
    evaluation tags are replaced by the newest ones, and the champion rule is applied again; otherwise
    each call registers a new version. ``trusted=False`` (figures from a feature extractor that failed its
    fitness check) registers the version as ``candidate`` but never makes it champion. Registrations into
    one SQLite store take turns
    (:func:`resgan.tracking.store_lock`), so concurrent experiments neither collide on an alias nor
    decide ``champion`` from a stale one.
    """
    with tracking.store_lock(mlflow.get_tracking_uri()):
        return _register(model_uri, name, metric, metric_key, results, tags, run_id, reuse, description, trusted)


def _version_of(client: MlflowClient, name: str, model_uri: str):
    """The newest version of ``name`` registered from ``model_uri``, or None (and None when ``name`` is new)."""
    quoted = name.replace("'", "\\'")
    try:
        found = client.search_model_versions(f"name = '{quoted}'")
    except MlflowException:
        return None
    same = [v for v in found if v.source == model_uri]
    return max(same, key=lambda v: int(v.version)) if same else None


def _register(
    model_uri: str,
    name: str,
    metric: str,
    metric_key: str,
    results: dict[str, Any],
    tags: dict[str, str],
    run_id: str | None,
    reuse: bool,
    description: str | None,
    trusted: bool = True,
) -> Registration:
    client = MlflowClient()
    # The newest version before this one (None when re-evaluating one): those above it are registered at
    # the same moment as this one, by a teammate against the same server.
    newest_before = None if reuse else max((int(v.version) for v in _versions(client, name)), default=0)
    number = _version_with_figures(client, name, model_uri, results, tags, reuse, description)
    if run_id:
        client.set_model_version_tag(name, str(number), "source_run", run_id)
    _set_alias(client, name, CANDIDATE, number)
    if newest_before is not None:  # a registration at the same moment may have set candidate after a newer one's
        newest = max(int(v.version) for v in _versions(client, name))
        if newest > number:
            _set_alias(client, name, CANDIDATE, newest)

    # The champion rule (resgan.champion.decide) on the registry's rows; its decision is applied below.
    tag = METRIC_TAG.format(key=metric_key)
    value = results.get(metric_key)
    current = champion(name)
    candidate = Standing(number, None if value is None else float(value), tags.get(EXTRACTOR_TAG))
    held = None if current is None else _standing(current, tag)
    rivals = []  # read only when they matter: the champion evaluated again
    if current is not None and int(current.version) == number:
        rivals = [_standing(v, tag) for v in _versions(client, name) if int(v.version) != number]
    decision = decide(candidate, held, rivals, trusted, metric, metric_key)
    if decision.champion is not None:
        _set_alias(client, name, CHAMPION, decision.champion)
    crowned, reason = decision.crowns(number), decision.reason
    if crowned and newest_before is not None:
        best = _settle_champion(client, name, candidate, newest_before, tag, metric)
        if best != number:
            crowned, reason = False, f"{reason}; v{best}, registered meanwhile, is better: champion is v{best}"
    aliases = (CANDIDATE, CHAMPION) if crowned else (CANDIDATE,)
    return Registration(
        name=name,
        version=number,
        aliases=aliases,
        metric=tag,
        value=candidate.value,
        previous_champion=None if current is None else int(current.version),
        previous_value=None if held is None else held.value,
        decision=reason,
    )


def _settle_champion(client: MlflowClient, name: str, mine: Standing, newest_before: int, tag: str, metric: str) -> int:
    """After ``mine`` took champion: the version that should hold it, given the versions registered at the
    same moment (above ``newest_before``); moves the alias there if a racer's write holds it. Returns it.

    A server store has no lock (store_lock is for SQLite): registrations at the same moment can each
    decide from the same champion, and the last write would win even when it is the worse. So after its
    write each one looks at the versions registered meanwhile: champion goes to the best of them and this
    one (same feature extractor, a finite figure), unless something else (a person's promote) moved it
    since. The later writer sees the other's version, so champion settles on the best, as one
    registration after another would."""
    best = mine
    for other in _versions(client, name):
        rival = _standing(other, tag)
        if (
            rival.version > newest_before
            and rival.version != mine.version
            and rival.extractor == mine.extractor
            and rival.value is not None
            and math.isfinite(rival.value)
            and is_better(metric, rival.value, best.value)
        ):
            best = rival
    now = champion(name)
    if now is not None and int(now.version) != best.version and int(now.version) > newest_before:  # a racer's
        _set_alias(client, name, CHAMPION, best.version)
    return best.version


def _set_alias(client: MlflowClient, name: str, alias: str, version: int, tries: int = 5) -> None:
    """Point ``alias`` at ``version``. On a server store two writers can insert the same alias row at once
    (PostgreSQL: "duplicate key value violates unique constraint"); the loser tries again, and then
    updates the row the winner inserted."""
    for attempt in range(tries):
        try:
            client.set_registered_model_alias(name, alias, str(version))
            return
        except MlflowException as error:
            if attempt == tries - 1 or not re.search(r"duplicate key|UNIQUE constraint", str(error), re.IGNORECASE):
                raise
            time.sleep(0.2 * (attempt + 1))  # seconds


def _version_with_figures(
    client: MlflowClient,
    name: str,
    model_uri: str,
    results: dict[str, Any],
    tags: dict[str, str],
    reuse: bool,
    description: str | None,
) -> int:
    """The version of ``name`` that holds ``model_uri`` (a new one, or with ``reuse`` the one registered
    before) with ``tags`` and the numbers of ``results`` as version tags; returns its number."""
    version_tags = {**tags, **{METRIC_TAG.format(key=k): str(rounded(v)) for k, v in results.items() if _is_number(v)}}
    version = _version_of(client, name, model_uri) if reuse else None
    try:
        if version is None:
            # MLflow prints "Successfully registered model ..." / "Created version ..." itself; the stage
            # says what it did in its own line. Its warnings go through logging and still show.
            with contextlib.redirect_stderr(io.StringIO()):
                version = mlflow.register_model(model_uri, name, tags=version_tags)
        else:  # the newest evaluation replaces the version's figures; the evaluation runs keep every one
            for key in version.tags:
                if key.startswith(METRIC_TAG.format(key="")) and key not in version_tags:
                    client.delete_model_version_tag(name, version.version, key)
            for key, value in version_tags.items():
                client.set_model_version_tag(name, version.version, key, value)
        if description:
            client.update_model_version(name, version.version, description=description)
    except Exception as error:
        raise ResganError(f"cannot register {model_uri} as {name}: {tracking.reason(error)}") from None
    return int(version.version)


def _standing(version, tag: str) -> Standing:
    """A ModelVersion as the champion rule sees it: its figure under version tag ``tag`` (None when it
    has none or it is not a number) and its feature extractor."""
    try:
        value = float(version.tags[tag]) if tag in version.tags else None
    except ValueError:
        value = None
    return Standing(int(version.version), value, version.tags.get(EXTRACTOR_TAG))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------- resgan models list | show | promote


def client() -> MlflowClient:
    """An MlflowClient for the project's store; a clear error when the store is missing or down."""
    uri = tracking.tracking_uri()
    tracking.check_reachable(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ResganError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}: nothing is registered yet "
            "(run the pipeline, or set MLFLOW_TRACKING_URI)"
        )
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def registered_model(c: MlflowClient, name: str):
    """The RegisteredModel ``name``; one clear line when there is none or the store refuses."""
    try:
        return c.get_registered_model(name)
    except MlflowException as error:
        if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise ResganError(f"no registered model named {name!r} in {c.tracking_uri}") from None
        raise ResganError(f"cannot read registered model {name!r}: {first_line(error)}") from None


def resolve(c: MlflowClient, name: str, version_or_alias: str):
    """The ModelVersion for a version number or an alias; one clear line when there is none."""
    model = registered_model(c, name)
    text = str(version_or_alias).strip()
    try:
        if text.isdigit():
            return c.get_model_version(name, text)
        if text not in model.aliases:
            known = ", ".join(f"{a} (v{v})" for a, v in sorted(model.aliases.items())) or "none"
            raise ResganError(f"{name} has no alias {text!r}; its aliases: {known}")
        return c.get_model_version(name, str(model.aliases[text]))
    except MlflowException as error:
        if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            versions = [int(v.version) for v in _versions(c, name)]
            have = f"versions {min(versions)} to {max(versions)}" if versions else "no versions"
            raise ResganError(f"{name} has no version {text} ({have})") from None
        raise ResganError(f"cannot read {name} version {text}: {first_line(error)}") from None


def _versions(c: MlflowClient, name: str) -> list:
    quoted = name.replace("'", "\\'")
    try:
        found = c.search_model_versions(f"name = '{quoted}'")
    except MlflowException as error:
        raise ResganError(f"cannot list versions of {name!r}: {first_line(error)}") from None
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def _aliases_by_version(model) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for alias, version in sorted(model.aliases.items()):
        out.setdefault(str(version), []).append(alias)
    return out


def _when(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def describe(version, aliases: list[str]) -> dict[str, Any]:
    """A ModelVersion as plain data (what `show --json` prints)."""
    tags = dict(version.tags or {})
    return {
        "name": version.name,
        "version": int(version.version),
        "aliases": aliases,
        "source": version.source,
        "model_id": getattr(version, "model_id", None),
        "run_id": version.run_id or tags.get("source_run"),
        "created": _when(version.creation_timestamp),
        "status": version.status,
        "description": version.description or "",
        "tags": dict(sorted(tags.items())),
    }


def list_versions(name: str, champion_metric: str = "fid", as_json: bool = False) -> list[dict[str, Any]]:
    """Print (a rich table, or JSON) and return the versions of ``name``, newest first; the table's
    metric columns are the version tags of ``champion_metric``, one per feature extractor."""
    c = client()
    model = registered_model(c, name)
    by_version = _aliases_by_version(model)
    rows = [describe(v, by_version.get(str(v.version), [])) for v in _versions(c, name)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return rows
    pattern = re.compile(metric_tag_pattern(champion_metric))
    metric_tags = sorted({k for row in rows for k in row["tags"] if pattern.fullmatch(k)})

    table = Table(
        title=f"{name}: {len(rows)} version{'s' if len(rows) != 1 else ''} (champion metric: {champion_metric})"
    )
    table.add_column("version", justify="right")
    table.add_column("aliases")
    for tag in metric_tags:
        table.add_column(tag, justify="right")
    table.add_column("source run")
    table.add_column("created")
    for row in rows:
        table.add_row(
            str(row["version"]),
            ", ".join(row["aliases"]),
            *[_number(row["tags"].get(tag)) for tag in metric_tags],
            row["run_id"] or "",
            row["created"],
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)  # piped: no wrapping at 80
    return rows


def _number(text: str | None) -> str:
    if text is None:
        return ""
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def show_version(name: str, version_or_alias: str, as_json: bool = False) -> dict[str, Any]:
    """Print (text, or JSON) and return one version of ``name``, by number or alias."""
    c = client()
    version = resolve(c, name, version_or_alias)
    model = registered_model(c, name)
    row = describe(version, _aliases_by_version(model).get(str(version.version), []))
    if as_json:
        print(json.dumps(row, indent=2))
        return row
    print(f"{row['name']} version {row['version']}")
    for key in ("aliases", "source", "model_id", "run_id", "created", "status", "description"):
        value = row[key]
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        if value:
            print(f"  {key + ':':<13}{value}")
    if row["tags"]:
        print("  tags:")
        width = max(len(k) for k in row["tags"])
        for key, value in row["tags"].items():
            print(f"    {key:<{width}}  {value}")
    return row


def promote(name: str, version_or_alias: str, alias: str = CHAMPION) -> tuple[int, int | None]:
    """Point ``alias`` at a version; returns (new version, the version it pointed at before or None)."""
    if not ALIAS.fullmatch(alias) or alias.lower() == "latest" or re.fullmatch(r"v\d+", alias, re.IGNORECASE):
        raise ResganError(
            f"{alias!r} cannot be an alias: use letters, digits, _ and -, not a version-like name (v3) or 'latest'"
        )
    c = client()
    target = resolve(c, name, version_or_alias)
    before = registered_model(c, name).aliases.get(alias)
    try:
        c.set_registered_model_alias(name, alias, str(target.version))
    except MlflowException as error:
        raise ResganError(f"cannot set alias {alias!r} on {name} v{target.version}: {tracking.reason(error)}") from None
    if before is None:
        note = ""
    elif str(before) == str(target.version):
        note = " (it already was)"
    else:
        note = f" (was v{before})"
    print(f"{name} v{target.version} is now {alias}{note}")
    return int(target.version), None if before is None else int(before)
