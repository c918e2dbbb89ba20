"""Throughput of the GAN train step under MirroredStrategy: img/s over a few hundred steps.

On a GPU machine (every visible GPU is a replica):

    python benchmarks/gpu_mirrored.py                           # mirrored, mixed_float16, 300 steps
    python benchmarks/gpu_mirrored.py --distribute none         # one GPU, for the scaling factor
    CUDA_VISIBLE_DEVICES=0 python benchmarks/gpu_mirrored.py    # mirrored over one GPU

On a CPU-only machine, ``--cpu-devices N`` splits the CPU into N logical devices (the way the tests
do), which shows the overhead of the strategy rather than a speed-up. Random uint8 images stand in
for data (throughput does not depend on the pixels); the step is the same compiled train step the
train stage runs, with the global batch split across replicas. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distribute", default="mirrored", choices=["none", "mirrored"])
    parser.add_argument(
        "--precision", default="mixed_float16", choices=["float32", "mixed_float16", "mixed_bfloat16", "auto"]
    )
    parser.add_argument("--steps", type=int, default=300, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps (tracing, autotuning)")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch size")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--latent-dim", type=int, default=128)
    parser.add_argument("--diffaugment", default="color,translation,cutout")
    parser.add_argument("--cpu-devices", type=int, default=0, help="logical CPU devices (no GPU)")
    args = parser.parse_args()

    if args.cpu_devices:
        os.environ["RESGAN_CPU_DEVICES"] = str(args.cpu_devices)
    import keras
    import numpy as np
    import tensorflow as tf

    from resgan.config import ModelParams, TrainParams
    from resgan.data.pipeline import train_dataset
    from resgan.gan.device import make_strategy, resolve_precision
    from resgan.gan.trainer import GAN, Shapes

    if args.distribute == "none" and args.cpu_devices:
        from resgan.gan.device import split_cpu

        split_cpu(args.cpu_devices)  # same process layout as the mirrored run; the step uses one device
    precision = resolve_precision(args.precision)
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    strategy = make_strategy(args.distribute)
    model = ModelParams(latent_dim=args.latent_dim, width=args.width, conditional=False)
    train = TrainParams(batch_size=args.batch_size, precision=precision, diffaugment=args.diffaugment)
    gan = GAN(
        model, train, Shapes(args.image_size, args.channels), strategy=strategy, global_batch_size=args.batch_size
    )
    images = np.random.default_rng(0).integers(
        0, 256, size=(max(4 * args.batch_size, 1024), args.image_size, args.image_size, args.channels), dtype=np.uint8
    )
    iterator = iter(strategy.experimental_distribute_dataset(train_dataset(images, args.batch_size, seed=0)))

    for _ in range(args.warmup):
        out = gan.train_step(iterator)
    float(out["loss_d"])  # wait for the device
    start = time.perf_counter()
    for _ in range(args.steps):
        out = gan.train_step(iterator)
    losses = {k: float(v) for k, v in out.items()}  # forces the last step to finish
    seconds = time.perf_counter() - start
    if args.distribute == "none":
        devices = [(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0].name]
    else:
        devices = list(strategy.extended.worker_devices)
    print(
        json.dumps(
            {
                "img_per_s": round(args.steps * args.batch_size / seconds, 1),
                "steps": args.steps,
                "seconds": round(seconds, 2),
                "global_batch": args.batch_size,
                "replicas": strategy.num_replicas_in_sync,
                "devices": devices,
                "precision": precision,
                "distribute": args.distribute,
                "image_size": args.image_size,
                "width": args.width,
                "tensorflow": tf.__version__,
                "final": losses,
            }
        )
    )


if __name__ == "__main__":
    main()
