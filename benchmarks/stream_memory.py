"""Peak memory for 1x and 10x the data: prepare writing shards, training streaming them, and, for
contrast, training from the in-memory ``train.npz``.

    .venv/bin/python -m benchmarks.stream_memory                      # 5,000 and 50,000 images, about 6 minutes
    .venv/bin/python -m benchmarks.stream_memory --base 500 --steps 5 --repeat 1   # smoke run

Makes folders of ``base`` and ``factor * base`` synthetic 64x64 grayscale PNGs (MNIST-like digits with
noise, ten class folders) in a temporary directory, then runs, each in a fresh process and one after
the other: the prepare stage (``prepare.shard_size`` images per shard, full npz files too), the train
stage streaming the shards (``train.input: stream``; by default with a shuffle buffer smaller than
the 1x train split, so that both sizes fill it and any growth comes from the data set) and the train
stage loading ``train.npz`` (``train.input: memory``), ``--steps`` steps of a tiny model, each
``--repeat`` times (the smallest peak counts). Each process reports its peak resident set (VmHWM, see
:func:`benchmarks.child.peak_rss_mib`). Writes ``benchmarks/results/stream_memory.json`` and prints a
table. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "stream_memory.json"
SIZE = 64
SHARD_SIZE = 1000
MIB = 1 << 20


def make_folder(root: Path, n: int, seed: int) -> None:
    """``n`` distinct 64x64 grey PNGs in ten class folders, made 5,000 at a time (flat memory)."""
    from PIL import Image

    from benchmarks.processes import mnist_like

    done = 0
    while done < n:
        count = min(5000, n - done)
        images, labels = mnist_like(count, SIZE, seed=seed * 1_000_003 + done)
        for i, (image, label) in enumerate(zip(images, labels)):
            path = root / f"class{label}" / f"{done + i:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0]).save(path, compress_level=1)
        done += count


def child_prepare(params_path: Path, out: Path) -> None:
    """The prepare stage in this process; prints the BENCH_RESULT line (peak RSS, seconds, summary)."""
    from benchmarks.child import RESULT_PREFIX, peak_rss_mib
    from resgan.config import load_params
    from resgan.stages.prepare import run

    start = time.perf_counter()
    summary = run(load_params(params_path).prepare, out)
    stage_s = time.perf_counter() - start
    result = {k: summary[k] for k in ("counts", "npz_counts", "shards", "duplicates")}
    print(RESULT_PREFIX + json.dumps({"max_rss_mib": peak_rss_mib(), "stage_s": stage_s, "result": result}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream_memory")
    parser.add_argument("--base", type=int, default=5000, help="images in the 1x folder")
    parser.add_argument("--factor", type=int, default=10, help="the larger folder holds factor x base images")
    parser.add_argument("--steps", type=int, default=30, help="train steps per run")
    parser.add_argument(
        "--shuffle-buffer",
        type=int,
        default=4000,
        help="train.shuffle_buffer of the streaming runs; below the 1x train split (4,500 images) "
        "so that 1x and 10x both fill it and any growth comes from the data set",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="train runs per case; the smallest peak is reported (TensorFlow's varies by tens of MiB)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child-prepare", nargs=2, type=Path, metavar=("PARAMS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_prepare:
        child_prepare(*args.child_prepare)
        return

    from benchmarks.processes import child_result, command_env, stage_child, timed, warm_imports, write_params

    started = time.perf_counter()
    warm_imports()
    sizes = {"1x": args.base, f"{args.factor}x": args.base * args.factor}
    train = {
        "steps": args.steps,
        "batch_size": 64,
        "precision": "float32",
        "log_every": 10,
        "sample_every": args.steps,
        "checkpoint_every": args.steps,
    }
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="resgan-stream-") as tmp:
        work = Path(tmp)
        for label, n in sizes.items():
            raw, data = work / f"raw-{label}", work / f"prepared-{label}"
            t0 = time.perf_counter()
            make_folder(raw, n, seed=1)
            made_s = time.perf_counter() - t0
            print(f"{label}: {n} PNGs written in {made_s:.0f} s", flush=True)

            params = write_params(
                work / f"prepare-{label}.yaml",
                {
                    "prepare": {
                        "source": "folder",
                        "path": str(raw),
                        "image_size": SIZE,
                        "channels": 1,
                        "shard_size": SHARD_SIZE,
                        "test_fraction": 0.1,
                        "max_images": 0,
                        "npz_max_images": 0,
                    }
                },
            )
            seconds, out = timed(
                [sys.executable, "-m", "benchmarks.stream_memory", "--child-prepare", str(params), str(data)],
                ROOT,
                command_env(),
            )
            child = child_result(out)
            index = json.loads((data / "shards" / "index.json").read_text())
            runs.setdefault(label, {}).update(
                {
                    "images": n,
                    "train_images": child["result"]["counts"]["train"],
                    "train_split_mib": round(index["count"] * index["record_bytes"] / MIB, 1),
                    "shard_files": len(index["shards"]),
                    "shards_mib": round(sum(s["bytes"] for s in index["shards"]) / MIB, 1),
                    "train_npz_mib": round((data / "train.npz").stat().st_size / MIB, 1),
                    "prepare": {
                        "peak_rss_mib": round(child["max_rss_mib"], 1),
                        "stage_s": round(child["stage_s"], 1),
                        "wall_s": round(seconds, 1),
                    },
                }
            )
            print(f"{label}: prepare peak RSS {child['max_rss_mib']:.0f} MiB, {child['stage_s']:.0f} s", flush=True)

            for mode in ("stream", "memory"):
                tries = []
                for attempt in range(args.repeat):
                    run_dir = work / f"train-{label}-{mode}-{attempt}"
                    run_dir.mkdir()
                    train_params = write_params(
                        run_dir / "params.yaml",
                        {
                            "model": {"latent_dim": 32, "width": 8},
                            "train": {**train, "input": mode, "shuffle_buffer": args.shuffle_buffer},
                        },
                    )
                    seconds, child = stage_child(
                        "train",
                        run_dir,
                        ["--params", str(train_params), "--data", str(data), "--out", str(run_dir / "out")],
                    )
                    figures = child["result"]
                    tries.append(
                        {
                            "peak_rss_mib": round(child["max_rss_mib"], 1),
                            "stage_s": round(child["stage_s"], 1),
                            "wall_s": round(seconds, 1),
                            "steps": figures["steps"],
                            "img_per_s": figures["img_per_s"],
                        }
                    )
                    print(
                        f"{label}: train ({mode}) peak RSS {child['max_rss_mib']:.0f} MiB, "
                        f"{figures['img_per_s']:.0f} img/s",
                        flush=True,
                    )
                best = min(tries, key=lambda t: t["peak_rss_mib"])
                runs[label][f"train_{mode}"] = {**best, "peak_rss_mib_all": [t["peak_rss_mib"] for t in tries]}

    small, large = runs["1x"], runs[f"{args.factor}x"]
    growth = {
        key: round(large[key]["peak_rss_mib"] - small[key]["peak_rss_mib"], 1)
        for key in ("prepare", "train_stream", "train_memory")
    }
    report = {
        "command": " ".join(["python -m benchmarks.stream_memory", *(sys.argv[1:] if argv is None else argv)]),
        "what": "peak resident set (VmHWM) of one process per stage; 64x64x1 PNGs, 10 % test split; "
        f"prepare.shard_size {SHARD_SIZE}; train: {args.steps} steps, batch 64, model width 8, "
        f"latent 32, float32, train.shuffle_buffer {args.shuffle_buffer} (streaming only); train figures: "
        f"the run with the "
        f"smallest peak of {args.repeat} (all peaks in peak_rss_mib_all)",
        "runs": runs,
        "growth_1x_to_large_mib": growth,
        "train_split_growth_mib": round(large["train_split_mib"] - small["train_split_mib"], 1),
        "meta": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "shuffle_buffer": args.shuffle_buffer,
            "wall_s": round(time.perf_counter() - started, 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    _print_table(runs, growth, report["train_split_growth_mib"])
    print(f"-> {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


def _print_table(runs: dict, growth: dict, split_growth: float) -> None:
    labels = list(runs)

    def row(name: str, values: list, last="") -> None:
        print(f"{name:<32}" + "".join(f"{v:>12}" for v in values) + f"{last:>12}")

    print()
    row("", labels, "growth")
    row("images", [runs[label]["images"] for label in labels])
    row(
        "train split, MiB of pixels",
        [f"{runs[label]['train_split_mib']:.0f}" for label in labels],
        f"{split_growth:.0f}",
    )
    print("peak RSS, MiB:")
    for key, name in (
        ("prepare", "  prepare (shards + npz)"),
        ("train_stream", "  train, streaming shards"),
        ("train_memory", "  train, train.npz in memory"),
    ):
        row(name, [f"{runs[label][key]['peak_rss_mib']:.0f}" for label in labels], f"{growth[key]:+.0f}")
    row("train img/s, stream", [f"{runs[label]['train_stream']['img_per_s']:.0f}" for label in labels])
    row("train img/s, memory", [f"{runs[label]['train_memory']['img_per_s']:.0f}" for label in labels])


if __name__ == "__main__":
    main()
