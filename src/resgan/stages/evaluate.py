"""The evaluate stage: score the samples, write DVC metrics and plots, record the evaluation as an MLflow
run nested under the train run and register the generator (see :mod:`resgan.model_registry`).

``metrics/eval.json`` holds the figures people compare (DVC metrics; see
:data:`resgan.metrics.evaluation.HEADLINE`), ``metrics/eval_info.json`` everything else (noise floors,
spreads, counts, timings, notes); the plots go to ``plots/eval/``: ``classes.csv``/``classes.png``
(predicted classes of the samples beside the real class mix) and ``memorization.csv``/``memorization.png`` (each image's highest SSIM to any training
image, for the samples and, as the reference, for the real test images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resgan import files, tracking
from resgan.config import Params
from resgan.errors import ResganError
from resgan.loading import load_generator
from resgan.sampling import draw
from resgan.terminal import progress_bar

# The params this stage reads: dvc.yaml gives it the same (tests/test_contract.py). classifier.*: the
# evaluation run records the feature extractor's params beside its own.
PARAMS = ("sample", "evaluate", "classifier", "mlflow")


def _load_samples(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The samples' images and, from a conditional generator, the classes they were drawn for."""
    try:
        with np.load(path) as data:
            return data["images"], (data["labels"] if "labels" in data.files else None)
    except FileNotFoundError:
        raise ResganError(f"{path} not found: run the sample stage first (or pass --generator)") from None
    except (OSError, ValueError, KeyError) as error:
        raise ResganError(f"{path} is not a samples file: {error}") from None


def _plots(
    plots_dir: Path, results: dict[str, Any], details: dict[str, Any], test_memo: np.ndarray | None
) -> list[Path]:
    """Class and memorization histograms as CSV (for `dvc plots`) and PNG (for people and MLflow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    written: list[Path] = []
    plots_dir.mkdir(parents=True, exist_ok=True)
    generated = results.get("class_histogram_generated")
    if generated:
        real = results.get("class_histogram_real") or [0] * len(generated)
        frame = pd.DataFrame(
            {
                "class": range(len(generated)),
                "generated": np.asarray(generated) / max(sum(generated), 1),
                "real": np.asarray(real) / max(sum(real), 1),
            }
        )
        files.write_bytes(plots_dir / "classes.csv", frame.to_csv(index=False).encode())
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(frame["class"] - 0.2, frame["generated"], width=0.4, label="generated (predicted)")
        ax.bar(frame["class"] + 0.2, frame["real"], width=0.4, label="real (labels)")
        ax.set(xlabel="class", ylabel="fraction", title="Class mix", xticks=list(frame["class"]))
        ax.legend()
        written += [plots_dir / "classes.csv", _save_figure(fig, plots_dir / "classes.png")]
    memo = details.get("memorization_max_ssim")
    if memo is not None:
        # SSIM lies in -1..1, but an image's highest SSIM to thousands of training images is above 0:
        # the axis is 0..1 (anything below counts in the first bin), 0.05 a bin, labelled by its centre.
        bins = np.linspace(0, 1, 21)
        memo = np.clip(memo, 0, 1)
        test_memo = None if test_memo is None else np.clip(test_memo, 0, 1)
        frame = pd.DataFrame(
            {
                "ssim": np.round((bins[:-1] + bins[1:]) / 2, 3),
                "generated": np.histogram(memo, bins)[0] / max(len(memo), 1),
            }
        )
        if test_memo is not None:
            frame["real_test"] = np.histogram(test_memo, bins)[0] / max(len(test_memo), 1)
        files.write_bytes(plots_dir / "memorization.csv", frame.to_csv(index=False).encode())
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(memo, bins=bins, alpha=0.6, density=True, label="generated")
        if test_memo is not None:
            ax.hist(test_memo, bins=bins, alpha=0.6, density=True, label="real test")
        ax.set(xlabel="highest SSIM to any training image", ylabel="density", title="Memorization", xlim=(0, 1))
        ax.legend()
        written += [plots_dir / "memorization.csv", _save_figure(fig, plots_dir / "memorization.png")]
        plt.close("all")
    return written


def _save_figure(fig, path: Path) -> Path:
    with files.atomic_path(path, suffix=".png") as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _extractor_id(name: str, classifier_path: Path, inception_weights: str) -> str:
    """``<name>:<first 12 hex of the weights' SHA-256>``: FIDs compare only between equal ids."""
    import hashlib

    from resgan.metrics.features import find_inception_weights

    path = find_inception_weights(inception_weights) if name == "inception" else Path(classifier_path)
    if path is None or not Path(path).is_file():
        return name
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{name}:{digest.hexdigest()[:12]}"


def run(
    params: Params,
    samples_path: Path,
    data_dir: Path,
    classifier_path: Path,
    run_file: Path | None,
    metrics_path: Path,
    plots_dir: Path,
    generator: str | None = None,
    registration_path: Path | None = None,
    info_path: Path | None = None,
) -> dict[str, Any]:
    """Evaluate; write the headline figures to ``metrics_path`` (DVC metrics) and the rest to
    ``info_path``; draw the plots; record the evaluation in MLflow and register; return all results."""
    from resgan.data.prepared import load_split
    from resgan.metrics.evaluation import headline

    params = params.view(PARAMS, "evaluate")
    ep = params.evaluate
    samples, sample_labels = _samples(params.sample, samples_path, generator)
    train_images, train_labels = load_split(data_dir, "train")
    test_images, _ = load_split(data_dir, "test")
    details: dict[str, Any] = {}
    results = _score(ep, samples, sample_labels, train_images, train_labels, test_images, classifier_path, details)
    test_memo = (
        _test_memorization(ep, test_images, train_images, results) if "memorization_max_ssim" in details else None
    )

    top = headline(results)
    files.write_json(metrics_path, top, sort_keys=False)
    if info_path is not None:
        files.write_json(info_path, {k: v for k, v in results.items() if k not in top})
    plot_files = _plots(plots_dir, results, details, test_memo)
    _print_table(results)

    registration = None
    if run_file is not None and str(run_file):
        registration = _track(
            params,
            Path(run_file),
            data_dir,
            results,
            top,
            [metrics_path, *([info_path] if info_path else []), *plot_files],
            None if generator else samples_path.parent / "grid.png",
        )
    if registration_path is not None:
        files.write_json(registration_path, registration.as_dict() if registration else {"registered": False})
    return results


def _samples(sp, samples_path: Path, generator: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The sample stage's images and labels from ``samples_path``, or those it would write, drawn in memory
    from ``generator`` (``sample.*``: ``sp``)."""
    if not generator:
        return _load_samples(samples_path)
    with progress_bar(sp.num, "sampling") as advance:
        return draw(load_generator(generator), sp.num, sp.seed, sp.batch_size, progress=advance)


def _score(ep, samples, sample_labels, train_images, train_labels, test_images, classifier_path, details):
    """Every metric of ``evaluate.metrics`` (``ep``) on the samples, with the extractor's identity and
    fitness; per-image arrays go to ``details``."""
    from resgan.metrics.evaluation import evaluate_samples
    from resgan.metrics.features import resolve_extractor
    from resgan.metrics.registry import get_metric

    needs_features = any(get_metric(m).needs_features for m in ep.metrics)
    extractor = resolve_extractor(ep.features, classifier_path, ep.inception_weights) if needs_features else None
    print(f"evaluating {len(samples)} samples with {extractor.name if extractor else 'no'} features", flush=True)
    results = evaluate_samples(
        samples, train_images, test_images, extractor, ep, train_labels, details, sample_labels=sample_labels
    )
    if extractor is not None:
        results["feature_extractor_id"] = _extractor_id(extractor.name, classifier_path, ep.inception_weights)
        results["features_trusted"] = bool(extractor.trusted)
        results["features_fitness"] = extractor.fitness
        if not extractor.trusted:
            results["notes"].append(
                f"the {extractor.name.removesuffix('_untrusted')} features failed their fitness "
                f"check ({extractor.fitness}): their figures are named *_untrusted, are not "
                "comparable, and move no champion"
            )
    return results


def _test_memorization(ep, test_images: np.ndarray, train_images: np.ndarray, results: dict[str, Any]) -> np.ndarray:
    """The real test split's memorization figures (what "not memorized" looks like) into ``results``;
    returns each test image's highest SSIM to a training image."""
    from resgan.metrics.ssim import memorization

    rng = np.random.default_rng(ep.seed)
    test_subset = test_images[np.sort(rng.choice(len(test_images), min(len(test_images), 1000), replace=False))]
    test_reference = memorization(test_subset, train_images, ep.memorization_shortlist, ep.memorization_threshold)
    results["memorization_real_test_mean"] = float(test_reference["mean"])
    results["memorization_real_test_fraction"] = float(test_reference["fraction"])
    return test_reference["max_ssim"]


def _track(
    params: Params,
    run_file: Path,
    data_dir: Path,
    results: dict[str, Any],
    top: dict[str, float],
    artifacts: list[Path],
    grid: Path | None,
):
    """Record this evaluation as a run nested under the train run (its own ``sample.*``, ``evaluate.*`` and
    ``classifier.*`` params, the headline figures, the full results and plots as artifacts), log the figures
    against the logged model and the evaluation data too (the model's page lists them), and those that
    are the runs table's columns, rounded, on the train run at its exported step (its row shows its
    latest evaluation's figures, :func:`resgan.tracking.row_figures`); then register the model; returns
    the :class:`~resgan.model_registry.Registration` (None without features)."""
    from resgan.data.prepared import load_summary
    from resgan.gan.checkpoint import read_pointer

    info = read_pointer(run_file)
    summary = load_summary(data_dir)
    registration = None
    with tracking.StageRun(params.mlflow.tracking_retries) as session:
        session.start_child(run_file, params.mlflow.experiment, "evaluate", _tags(info, results, summary))
        session.log_params(
            {k: v for k, v in params.flat().items() if k.split(".")[0] in ("sample", "evaluate", "classifier")}
        )
        _log_figures(session, info, top, results, summary, data_dir)
        for path in [*artifacts, *([grid] if grid is not None and grid.exists() else [])]:
            session.log_artifact(path, "eval")
        if results.get("features") and info.get("model_uri"):
            registration = _register(params, info, results, session.run_id, session.parent.data.tags)
            session.set_tags(
                {"registered_version": str(registration.version), "registry_decision": registration.decision},
                "tag registration",
            )
        experiment_id = session.run.info.experiment_id
        if results.get("features"):
            session.log(lambda: tracking.set_runs_view(experiment_id, str(results["features"])), "save the runs view")
        print(
            f"MLflow evaluation run {session.run_id} (under train run {info['run_id']}): "
            f"{tracking.run_url(experiment_id, session.run_id)}\nevery run, with FID columns: "
            f"{tracking.experiment_url(experiment_id)}",
            flush=True,
        )
    return registration


def _tags(info: dict[str, Any], results: dict[str, Any], summary: dict[str, Any]) -> dict[str, str]:
    """The evaluation run's tags: the train run, the feature extractor (and its weights' id), the logged
    model's id and the tags every run carries."""
    tags = {
        "stage": "evaluate",
        "train_run_id": info["run_id"],
        "feature_extractor": str(results.get("features")),
        **tracking.run_tags(summary),
    }
    if results.get("feature_extractor_id"):
        tags["feature_extractor_id"] = str(results["feature_extractor_id"])
    model_id = tracking.model_id(info.get("model_uri"))
    if model_id:
        tags["model_id"] = model_id
    return tags


def _log_figures(session, info: dict[str, Any], top: dict[str, float], results, summary, data_dir: Path) -> None:
    """The headline figures ``top`` on the evaluation run, on the logged model (against the evaluation data)
    and, those that are the runs table's columns, rounded, on the train run at its exported step."""
    from resgan.data.prepared import data_name

    figures = {f"eval/{k}": v for k, v in top.items()}
    session.log_metrics(figures)
    model_id = tracking.model_id(info.get("model_uri"))
    if model_id:  # the same figures on the model's own page, against the data they were measured on
        evaluation_data = tracking.dataset(data_name(summary), summary.get("data_hash", ""), data_dir.resolve())
        session.log_metrics(figures, model_id=model_id, record=evaluation_data, what="log metrics to the model")
    exported_step = int(session.parent.data.tags.get("exported_step", 0))
    session.log_metrics(
        tracking.row_figures(top, str(results.get("features"))),
        step=exported_step,
        run_id=info["run_id"],
        what="log the figures to the train run",
    )


def _register(
    params: Params, info: dict[str, Any], results: dict[str, Any], eval_run_id: str, run_tags: dict[str, str]
):
    from resgan import model_registry as registry
    from resgan.metrics.evaluation import headline
    from resgan.metrics.registry import result_key

    metric = params.mlflow.champion_metric
    key = result_key(metric, str(results["features"]))
    summary_tags = {"feature_extractor": str(results["features"]), "eval_run_id": eval_run_id}
    if results.get("feature_extractor_id"):
        summary_tags[registry.EXTRACTOR_TAG] = str(results["feature_extractor_id"])
    for name in ("data_hash", "git_commit", "dvc_exp_name"):
        if name in run_tags:
            summary_tags[name] = run_tags[name]
    figures = headline(results)
    if key in results and key not in figures:
        figures[key] = float(results[key])
    description = (
        f"Trained in run {info['run_id']}; latest evaluation: run {eval_run_id} "
        f"({results.get('n_generated')} samples, {results.get('features')} features): "
        + ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
        + ". Every figure: that run's artifact eval/eval_info.json."
    )
    outcome = registry.register(
        info["model_uri"],
        params.mlflow.registered_model,
        metric,
        key,
        figures,
        summary_tags,
        run_id=info["run_id"],
        reuse=True,
        description=description,
        trusted=bool(results.get("features_trusted", True)),
    )
    print(
        f"registered {outcome.name} v{outcome.version} aliases {', '.join(outcome.aliases)}: {outcome.decision}",
        flush=True,
    )
    return outcome


def _print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evaluation", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        if isinstance(value, float) and not key.startswith("time_"):
            table.add_row(key, f"{value:.4g}")
    Console().print(table)
    if results.get("notes"):
        for note in results["notes"]:
            print(f"note: {note}")
    timings = ", ".join(
        f"{k.removeprefix('time_').removesuffix('_s')} {v:.1f}" for k, v in results.items() if k.startswith("time_")
    )
    print(f"evaluate took (s): {timings}")
