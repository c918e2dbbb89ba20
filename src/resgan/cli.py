"""The ``resgan`` command line: thin Typer commands that load params and call one library function.

Heavy libraries (TensorFlow, MLflow, DVC) are imported inside the commands, so ``resgan --help``
stays fast. Expected errors (:class:`resgan.errors.ResganError`) print one line and exit non-zero.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from resgan.errors import ResganError

app = typer.Typer(
    name="resgan",
    help="ResNet-GAN image generator: pipeline stages (prepare, classifier, train, sample, evaluate) "
    "and tools to sample from trained or registered models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file (one section per stage).")]
DataDir = Annotated[Path, typer.Option("--data", help="Folder of the prepared data (train.npz, test.npz, summary.json).")]


def _load(path: Path):
    from resgan.config import load_params

    return load_params(path)


@app.command()
def prepare(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Output folder for train.npz, test.npz, manifest.csv, summary.json, preview.png.")] = Path("data/prepared"),
) -> None:
    """Prepare images from the source in prepare.* (built-in digits, a folder, IDX, npz or Keras datasets)."""
    p = _load(params)
    from resgan.stages.prepare import run

    run(p.prepare, out)


@app.command()
def classifier(
    params: ParamsOpt = Path("params.yaml"),
    data: DataDir = Path("data/prepared"),
    out: Annotated[Path, typer.Option(help="Where to save the trained classifier (.keras).")] = Path("models/classifier.keras"),
    metrics: Annotated[Path, typer.Option(help="Where to write its held-out accuracy (JSON).")] = Path("metrics/classifier.json"),
) -> None:
    """Train the domain classifier used as the offline feature extractor for FID, KID and IS."""
    p = _load(params)
    from resgan.stages.classifier import run

    run(p.classifier, data, out, metrics)


@app.command()
def train(
    params: ParamsOpt = Path("params.yaml"),
    data: DataDir = Path("data/prepared"),
    models: Annotated[Path, typer.Option(help="Output folder for generator.keras and mlflow_run.json.")] = Path("models"),
    checkpoints: Annotated[Path, typer.Option(help="Checkpoint folder (kept between runs, for resume).")] = Path("checkpoints"),
    metrics: Annotated[Path, typer.Option(help="Final training metrics (JSON).")] = Path("metrics/train.json"),
    plots: Annotated[Path, typer.Option(help="Loss curves over steps (CSV).")] = Path("plots/train.csv"),
) -> None:
    """Train the ResNet-GAN, resuming from the latest checkpoint, and track the run in MLflow."""
    p = _load(params)
    from resgan.stages.train import run

    run(p, params_path=params, data_dir=data, models_dir=models, checkpoint_dir=checkpoints,
        metrics_path=metrics, plots_path=plots)


@app.command()
def sample(
    params: ParamsOpt = Path("params.yaml"),
    generator: Annotated[Path, typer.Option(help="The trained (EMA) generator.")] = Path("models/generator.keras"),
    run_file: Annotated[Path, typer.Option("--run", help="mlflow_run.json written by train.")] = Path("models/mlflow_run.json"),
    out: Annotated[Path, typer.Option(help="Output folder for samples.npz and grid.png.")] = Path("samples"),
) -> None:
    """Draw sample.num images from the generator with fixed seeds."""
    p = _load(params)
    from resgan.stages.sample import run

    run(p, generator_path=generator, run_file=run_file, out_dir=out)


@app.command()
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    samples: Annotated[Path, typer.Option(help="samples.npz from the sample stage.")] = Path("samples/samples.npz"),
    data: DataDir = Path("data/prepared"),
    classifier_path: Annotated[Path, typer.Option("--classifier", help="The domain classifier (.keras).")] = Path("models/classifier.keras"),
    run_file: Annotated[Path, typer.Option("--run", help="mlflow_run.json written by train ('' to log nowhere).")] = Path("models/mlflow_run.json"),
    metrics: Annotated[Path, typer.Option(help="Evaluation metrics (JSON).")] = Path("metrics/eval.json"),
    plots: Annotated[Path, typer.Option(help="Folder for evaluation plots.")] = Path("plots/eval"),
    generator: Annotated[Optional[str], typer.Option(help="Evaluate this generator (.keras file or MLflow model URI) instead of --samples.")] = None,
    registration: Annotated[Path, typer.Option(help="Where to record the model registration (JSON).")] = Path("models/registered.json"),
) -> None:
    """Score samples: FID, KID, IS/classifier score, SSIM diversity and memorization, precision/recall."""
    p = _load(params)
    from resgan.stages.evaluate import run

    run(p, samples_path=samples, data_dir=data, classifier_path=classifier_path, run_file=run_file,
        metrics_path=metrics, plots_dir=plots, generator=generator, registration_path=registration)


def main() -> None:
    """Console entry point: expected errors become one line on stderr and a non-zero exit code."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
    try:
        app()
    except ResganError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
