"""What ``resgan models list | show | promote`` do: read the MLflow Model Registry and move aliases.

Registration itself (and the automatic ``candidate``/``champion`` rules) lives in
:mod:`resgan.registry`; this module is for people looking at the registry and overriding it.
Every failure (no store, unreachable server, unknown model, version or alias) is one
:class:`~resgan.errors.ResganError` line.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from resgan.errors import ResganError

# The evaluation tag that holds each champion metric, for any feature extractor (see
# resgan.metrics.registry.result_key): the `list` table shows these columns.
METRIC_TAGS = {
    "fid": r"eval/fid_[a-z]+",
    "kid": r"eval/kid_[a-z]+_mean",
    "is": r"eval/is_[a-z]+_mean",
    "pr_precision": r"eval/pr_[a-z]+_precision",
    "pr_recall": r"eval/pr_[a-z]+_recall",
}


def client():
    """An MlflowClient for the project's store; a clear error when the store is missing or down."""
    import mlflow
    from mlflow import MlflowClient

    from resgan import tracking

    uri = tracking.tracking_uri()
    tracking.check_reachable(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ResganError(f"no MLflow store at {uri.removeprefix('sqlite:///')}: nothing is registered yet "
                          "(run the pipeline, or set MLFLOW_TRACKING_URI)")
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _first_line(error: Exception) -> str:
    text = getattr(error, "message", None) or str(error)
    text = text.strip()
    return text.splitlines()[0] if text else type(error).__name__


def registered_model(c, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return c.get_registered_model(name)
    except MlflowException as error:
        if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise ResganError(f"no registered model named {name!r} in {c.tracking_uri}") from None
        raise ResganError(f"cannot read registered model {name!r}: {_first_line(error)}") from None


def resolve(c, name: str, version_or_alias: str):
    """The ModelVersion for a version number or an alias; one clear line when there is none."""
    from mlflow.exceptions import MlflowException

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
        raise ResganError(f"cannot read {name} version {text}: {_first_line(error)}") from None


def _versions(c, name: str) -> list:
    from mlflow.exceptions import MlflowException

    quoted = name.replace("'", "\\'")
    try:
        found = c.search_model_versions(f"name = '{quoted}'")
    except MlflowException as error:
        raise ResganError(f"cannot list versions of {name!r}: {_first_line(error)}") from None
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
    """Print (a rich table, or JSON) and return the versions of ``name``, newest first."""
    c = client()
    model = registered_model(c, name)
    by_version = _aliases_by_version(model)
    rows = [describe(v, by_version.get(str(v.version), [])) for v in _versions(c, name)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return rows
    pattern = re.compile(METRIC_TAGS.get(champion_metric, r"eval/\w+"))
    metric_tags = sorted({k for row in rows for k in row["tags"] if pattern.fullmatch(k)})

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name}: {len(rows)} version{'s' if len(rows) != 1 else ''} "
                  f"(champion metric: {champion_metric})")
    table.add_column("version", justify="right")
    table.add_column("aliases")
    for tag in metric_tags:
        table.add_column(tag, justify="right")
    table.add_column("source run")
    table.add_column("created")
    for row in rows:
        table.add_row(str(row["version"]), ", ".join(row["aliases"]),
                      *[_number(row["tags"].get(tag)) for tag in metric_tags],
                      row["run_id"] or "", row["created"])
    Console(width=200 if not _is_terminal() else None).print(table)
    return rows


def _is_terminal() -> bool:
    import sys

    return sys.stdout.isatty()


def _number(text: str | None) -> str:
    if text is None:
        return ""
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def show_version(name: str, version_or_alias: str, as_json: bool = False) -> dict[str, Any]:
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


ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,254}")


def promote(name: str, version_or_alias: str, alias: str = "champion") -> tuple[int, int | None]:
    """Point ``alias`` at a version; returns (new version, the version it pointed at before or None)."""
    from mlflow.exceptions import MlflowException

    if not ALIAS.fullmatch(alias) or alias.lower() == "latest" or re.fullmatch(r"v\d+", alias, re.IGNORECASE):
        raise ResganError(f"{alias!r} cannot be an alias: use letters, digits, _ and -, not a version-like "
                          "name (v3) or 'latest'")
    c = client()
    target = resolve(c, name, version_or_alias)
    before = registered_model(c, name).aliases.get(alias)
    try:
        c.set_registered_model_alias(name, alias, str(target.version))
    except MlflowException as error:
        raise ResganError(f"cannot set alias {alias!r} on {name} v{target.version}: {_first_line(error)}") from None
    if before is None:
        note = ""
    elif str(before) == str(target.version):
        note = " (it already was)"
    else:
        note = f" (was v{before})"
    print(f"{name} v{target.version} is now {alias}{note}")
    return int(target.version), None if before is None else int(before)
