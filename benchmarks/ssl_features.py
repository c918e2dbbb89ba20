"""Do the self-supervised features measure quality? The real digits with their labels hidden.

    make bench-features           # = python -m benchmarks.ssl_features  (about 15 minutes on 2 cores)
    python -m benchmarks.ssl_features --quick     # smoke run: tiny budgets, the same steps

Data: the built-in real digits (``data/raw/mnist``), prepared by the project's ``prepare`` stage at 32x32
(train split 9,000, test split 1,000). Two extractors are trained by the ``classifier`` stage: the domain
classifier (``classifier.kind: classifier``, which reads the labels) and the self-supervised encoder
(``classifier.kind: ssl``, which never sees them; its k-NN probe does, afterwards).

1. **Ranking of known degradations.** Fréchet distance (FD) of the SSL features, and the classifier FID,
   between the train split (the evaluation's reference) and: the real held-out digits; the same with light
   noise (Gaussian, sd 16 of 255); blurred (Gaussian, sd 1 px); one class only (1,000 train zeros:
   mode collapse); uniform noise. The right order is the one just given.
2. **Agreement over one training run.** An unconditional GAN (the defaults, ``train.steps`` below) is
   trained by ``resgan train`` with a checkpoint every ``--every`` steps; each checkpoint's EMA generator
   draws 2,000 images (fixed latents), scored by both extractors; Spearman's rank correlation of the two
   series says whether the SSL features would order the snapshots as the classifier does.

Results: ``benchmarks/results/ssl_features.json``; the table is printed (and kept in docs/metrics.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ssl_features.json"
BIN = Path(sys.executable).parent
DATA = {
    "source": "idx",
    "path": str(ROOT / "data" / "raw" / "mnist"),
    "image_size": 32,
    "channels": 1,
    "fit": "pad",
    "test_fraction": 0.1,
    "seed": 0,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {message}", flush=True)


def _run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _params(folder: Path, overrides: dict[str, dict]) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["prepare"].update(DATA)
    for section, values in overrides.items():
        raw[section].update(values)
    path = folder / f"params-{len(list(folder.glob('params-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def degradations(test: np.ndarray, train: np.ndarray, train_labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The image sets of the ranking, worst last, each uint8 like the data."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = test.astype(np.float64)
    zeros = train[train_labels == 0][: len(test)]
    return {
        "real held-out digits": test,
        "light noise (sd 16)": np.clip(x + rng.normal(0, 16, x.shape), 0, 255).astype(np.uint8),
        "blurred (sd 1 px)": np.clip(gaussian_filter(x, sigma=(0, 1.0, 1.0, 0)), 0, 255).astype(np.uint8),
        "one class only (zeros)": zeros,
        "uniform noise": rng.integers(0, 256, test.shape).astype(np.uint8),
    }


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _watch_checkpoints(folder: Path, keep: Path, stop: threading.Event) -> None:
    """Copy every checkpoint the train stage writes (it keeps only the two newest) as it appears."""
    keep.mkdir(parents=True, exist_ok=True)
    while not stop.is_set():
        for path in folder.glob("*/ckpt-*.npz"):
            target = keep / path.name
            if not target.exists():
                try:
                    shutil.copy(path, target.with_suffix(".part"))
                    os.replace(target.with_suffix(".part"), target)
                except FileNotFoundError:  # removed between glob and copy: the next one will come
                    pass
        time.sleep(0.5)


def _ema_images(checkpoint: Path, params_path: Path, num: int, seed: int) -> np.ndarray:
    from resgan.config import load_params, resolve_width
    from resgan.nn.networks import build_generator

    p = load_params(params_path)
    generator = build_generator(
        p.model.latent_dim,
        resolve_width(p.model.width, p.prepare.image_size, 60_000),  # the digits' width, as the train stage settled it
        p.prepare.image_size,
        p.prepare.channels,
        p.model.blocks_per_resolution,
        width_growth=p.model.width_growth,
        max_width=p.model.max_width,
    )
    with np.load(checkpoint) as ckpt:
        generator.set_weights([ckpt[f"ema_generator/{i}"] for i in range(len(generator.weights))])
    z = np.random.default_rng(seed).standard_normal((num, p.model.latent_dim)).astype(np.float32)
    images = np.concatenate([generator(z[i : i + 500], training=False).numpy() for i in range(0, num, 500)])
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the benchmark runs")
    parser.add_argument("--steps", type=int, default=600, help="GAN training steps (default 600)")
    parser.add_argument("--every", type=int, default=50, help="a checkpoint every N steps (default 50)")
    args = parser.parse_args(argv)
    steps, every = (20, 5) if args.quick else (args.steps, args.every)
    ssl_epochs = 1 if args.quick else 5

    from resgan.data.prepared import load_split
    from resgan.metrics.distances import fid
    from resgan.metrics.features import LearnedFeatures

    work = Path(tempfile.mkdtemp(prefix="resgan-bench-ssl-"))
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DVC_ROOT", None)
    started = time.perf_counter()
    base = _params(work, {})
    log("prepare the real digits")
    _run(["resgan", "prepare", "--params", str(base), "--out", str(work / "data")], env, work)
    extractors, fitness = {}, {}
    for kind, extra in (("classifier", {}), ("ssl", {"ssl_epochs": ssl_epochs})):
        log(f"train the {kind} extractor")
        path = _params(work, {"classifier": {"kind": kind, **extra}})
        model = work / kind / "classifier.keras"
        _run(
            [
                "resgan",
                "classifier",
                "--params",
                str(path),
                "--data",
                str(work / "data"),
                "--out",
                str(model),
                "--metrics",
                str(work / kind / "figures.json"),
            ],
            env,
            work,
        )
        fitness[kind] = {
            **json.loads((work / kind / "figures.json").read_text()),
            **json.loads(model.with_suffix(".json").read_text()),
        }
        extractors[kind] = LearnedFeatures(model)
        log(f"{kind} ({extractors[kind].kind}, {extractors[kind].name}): {fitness[kind]['fitness']}")

    train, train_labels = load_split(work / "data", "train")
    test, _ = load_split(work / "data", "test")
    reference = {kind: e(train)[0] for kind, e in extractors.items()}
    ranking = []
    for name, images in degradations(test, train, train_labels).items():
        row = {"set": name, **{kind: fid(reference[kind], e(images)[0]) for kind, e in extractors.items()}}
        ranking.append(row)
        log(f"{name}: SSL FD {row['ssl']:.3f}, classifier FID {row['classifier']:.3f}")
    ordered = {kind: all(a[kind] < b[kind] for a, b in zip(ranking, ranking[1:])) for kind in extractors}

    log(f"train an unconditional GAN for {steps} steps, a checkpoint every {every}")
    gan_params = _params(
        work,
        {
            "model": {"conditional": False},
            "train": {
                "steps": steps,
                "checkpoint_every": every,
                "sample_every": 10**6,
                "eval_every": 0,
                "log_every": 50,
            },
        },
    )
    stop, kept = threading.Event(), work / "kept"
    watcher = threading.Thread(target=_watch_checkpoints, args=(work / "checkpoints", kept, stop), daemon=True)
    watcher.start()
    _run(
        [
            "resgan",
            "train",
            "--params",
            str(gan_params),
            "--data",
            str(work / "data"),
            "--models",
            str(work / "models"),
            "--checkpoints",
            str(work / "checkpoints"),
            "--metrics",
            str(work / "train.json"),
            "--plots",
            str(work / "train.csv"),
            "--classifier",
            str(work / "classifier" / "classifier.keras"),
            "--fid",
            str(work / "fid.csv"),
        ],
        env,
        work,
    )
    time.sleep(1.5)
    stop.set()
    watcher.join()
    snapshots = []
    for checkpoint in sorted(kept.glob("ckpt-*.npz")):
        images = _ema_images(checkpoint, gan_params, 2000, seed=7)
        row = {
            "step": int(checkpoint.stem.split("-")[1]),
            **{kind: fid(reference[kind], e(images)[0]) for kind, e in extractors.items()},
        }
        snapshots.append(row)
        log(f"step {row['step']}: SSL FD {row['ssl']:.3f}, classifier FID {row['classifier']:.3f}")
    rho = spearman([r["ssl"] for r in snapshots], [r["classifier"] for r in snapshots]) if len(snapshots) > 2 else None

    results = {
        "ranking": ranking,
        "ranking_in_order": ordered,
        "snapshots": snapshots,
        "spearman": rho,
        "fitness": fitness,
        "steps": steps,
        "every": every,
        "quick": args.quick,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "load_average": os.getloadavg()[0],
    }
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| image set | SSL FD | classifier FID |\n|---|---:|---:|")
    for row in ranking:
        print(f"| {row['set']} | {row['ssl']:.3f} | {row['classifier']:.3f} |")
    print(
        f"\nin the right order: SSL {ordered['ssl']}, classifier {ordered['classifier']}; "
        f"Spearman over {len(snapshots)} checkpoints: {rho if rho is None else round(rho, 3)}; "
        f"SSL k-NN probe accuracy {fitness['ssl'].get('knn_accuracy')}; {results['minutes']} min"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
