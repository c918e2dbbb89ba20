"""Faces from a few hundred photographs: Extended Yale B at 64x64, labelled and flat, two budgets each.

    make bench-faces                                   # = python -m benchmarks.faces  (about 2 h on 2 cores)
    python -m benchmarks.faces --only subset_labelled  # one case (the others' results are kept)
    python -m benchmarks.faces --set subset_flat:model.width=48 --only subset_flat   # try a change
    python -m benchmarks.faces --quick --faces DIR     # smoke run: 0.2 minutes, 200 samples

Data: the cropped Extended Yale B faces (``--faces`` or ``RESGAN_FACES``: a folder of one sub-folder of
PNGs per person), never copied into the project. Its folders are made at run time in a temporary work
folder: ``subset``, 10 photographs per person (``--per-person``; 380 for 38 people, chosen with seed 0)
with every other photograph of those people held out, and ``all``, the whole set, whose held-out
photographs are the prepare stage's test split. Each is trained ``labelled`` (a folder per person: a
class-conditional model, as ``model.conditional: auto`` decides) and ``flat`` (one folder, no labels:
the self-supervised encoder and self-conditioning), with ``params.yaml``'s defaults, prepared at
``--image-size`` (64), until both budgets have passed: ``--minutes`` of wall time (10) and a fixed
number of training images (``--images``, 48,000: 1,500 steps of 32); the EMA generator at each is kept
(:class:`benchmarks.child.Marks`).

Scores, at each budget, on 2,000 samples (seed 1234): FID with the pipeline's own feature extractor
(the one the case's classifier stage trained: the domain classifier where it learned the people, else
the self-supervised encoder), said untrusted where it failed its fitness check, against the training
photographs, beside the floor (the held-out photographs against the training ones); and memorization:
the share of 1,000 samples whose SSIM to their nearest training photograph is at least 0.9, beside the
same share for up to 1,000 held-out photographs of the same people, with the binomial noise of their
difference. Results: ``benchmarks/results/faces.json``; the grids of the samples at the wall-time
budget: ``docs/images/faces_<case>.png`` (a block per person for a labelled case).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.quality import (
    RESULTS,
    ROOT,
    _command,
    _env,
    _git_commit,
    _shown,
    _value,
    classifier_args,
    log,
    train_run,
)

IMAGES, MINUTES, PER_PERSON = 48_000, 10.0, 10
CASES = {
    "subset_labelled": ("subset", True),
    "subset_flat": ("subset", False),
    "all_labelled": ("all", True),
    "all_flat": ("all", False),
}
SAMPLES, MEMORIZATION_SAMPLES, THRESHOLD, SAMPLE_SEED = 2_000, 1_000, 0.9, 1234
# What every run shares: the budgets stop it, not a step count; rare logging and grids.
BUDGET = {
    "steps": 10_000_000,
    "max_minutes": 0,
    "checkpoint_every": 1_000_000,
    "sample_every": 1_000_000,
    "log_every": 100,
}
# --quick: a smoke run on tiny images, every stage cut to seconds.
QUICK = {
    "classifier": {"epochs": 1, "ssl_epochs": 1, "ssl_min_steps": 0, "width": 8, "feature_dim": 16},
    "model": {"width": 8, "latent_dim": 16},
    "train": {"eval_every": 0, "precision": "float32", "batch_size": 8},
}
DOCS_IMAGES = ROOT / "docs" / "images"


def split_people(faces: Path, work: Path, per_person: int, seed: int = 0) -> dict[str, Path]:
    """The case folders under ``work`` from ``faces`` (a sub-folder of PNGs per person): ``subset`` (the
    first ``per_person`` of each person's photographs in a seeded shuffle, a folder per person),
    ``subset_flat`` (the same, in one folder), ``heldout`` (every other photograph of theirs, flat), and
    ``all_flat`` (every photograph, in one folder); ``all`` is ``faces`` itself."""
    folders = {
        "subset": work / "subset",
        "subset_flat": work / "subset_flat",
        "heldout": work / "heldout",
        "all_flat": work / "all_flat",
        "all": faces,
    }
    if (work / "split.done").exists():
        return folders
    for name in ("subset", "subset_flat", "heldout", "all_flat"):
        shutil.rmtree(folders[name], ignore_errors=True)
        folders[name].mkdir(parents=True)
    rng = random.Random(seed)
    people = sorted(p for p in faces.iterdir() if p.is_dir())
    for person in people:
        photos = sorted(person.glob("*.png"))
        rng.shuffle(photos)
        for i, photo in enumerate(photos):
            flat_name = f"{person.name}_{photo.name}"  # flat folders: the person in the name, no collisions
            shutil.copy(photo, folders["all_flat"] / flat_name)
            if i < per_person:
                (folders["subset"] / person.name).mkdir(exist_ok=True)
                shutil.copy(photo, folders["subset"] / person.name / photo.name)
                shutil.copy(photo, folders["subset_flat"] / flat_name)
            else:
                shutil.copy(photo, folders["heldout"] / flat_name)
    (work / "split.done").write_text(f"{len(people)} people\n")
    return folders


def load_photos(folder: Path, size: int) -> np.ndarray:
    """Every PNG in ``folder`` as uint8 (N, size, size, 1), resized with Lanczos where needed (as the
    prepare stage's ``fit: resize`` does)."""
    from PIL import Image

    photos = []
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            grey = image.convert("L")
            if grey.size != (size, size):
                grey = grey.resize((size, size), Image.Resampling.LANCZOS)
            photos.append(np.asarray(grey, dtype=np.uint8))
    return np.stack(photos)[..., None]


def case_params(source: Path, size: int, minutes: float, quick: bool, overrides: list[str]) -> dict[str, Any]:
    """A whole params.yaml: the defaults, the folder source at ``size``, the budgets, then ``overrides``."""
    from resgan.config import parse_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["prepare"].update({"source": "folder", "path": str(source), "image_size": size, "channels": 1, "fit": "resize"})
    raw["train"].update(BUDGET)
    for section, values in (QUICK if quick else {}).items():
        raw[section].update(values)
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        raw[section][name] = _value(value)
    parse_params(raw)  # a wrong key or value stops here, naming it, before minutes of training
    return raw


def memorization_noise(a: float, b: float, n_a: int, n_b: int) -> float:
    """The standard deviation of the difference of two shares ``a`` and ``b`` of ``n_a`` and ``n_b``
    images (binomial): how far apart the samples' and the real photographs' memorization may be by chance."""
    return math.sqrt(a * (1 - a) / max(n_a, 1) + b * (1 - b) / max(n_b, 1))


def score_case(
    images: np.ndarray, train: np.ndarray, heldout: np.ndarray, extractor, real_feats: np.ndarray, heldout_memo: dict
) -> dict[str, Any]:
    """FID of ``images`` with ``extractor`` against the training photographs' features ``real_feats``,
    and their memorization (SSIM >= :data:`THRESHOLD` to the nearest training photograph) beside the
    held-out photographs' ``heldout_memo``."""
    from resgan.metrics.distances import fid
    from resgan.metrics.ssim import memorization

    feats, _ = extractor(images)
    memo = memorization(images[:MEMORIZATION_SAMPLES], train, threshold=THRESHOLD)
    n = min(len(images), MEMORIZATION_SAMPLES)
    noise = memorization_noise(memo["fraction"], heldout_memo["fraction"], n, heldout_memo["n"])
    return {
        f"fid_{extractor.name}": fid(real_feats, feats),
        "memorization_fraction": memo["fraction"],
        "memorization_mean_ssim": memo["mean"],
        "memorization_noise": noise,
        "memorization_above_real_by_more_than_noise": bool(memo["fraction"] - heldout_memo["fraction"] > 2 * noise),
    }


def run_case(
    name: str,
    folders: dict[str, Path],
    args,
    work: Path,
    env: dict[str, str],
    images_budget: int,
    minutes: float,
    overrides: list[str],
) -> dict[str, Any]:
    """Prepare, train the feature extractor, train to both budgets and score one case."""
    from resgan.data.prepared import load_split
    from resgan.loading import load_generator
    from resgan.metrics.distances import fid
    from resgan.metrics.features import LearnedFeatures
    from resgan.metrics.ssim import memorization
    from resgan.sampling import draw

    data_name, labelled = CASES[name]
    source = folders[data_name if labelled else f"{data_name}_flat"]
    params = case_params(source, args.image_size, minutes, args.quick, overrides)
    case_dir = work / name
    case_dir.mkdir(exist_ok=True)
    (case_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    data, extractor_path = case_dir / "data", case_dir / "classifier.keras"
    if not (data / "train.npz").exists():
        log(f"{name}: prepare {'a folder per person' if labelled else 'one flat folder'}")
        _command(["resgan", "prepare", "--params", "params.yaml", "--out", str(data)], env, case_dir)
    if not extractor_path.exists():
        log(f"{name}: classifier stage (the domain classifier, else the self-supervised encoder)")
        _command(
            classifier_args(data, extractor_path, case_dir / "classifier_figures.json"),
            env,
            case_dir,
        )
    train, _ = load_split(data, "train")
    heldout = load_photos(folders["heldout"], args.image_size) if data_name == "subset" else load_split(data, "test")[0]
    seen = {image.tobytes() for image in train}
    heldout = np.stack([image for image in heldout if image.tobytes() not in seen])  # never trained on
    extractor = LearnedFeatures(extractor_path)
    real_feats, _ = extractor(train)
    heldout_feats, _ = extractor(heldout)
    n_memo = min(MEMORIZATION_SAMPLES, len(heldout))
    heldout_memo = {
        "n": n_memo,
        **{
            k: v
            for k, v in memorization(heldout[:n_memo], train, threshold=THRESHOLD).items()
            if k in ("fraction", "mean")
        },
    }
    summary = json.loads((data / "summary.json").read_text())
    case: dict[str, Any] = {
        "data": {
            "photographs": data_name,
            "labelled": labelled,
            "n_train": len(train),
            "n_heldout": len(heldout),
            "classes": len(summary.get("class_names") or []),
            "image_size": args.image_size,
        },
        "extractor": {
            "kind": extractor.kind,
            "name": extractor.name,
            "trusted": extractor.trusted,
            "fitness": extractor.fitness,
        },
        "floor": {f"fid_{extractor.name}_heldout_vs_train": fid(real_feats, heldout_feats), "n_heldout": len(heldout)},
        "heldout_memorization": heldout_memo,
        "params": {s: params[s] for s in ("model", "train")},
        "overrides": overrides,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    log(
        f"{name}: {len(train)} training photographs, {len(heldout)} held out; extractor {extractor.name} "
        f"({extractor.fitness}); training to {images_budget:,} images and {minutes:g} minutes"
    )
    run_dir, child = train_run(name, params, data, case_dir, env, (images_budget, minutes), extractor_path)
    trained = child["result"]
    case.update(
        {
            "steps": trained["steps"],
            "img_per_s": trained["img_per_s"],
            "train_wall_s": trained["wall_s"],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
    )
    num = 200 if args.quick else SAMPLES
    for mark in ("at_images", "at_minutes"):
        drawn, labels = draw(load_generator(run_dir / f"{mark}.keras"), num, seed=SAMPLE_SEED, batch_size=250)
        case[mark] = {
            **trained["marks"][mark],
            **score_case(drawn, train, heldout, extractor, real_feats, heldout_memo),
        }
        if mark == "at_minutes":
            case["grid"] = _grid(name, drawn, labels, args)
        at = case[mark]
        log(
            f"{name} at {at['images']:,} images, {at['wall_s'] / 60:.1f} min: step {at['step']}, "
            f"FID {at[f'fid_{extractor.name}']:.2f} (floor {case['floor'][f'fid_{extractor.name}_heldout_vs_train']:.2f}), "
            f"memorized {at['memorization_fraction']:.3f} (held-out photographs {heldout_memo['fraction']:.3f})"
        )
    return case


def _grid(name: str, images: np.ndarray, labels: np.ndarray | None, args) -> str | None:
    """The docs' picture of a case: 64 samples, a block per person when labelled (resgan.grids)."""
    from resgan import grids

    path = (
        (args.results / f"faces_quick_{name}.png")
        if args.quick or args.results != RESULTS
        else (DOCS_IMAGES / f"faces_{name}.png")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    grids.save(path, grids.sample_grid(images, labels, 64))
    return _shown(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faces", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--faces",
        type=Path,
        default=os.environ.get("RESGAN_FACES"),
        help="the Yale B faces: a folder of one sub-folder of PNGs per person (or RESGAN_FACES)",
    )
    parser.add_argument("--only", choices=list(CASES), action="append", help="run only these cases (repeatable)")
    parser.add_argument("--images", type=int, help=f"image budget (default {IMAGES:,}; quick 640)")
    parser.add_argument("--minutes", type=float, help=f"wall-time budget (default {MINUTES:g}; quick 0.2)")
    parser.add_argument("--per-person", type=int, default=PER_PERSON, help="photographs a person in the subset")
    parser.add_argument("--image-size", type=int, default=64, help="prepare.image_size (quick: the test's 16)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="CASE:KEY=VALUE",
        help="change one param of one case, e.g. subset_flat:train.lr_d=2e-4",
    )
    parser.add_argument("--quick", action="store_true", help="0.2-minute budgets, tiny model, 200 samples")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="folder for faces.json (default benchmarks/results)"
    )
    parser.add_argument("--work", type=Path, help="keep the folders, data and runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.faces is None or not Path(args.faces).is_dir():
        sys.exit(
            f"no faces folder ({args.faces or 'none given'}): pass --faces DIR or set RESGAN_FACES to the "
            "Yale B faces, a sub-folder of PNGs per person"
        )
    args.faces, args.results = Path(args.faces).resolve(), args.results.resolve()
    overrides: dict[str, list[str]] = {name: [] for name in CASES}
    for item in args.overrides:
        name, _, change = item.partition(":")
        if name not in overrides or "=" not in change:
            sys.exit(f"--set {item!r}: expected CASE:SECTION.KEY=VALUE with CASE one of {', '.join(CASES)}")
        overrides[name].append(change)
    minutes = args.minutes or (0.2 if args.quick else MINUTES)
    images_budget = args.images or (640 if args.quick else IMAGES)
    from resgan.errors import ResganError

    try:  # every case's params checked before minutes of work
        for name in args.only or CASES:
            case_params(args.faces, args.image_size, minutes, args.quick, overrides[name])
    except ResganError as error:
        sys.exit(f"error: {error}")
    args.results.mkdir(parents=True, exist_ok=True)
    out_path = args.results / ("faces_quick.json" if args.quick else "faces.json")
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    work = args.work or Path(tempfile.mkdtemp(prefix="resgan-faces-"))
    work.mkdir(parents=True, exist_ok=True)
    env = _env(work / "mlflow.db")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])  # this checkout's resgan, whatever is installed
    try:
        folders = split_people(args.faces, work, args.per_person)
        results.setdefault("cases", {})
        for name in args.only or CASES:
            results["cases"][name] = run_case(name, folders, args, work, env, images_budget, minutes, overrides[name])
            results["meta"] = {
                "budgets": {"images": images_budget, "minutes": minutes},
                "per_person": args.per_person,
                "commit": _git_commit(),
                "cpus": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d %H:%M"),
            }
            tmp = out_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=2, default=float) + "\n")
            os.replace(tmp, out_path)  # after each case: a long run keeps what it measured
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    print(f"results -> {_shown(out_path)}")


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Faces: Yale B photographs at two budgets (the pipeline's own features)")
    for column in (
        "case",
        "train",
        "extractor",
        "budget",
        "step",
        "min",
        "img/s",
        "FID",
        "floor",
        "memorized",
        "held-out",
        "noise",
    ):
        table.add_column(column, justify="right")
    for name, case in results.get("cases", {}).items():
        key = f"fid_{case['extractor']['name']}"
        for mark, budget in (("at_images", "images"), ("at_minutes", "wall")):
            at = case[mark]
            table.add_row(
                name,
                str(case["data"]["n_train"]),
                case["extractor"]["name"],
                budget,
                str(at["step"]),
                f"{at['wall_s'] / 60:.1f}",
                f"{case['img_per_s']:.0f}",
                f"{at[key]:.2f}",
                f"{case['floor'][f'{key}_heldout_vs_train']:.2f}",
                f"{at['memorization_fraction']:.3f}",
                f"{case['heldout_memorization']['fraction']:.3f}",
                f"{at['memorization_noise']:.3f}",
            )
    Console(width=140).print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
