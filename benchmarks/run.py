"""``make bench``: speed and memory figures of resgan -> benchmarks/results/latest.json and a table.

    python -m benchmarks.run            # the full run (8-9 minutes on 2 idle cores; 15 under load)
    python -m benchmarks.run --quick    # a smoke run: tiny sizes, one repetition (results/quick.json)

Absolute times on a shared machine drift, so every speed also comes as a ratio to something
measured in the same process: the dense matmul limit (MFU), float32 (the bf16 speedup), the
textbook baseline, a bare interpreter or ``dvc --version`` (start-up). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_MODEL = {"width": 64, "d_width": 0}  # the reference: 32x32x1, G and D width 64


@dataclass(frozen=True)
class Sizes:
    rounds: int  # repetitions of every in-process figure (after a warm-up)
    matmul_n: int  # side of the square matrices of the matmul limit
    default_steps: int  # timed train steps per round, default model
    reference_steps: int  # timed train steps per round, reference model (4x the FLOPs)
    train_images: int  # images behind the in-process training pipelines
    draw_num: int  # images per in-process draw() round
    generate_num: int  # resgan generate --num; these samples are then evaluated
    generate_runs: int
    eval_train: int  # real train / test images (MNIST: 60,000 / 10,000)
    eval_test: int
    eval_runs: int
    startup_runs: int
    dvc_runs: int
    rss_train_steps: int  # steps of the train stage whose peak memory is measured
    model: dict = field(default_factory=dict)  # overrides of params.yaml's model (quick: tiny)
    train: dict = field(default_factory=dict)  # overrides of params.yaml's train
    evaluate: dict = field(default_factory=dict)  # overrides of params.yaml's evaluate
    reference: dict = field(default_factory=lambda: dict(REFERENCE_MODEL))


FULL = Sizes(
    rounds=5,
    matmul_n=2048,
    default_steps=12,
    reference_steps=4,
    train_images=2048,
    draw_num=2048,
    generate_num=10_000,
    generate_runs=3,
    eval_train=60_000,
    eval_test=10_000,
    eval_runs=3,
    startup_runs=5,
    dvc_runs=3,
    rss_train_steps=30,
)
QUICK = Sizes(
    rounds=1,
    matmul_n=512,
    default_steps=2,
    reference_steps=1,
    train_images=256,
    draw_num=256,
    generate_num=500,
    generate_runs=1,
    eval_train=2000,
    eval_test=500,
    eval_runs=1,
    startup_runs=1,
    dvc_runs=1,
    rss_train_steps=4,
    model={"width": 8, "latent_dim": 32},
    train={"batch_size": 16},
    evaluate={"kid_subsets": 5, "kid_subset_size": 100, "ssim_pairs": 50, "max_real": 500},
    reference={"width": 16, "d_width": 0},
)

_T0 = time.perf_counter()
# [elapsed s, this process's CPU s, 1-minute load average, message]: where the time went, how busy the machine was
_LOG: list[list] = []


def log(message: str) -> None:
    elapsed = time.perf_counter() - _T0
    _LOG.append([round(elapsed, 1), round(time.process_time(), 1), round(os.getloadavg()[0], 2), message.strip()])
    print(f"[{elapsed:5.0f} s] {message}", file=sys.stderr, flush=True)


def _params(sizes: Sizes, model: dict | None = None, train: dict | None = None):
    """The project's params.yaml with the run's overrides, as typed Params."""
    import yaml

    from resgan.config import parse_params, resolve_width

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in (
        ("model", {**sizes.model, **(model or {})}),
        ("train", {**sizes.train, **(train or {})}),
        ("evaluate", sizes.evaluate),
    ):
        raw.setdefault(section, {}).update(values)
    # model.width: auto as the train stage's plan settles it for these digits (the networks are built here)
    raw["model"]["width"] = resolve_width(raw["model"]["width"], raw["prepare"]["image_size"], sizes.train_images)
    return parse_params(raw)


def _r(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}") if x == x else x


# ---------------------------------------------------------------- in-process: items 1-3 and draw()


def in_process(sizes: Sizes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Matmul limit, training steps, the textbook baseline and draw(), measured in shared rounds.
    Returns (results, state) where state holds objects later sections reuse."""
    from benchmarks import compute
    from benchmarks.processes import mnist_like
    from resgan.gan.device import resolve_precision
    from resgan.nn.flops import model_flops
    from resgan.nn.networks import build_generator

    auto = resolve_precision("auto")
    # The training figures do the textbook step's maths: no DiffAugment (the textbook step has none),
    # so "ours / textbook" compares the two ways of running the same updates. What params.yaml's
    # DiffAugment costs on top is measured beside them (ours_default_diffaugment).
    same_maths = {"diffaugment": ""}
    default = _params(sizes, train=same_maths)
    reference = _params(sizes, sizes.reference, train=same_maths)
    with_augment = _params(sizes)
    size, channels = default.prepare.image_size, default.prepare.channels
    images, _ = mnist_like(sizes.train_images, size)
    if channels == 3:
        images = images.repeat(3, axis=-1)

    log("building models")
    mm = {dtype: compute.Matmul(dtype, sizes.matmul_n) for dtype in ("float32", "bfloat16")}
    models = {"default": (default, sizes.default_steps), "reference": (reference, sizes.reference_steps)}
    ours = {
        (name, precision): compute.OursTrain(f"ours_{name}_{precision}", p, precision, images, steps)
        for name, (p, steps) in models.items()
        for precision in ("float32", "mixed_bfloat16")
    }
    augmented = compute.OursTrain(f"ours_default_diffaugment_{auto}", with_augment, auto, images, sizes.default_steps)
    textbook = {name: compute.Textbook(f"textbook_{name}", p, images, steps) for name, (p, steps) in models.items()}
    with compute.policy("float32"):
        generator = build_generator(
            default.model.latent_dim, default.model.width, size, channels, default.model.blocks_per_resolution
        )
    draw = compute.Draw("draw", generator, sizes.draw_num)
    fid = _fid_measure(default, ours[("default", auto)], images, size, channels)
    benches = [*mm.values(), *ours.values(), augmented, *textbook.values(), draw, fid]
    log(f"measuring {len(benches)} in-process benchmarks, {sizes.rounds} round(s) after a warm-up")
    sec = compute.run_rounds(benches, sizes.rounds, log)
    rounds = sizes.rounds

    def flops_per_s(bench, r: int) -> float:
        return bench.work / sec[bench.name][r]

    limit = {"float32": mm["float32"], "mixed_bfloat16": mm["bfloat16"]}
    results: dict[str, Any] = {
        "matmul": {
            "n": sizes.matmul_n,
            "chain": mm["float32"].chain,
            "float32_gflops": _r(compute.rate(mm["float32"], sec[mm["float32"].name]) / 1e9),
            "bfloat16_gflops": _r(compute.rate(mm["bfloat16"], sec[mm["bfloat16"].name]) / 1e9),
            "bfloat16_over_float32": _r(
                compute.per_round(lambda r: flops_per_s(mm["bfloat16"], r) / flops_per_s(mm["float32"], r), rounds)
            ),
            "runs_s": {dtype: [round(s, 4) for s in sec[b.name]] for dtype, b in mm.items()},
        },
        "training": {},
        "baseline": {},
    }
    for name, (p, steps) in models.items():
        first = ours[(name, "float32")]
        g, d = first.gan.generator, first.gan.discriminator
        entry: dict[str, Any] = {
            "model": {
                "image_size": size,
                "channels": channels,
                "width": p.model.width,
                "d_width": p.model.d_width or p.model.width,
                "latent_dim": p.model.latent_dim,
                "blocks_per_resolution": p.model.blocks_per_resolution,
                "spectral_norm": p.model.spectral_norm,
            },
            "train": {
                "batch_size": p.train.batch_size,
                "d_steps": p.train.d_steps,
                "loss": p.train.loss,
                "diffaugment": p.train.diffaugment,
            },
            "g_forward_flops": model_flops(g),
            "d_forward_flops": model_flops(d),
            "step_flops": first.step_flops,
            "timed_steps_per_round": steps,
            "rounds": rounds,
            "auto_precision": auto,
        }
        for precision in ("float32", "mixed_bfloat16"):
            bench = ours[(name, precision)]
            runs = sec[bench.name]
            img_s = compute.rate(bench, runs)
            entry[precision] = {
                "img_per_s": _r(img_s),
                "step_ms": _r(1000 * compute.median(runs) / steps),
                "gflops": _r(img_s / bench.batch * bench.step_flops / 1e9),
                "mfu": _r(
                    compute.per_round(
                        lambda r, b=bench: (b.step_flops * b.steps / sec[b.name][r]) / flops_per_s(limit[precision], r),
                        rounds,
                    )
                ),
                "runs_s": [round(s, 3) for s in runs],
            }
        entry["bf16_over_float32"] = _r(
            compute.per_round(
                lambda r: sec[ours[(name, "float32")].name][r] / sec[ours[(name, "mixed_bfloat16")].name][r], rounds
            )
        )
        entry["auto"] = entry[auto] if auto in entry else None
        results["training"][name] = entry

        tb = textbook[name]
        tb_runs = sec[tb.name]
        ours_auto = ours[(name, auto)] if (name, auto) in ours else ours[(name, "float32")]

        def ratio(mine, r: int, tb=tb) -> float:
            return (mine.work / sec[mine.name][r]) / (tb.work / sec[tb.name][r])

        tb_img_s = compute.rate(tb, tb_runs)
        results["baseline"][name] = {
            "img_per_s": _r(tb_img_s),
            "precision": "float32",
            "timed_steps_per_round": tb.steps,
            "gflops": _r(tb_img_s / tb.batch * first.step_flops / 1e9),
            "mfu": _r(
                compute.per_round(
                    lambda r: (first.step_flops * tb.steps / sec[tb.name][r]) / flops_per_s(mm["float32"], r), rounds
                )
            ),
            "ours_auto_over_textbook": _r(compute.per_round(lambda r: ratio(ours_auto, r), rounds)),
            "ours_float32_over_textbook": _r(compute.per_round(lambda r: ratio(ours[(name, "float32")], r), rounds)),
            "runs_s": [round(s, 3) for s in tb_runs],
        }
    plain = ours[("default", auto)]
    results["training"]["default"]["diffaugment_cost"] = {
        "policy": with_augment.train.diffaugment,
        "precision": auto,
        "img_per_s": _r(compute.rate(augmented, sec[augmented.name])),
        "step_time_over_without": _r(compute.per_round(lambda r: sec[augmented.name][r] / sec[plain.name][r], rounds)),
        "runs_s": [round(s, 3) for s in sec[augmented.name]],
    }
    g_flops = model_flops(generator)
    draw_img_s = compute.rate(draw, sec[draw.name])
    results["sampling"] = {
        "in_process": {
            "num": sizes.draw_num,
            "batch_size": draw.batch_size,
            "img_per_s": _r(draw_img_s),
            "g_forward_flops": g_flops,
            "gflops": _r(draw_img_s * g_flops / 1e9),
            "fraction_of_float32_limit": _r(
                compute.per_round(
                    lambda r: (g_flops * draw.work / sec[draw.name][r]) / flops_per_s(mm["float32"], r), rounds
                )
            ),
            "runs_s": [round(s, 3) for s in sec[draw.name]],
        }
    }
    # FID over training: one measurement against the train.eval_every default-model steps it follows.
    step_s = compute.median(sec[plain.name]) / sizes.default_steps
    between = default.train.eval_every * step_s
    measure_s = compute.median(sec[fid.name])
    results["training"]["default"]["fid_over_training"] = {
        "eval_every": default.train.eval_every,
        "eval_num": default.train.eval_num,
        "precision": auto,
        "measure_s": _r(measure_s),
        "train_s_between": _r(between),
        "fraction_of_training": _r(
            compute.per_round(
                lambda r: (
                    sec[fid.name][r]
                    / (default.train.eval_every * sec[plain.name][r] / sizes.default_steps + sec[fid.name][r])
                ),
                rounds,
            )
        ),
        "runs_s": [round(s, 3) for s in sec[fid.name]],
    }
    state = {"matmul_float32": mm["float32"], "generator": generator, "default": default, "g_flops": g_flops}
    return results, state


def _fid_measure(params, trainer, images, size: int, channels: int):
    """FID over training as the train stage runs it, for the default model: the untrained domain
    classifier of the classifier params (its weights do not change the time) as the features."""
    from benchmarks import compute
    from resgan.metrics.classifier import build_classifier
    from resgan.metrics.evaluation import reference_set

    folder = Path(tempfile.mkdtemp(prefix="resgan-bench-fid-"))
    cp = params.classifier
    with compute.policy("float32"):
        build_classifier((size, size, channels), 10, cp.width, cp.feature_dim).save(folder / "classifier.keras")
    reference, _ = reference_set(images, None, params.evaluate)
    return compute.FidMeasure("fid_over_training", trainer.gan, params, reference, folder / "classifier.keras")


# ---------------------------------------------------------------- commands: items 4-7


def commands(sizes: Sizes, state: dict[str, Any], work: Path, results: dict[str, Any]) -> None:
    import keras

    from benchmarks import compute, processes
    from resgan.nn.flops import model_flops

    mm = state["matmul_float32"]
    default = state["default"]
    size, channels = default.prepare.image_size, default.prepare.channels

    log(f"start-up: resgan --help x{sizes.startup_runs}")
    start = processes.startup(sizes.startup_runs)
    help_s, python_s = compute.median(start["help"]), compute.median(start["python"])
    results["startup"] = {
        "resgan_help_s": _r(help_s),
        "python_pass_s": _r(python_s),
        "help_over_python": _r(help_s / python_s),
        "runs_s": {k: [round(s, 3) for s in v] for k, v in start.items()},
    }

    log(f"sampling: resgan generate --num {sizes.generate_num} x{sizes.generate_runs} (+1 warm-up)")
    generator_path = work / "generator.keras"
    state["generator"].save(generator_path)
    samples_path = work / "samples.npz"
    gen_s, fractions = [], []
    g_flops = state["g_flops"]
    for i in range(sizes.generate_runs + 1):
        mm_s = mm.measure()  # the limit now, next to this run
        seconds = processes.generate(generator_path, samples_path, sizes.generate_num)
        if i:
            gen_s.append(seconds)
            fractions.append((g_flops * sizes.generate_num / seconds) / (mm.work / mm_s))
    gs = compute.median(gen_s)
    in_proc = results["sampling"]["in_process"]["img_per_s"]
    results["sampling"]["generate"] = {
        "num": sizes.generate_num,
        "seconds": _r(gs),
        "img_per_s": _r(sizes.generate_num / gs),
        "gflops": _r(g_flops * sizes.generate_num / gs / 1e9),
        "fraction_of_float32_limit": _r(compute.median(fractions)),
        "over_in_process_draw": _r(sizes.generate_num / gs / in_proc),
        "runs_s": [round(s, 3) for s in gen_s],
    }

    log(
        f"data: MNIST-size prepared data ({sizes.eval_train:,} train, {sizes.eval_test:,} test, "
        f"{size}x{size}x{channels})"
    )
    data = processes.write_prepared(work / "prepared", sizes.eval_train, sizes.eval_test, size)
    overrides = {"model": sizes.model, "train": sizes.train, "evaluate": sizes.evaluate}
    processes.warm_imports()

    log(f"evaluation: evaluate stage on {sizes.generate_num:,} samples x{sizes.eval_runs}")
    eval_params = processes.write_params(work / "eval-params.yaml", overrides)
    classifier_path = processes.write_classifier(work / "classifier.keras", (size, size, channels), default)
    classifier_flops = model_flops(keras.models.load_model(classifier_path, compile=False))
    runs = []
    for i in range(sizes.eval_runs):
        mm_s = mm.measure()
        seconds, child = processes.stage_child(
            "evaluate",
            work,
            [
                "--params",
                str(eval_params),
                "--data",
                str(data),
                "--samples",
                str(samples_path),
                "--classifier",
                str(classifier_path),
                "--out",
                str(work / f"eval-{i}"),
            ],
        )
        runs.append(
            {
                "wall_s": seconds,
                "stage_s": child["stage_s"],
                "max_rss_mib": child["max_rss_mib"],
                "limit_flops_per_s": mm.work / mm_s,
                **child["result"],
            }
        )
    results["evaluation"] = _evaluation(runs, classifier_flops)
    results["memory"] = {"evaluate_peak_rss_mib": round(max(r["max_rss_mib"] for r in runs), 1)}

    log(f"memory: train stage, {sizes.rss_train_steps} steps on {sizes.eval_train:,} images")
    steps = sizes.rss_train_steps
    train_params = processes.write_params(
        work / "train-params.yaml",
        {
            **overrides,
            "train": {
                **sizes.train,
                "steps": steps,
                "checkpoint_every": steps,
                "sample_every": steps,
                "log_every": max(1, steps // 3),
            },
        },
    )
    seconds, child = processes.stage_child(
        "train", work, ["--params", str(train_params), "--data", str(data), "--out", str(work / "train-run")]
    )
    figures = child["result"]
    results["memory"].update(
        {
            "train_peak_rss_mib": round(child["max_rss_mib"], 1),
            "train_steps": steps,
            "train_images": sizes.eval_train,
            "train_wall_s": _r(seconds),
            "train_precision": figures.get("precision"),
            "train_stage_img_per_s": figures.get("img_per_s"),
        }
    )

    log(f"start-up: tiny pipeline, dvc repro once, then x{sizes.dvc_runs} with nothing to do")
    dvc = processes.dvc_noop(work, sizes.dvc_runs)
    noop, version = compute.median(dvc["noop"]), compute.median(dvc["version"])
    results["startup"].update(
        {
            "dvc_repro_noop_s": _r(noop),
            "dvc_version_s": _r(version),
            "noop_over_dvc_version": _r(noop / version),
            "dvc_first_repro_s": _r(dvc["first_repro_s"]),
            "dvc_runs_s": {
                "noop": [round(s, 3) for s in dvc["noop"]],
                "version": [round(s, 3) for s in dvc["version"]],
            },
        }
    )


def _evaluation(runs: list[dict[str, Any]], classifier_flops: int) -> dict[str, Any]:
    from benchmarks.compute import median

    def med(key: str) -> float:
        return median([float(r.get(key, 0.0)) for r in runs])

    n_images = runs[0]["n_generated"] + runs[0]["n_real_reference"] + runs[0]["n_real_test"]
    features_s = med("time_features_s")
    parts = {  # seconds, medians over runs
        "features_s": features_s,
        "fid_s": med("time_fid_s"),
        "kid_s": med("time_kid_s"),
        "is_s": med("time_is_s"),
        "ssim_diversity_s": median([r.get("time_ssim_s", 0.0) - r.get("time_memorization_s", 0.0) for r in runs]),
        "memorization_s": med("time_memorization_s"),
        "precision_recall_s": med("time_pr_s"),
    }
    stage_s, wall_s = med("stage_s"), med("wall_s")
    return {
        "n_generated": runs[0]["n_generated"],
        "n_real_reference": runs[0]["n_real_reference"],
        "n_real_test": runs[0]["n_real_test"],
        "features": runs[0].get("features"),
        "runs": len(runs),
        "wall_s": _r(wall_s),
        "stage_s": _r(stage_s),
        "metrics_total_s": _r(med("time_total_s")),
        **{k: _r(v) for k, v in parts.items()},
        "other_s": _r(stage_s - sum(parts.values())),  # imports, loading, plots, the test split's memorization
        "share_of_stage": {
            k.removesuffix("_s"): _r(v / stage_s)
            for k, v in {**parts, "other_s": stage_s - sum(parts.values())}.items()
        },
        "features_img_per_s": _r(n_images / features_s) if features_s else None,
        "features_fraction_of_float32_limit": _r(
            median([classifier_flops * n_images / r["time_features_s"] / r["limit_flops_per_s"] for r in runs])
        )
        if features_s
        else None,
        "classifier_forward_flops": classifier_flops,
        "runs_s": [round(r["wall_s"], 2) for r in runs],
    }


# ---------------------------------------------------------------- targets, table, main


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    training, startup = results["training"], results.get("startup", {})
    ref = training["reference"]
    auto = ref["auto_precision"]
    rows = [
        {
            "name": f"reference MFU ({auto}, vs same-process {'bf16' if 'bfloat16' in auto else 'f32'} matmul)",
            "value": ref[auto]["mfu"],
            "target": ">= 0.70",
            "met": ref[auto]["mfu"] >= 0.70,
        },
        *(
            {
                "name": f"{name} mixed_bfloat16 / float32 img/s",
                "value": training[name]["bf16_over_float32"],
                "target": ">= 1.6",
                "met": training[name]["bf16_over_float32"] >= 1.6,
            }
            for name in ("reference", "default")
        ),
        {
            "name": "train.precision auto picks mixed_bfloat16 (BF16 CPU)",
            "value": auto,
            "target": "mixed_bfloat16",
            "met": auto == "mixed_bfloat16",
        },
        *(
            {
                "name": f"{name}: ours (auto) / textbook Keras img/s",
                "value": results["baseline"][name]["ours_auto_over_textbook"],
                "target": ">= 1.5",
                "met": results["baseline"][name]["ours_auto_over_textbook"] >= 1.5,
            }
            for name in ("default", "reference")
        ),
    ]
    fot = training["default"].get("fid_over_training")
    if fot:
        rows.append(
            {
                "name": f"FID over training, share of training time (every {fot['eval_every']} steps)",
                "value": fot["fraction_of_training"],
                "target": "<= 0.10",
                "met": fot["fraction_of_training"] <= 0.10,
            }
        )
    if "resgan_help_s" in startup:
        rows.append(
            {
                "name": "resgan --help s",
                "value": startup["resgan_help_s"],
                "target": "< 0.5",
                "met": startup["resgan_help_s"] < 0.5,
            }
        )
    if "dvc_repro_noop_s" in startup:
        rows.append(
            {
                "name": "dvc repro, nothing to do, s",
                "value": startup["dvc_repro_noop_s"],
                "target": "< 3",
                "met": startup["dvc_repro_noop_s"] < 3,
            }
        )
    return rows


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def table(results: dict[str, Any]):
    from rich.table import Table

    t = Table(title=f"resgan benchmarks ({'quick' if results['meta']['quick'] else 'full'})", show_lines=False)
    for column, justify in (("figure", "left"), ("value", "right"), ("relative (same process)", "left")):
        t.add_column(column, justify=justify)
    mm = results["matmul"]
    t.add_row("matmul float32 GFLOP/s", _fmt(mm["float32_gflops"]), f"n={mm['n']}")
    t.add_row("matmul bfloat16 GFLOP/s", _fmt(mm["bfloat16_gflops"]), f"{_fmt(mm['bfloat16_over_float32'])}x float32")
    for name, entry in results["training"].items():
        t.add_section()
        m = entry["model"]
        t.add_row(
            f"{name} model: {m['image_size']}x{m['image_size']}x{m['channels']}, width {m['width']}/"
            f"{m['d_width']}, batch {entry['train']['batch_size']}",
            f"{entry['step_flops'] / 1e9:,.2f}",
            "GFLOP per train step (model FLOPs)",
        )
        for precision in ("float32", "mixed_bfloat16"):
            e = entry[precision]
            mark = " (auto)" if precision == entry["auto_precision"] else ""
            t.add_row(
                f"  train {precision}{mark} img/s",
                _fmt(e["img_per_s"]),
                f"MFU {e['mfu']:.0%} ({_fmt(e['gflops'])} GFLOP/s)",
            )
        t.add_row("  bf16 / float32", _fmt(entry["bf16_over_float32"]), "same-round ratio")
        if "diffaugment_cost" in entry:
            c = entry["diffaugment_cost"]
            t.add_row(
                f"  with DiffAugment ({c['policy']}), {c['precision']} img/s",
                _fmt(c["img_per_s"]),
                f"a step takes {_fmt(c['step_time_over_without'])}x as long as without (above)",
            )
        if "fid_over_training" in entry:
            f = entry["fid_over_training"]
            t.add_row(
                f"  FID over training ({f['eval_num']} images) s",
                _fmt(f["measure_s"]),
                f"{f['fraction_of_training']:.1%} of training at one every {f['eval_every']} steps "
                f"({_fmt(f['train_s_between'])} s of steps)",
            )
        b = results["baseline"][name]
        t.add_row(
            "  textbook Keras fit, float32 img/s",
            _fmt(b["img_per_s"]),
            f"MFU {b['mfu']:.0%}; ours auto {_fmt(b['ours_auto_over_textbook'])}x, "
            f"ours float32 {_fmt(b['ours_float32_over_textbook'])}x",
        )
    t.add_section()
    s = results["sampling"]
    if "generate" in s:
        g = s["generate"]
        t.add_row(
            f"resgan generate --num {g['num']:,} s",
            _fmt(g["seconds"]),
            f"{_fmt(g['img_per_s'])} img/s; {g['fraction_of_float32_limit']:.1%} of G forward limit",
        )
    ip = s["in_process"]
    t.add_row(
        "draw() in process img/s",
        _fmt(ip["img_per_s"]),
        f"{ip['fraction_of_float32_limit']:.0%} of G forward limit (float32)",
    )
    if "evaluation" in results:
        e = results["evaluation"]
        t.add_section()
        t.add_row(
            f"evaluate stage, {e['n_generated']:,} samples, s",
            _fmt(e["stage_s"]),
            f"process wall {_fmt(e['wall_s'])} s",
        )
        for key, label in (
            ("features_s", "features"),
            ("fid_s", "FID"),
            ("kid_s", "KID"),
            ("is_s", "IS"),
            ("ssim_diversity_s", "SSIM diversity"),
            ("memorization_s", "memorization"),
            ("precision_recall_s", "precision/recall"),
            ("other_s", "other (load, plots, ...)"),
        ):
            share = e["share_of_stage"].get(key.removesuffix("_s"))
            t.add_row(f"  {label} s", _fmt(e[key]), f"{share:.0%} of stage" if share is not None else "")
    st = results.get("startup", {})
    if st:
        t.add_section()
        t.add_row("resgan --help s", _fmt(st["resgan_help_s"]), f"{_fmt(st['help_over_python'])}x `python -c pass`")
        if "dvc_repro_noop_s" in st:
            t.add_row(
                "dvc repro, nothing to do, s",
                _fmt(st["dvc_repro_noop_s"]),
                f"{_fmt(st['noop_over_dvc_version'])}x `dvc --version`",
            )
    mem = results.get("memory", {})
    if mem:
        t.add_section()
        if "train_peak_rss_mib" in mem:
            t.add_row(
                "peak RSS, train stage, MiB",
                _fmt(mem["train_peak_rss_mib"]),
                f"{mem['train_steps']} steps, {mem['train_images']:,} images",
            )
        t.add_row("peak RSS, evaluate stage, MiB", _fmt(mem["evaluate_peak_rss_mib"]), "")
    t.add_section()
    for row in results["targets"]:
        t.add_row(
            f"target: {row['name']}", _fmt(row["value"]), f"{row['target']}: {'met' if row['met'] else 'NOT met'}"
        )
    return t


def meta(quick: bool, sizes: Sizes) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from resgan import tracking
    from resgan.gan.device import cpu_supports_bf16

    model_name = ""
    try:
        model_name = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu": model_name or platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_supports_bf16(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "git_commit": tracking.git_commit(ROOT),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "sizes": asdict(sizes),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: checks the script works")
    parser.add_argument(
        "--out", type=Path, help="JSON output (default: benchmarks/results/latest.json, or quick.json with --quick)"
    )
    parser.add_argument("--rounds", type=int, help="repetitions of the in-process figures (default 5; quick 1)")
    parser.add_argument("--eval-runs", type=int, help="runs of the evaluate stage (default 3; about 1 minute each)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = replace(sizes, rounds=args.rounds)
    if args.eval_runs:
        sizes = replace(sizes, eval_runs=args.eval_runs)
    out = args.out or ROOT / "benchmarks" / "results" / ("quick.json" if args.quick else "latest.json")

    from rich.console import Console

    from resgan import files

    results: dict[str, Any] = {"meta": meta(args.quick, sizes)}
    log(f"load average {results['meta']['load_average_start']} on {os.cpu_count()} CPUs")
    compute_results, state = in_process(sizes)
    results.update(compute_results)
    with tempfile.TemporaryDirectory(prefix="resgan-bench-") as tmp:
        commands(sizes, state, Path(tmp), results)
    results["targets"] = targets(results)
    results["meta"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["meta"]["total_s"] = round(time.perf_counter() - _T0, 1)
    results["meta"]["log"] = _LOG
    files.write_json(out, results)
    Console().print(table(results))
    print(
        f"load average: start {results['meta']['load_average_start']}, end {results['meta']['load_average_end']}; "
        f"{results['meta']['total_s']:.0f} s; written {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}"
    )
    return results


if __name__ == "__main__":
    main()
