"""What a person sees in ``mlflow ui``: the run and runs-table URLs the stages print, the runs table's
saved view, and the figures as that table shows them."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from resgan.tracking.store import tracking_uri

VIEW_KEY = "resgan"  # the experiment's saved runs-table view: tag mlflow.sharedViewState.<VIEW_KEY>
VIEW_PARAMS = ("train.steps", "train.loss", "train.lr_g", "model.width", "sample.num")
# The evaluation's figures that are the table's metric columns, as result keys of features <f>.
VIEW_FIGURES = ("fid_{f}", "kid_{f}_mean", "is_{f}_mean", "class_accuracy")


def row_figures(figures: dict[str, float], features: str) -> dict[str, float]:
    """The evaluation's ``figures`` (result keys, measured with ``features``) that the runs table's
    metric columns show, for the train run's row: ``eval/<key>``, to 4 significant digits as the
    registry's tags (:func:`resgan.metrics.registry.rounded`; MLflow's table prints every digit a metric
    has, and has no setting for fewer). The evaluation run under it keeps every figure and digit; only
    the columns come up, so the chart view draws few one-point charts."""
    from resgan.metrics.registry import rounded  # numpy and scipy: only where figures are logged

    keys = [name.format(f=features) for name in VIEW_FIGURES]
    return {f"eval/{key}": rounded(figures[key]) for key in keys if key in figures}


def _ui_base() -> str:
    uri = tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


def run_url(experiment_id: str, run_id: str) -> str:
    """Where a person sees a run: on the tracking server, or on ``mlflow ui``'s default address for a local
    store, in the model-training view (MLflow 3 opens on its GenAI view otherwise)."""
    return f"{_ui_base()}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def experiment_url(experiment_id: str) -> str:
    """The experiment's runs table in the model-training view with the columns :func:`set_runs_view` saved."""
    return f"{_ui_base()}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"


def set_runs_view(experiment_id: str, features: str) -> None:
    """Save the runs view that :func:`experiment_url` opens. The table: newest first, with the evaluation's
    FID, KID, classifier or Inception score and class accuracy (measured with ``features``; a train run's
    row shows its latest evaluation's, rounded: :func:`row_figures`) and the key params as columns. The
    chart view (the runs page's chart toggle): FID over training first (its own metric,
    :data:`resgan.gan.loop.FID_CURVE`: fewer samples than the evaluation, so not the same figure), then
    ``loss/d`` with ``loss/g`` and ``d/real`` with ``d/fake`` in one chart each; MLflow adds a chart for
    every other metric.
    MLflow's UI reads a shared view from the experiment tag ``mlflow.sharedViewState.<key>`` (what its
    "Share" button writes); a person's own choices in the browser are untouched."""
    from resgan.gan.loop import FID_CURVE

    curve = FID_CURVE.format(key=f"fid_{features}")
    columns = [
        *(f"metrics.`eval/{m.format(f=features)}`" for m in VIEW_FIGURES),
        *(f"params.`{p}`" for p in VIEW_PARAMS),
    ]
    sections = [
        {"uuid": f"resgan-{name}", "name": name, "display": True, "isReordered": False}
        for name in ("train", "eval", "loss", "d", "grad_norm", "perf")
    ]
    state = {
        "searchFilter": "",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "selectedColumns": [*columns, "attributes.`Models`"],
        "columnWidths": {c: 130 for c in columns},
        "compareRunSections": sections,
        "isAccordionReordered": True,
        "compareRunCharts": [
            _line_chart(curve, f"FID ({features} features) over training, lower is better", "train"),
            _line_chart("loss/d", "GAN losses: loss/d and loss/g", "loss", ["loss/d", "loss/g"]),
            _line_chart("loss/g", "loss/g", "loss", deleted=True),  # drawn in the chart above
            _line_chart("d/real", "Discriminator outputs: d/real and d/fake", "d", ["d/real", "d/fake"]),
            _line_chart("d/fake", "d/fake", "d", deleted=True),
        ],
    }
    MlflowClient().set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(state))


def _line_chart(metric: str, title: str, section: str, metrics: list[str] | None = None, deleted: bool = False) -> dict:
    """One line chart of MLflow's chart view (the fields its RunsChartsLineCardConfig serializes)."""
    return {
        "uuid": f"resgan-{metric.replace('/', '-')}",
        "type": "LINE",
        "metricKey": metric,
        "selectedMetricKeys": metrics or [metric],
        "displayName": title,
        "metricSectionId": f"resgan-{section}",
        "isGenerated": False,
        "deleted": deleted,
        "runsCountToCompare": 10,
        "lineSmoothness": 0,
        "xAxisKey": "step",
        "xAxisScaleType": "linear",
        "scaleType": "linear",
        "selectedXAxisMetricKey": "",
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
        "useGlobalXaxisKey": True,
        "useGlobalLineSmoothing": True,
        "range": {},
    }
