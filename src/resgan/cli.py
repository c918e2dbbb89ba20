"""The ``resgan`` command line: thin Typer commands that load params and call one library function.

Heavy libraries (TensorFlow, MLflow, DVC) are imported inside the commands, so ``resgan --help``
stays fast. Expected errors (:class:`resgan.errors.ResganError`) print one line and exit non-zero.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from resgan.errors import ResganError

app = typer.Typer(
    name="resgan",
    help="ResNet-GAN image generator: pipeline stages (prepare, classifier, train, sample, evaluate) "
    "and tools to sample from trained or registered models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file (one section per stage).")]
DataDir = Annotated[
    Path, typer.Option("--data", help="Folder of the prepared data (train.npz, test.npz, summary.json).")
]


def _start_tensorflow() -> None:
    """TensorFlow's start-up lines kept off a stage's output (see resgan.terminal.start_tensorflow)."""
    from resgan.terminal import start_tensorflow

    start_tensorflow()


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        print(f"resgan {version('resgan')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print resgan's version and exit.")
    ] = False,
) -> None:
    """ResNet-GAN image generator: pipeline stages (prepare, classifier, train, sample, evaluate) and tools
    to sample from trained or registered models."""


def _load(path: Path):
    from resgan.config import load_params

    return load_params(path)


@app.command()
def prepare(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[
        Path, typer.Option(help="Output folder for train.npz, test.npz, manifest.csv, summary.json, preview.png.")
    ] = Path("data/prepared"),
) -> None:
    """Prepare images from the source in prepare.* (built-in digits, a folder, IDX, npz or Keras datasets)."""
    p = _load(params)
    from resgan.stages.prepare import PARAMS, run

    run(p.view(PARAMS, "prepare").prepare, out)


@app.command()
def classifier(
    params: ParamsOpt = Path("params.yaml"),
    data: DataDir = Path("data/prepared"),
    out: Annotated[
        Path, typer.Option(help="Where to save the trained extractor (.keras; its record beside it, .json).")
    ] = Path("models/classifier.keras"),
    metrics: Annotated[Path, typer.Option(help="Where to write its held-out fitness figures (JSON).")] = Path(
        "metrics/classifier.json"
    ),
) -> None:
    """Train the offline feature extractor for FID, KID and precision/recall: the domain classifier where
    the data has labels and it learns them, else a self-supervised encoder; each proves itself on held-out images."""
    p = _load(params)
    _start_tensorflow()
    from resgan.stages.classifier import PARAMS, run

    run(p.view(PARAMS, "classifier").classifier, data, out, metrics)


@app.command()
def train(
    params: ParamsOpt = Path("params.yaml"),
    data: DataDir = Path("data/prepared"),
    models: Annotated[Path, typer.Option(help="Output folder for generator.keras and mlflow_run.json.")] = Path(
        "models"
    ),
    checkpoints: Annotated[Path, typer.Option(help="Checkpoint folder (kept between runs, for resume).")] = Path(
        "checkpoints"
    ),
    metrics: Annotated[Path, typer.Option(help="Final training metrics (JSON).")] = Path("metrics/train.json"),
    plots: Annotated[Path, typer.Option(help="Loss curves over steps (CSV).")] = Path("plots/train.csv"),
    classifier_path: Annotated[
        Path, typer.Option("--classifier", help="The domain classifier, for FID over training.")
    ] = Path("models/classifier.keras"),
    fid: Annotated[Path, typer.Option(help="FID over training (CSV).")] = Path("plots/fid.csv"),
) -> None:
    """Train the ResNet-GAN, resuming from the latest checkpoint, and track the run in MLflow."""
    p = _load(params)
    _quiet_mlflow()
    from resgan.stages.train import TrainPaths, run

    run(
        p,
        TrainPaths(
            params=params,
            data=data,
            models=models,
            checkpoints=checkpoints,
            metrics=metrics,
            plots=plots,
            classifier=classifier_path,
            fid=fid,
        ),
    )


@app.command()
def sample(
    params: ParamsOpt = Path("params.yaml"),
    generator: Annotated[Path, typer.Option(help="The trained (EMA) generator.")] = Path("models/generator.keras"),
    out: Annotated[Path, typer.Option(help="Output folder for samples.npz and grid.png.")] = Path("samples"),
) -> None:
    """Draw sample.num images from the generator with fixed seeds (evaluate logs them to MLflow)."""
    p = _load(params)
    _start_tensorflow()
    from resgan.stages.sample import run

    run(p, generator_path=generator, out_dir=out)


@app.command()
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    samples: Annotated[Path, typer.Option(help="samples.npz from the sample stage.")] = Path("samples/samples.npz"),
    data: DataDir = Path("data/prepared"),
    classifier_path: Annotated[Path, typer.Option("--classifier", help="The domain classifier (.keras).")] = Path(
        "models/classifier.keras"
    ),
    run_file: Annotated[
        str,
        typer.Option(
            "--run", help="mlflow_run.json written by train: the evaluation is a run under it ('' to log nowhere)."
        ),
    ] = "models/mlflow_run.json",
    metrics: Annotated[Path, typer.Option(help="The figures people compare (JSON, DVC metrics).")] = Path(
        "metrics/eval.json"
    ),
    info: Annotated[Path, typer.Option(help="Every other result: noise floors, counts, timings, notes (JSON).")] = Path(
        "metrics/eval_info.json"
    ),
    plots: Annotated[Path, typer.Option(help="Folder for evaluation plots.")] = Path("plots/eval"),
    generator: Annotated[
        str | None, typer.Option(help="Evaluate this generator (.keras file or MLflow model URI) instead of --samples.")
    ] = None,
    registration: Annotated[Path, typer.Option(help="Where to record the model registration (JSON).")] = Path(
        "models/registered.json"
    ),
) -> None:
    """Score samples: FID, KID, IS/classifier score, SSIM diversity and memorization, precision/recall."""
    p = _load(params)
    _quiet_mlflow()
    _start_tensorflow()
    from resgan.stages.evaluate import run

    run(
        p,
        samples_path=samples,
        data_dir=data,
        classifier_path=classifier_path,
        run_file=Path(run_file) if run_file else None,
        metrics_path=metrics,
        plots_dir=plots,
        generator=generator,
        registration_path=registration,
        info_path=info,
    )


# ---------------------------------------------------------------- sampling tools

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="The generator: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/generator, "
        "a logged-model id (m-...), or a local .keras file. Default: models:/<mlflow.registered_model>@champion.",
    ),
]
ModelParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Where the default model name is read from.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Replace an existing output.")]
TruncationOpt = Annotated[
    float | None,
    typer.Option(help="Truncation trick: redraw latent values beyond +-T (T > 0; smaller is tamer and less varied)."),
]
ScaleOpt = Annotated[
    int,
    typer.Option(
        help="Grid and GIF: enlarge by this integer factor (nearest neighbour); 0: to at least 512 px across."
    ),
]
LabelOpt = Annotated[
    int | None,
    typer.Option(help="Class-conditional models: draw this class (0 to K-1) only; default every class in turn."),
]


def _quiet_mlflow() -> None:
    """No artifact bars or INFO chatter from MLflow (database set-up, "Successfully registered model")
    on the command line: the commands print their own lines; MLflow's warnings and errors still show."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def _mlflow_params(params: Path):
    """The ``mlflow`` section of the params file, validated as every stage validates it (a typo is the
    same error everywhere); outside a project, where there is no params file, the defaults."""
    from resgan.config import MlflowParams, load_mlflow_params

    return load_mlflow_params(params) if params.exists() else MlflowParams()


def _registered_name(params: Path) -> str:
    return _mlflow_params(params).registered_model


def _model_ref(model: str | None, params: Path) -> str:
    return model or f"models:/{_registered_name(params)}@champion"


@app.command()
def generate(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="grid.png (a grid), images.npz (uint8 NHWC + seed), "
            "or a folder (no suffix) of 000000.png, 000001.png, ...",
        ),
    ],
    model: ModelOpt = None,
    num: Annotated[int, typer.Option("--num", "-n", help="How many images (1 to 1,000,000).")] = 64,
    seed: Annotated[int, typer.Option(help="Latent seed: the same seed gives the same pixels.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per generator call.")] = 256,
    truncation: TruncationOpt = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="grid | folder | npz (default: from --out's suffix).")
    ] = None,
    columns: Annotated[
        int | None,
        typer.Option(
            help="Grid columns (default: near square; a block per class for a model of more classes than fit a row)."
        ),
    ] = None,
    label: LabelOpt = None,
    scale: ScaleOpt = 0,
    force: ForceOpt = False,
    params: ModelParamsOpt = Path("params.yaml"),
) -> None:
    """Draw images from a trained or registered generator into a grid PNG, a folder of PNGs or an .npz."""
    _quiet_mlflow()
    from resgan.generate import generate as run

    result = run(
        _model_ref(model, params),
        out,
        num=num,
        seed=seed,
        batch_size=batch_size,
        truncation=truncation,
        fmt=fmt,
        force=force,
        columns=columns,
        label=label,
        scale=scale,
    )
    print(result.line())


@app.command()
def interpolate(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="walk.png (a grid, one row per pair of seeds) or walk.gif (animated).")
    ],
    seeds: Annotated[str, typer.Option(help="Seeds to walk through, comma-separated (e.g. 1,5,9).")] = "0,1",
    steps: Annotated[int, typer.Option(help="Images per pair of seeds, both ends included (2 to 1000).")] = 8,
    model: ModelOpt = None,
    truncation: TruncationOpt = None,
    fmt: Annotated[str | None, typer.Option("--format", help="grid | gif (default: from --out's suffix).")] = None,
    duration: Annotated[int, typer.Option(help="GIF: milliseconds per frame.")] = 100,
    scale: ScaleOpt = 0,
    label: LabelOpt = None,
    force: ForceOpt = False,
    params: ModelParamsOpt = Path("params.yaml"),
) -> None:
    """A spherical latent walk between seeds: the image of each seed is the first of `generate --seed`."""
    _quiet_mlflow()
    from resgan.generate import interpolate as run
    from resgan.generate import parse_seeds

    result = run(
        _model_ref(model, params),
        out,
        parse_seeds(seeds),
        steps=steps,
        truncation=truncation,
        fmt=fmt,
        force=force,
        duration_ms=duration,
        scale=scale,
        label=label,
    )
    print(result.line())


# ---------------------------------------------------------------- the model registry

models_app = typer.Typer(
    name="models",
    help="The MLflow Model Registry: list versions of the registered generator, show one, move an alias.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(models_app, name="models")

NameOpt = Annotated[
    str | None,
    typer.Option("--name", help="Registered model name (default: mlflow.registered_model from --params, else resgan)."),
]
RegistryParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Where the default name is read from.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@models_app.command("list")
def models_list(
    name: NameOpt = None, params: RegistryParamsOpt = Path("params.yaml"), as_json: JsonOpt = False
) -> None:
    """Versions of the registered model: aliases, evaluation tags (eval/...), source run, creation time."""
    _quiet_mlflow()
    settings = _mlflow_params(params)
    from resgan import model_registry

    model_registry.list_versions(name or settings.registered_model, settings.champion_metric, as_json)


@models_app.command("show")
def models_show(
    version: Annotated[
        str, typer.Argument(metavar="VERSION_OR_ALIAS", help="A version number or an alias (champion).")
    ],
    name: NameOpt = None,
    params: RegistryParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """One version: aliases, tags, source model and run, status."""
    _quiet_mlflow()
    from resgan import model_registry

    model_registry.show_version(name or _registered_name(params), version, as_json)


@models_app.command("promote")
def models_promote(
    version: Annotated[
        str, typer.Argument(metavar="VERSION", help="The version number (or an alias that points at it).")
    ],
    alias: Annotated[str, typer.Option(help="The alias to point at VERSION.")] = "champion",
    name: NameOpt = None,
    params: RegistryParamsOpt = Path("params.yaml"),
) -> None:
    """Point ALIAS (default champion) at VERSION by hand, whatever the metrics say."""
    _quiet_mlflow()
    from resgan import model_registry

    model_registry.promote(name or _registered_name(params), version, alias)


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
