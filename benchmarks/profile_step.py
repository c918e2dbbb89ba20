"""Where a train step's CPU time goes, by TensorFlow op type: ``make bench``'s train step under the
TensorFlow profiler, its trace read back and summed per op type and per kind of work.

    python -m benchmarks.profile_step                       # the default model, mixed_bfloat16, 20 steps
    python -m benchmarks.profile_step --model reference --precision float32

It prints figures and asserts nothing. The shares are of the time the compute threads spent in ops
(both cores together), not of wall time. ``convolutions`` and ``matmuls`` are the FLOPs the MFU
counts; ``element-wise`` is the memory-bound work around them (activations, their gradients, the
residual additions, casts, the optimizer's updates).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import sys
import tempfile
import time

from benchmarks import compute, run

# Op types (the profiler's display name) by kind of work; the first pattern that matches wins.
KINDS = [
    ("convolutions", re.compile(r"Conv|Depthwise")),
    ("matmuls", re.compile(r"MatMul|Einsum")),
    ("batch norm", re.compile(r"BatchNorm")),
    ("pooling and resizing", re.compile(r"Pool|Resize|Upsample")),
    ("optimizer", re.compile(r"^Resource(Apply|Scatter)|^Assign|ReadVariable")),
    ("reductions", re.compile(r"^(Sum|Mean|Max|Min|Prod|All|Any|ArgMax|L2Loss)$")),
    (
        "element-wise",
        re.compile(
            r"Relu|Elu|Tanh|Sigmoid|Add|Sub|Mul|Div|Neg|Square|Sqrt|Rsqrt|Exp|Log|Cast|"
            r"Maximum|Minimum|Select|Greater|Less|Equal|Abs|Sign|Pow|BiasAdd|Identity|"
            r"Fill|ZerosLike|OnesLike|Tile|Pad|Reshape|Transpose|ConcatV2|Split|Slice|Pack"
        ),
    ),
]


def kind_of(op_type: str) -> str:
    bare = op_type.removeprefix("_Mkl").removeprefix("Native").removeprefix("_")
    for kind, pattern in KINDS:
        if pattern.search(bare):
            return kind
    return "other"


def op_times(space) -> collections.Counter:
    """Seconds per op type on the host's TensorFlow compute threads of an ``XSpace``: the events
    named ``name:Type`` (TensorFlow ops); executor and thread-pool events around them are left out."""
    totals: collections.Counter = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                meta = plane.event_metadata[event.metadata_id]
                if ":" in meta.name and meta.display_name:
                    totals[meta.display_name] += event.duration_ps * 1e-12
    return totals


def traced(call, times: int) -> tuple[float, collections.Counter]:
    """(wall seconds, op seconds per type) of ``call()`` run ``times`` times under the TensorFlow
    profiler; its trace is written to a temporary folder and read back."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    folder = tempfile.mkdtemp(prefix="resgan-profile-")
    try:
        tf.profiler.experimental.start(folder)
        try:
            start = time.perf_counter()
            for _ in range(times):
                call()
            wall = time.perf_counter() - start
        finally:
            tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)[0], "rb") as trace:
            space.ParseFromString(trace.read())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return wall, op_times(space)


def profile(model: str, precision: str, steps: int) -> tuple[float, collections.Counter]:
    """:func:`traced` for ``steps`` of ``make bench``'s train step (no DiffAugment, as there)."""
    from benchmarks.processes import mnist_like

    sizes = run.FULL
    params = run._params(sizes, sizes.reference if model == "reference" else None, train={"diffaugment": ""})
    images, _ = mnist_like(sizes.train_images, params.prepare.image_size)
    bench = compute.OursTrain(f"{model}_{precision}", params, precision, images, steps)
    bench.warm()
    with compute.policy(precision):
        return traced(bench._step, steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["default", "reference"], default="default")
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="mixed_bfloat16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--top", type=int, default=15, help="op types to list")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    wall, times = profile(args.model, args.precision, args.steps)
    total = sum(times.values())
    if not total:
        sys.exit("the profiler's trace holds no TensorFlow ops on the compute threads")
    print(
        f"{args.model} model, {args.precision}, {args.steps} steps: {wall:.2f} s wall, "
        f"{total:.2f} s in ops on the compute threads (load {os.getloadavg()[0]:.1f})"
    )
    kinds: collections.Counter = collections.Counter()
    for op_type, seconds in times.items():
        kinds[kind_of(op_type)] += seconds
    print("\nby kind of work")
    for kind, seconds in kinds.most_common():
        print(f"  {kind:<22} {seconds / total:6.1%}")
    print(f"\nthe {args.top} costliest op types")
    for op_type, seconds in times.most_common(args.top):
        print(f"  {op_type:<44} {seconds / total:6.1%}  ({kind_of(op_type)})")


if __name__ == "__main__":
    sys.exit(main())
