"""Quality per CPU-minute: MNIST trainings at two budgets, 200,000 training images and 10 minutes, scored.

    make bench-quality                                  # = python -m benchmarks.quality  (about an hour)
    python -m benchmarks.quality --only tuned_uncond    # one run (the others' results are kept)
    python -m benchmarks.quality --quick                # smoke run: 3,200 images or 0.2 minutes, 500 samples
    python -m benchmarks.quality --set tuned_uncond:model.minibatch_std=4 --only tuned_uncond   # try a change

Data: the real MNIST test set (10,000 digits, IDX files; ``--mnist`` or ``RESGAN_MNIST``, default
the built-in ``data/raw/mnist``), prepared with ``prepare.source: idx`` and ``fit: pad``
to 32x32x1 (train split 9,000, test split 1,000). The domain classifier is trained once on it with the
default ``classifier`` params, by the project's own stages.

Runs: ``plain`` (the straightforward ResNet-GAN), ``tuned`` (the recommended class-conditional preset)
and ``tuned_uncond`` (the recommended preset for unlabelled data: the digits with their labels removed,
the self-supervised encoder the classifier stage trains for such data, and the tuned preset
self-conditioned on 30 k-means clusters of its features; ``params.yaml``'s defaults do it with 10). Each trains in
its own process until it has passed both budgets: a fixed number of training images (``--images``,
default 200,000: 6,250 steps of 32), which measures the method whatever the machine, and a fixed wall
time (``--minutes``, default 10, counted from the first step as ``train.max_minutes`` does), which
measures method and machine together. At each, the EMA generator of that step is kept
(:class:`benchmarks.child.Marks`); the wall time the image budget took is reported beside it.
Each snapshot draws 10,000 samples (seed 1234), written uint8 N x 32 x 32 to
``benchmarks/results/mnist_<budget>_<name>.npz`` (``200k`` or ``10min``; key ``images``, and for a
class-conditional run ``labels``: the class each image was drawn for, every class in turn), so
anyone can score them.
Scores: classifier FID and KID of the 10,000 samples against the 10,000 real digits, and the
classifier score (Inception Score with the domain classifier, 10 splits), beside the real-vs-real
floor (FID/KID between random halves of the real digits; 5,000 vs 5,000, so the FID of 5,000
samples against a real half is given too, the like-for-like figure), the real digits' score and the
predicted-class mix. Results go to ``benchmarks/results/quality.json``, a picture of the three at the
image budget to ``docs/images/mnist_plain_vs_tuned.png``.

The small-data case (``small_plain``, ``small_default``; ``small_ada`` and ``small_r1`` with ``--only``): what many users
have, a few hundred images at 64x64. The first 445 real digits, upscaled to 64x64 (400 train, 45
test), trained for the same 10 minutes with ``params.yaml``'s defaults (``small_default``: DiffAugment
on, as ``train.diffaugment: auto`` turns it on below 5,000 images) against the same without
augmentation (``small_plain``), with ADA (``small_ada``) and with R1 beside it (``small_r1``). Scored on 5,000 samples with the
pipeline's own features (the domain classifier, trained by the classifier stage on the 9,000-digit
train split of all 10,000 at 64x64), against all 10,000, with the memorization figure: the share of 1,000
samples whose SSIM to their nearest training image is at least 0.9, beside the same figure for
1,000 real digits that are not in the training set. Picture: ``docs/images/small_data_64.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PICTURE = ROOT / "docs" / "images" / "mnist_plain_vs_tuned.png"
BIN = Path(sys.executable).parent

DATA = {"source": "idx", "image_size": 32, "channels": 1, "fit": "pad", "test_fraction": 0.1, "seed": 0}
# The scorer stays the one the published figures used (8 epochs), whatever params.yaml's default.
CLASSIFIER = {"epochs": 8}
# What every run shares: the budgets stop it, not a step count; rare logging, no grids.
BUDGET = {"steps": 10_000_000, "checkpoint_every": 1_000_000, "sample_every": 1_000_000, "log_every": 200, "seed": 0}
IMAGES, MINUTES = 200_000, 10.0  # the two budgets (--images, --minutes)

# The straightforward ResNet-GAN.
PLAIN = {
    "model": {
        "latent_dim": 128,
        "width": 64,
        "d_width": 0,
        "blocks_per_resolution": 1,
        "spectral_norm": True,
        "conditional": False,
    },
    "train": {
        "loss": "hinge",
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "beta1_g": 0.0,
        "beta2_g": 0.9,
        "beta1_d": 0.0,
        "beta2_d": 0.9,
        "d_steps": 1,
        "batch_size": 64,
        "ema_decay": 0.999,
        "ema_start": 0,
        "ema_rampup": 0.0,
        "precision": "mixed_bfloat16",
        "diffaugment": "",
    },
}
# Our best for this budget: the recommended MNIST preset (README, "Performance").
TUNED = {
    "model": {
        "latent_dim": 64,
        "width": 48,
        "d_width": 0,
        "blocks_per_resolution": 1,
        "spectral_norm": True,
        # D's minibatch standard deviation in groups of 2 (the decay pilots: 1.24 / 9.74 and 1.08 / 9.76
        # over two seeds, against 1.20 / 9.62 with groups of 4, whose in-between 7s and 4s cost score).
        "conditional": True,
        "minibatch_std": 2,
    },
    "train": {
        "loss": "hinge",
        "lr_g": 4e-4,
        "lr_d": 4e-4,
        "beta1_g": 0.0,
        "beta2_g": 0.9,
        "beta1_d": 0.0,
        "beta2_d": 0.9,
        "d_steps": 1,
        "batch_size": 32,
        "ema_decay": 0.999,
        "ema_start": 1000,
        "ema_rampup": 0.0,
        "precision": "auto",
        "diffaugment": "",
        # Both rates decay linearly to 0 over the last quarter of the image budget (the decay pilots
        # in docs/performance.md): a decaying run's train.steps is the image budget's (budget_steps).
        "lr_decay": "linear",
        "lr_decay_start": 0.75,
    },
}
# The same preset for unlabelled digits, self-conditioned on clusters of the self-supervised features (what
# params.yaml's defaults do without labels, with 10; the pilots behind it: docs/performance.md's tuning
# diary): 30 clusters for 10 digits (92% pure, against 77% with 10: score 9.52 against 9.14-9.19), the
# decay from half the budget (FID 0.98 and 0.95 over two seeds with 10 clusters). D's minibatch standard
# deviation helps with labels only (the conditional pilots), so it is off here.
TUNED_UNCOND = {
    "model": {**TUNED["model"], "conditional": "auto", "self_condition": 30, "minibatch_std": 0},
    "train": {**TUNED["train"], "lr_decay_start": 0.5},
}
UNLABELLED = {"tuned_uncond"}  # trained on the digits with their labels removed, as a user's unlabelled folder
CONFIGS = {"plain": PLAIN, "tuned": TUNED, "tuned_uncond": TUNED_UNCOND}
BUDGET_NAMES = {"at_images": "images", "at_minutes": "wall"}
SAMPLES, SAMPLE_SEED = 10_000, 1234

# The small-data case: the first 445 real digits at 64x64 (400 train + 45 test), params.yaml's defaults.
SMALL_DATA = {**DATA, "image_size": 64, "fit": "resize", "max_images": 445}  # 28 px digits upscaled to 64
SCORER_DATA = {
    **DATA,
    "image_size": 64,
    "fit": "resize",
}  # all 10,000 digits: the scorer is trained on those not trained on
SMALL_CONFIGS = {
    "small_plain": {"train": {"diffaugment": ""}},
    "small_default": {"train": {"diffaugment": "auto"}},
    "small_ada": {"train": {"diffaugment": "auto", "ada_target": 0.6}},
    # R1 beside the fixed policy. StyleGAN2-ADA's heuristic gamma = 0.0002 * resolution^2 / batch
    # (64x64, batch 32: 0.025) held D at chance here (FID 8.39); a tenth of it is the measured one.
    "small_r1": {"train": {"diffaugment": "auto", "r1_gamma": 0.0025}},
}
SMALL_DEFAULT_RUNS = ["small_plain", "small_default"]
SMALL_SAMPLES, MEMORIZATION_SAMPLES, MEMORIZATION_THRESHOLD = 5_000, 1_000, 0.9
SMALL_PICTURE = ROOT / "docs" / "images" / "small_data_64.png"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {message}", flush=True)


def _env(store: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DVC_ROOT", None)
    return env


def _command(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def classifier_args(data: Path | str, out: Path | str, metrics: Path | str, params: str = "params.yaml") -> list[str]:
    """``resgan classifier`` on ``data``: the extractor written to ``out``, its fitness figures to ``metrics``."""
    return [
        "resgan",
        "classifier",
        "--params",
        params,
        "--data",
        str(data),
        "--out",
        str(out),
        "--metrics",
        str(metrics),
    ]


def params_for(
    config: dict[str, dict], mnist: Path, minutes: float, overrides: list[str], data: dict[str, Any] = DATA
) -> dict[str, Any]:
    """A whole params.yaml: the defaults, the data and budget settings, ``config``, then ``overrides``."""
    from resgan.config import parse_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["prepare"].update({**data, "path": str(mnist)})
    raw["classifier"].update(CLASSIFIER)
    raw["train"].update({**BUDGET, "max_minutes": minutes})
    for section, values in config.items():
        raw[section].update(values)
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        raw[section][name] = _value(value)
    parse_params(raw)  # wrong keys or values stop here (a ParamsError naming the key), before minutes of training
    return raw


def budget_steps(config: dict[str, dict], images: int) -> list[str]:
    """The ``train.steps`` override that ends a decaying ``config``'s schedule at the image budget
    (200,000 images: 6,250 steps of 32); none for a constant rate, which the budgets stop. A run
    that ends before the wall-time budget gives that budget its last step."""
    train = config.get("train", {})
    if train.get("lr_decay", "none") == "none":
        return []
    return [f"train.steps={max(1, images // train['batch_size'])}"]


def unlabelled(data: Path, work: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """The prepared ``data`` with the labels removed (``work/data_unlabelled``) and the feature stage's
    model for them: the self-supervised encoder that ``resgan classifier`` trains with ``params.yaml``'s
    defaults where there are no labels (``work/ssl.keras``, its record and figures beside it)."""
    copy, encoder = work / "data_unlabelled", work / "ssl.keras"
    if not (copy / "train.npz").exists():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(data, copy)
        for split in ("train", "test"):
            with np.load(data / f"{split}.npz") as saved:
                np.savez(copy / f"{split}.npz", images=saved["images"])
        summary = json.loads((data / "summary.json").read_text())
        (copy / "summary.json").write_text(json.dumps({**summary, "class_names": None}))
    if not encoder.exists():
        log("classifier (no labels): the self-supervised encoder, params.yaml's defaults")
        _command(
            classifier_args(copy, encoder, work / "ssl_figures.json"),
            env,
            work,
        )
    return copy, encoder


def train_run(
    name: str,
    params: dict[str, Any],
    data: Path,
    work: Path,
    env: dict[str, str],
    budgets: tuple[int, float] | None = None,
    classifier: Path | None = None,
) -> tuple[Path, dict]:
    """Train ``params`` on ``data`` in a process of its own, in a fresh ``work/name``; returns that
    folder and what the child reported (its peak RSS and the train stage's result). ``budgets``
    (images, minutes): snapshots at both, training stops after both (see :class:`benchmarks.child.Marks`)."""
    run_dir = work / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    marks = ["--images", str(budgets[0]), "--minutes", str(budgets[1])] if budgets else []
    features = ["--classifier", str(classifier)] if classifier else []
    out = _command(
        [
            sys.executable,
            "-m",
            "benchmarks.child",
            "train",
            "--params",
            str(run_dir / "params.yaml"),
            "--data",
            str(data),
            "--out",
            str(run_dir),
            *features,
            *marks,
        ],
        env,
        ROOT,
    )
    return run_dir, json.loads(out.strip().splitlines()[-1].removeprefix("BENCH_RESULT "))


def _value(text: str) -> Any:
    """A command-line value as YAML reads it, with numbers like ``4e-4`` (YAML 1.1 strings) as floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def score(
    images: np.ndarray,
    real: np.ndarray,
    real_halves: tuple[np.ndarray, np.ndarray],
    extractor,
    labels: np.ndarray | None = None,
) -> dict:
    """Classifier FID, KID and score of ``images`` (uint8 NHWC) against ``real``; class mix; with the
    ``labels`` a conditional generator drew for, the share the classifier puts in that class."""
    from resgan.metrics.distances import fid, kid
    from resgan.metrics.scores import inception_score

    feats, probs = extractor(images)
    real_feats, _ = real
    _, half_b = real_halves
    kid_mean, kid_std = kid(real_feats, feats, subsets=100, subset_size=1000, rng=np.random.default_rng(0))
    counts = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
    is_mean, is_std = inception_score(probs, splits=10)
    return {
        "fid_classifier": fid(real_feats, feats),
        "fid_classifier_5k_vs_half": fid(half_b, feats[: len(half_b)]),
        "kid_classifier_mean": kid_mean,
        "kid_classifier_std": kid_std,
        "classifier_score_mean": is_mean,
        "classifier_score_std": is_std,
        "class_fractions": [round(float(c) / len(images), 4) for c in counts],
        "max_class_fraction": float(counts.max() / len(images)),
        "class_accuracy": None if labels is None else float(np.mean(probs.argmax(axis=1) == labels)),
    }


def picture(grids: dict[str, np.ndarray], titles: dict[str, str], path: Path = PICTURE) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 5.4))
    for axis, (name, grid) in zip(np.atleast_1d(axes), grids.items()):
        if grid.shape[-1] == 1:
            axis.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            axis.imshow(grid)  # uint8 RGB, shown as it is
        axis.set_title(titles[name])
        axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def summary_picture(runs: dict[str, dict], path: Path = PICTURE, root: Path = ROOT) -> list[str]:
    """Draw the docs picture: the first 64 samples at the image budget of each of ``runs`` (as
    ``quality.json`` records them, samples relative to ``root``), side by side. The picture shows
    every run or none: when some runs' samples are not on disk (an earlier call trained them; the
    npz files are git-ignored), it is left as it is and their names are returned."""
    from resgan.files import image_grid

    missing = [name for name, run in runs.items() if not (root / run["at_images"]["samples"]).is_file()]
    if missing or not runs:
        return missing
    grids, titles = {}, {}
    for name, run in runs.items():
        mark = run["at_images"]
        with np.load(root / mark["samples"]) as saved:
            images = saved["images"]
        grids[name] = image_grid((images if images.ndim == 4 else images[..., None])[:64], columns=8)
        titles[name] = (
            f"{name}: {mark['images'] // 1000}k images ({mark['wall_s'] / 60:.1f} min), "
            f"FID {mark['fid_classifier']:.2f}"
        )
    picture(grids, titles, path)
    return []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mnist", type=Path, default=Path(os.environ.get("RESGAN_MNIST", ROOT / "data" / "raw" / "mnist"))
    )
    parser.add_argument("--images", type=int, help=f"image budget of the MNIST runs (default {IMAGES:,}; quick 3,200)")
    parser.add_argument("--minutes", type=float, help="wall-time budget per run (default 10; quick 0.2)")
    parser.add_argument(
        "--only",
        choices=sorted([*CONFIGS, *SMALL_CONFIGS]),
        action="append",
        help="run only these (repeatable); default: plain, tuned, tuned_uncond, small_plain, small_default",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="change one param of one configuration, e.g. tuned:train.lr_d=4e-4",
    )
    parser.add_argument("--quick", action="store_true", help="0.2-minute budgets and 500 samples: checks the script")
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="folder for quality.json and the samples (default benchmarks/results); the picture "
        "goes to docs/images only with the default",
    )
    parser.add_argument(
        "--work", type=Path, help="keep the prepared data, classifier and runs here (default: a temp dir)"
    )
    args = parser.parse_args(argv)

    minutes = args.minutes or (0.2 if args.quick else MINUTES)
    images = args.images or (3_200 if args.quick else IMAGES)
    num = 500 if args.quick else SAMPLES
    chosen = args.only or [*CONFIGS, *SMALL_DEFAULT_RUNS]
    names = [name for name in chosen if name in CONFIGS]
    small_names = [name for name in chosen if name in SMALL_CONFIGS]
    if not any(args.mnist.glob("*images*idx3*")):
        sys.exit(
            f"no MNIST IDX images in {args.mnist}: pass --mnist DIR (or set RESGAN_MNIST) to a folder "
            "holding t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
        )
    overrides: dict[str, list[str]] = {name: [] for name in [*CONFIGS, *SMALL_CONFIGS]}
    for item in args.overrides:
        name, _, change = item.partition(":")
        if name not in overrides or "=" not in change:
            sys.exit(f"--set {item!r}: expected NAME:SECTION.KEY=VALUE with NAME one of {sorted(overrides)}")
        overrides[name].append(change)
    from resgan.errors import ResganError

    try:
        all_params = {
            name: params_for(
                CONFIGS[name], args.mnist.resolve(), 0.0, [*budget_steps(CONFIGS[name], images), *overrides[name]]
            )
            for name in names
        }
        small_params = {
            name: params_for(SMALL_CONFIGS[name], args.mnist.resolve(), minutes, overrides[name], SMALL_DATA)
            for name in small_names
        }
    except ResganError as error:
        sys.exit(f"error: {error}")

    results_dir = args.results.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    out_path = results_dir / ("quality_quick.json" if args.quick else "quality.json")
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    # Runs of the one-budget layout (before the image budget) are not comparable: dropped.
    results["runs"] = {n: run for n, run in results.get("runs", {}).items() if "at_images" in run}
    work = args.work or Path(tempfile.mkdtemp(prefix="resgan-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    env = _env(work / "mlflow.db")
    try:
        if all_params:
            data, classifier = work / "data", work / "classifier.keras"
            first = next(iter(all_params.values()))
            (work / "params.yaml").write_text(yaml.safe_dump(first, sort_keys=False))
            if not (data / "train.npz").exists():
                log("prepare: MNIST test set -> 32x32")
                _command(["resgan", "prepare", "--params", "params.yaml", "--out", str(data)], env, work)
            if not classifier.exists():
                log("classifier: the domain classifier for the scores")
                _command(
                    classifier_args(data, classifier, work / "classifier.json"),
                    env,
                    work,
                )

            from resgan.data.prepared import load_split
            from resgan.loading import load_generator
            from resgan.metrics.distances import fid, kid
            from resgan.metrics.features import LearnedFeatures
            from resgan.metrics.scores import inception_score
            from resgan.sampling import draw

            train_images, _ = load_split(data, "train")
            test_images, _ = load_split(data, "test")
            real_images = np.concatenate([train_images, test_images])
            results.setdefault("meta", {})["data"] = {
                **DATA,
                "n_train": int(len(train_images)),
                "n_test": int(len(test_images)),
            }
            extractor = LearnedFeatures(classifier)
            real_feats, real_probs = extractor(real_images)
            order = np.random.default_rng(0).permutation(len(real_images))
            half_a, half_b = (real_feats[order[: len(order) // 2]], real_feats[order[len(order) // 2 :]])
            floor_kid = kid(half_a, half_b, subsets=100, subset_size=1000, rng=np.random.default_rng(0))
            real_score = inception_score(real_probs, splits=10)
            real_counts = np.bincount(real_probs.argmax(axis=1), minlength=real_probs.shape[1])
            results["real"] = {
                "n": int(len(real_images)),
                "fid_classifier_floor_halves": fid(half_a, half_b),
                "kid_classifier_floor_mean": floor_kid[0],
                "kid_classifier_floor_std": floor_kid[1],
                "classifier_score_mean": real_score[0],
                "classifier_score_std": real_score[1],
                "max_class_fraction": float(real_counts.max() / len(real_images)),
                "classifier_accuracy": json.loads((work / "classifier.json").read_text())["accuracy"]
                if (work / "classifier.json").exists()
                else None,
            }
            log(
                f"real digits: floor FID {results['real']['fid_classifier_floor_halves']:.3f}, "
                f"score {real_score[0]:.3f}"
            )

            for name, params in all_params.items():
                load_before = os.getloadavg()
                log(f"{name}: training to {images:,} images and {minutes:g} minutes")
                where_data, features = unlabelled(data, work, env) if name in UNLABELLED else (data, None)
                run_dir, child = train_run(name, params, where_data, work, env, (images, minutes), features)
                trained = child["result"]
                run = {
                    "params": {s: params[s] for s in ("model", "train")},
                    "img_per_s": trained["img_per_s"],
                    "precision": trained["precision"],
                    "peak_rss_mib": round(child["max_rss_mib"], 1),
                    "load_average_before": [round(x, 2) for x in load_before],
                }
                if features:  # the self-supervised encoder behind the clusters
                    run["features"] = {
                        "kind": "ssl",
                        **json.loads(features.with_suffix(".json").read_text()),
                        "figures": json.loads((work / "ssl_figures.json").read_text()),
                    }
                for mark, budget in BUDGET_NAMES.items():
                    where = trained["marks"][mark]
                    generator = load_generator(run_dir / f"{mark}.keras")
                    # A conditional generator draws every class in turn; the npz says which class each image is for.
                    drawn, labels = draw(generator, num, seed=SAMPLE_SEED, batch_size=500)
                    tag = f"{images // 1000}k" if mark == "at_images" else f"{minutes:g}min"
                    npz = results_dir / (f"mnist_{tag}_{name}.npz" if not args.quick else f"quick_{tag}_{name}.npz")
                    tmp = npz.with_suffix(".tmp.npz")
                    np.savez_compressed(tmp, images=drawn[..., 0], **({} if labels is None else {"labels": labels}))
                    os.replace(tmp, npz)
                    scores = score(drawn, (real_feats, real_probs), (half_a, half_b), extractor, labels)
                    log(
                        f"{name} at {where['images']:,} images, {where['wall_s'] / 60:.1f} min ({budget} budget): "
                        f"step {where['step']}, FID {scores['fid_classifier']:.3f}, "
                        f"score {scores['classifier_score_mean']:.3f}, max class {scores['max_class_fraction']:.3f}"
                        f"{'; train.steps ended the run before this budget' if where.get('ended') else ''}"
                    )
                    run[mark] = {**where, "samples": _shown(npz), "samples_shape": list(drawn[..., 0].shape), **scores}
                run.update(
                    {
                        "budgets": {"images": images, "minutes": minutes},
                        "load_average_after": [round(x, 2) for x in os.getloadavg()],
                    }
                )
                results["runs"][name] = run
        if small_params:
            results["small"] = small_case(
                small_params,
                args.mnist.resolve(),
                work,
                env,
                results_dir,
                minutes,
                args.quick,
                results.get("small", {}),
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    results["targets"] = targets(results)
    results["meta"] = {
        **results.get("meta", {}),
        "commit": _git_commit(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float) + "\n")
    os.replace(tmp, out_path)
    if not args.quick and results_dir == RESULTS and all_params:
        left_out = summary_picture(results["runs"])
        if left_out:
            log(
                f"{PICTURE.name} not redrawn: the samples of {', '.join(left_out)} are not on disk "
                "(git-ignored, kept by the call that trained them); train them in this call to redraw it"
            )
    print_table(results)
    print(f"results -> {_shown(out_path)}")


def small_case(
    all_params: dict[str, dict],
    mnist: Path,
    work: Path,
    env: dict[str, str],
    results_dir: Path,
    minutes: float,
    quick: bool,
    previous: dict,
) -> dict[str, Any]:
    """The small-data case: each of ``all_params`` trained on 400 digits at 64x64, scored by a domain
    classifier trained on the 9,000-digit train split at 64x64, with memorization against the 400."""
    from resgan.config import resolve_diffaugment
    from resgan.data.prepared import load_split
    from resgan.loading import load_generator
    from resgan.metrics.distances import fid
    from resgan.metrics.features import LearnedFeatures
    from resgan.metrics.scores import inception_score
    from resgan.metrics.ssim import memorization
    from resgan.sampling import draw

    first = next(iter(all_params.values()))
    scorer_params = params_for({}, mnist, minutes, ["classifier.epochs=3"], SCORER_DATA)
    scorer_dir, small_dir = work / "scorer64", work / "small64"
    scorer_dir.mkdir(exist_ok=True)
    small_dir.mkdir(exist_ok=True)
    (scorer_dir / "params.yaml").write_text(yaml.safe_dump(scorer_params, sort_keys=False))
    (small_dir / "params.yaml").write_text(yaml.safe_dump(first, sort_keys=False))
    scorer = scorer_dir / "classifier.keras"
    if not (scorer_dir / "data" / "train.npz").exists():
        log("small data: prepare all digits at 64x64 for the scorer, and the first 445 for training")
        _command(["resgan", "prepare", "--params", "params.yaml", "--out", "data"], env, scorer_dir)
    if not (small_dir / "data" / "train.npz").exists():
        _command(["resgan", "prepare", "--params", "params.yaml", "--out", "data"], env, small_dir)
    if not scorer.exists():
        log("small data: the scorer (domain classifier at 64x64)")
        _command(
            classifier_args("data", scorer, "classifier.json"),
            env,
            scorer_dir,
        )
    train_images, _ = load_split(small_dir / "data", "train")
    scorer_test, _ = load_split(scorer_dir / "data", "test")
    real = np.concatenate([load_split(scorer_dir / "data", "train")[0], scorer_test])
    extractor = LearnedFeatures(scorer)
    real_feats, real_probs = extractor(real)
    seen = {image.tobytes() for image in train_images}
    unseen = np.stack([image for image in scorer_test if image.tobytes() not in seen])
    count = min(MEMORIZATION_SAMPLES, len(unseen))
    real_memo = memorization(unseen[:count], train_images, threshold=MEMORIZATION_THRESHOLD)
    scorer_accuracy = json.loads((scorer_dir / "classifier.json").read_text()).get("accuracy")
    summary: dict[str, Any] = {
        "data": {**SMALL_DATA, "n_train": int(len(train_images))},
        "scorer": {
            "data": {**SCORER_DATA, "n_real": int(len(real))},
            "held_out_accuracy": scorer_accuracy,
            "real_score_mean": inception_score(real_probs, splits=10)[0],
        },
        "real_unseen_memorization": {
            "n": count,
            "fraction": real_memo["fraction"],
            "mean": real_memo["mean"],
            "threshold": MEMORIZATION_THRESHOLD,
        },
        "runs": dict(previous.get("runs", {})),
    }
    num = 500 if quick else SMALL_SAMPLES
    for name, params in all_params.items():
        load_before = os.getloadavg()
        log(f"{name}: training on {len(train_images)} images at 64x64 for {minutes:g} minutes")
        run_dir, child = train_run(name, params, small_dir / "data", work, env)
        trained = child["result"]
        images, labels = draw(
            load_generator(run_dir / "models" / "generator.keras"), num, seed=SAMPLE_SEED, batch_size=250
        )
        feats, probs = extractor(images)
        counts = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
        memo = memorization(images[:MEMORIZATION_SAMPLES], train_images, threshold=MEMORIZATION_THRESHOLD)
        npz = results_dir / (f"quick_{name}.npz" if quick else f"small64_{minutes:g}min_{name}.npz")
        tmp = npz.with_suffix(".tmp.npz")
        kept = slice(0, MEMORIZATION_SAMPLES)  # the samples the memorization figure is about
        np.savez_compressed(tmp, images=images[kept, ..., 0], **({} if labels is None else {"labels": labels[kept]}))
        os.replace(tmp, npz)
        run = {
            "params": {s: params[s] for s in ("model", "train")},
            "steps": trained["steps"],
            "img_per_s": trained["img_per_s"],
            "train_wall_s": trained["wall_s"],
            "minutes": minutes,
            "diffaugment": resolve_diffaugment(
                params["train"]["diffaugment"], len(train_images), adaptive=bool(params["train"]["ada_target"])
            ),
            "samples": _shown(npz),
            "n_scored": num,
            "fid_classifier": fid(real_feats, feats),
            "classifier_score_mean": inception_score(probs, splits=10)[0],
            "max_class_fraction": float(counts.max() / len(images)),
            "class_accuracy": None if labels is None else float(np.mean(probs.argmax(axis=1) == labels)),
            "memorization_fraction": memo["fraction"],
            "memorization_mean": memo["mean"],
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
        summary["runs"][name] = run
        log(
            f"{name}: {run['steps']} steps; FID {run['fid_classifier']:.2f}, score {run['classifier_score_mean']:.2f}, "
            f"memorization {run['memorization_fraction']:.3f} (real unseen digits {real_memo['fraction']:.3f})"
        )
    # The picture is the docs' one: redrawn when this call trained the default pair (the samples of
    # earlier calls' runs are not kept in git), with whatever else it trained beside them.
    pictured = [*SMALL_DEFAULT_RUNS, *[n for n in all_params if n not in SMALL_DEFAULT_RUNS]]
    if not quick and results_dir == RESULTS and not set(SMALL_DEFAULT_RUNS) <= set(all_params):
        log(
            f"small data: {SMALL_PICTURE.name} not redrawn (it shows {', '.join(SMALL_DEFAULT_RUNS)}, "
            "and this call did not train both)"
        )
    elif not quick and results_dir == RESULTS:
        from resgan.files import image_grid

        grids = {"real (train)": image_grid(train_images[:64], columns=8)}
        for name, run in {n: summary["runs"][n] for n in pictured}.items():
            with np.load(ROOT / run["samples"]) as saved:
                grids[name] = image_grid(saved["images"][:64, ..., None], columns=8)
        titles = {
            "real (train)": f"{len(train_images)} real training digits",
            **{
                n: f"{n}: {summary['runs'][n]['steps']} steps, FID {summary['runs'][n]['fid_classifier']:.1f}"
                for n in pictured
            },
        }
        picture(grids, titles, SMALL_PICTURE)
    return summary


def targets(results: dict) -> dict[str, Any]:
    """Issue 19's targets at the image budget (class-conditional ``tuned`` and unconditional
    ``tuned_uncond``), and the earlier ones at the wall budget (``tuned`` against ``plain``)."""
    runs, real = results["runs"], results.get("real", {})
    met: dict[str, Any] = {}

    def target(key: str, value: float, text: str, ok: bool) -> None:
        met[key] = {"value": round(value, 4), "target": text, "met": bool(ok)}

    for name, score_target in (("tuned", 9.7), ("tuned_uncond", 9.3)):
        if name in runs:
            at = runs[name]["at_images"]
            target(f"{name}_fid_at_images", at["fid_classifier"], "<= 1.5", at["fid_classifier"] <= 1.5)
            target(
                f"{name}_score_at_images",
                at["classifier_score_mean"],
                f">= {score_target}",
                at["classifier_score_mean"] >= score_target,
            )
    if "tuned_uncond" in runs:
        fraction = runs["tuned_uncond"]["at_images"]["max_class_fraction"]
        target("tuned_uncond_max_class_at_images", fraction, "<= 0.12", fraction <= 0.12)
    if {"plain", "tuned"} <= set(runs) and real:
        plain, tuned = runs["plain"]["at_minutes"], runs["tuned"]["at_minutes"]
        ratio = tuned["fid_classifier"] / plain["fid_classifier"]
        score_ratio = tuned["classifier_score_mean"] / real["classifier_score_mean"]
        target("tuned_fid_over_plain_at_minutes", ratio, "<= 1/3", ratio <= 1 / 3)
        target("tuned_score_over_real_at_minutes", score_ratio, ">= 0.9", score_ratio >= 0.9)
        target(
            "tuned_max_class_at_minutes", tuned["max_class_fraction"], "<= 0.15", tuned["max_class_fraction"] <= 0.15
        )
    return met


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    real, console = results.get("real", {}), Console(width=140)
    table = Table(
        title="MNIST at two budgets: a fixed number of training images, a fixed wall time (classifier features)"
    )
    for column in (
        "run",
        "budget",
        "step",
        "images",
        "minutes",
        "img/s",
        "FID",
        "FID 5k vs half",
        "KID",
        "score",
        "max class",
        "class acc.",
    ):
        table.add_column(column, justify="right")
    for name, run in results["runs"].items():
        for mark, budget in BUDGET_NAMES.items():
            at = run[mark]
            table.add_row(
                name,
                budget,
                str(at["step"]),
                f"{at['images']:,}",
                f"{at['wall_s'] / 60:.1f}",
                f"{run['img_per_s']:.0f}",
                f"{at['fid_classifier']:.3f}",
                f"{at['fid_classifier_5k_vs_half']:.3f}",
                f"{at['kid_classifier_mean']:.4f}",
                f"{at['classifier_score_mean']:.3f}",
                f"{at['max_class_fraction']:.3f}",
                "" if at.get("class_accuracy") is None else f"{at['class_accuracy']:.3f}",
            )
    if real:
        table.add_row(
            "real (halves)",
            "",
            "",
            "",
            "",
            "",
            "",
            f"{real['fid_classifier_floor_halves']:.3f}",
            f"{real['kid_classifier_floor_mean']:.4f}",
            f"{real['classifier_score_mean']:.3f}",
            f"{real['max_class_fraction']:.3f}",
            f"{real.get('classifier_accuracy') or 0:.3f}",
        )
    if results["runs"]:
        console.print(table)
    small = results.get("small")
    if small:
        table = Table(title=f"Small data: {small['data']['n_train']} digits at 64x64, equal wall-clock budgets")
        for column in ("run", "DiffAugment", "steps", "img/s", "FID", "score", "max class", "class acc.", "memorized"):
            table.add_column(column, justify="right")
        for name, run in small["runs"].items():
            table.add_row(
                name,
                run["diffaugment"] or "off",
                str(run["steps"]),
                f"{run['img_per_s']:.0f}",
                f"{run['fid_classifier']:.2f}",
                f"{run['classifier_score_mean']:.2f}",
                f"{run['max_class_fraction']:.3f}",
                "" if run.get("class_accuracy") is None else f"{run['class_accuracy']:.3f}",
                f"{run['memorization_fraction']:.3f}",
            )
        memo = small["real_unseen_memorization"]
        table.add_row(
            "real, not trained on",
            "",
            "",
            "",
            "",
            f"{small['scorer']['real_score_mean']:.2f}",
            "",
            f"{small['scorer']['held_out_accuracy'] or 0:.3f}",
            f"{memo['fraction']:.3f}",
        )
        console.print(table)
    for key, target in results.get("targets", {}).items():
        print(f"{key}: {target['value']} (target {target['target']}): {'met' if target['met'] else 'NOT met'}")


def _shown(path: Path) -> str:
    """``path`` relative to the project when inside it (what results record), else as given."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or None


if __name__ == "__main__":
    main(sys.argv[1:])
