"""Colour photographs: class-conditional CIFAR-10 at 32x32 RGB, resgan's preset against a textbook peer.

    make bench-photos CIFAR10=DIR                   # = python -m benchmarks.photos --cifar DIR (200,000 images)
    python -m benchmarks.photos --images 1000000    # the second budget (about five times as long)
    python -m benchmarks.photos --only resgan --set resgan:model.width=64   # one run, one change
    python -m benchmarks.photos --quick             # smoke run: 640 images, 500 samples, a 1-epoch scorer

Data: CIFAR-10 as JPEG files (``--cifar`` or ``RESGAN_CIFAR10``: a folder with ``train/<class>/*.jpg``
and ``test/<class>/*.jpg``), never part of the project. ``train/`` goes through ``resgan prepare``
exactly as a user's folder does (``prepare.source: folder``, class sub-folders as labels, 32x32x3,
``fit: resize``; 2% held out for the classifier stage's own check); its wall time, images/s, CPU time
and the largest process's peak memory are in the results. ``test/`` is prepared the same way and all
of it (both splits) is the real reference every figure is measured against.

Scorer: the domain classifier (``resgan classifier``, :data:`SCORER`: flips and translations, 15
epochs) trained on the train split, cached in ``benchmarks/results/cache/`` under the data hash and its
params, and its accuracy on the real test images in the results (it must reach 75% to judge).

Runs, each to the same image budget (``--images``, default 200,000) on the same data:
``resgan``, the recommended preset for colour photographs (:data:`PRESET`), through the train stage;
``textbook``, a class-conditional DCGAN as keras-io teaches it (:mod:`benchmarks.textbook_cgan`).
Each draws 10,000 samples (seed 1234, every class in turn), kept as
``benchmarks/results/cifar10_<budget>_<name>.npz`` (``images`` uint8 NHWC, ``labels``; git-ignored),
scored with the scorer's features against the real test images: FID, KID, score (Inception Score with
the scorer), precision/recall (k=3), the share of samples the scorer puts in the class they were drawn
for (beside its accuracy on real test images), the class mix, and the wall time. Results go to
``benchmarks/results/photos.json``; the picture, a row per class for the real test images and each
run, to ``docs/images/cifar10_<budget>.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.quality import (
    BUDGET,
    ROOT,
    TUNED,
    _env,
    _git_commit,
    _shown,
    classifier_args,
    log,
    params_for,
    picture,
    score,
    train_run,
)

RESULTS = ROOT / "benchmarks" / "results"
CACHE = RESULTS / "cache"
IMAGES_DIR = ROOT / "docs" / "images"
DATA = {"source": "folder", "image_size": 32, "channels": 3, "fit": "resize", "test_fraction": 0.02, "seed": 0}
# The scorer: a width-32 domain classifier sees a fresh flipped and translated view of every photograph
# each epoch; without them it learns the 49,000 images by heart and judges new ones worse.
SCORER = {
    "kind": "classifier",
    "width": 32,
    "epochs": 15,
    "augment": "flip,translation",
    "batch_size": 128,
    "lr": 0.001,
    "seed": 0,
}
# resgan's recommended preset for colour photographs: the digits' tuned conditional preset
# (benchmarks/quality.py), its rates decaying to 0 over the last quarter of the image budget, at width 32,
# with AC-GAN's class loss at weight 1. The pilots (docs/performance.md's diary), at 50,000 images: width 32
# trained 1.65x the images a second of 48 and, with class_norm, drew a lower FID (40.7 against 47.0);
# class_norm itself cost FID at width 48 (47.0 against 34.7 without); lr_g 1e-4 against lr_d 4e-4 (two
# time-scales) 66.8. At 200,000: class_loss 1.0 drew 51.1% class accuracy (FID 29.2), 0.3 42.3% (FID
# 16.1), none 35.2% (FID 26.1).
PRESET = {
    "model": {**TUNED["model"], "conditional": True, "width": 32},
    "train": {**TUNED["train"], "class_loss": 1.0, "export": "last", "eval_every": 0},
}
RUNS = ("resgan", "textbook")
SAMPLES, SAMPLE_SEED, GRID_COLUMNS = 10_000, 1234, 10
IMAGES = 200_000


def _timed(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Run ``args``; its wall time, CPU time (user + system, its worker processes included) and the
    peak resident set of its largest process (MiB). Exits with its output when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
        "peak_rss_mib_largest_process": round(after.ru_maxrss / 1024, 1),
    }


def prepare(folder: Path, out: Path, env: dict[str, str], work: Path) -> dict[str, Any]:
    """``resgan prepare`` of ``folder`` into ``out`` with :data:`DATA`; its figures and summary."""
    from resgan.data.collect import available_cpus

    params_file = work / f"prepare_{out.name}.yaml"
    params_file.write_text(yaml.safe_dump(params_for({}, folder, 0.0, [], DATA), sort_keys=False))
    load = os.getloadavg()
    figures = _timed(["resgan", "prepare", "--params", str(params_file), "--out", str(out)], env, work)
    summary = json.loads((out / "summary.json").read_text())
    figures.update(
        {
            "inputs": summary["inputs"],
            "img_per_s": round(summary["inputs"] / figures["wall_s"], 1),
            "workers": available_cpus(),
            "load_average_before": [round(x, 2) for x in load],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
    )
    return {"figures": figures, "summary": summary}


def scorer_name(data_hash: str, scorer: dict[str, Any]) -> str:
    """The cache name of a scorer: the data hash it was trained on and its params."""
    digest = hashlib.sha256(json.dumps(scorer, sort_keys=True).encode()).hexdigest()[:8]
    return f"cifar10_scorer_{data_hash[:12]}_{digest}"


def train_scorer(
    data: Path, data_hash: str, scorer: dict[str, Any], cache: Path, env: dict[str, str], work: Path
) -> tuple[Path, dict]:
    """The cached scorer for ``data`` (trained by ``resgan classifier`` when missing); its path and
    the classifier stage's figures."""
    name = scorer_name(data_hash, scorer)
    model, figures = cache / f"{name}.keras", cache / f"{name}_metrics.json"
    if not (model.exists() and figures.exists()):
        cache.mkdir(parents=True, exist_ok=True)
        raw = params_for({}, data, 0.0, [], DATA)
        raw["classifier"].update(scorer)
        (work / "scorer.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        log(f"scorer: the domain classifier ({scorer['epochs']} epochs, {scorer['augment'] or 'no augmentation'})")
        timed = _timed(
            classifier_args(data, model, figures, "scorer.yaml"),
            env,
            work,
        )
        log(f"scorer: trained in {timed['wall_s'] / 60:.1f} min")
    return model, json.loads(figures.read_text())


def rows_per_class(images: np.ndarray, labels: np.ndarray, classes: int, columns: int = GRID_COLUMNS) -> np.ndarray:
    """A grid with a row per class: the first ``columns`` images of each class, class 0 on top."""
    from resgan.files import image_grid

    picked = [images[np.flatnonzero(labels == c)[:columns]] for c in range(classes)]
    if any(len(row) < columns for row in picked):
        raise ValueError(f"a row per class needs {columns} images of every class")
    return image_grid(np.concatenate(picked), columns=columns)


def draw_run(name: str, generator, num: int) -> tuple[np.ndarray, np.ndarray]:
    """``num`` samples of seed 1234, every class in turn (resgan's :func:`resgan.sampling.draw`; the
    peer, which has no label embedding to count its classes by, the same latents and labels)."""
    from resgan.sampling import class_labels, draw, generate_images, latents

    if name == "resgan":
        return draw(generator, num, seed=SAMPLE_SEED, batch_size=500)
    classes = int(generator.get_layer("one_hot").num_tokens)
    z = latents(num, int(generator.inputs[0].shape[-1]), SAMPLE_SEED)
    labels = class_labels(num, classes, SAMPLE_SEED)
    return generate_images(generator, z, labels, batch_size=500), labels


def kept_grids(budget: dict, grids: dict, titles: dict, classes: int) -> None:
    """Add the grids of this budget's runs that an earlier invocation trained (their kept samples), so
    the picture shows every run of the budget."""
    for name, run in budget.items():
        npz = ROOT / run["samples"]
        if name in grids or not npz.exists():
            continue
        with np.load(npz) as kept:
            grids[name] = rows_per_class(kept["images"], kept["labels"], classes)
        titles[name] = f"{name}: {run['images'] // 1000}k images, FID {run['fid_classifier']:.2f}"
    for picked in (grids, titles):  # real photographs on top, then the runs in RUNS' order
        ordered = {key: picked[key] for key in ("real", *RUNS) if key in picked}
        picked.clear()
        picked.update(ordered)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.photos", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cifar",
        type=Path,
        default=os.environ.get("RESGAN_CIFAR10"),
        help="CIFAR-10 as JPEG files: train/<class>/*.jpg and test/<class>/*.jpg (or RESGAN_CIFAR10)",
    )
    parser.add_argument("--images", type=int, help=f"image budget of each run (default {IMAGES:,}; quick 640)")
    parser.add_argument("--only", choices=RUNS, action="append", help="run only these (repeatable); default: both")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="resgan:KEY=VALUE",
        help="change one param of the resgan run, e.g. resgan:model.width=64",
    )
    parser.add_argument(
        "--quick", action="store_true", help="640 images, 500 samples, a 1-epoch scorer: checks the script"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="folder for photos.json and the samples (default benchmarks/results); the picture "
        "goes to docs/images only with the default",
    )
    parser.add_argument("--cache", type=Path, default=CACHE, help="folder of trained scorers, by data hash")
    parser.add_argument("--work", type=Path, help="keep the prepared data and the runs here (default: a temp dir)")
    args = parser.parse_args(argv)

    if args.cifar is None or not (Path(args.cifar) / "train").is_dir() or not (Path(args.cifar) / "test").is_dir():
        sys.exit(
            f"no CIFAR-10 folder{f' at {args.cifar}' if args.cifar else ''}: pass --cifar DIR (or set "
            "RESGAN_CIFAR10) to a folder holding train/<class>/*.jpg and test/<class>/*.jpg"
        )
    cifar = Path(args.cifar).resolve()
    images = args.images or (640 if args.quick else IMAGES)
    num = 500 if args.quick else SAMPLES
    names = args.only or list(RUNS)
    overrides = []
    for item in args.overrides:
        name, _, change = item.partition(":")
        if name != "resgan" or "=" not in change:
            sys.exit(f"--set {item!r}: expected resgan:SECTION.KEY=VALUE (the textbook peer is what it is)")
        overrides.append(change)
    scorer = {**SCORER, "epochs": 1} if args.quick else SCORER
    from resgan.errors import ResganError

    try:
        preset = params_for(
            PRESET,
            cifar / "train",
            0.0,
            [f"train.steps={max(1, images // PRESET['train']['batch_size'])}", *BUDGET_OVERRIDES, *overrides],
            DATA,
        )
    except ResganError as error:
        sys.exit(f"error: {error}")

    results_dir = args.results.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    out_path = results_dir / ("photos_quick.json" if args.quick else "photos.json")
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    tag = f"{images // 1000}k" if images >= 1000 else str(images)
    work = args.work or Path(tempfile.mkdtemp(prefix="resgan-photos-"))
    work.mkdir(parents=True, exist_ok=True)
    env = _env(work / "mlflow.db")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])  # this checkout's resgan in every child
    try:
        data, real_dir = work / "data", work / "real_test"
        log(f"prepare: {cifar / 'train'} -> 32x32x3")
        results["prepare"] = prepare(cifar / "train", data, env, work)["figures"]
        log(
            f"prepare: {results['prepare']['inputs']:,} files in {results['prepare']['wall_s']:.1f} s "
            f"({results['prepare']['img_per_s']:.0f} images/s, peak {results['prepare']['peak_rss_mib_largest_process']:.0f} MiB)"
        )
        prepared_test = prepare(cifar / "test", real_dir, env, work)
        data_hash = json.loads((data / "summary.json").read_text())["data_hash"]
        scorer_path, scorer_figures = train_scorer(data, data_hash, scorer, args.cache.resolve(), env, work)

        import keras

        from resgan.data.prepared import load_class_names, load_split
        from resgan.loading import load_generator
        from resgan.metrics.distances import fid, kid, precision_recall
        from resgan.metrics.features import LearnedFeatures
        from resgan.metrics.scores import inception_score

        class_names = load_class_names(data)
        parts = [load_split(real_dir, split) for split in ("train", "test")]
        real, real_labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        order = np.argsort(real_labels, kind="stable")  # class by class, each in file order
        real, real_labels = real[order], real_labels[order]
        extractor = LearnedFeatures(scorer_path)
        real_feats, real_probs = extractor(real)
        train_images, _ = load_split(data, "train")
        pick = np.sort(
            np.random.default_rng(0).choice(len(train_images), size=min(len(real), len(train_images)), replace=False)
        )
        train_feats, _ = extractor(train_images[pick])
        shuffled = np.random.default_rng(0).permutation(len(real))
        half_a, half_b = real_feats[shuffled[: len(real) // 2]], real_feats[shuffled[len(real) // 2 :]]
        accuracy = float(np.mean(real_probs.argmax(axis=1) == real_labels))
        results["scorer"] = {
            "params": scorer,
            "data_hash": data_hash,
            "file": _shown(scorer_path),
            "accuracy_real_test": accuracy,
            "n_real_test": len(real),
            "held_out_accuracy": scorer_figures.get("accuracy"),
            "time_s": scorer_figures.get("time_s"),
        }
        real_pr = precision_recall(real_feats, train_feats, k=3)
        results["real"] = {
            # The score's 10 splits must each hold every class, as the samples' do: the real images
            # are in class order, so shuffled first (in order, each split is one class: score about 1.7).
            "n": len(real),
            "classifier_score_mean": inception_score(real_probs[shuffled], splits=10)[0],
            "fid_train_vs_test": fid(real_feats, train_feats),
            "fid_halves": fid(half_a, half_b),
            "kid_train_vs_test": kid(
                real_feats, train_feats, subsets=100, subset_size=1000, rng=np.random.default_rng(0)
            )[0],
            "precision_train_vs_test": real_pr[0],
            "recall_train_vs_test": real_pr[1],
            "class_names": class_names,
            "test_prepare": prepared_test["figures"],
        }
        log(
            f"scorer: {accuracy:.3f} on {len(real):,} real test images; real train vs test FID "
            f"{results['real']['fid_train_vs_test']:.3f}"
        )

        results["meta"] = {
            "commit": _git_commit(),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "data": {**DATA, "n_train": len(train_images), "n_real_test": len(real)},
        }
        budget = results.setdefault("budgets", {}).setdefault(tag, {})
        grids = {"real": rows_per_class(real, real_labels, len(class_names))}
        titles = {"real": "real test photographs, a row per class"}  # classes in sorted folder order
        trained_here: set[tuple[str, str]] = set()
        save(results, out_path, trained_here)
        for name in names:
            load_before = os.getloadavg()
            log(f"{name}: training to {images:,} images")
            if name == "resgan":
                run_dir, child = train_run(name, preset, data, work, env)
                trained, generator_path = child["result"], run_dir / "models" / "generator.keras"
                run: dict[str, Any] = {"params": {s: preset[s] for s in ("model", "train")}}
            else:
                run_dir = work / name
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.textbook_cgan",
                        "--data",
                        str(data),
                        "--out",
                        str(run_dir),
                        "--images",
                        str(images),
                    ],
                    env=env,
                    cwd=ROOT,
                    check=False,
                    capture_output=True,
                    text=True,
                )
                if out.returncode:
                    sys.exit(f"textbook run failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
                child = json.loads(out.stdout.strip().splitlines()[-1].removeprefix("BENCH_RESULT "))
                trained, generator_path = child["result"], run_dir / "generator.keras"
                run = {"params": "benchmarks/textbook_cgan.py"}
            # The peer's generator has no class embedding, which resgan's loader checks for: plain Keras loads it.
            generator = (
                load_generator(generator_path)
                if name == "resgan"
                else keras.saving.load_model(generator_path, safe_mode=True)
            )
            drawn, labels = draw_run(name, generator, num)
            npz = results_dir / (f"quick_cifar10_{tag}_{name}.npz" if args.quick else f"cifar10_{tag}_{name}.npz")
            tmp = npz.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, images=drawn, labels=labels)
            os.replace(tmp, npz)
            scores = score(drawn, (real_feats, real_probs), (half_a, half_b), extractor, labels)
            feats, _ = extractor(drawn)
            precision, recall = precision_recall(real_feats, feats, k=3)
            run.update(
                {
                    "steps": trained["steps"],
                    "images": trained["steps"] * (preset["train"]["batch_size"] if name == "resgan" else 64),
                    "wall_s": trained["wall_s"],
                    "img_per_s": trained["img_per_s"],
                    "precision_mode": trained.get("precision"),
                    "peak_rss_mib": round(child["max_rss_mib"], 1),
                    "samples": _shown(npz),
                    "n_samples": num,
                    **scores,
                    "precision": precision,
                    "recall": recall,
                    "class_accuracy_over_scorer": scores["class_accuracy"] / accuracy,
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                }
            )
            budget[name] = run
            trained_here.add((tag, name))
            grids[name] = rows_per_class(drawn, labels, len(class_names))
            titles[name] = f"{name}: {run['images'] // 1000}k images, FID {run['fid_classifier']:.2f}"
            save(results, out_path, trained_here)  # what each finished run measured survives a later one's end
            kept_grids(budget, grids, titles, len(class_names))
            if not args.quick and results_dir == RESULTS:
                picture(grids, titles, IMAGES_DIR / f"cifar10_{tag}.png")
            log(
                f"{name} at {run['images']:,} images ({run['wall_s'] / 60:.1f} min, {run['img_per_s']:.0f} img/s): "
                f"FID {run['fid_classifier']:.2f}, KID {run['kid_classifier_mean']:.4f}, score "
                f"{run['classifier_score_mean']:.2f}, class accuracy {run['class_accuracy']:.3f}, precision "
                f"{precision:.3f}, recall {recall:.3f}"
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    print(f"results -> {_shown(out_path)}")


def save(results: dict, out_path: Path, trained: set[tuple[str, str]] = frozenset()) -> None:
    """Write ``results`` with its targets to ``out_path``, atomically. ``trained``: the (budget, run)
    pairs this invocation measured; every other run is taken as the file holds it now, so runs that
    another invocation wrote since this one read the file (``--only textbook`` beside ``--only
    resgan``, or a 1,000,000-image run beside a 200,000-image one) are kept, not overwritten with
    what this one read at its start."""
    if out_path.exists():
        for tag, runs in json.loads(out_path.read_text()).get("budgets", {}).items():
            mine = results.setdefault("budgets", {}).setdefault(tag, {})
            for name, run in runs.items():
                if (tag, name) not in trained:
                    mine[name] = run
    results["targets"] = targets(results)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float) + "\n")
    os.replace(tmp, out_path)


# Every run is ended by train.steps at the image budget: no checkpoints, no grids, no FID over training.
BUDGET_OVERRIDES = [f"train.{key}={value}" for key, value in BUDGET.items() if key != "steps"] + ["train.max_minutes=0"]


def targets(results: dict) -> dict[str, Any]:
    """The issue's targets: the scorer at 75% on real test images; at 200,000 images resgan's FID at most
    a third of the peer's and its samples' class accuracy at least 60% of the scorer's (80% at 1,000,000)."""
    met: dict[str, Any] = {}
    scorer = results.get("scorer", {}).get("accuracy_real_test")
    if scorer is not None:
        met["scorer_accuracy"] = {"value": round(scorer, 4), "target": ">= 0.75", "met": scorer >= 0.75}
    for tag, share in (("200k", 0.6), ("1000k", 0.8)):
        runs = results.get("budgets", {}).get(tag, {})
        if "resgan" in runs:
            ratio = runs["resgan"]["class_accuracy_over_scorer"]
            met[f"class_accuracy_over_scorer_{tag}"] = {
                "value": round(ratio, 4),
                "target": f">= {share}",
                "met": ratio >= share,
            }
        if {"resgan", "textbook"} <= set(runs):
            ratio = runs["resgan"]["fid_classifier"] / runs["textbook"]["fid_classifier"]
            met[f"fid_over_textbook_{tag}"] = {"value": round(ratio, 4), "target": "<= 1/3", "met": ratio <= 1 / 3}
    return met


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="CIFAR-10, 32x32 RGB, class-conditional (the scorer's features, against the real test images)")
    for column in (
        "budget",
        "run",
        "steps",
        "minutes",
        "img/s",
        "FID",
        "KID",
        "score",
        "precision",
        "recall",
        "class acc.",
        "/ scorer",
    ):
        table.add_column(column, justify="right")
    for tag, runs in results.get("budgets", {}).items():
        for name, at in runs.items():
            table.add_row(
                tag,
                name,
                str(at["steps"]),
                f"{at['wall_s'] / 60:.1f}",
                f"{at['img_per_s']:.0f}",
                f"{at['fid_classifier']:.2f}",
                f"{at['kid_classifier_mean']:.4f}",
                f"{at['classifier_score_mean']:.2f}",
                f"{at['precision']:.3f}",
                f"{at['recall']:.3f}",
                f"{at['class_accuracy']:.3f}",
                f"{at['class_accuracy_over_scorer']:.2f}",
            )
    real, scorer = results.get("real", {}), results.get("scorer", {})
    if real:
        table.add_row(
            "",
            "real train vs test",
            "",
            "",
            "",
            f"{real['fid_train_vs_test']:.2f}",
            f"{real['kid_train_vs_test']:.4f}",
            f"{real['classifier_score_mean']:.2f}",
            f"{real['precision_train_vs_test']:.3f}",
            f"{real['recall_train_vs_test']:.3f}",
            f"{scorer.get('accuracy_real_test', 0):.3f}",
            "1.00",
        )
    Console(width=140).print(table)
    prep = results.get("prepare")
    if prep:
        print(
            f"prepare: {prep['inputs']:,} files in {prep['wall_s']:.1f} s ({prep['img_per_s']:.0f} images/s, "
            f"CPU {prep['cpu_s']:.1f} s, largest process {prep['peak_rss_mib_largest_process']:.0f} MiB, "
            f"load {prep['load_average_before'][0]:.1f})"
        )
    for key, target in results.get("targets", {}).items():
        print(f"{key}: {target['value']} (target {target['target']}): {'met' if target['met'] else 'NOT met'}")


if __name__ == "__main__":
    main(sys.argv[1:])
