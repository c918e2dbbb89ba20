"""Where training runs: the mixed-precision policy, the distribution strategy and the chief process.

The device behind ``train.precision: auto`` (:func:`accelerator`; the train stage's plan settles it)
and ``train.distribute`` (``none``, ``mirrored``, ``multi_worker``) are resolved here; the GAN and the
train stage take the results. In a multi-worker cluster only the chief writes checkpoints and talks to MLflow, by TensorFlow's convention: the task of type
``chief``, or worker 0 when the cluster has no chief.

TensorFlow is imported inside the functions that use it: :func:`chief_from_tf_config` answers before
TensorFlow loads, so the train stage can check the tracking store first (a store that is down fails in
a second, with one line of output).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from resgan.errors import ResganError

if TYPE_CHECKING:
    import tensorflow as tf


def cpu_supports_bf16() -> bool:
    """True when the CPU has AVX512_BF16 or AMX-BF16 instructions (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def accelerator() -> str:
    """What trains: ``gpu:<major compute capability>`` for the first GPU, else ``cpu:bf16`` on a CPU with
    BF16 instructions, else ``cpu`` (the fact :func:`resgan.gan.plan.precision_for` settles ``auto`` from)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"gpu:{(details.get('compute_capability') or (0, 0))[0]}"
    return "cpu:bf16" if cpu_supports_bf16() else "cpu"


def resolve_precision(precision: str) -> str:
    """``auto`` as the train stage's plan settles it on this machine (:func:`resgan.gan.plan.precision_for`);
    any other value as it is."""
    if precision != "auto":
        return precision
    from resgan.gan.plan import precision_for

    return precision_for(accelerator()).value


def make_strategy(distribute: str) -> tf.distribute.Strategy:
    """``none``: the default strategy (one device); ``mirrored``: every local GPU, or every logical
    CPU device when there is no GPU (see :func:`split_cpu`); ``multi_worker``: workers from the
    standard ``TF_CONFIG``."""
    import tensorflow as tf

    if distribute == "mirrored":
        split_cpu(int(os.environ.get("RESGAN_CPU_DEVICES") or 0))
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if distribute == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ResganError("train.distribute: multi_worker needs TF_CONFIG describing the cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def split_cpu(count: int) -> None:
    """Split the CPU into ``count`` logical devices (``RESGAN_CPU_DEVICES``, for trying ``mirrored``
    without GPUs); nothing for ``count`` < 2 or when there are GPUs. Must run before TensorFlow
    initialises its devices."""
    import tensorflow as tf

    if count < 2 or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:
        raise ResganError(
            f"RESGAN_CPU_DEVICES={count}: TensorFlow's devices are already initialised ({error})"
        ) from None


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """0 for the chief (or worker 0 without a chief) and a single process; 1, 2 ... for the others."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type or task_type == "chief":
        return 0
    jobs = resolver.cluster_spec().jobs
    return int(resolver.task_id) + (1 if "chief" in jobs else 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the one process of a cluster that writes checkpoints and talks to MLflow."""
    return worker_index(strategy) == 0


def chief_from_tf_config(distribute: str) -> bool:
    """The same answer as :func:`is_chief`, from ``TF_CONFIG`` alone: before the strategy exists
    (building a multi-worker strategy waits for the whole cluster)."""
    if distribute != "multi_worker":
        return True
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task, cluster = config.get("task", {}), config.get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        return True  # make_strategy reports a bad TF_CONFIG
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in cluster
