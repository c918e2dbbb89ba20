"""tf.distribute on this CPU machine: MirroredStrategy over 2 logical CPU devices and
MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1.

Logical devices must be configured before TensorFlow initialises its devices, and a multi-worker
cluster needs one process per worker, so the distributed runs happen in child processes: this file
run as a script (``python tests/test_distribute.py <mode> <out>``). The children save the numbers;
the tests compare them here against an independent single-replica reference.

What makes 2 replicas of B/2 comparable to 1 replica of B: DiffAugment off (its draws are per
replica by design), the GAN's own latents (drawn for the global batch, then sliced per replica),
hinge loss (no gradient penalty draws), spectral normalization ON (its power iteration depends on
the weights only, so it must agree across replicas), and the generator's batch norm synchronized
across replicas, which GAN does by itself under more than one replica. A second 2-replica run with
per-replica batch norm is the control that shows the comparison can fail.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
BATCH, STEPS, SEED = 8, 2, 3
CLASSES = 3  # the conditional GAN's
LR, BETA2 = 2e-4, 0.9  # tiny_params' learning rates and Adam's beta2 (beta1 = 0)
# Adam with beta1 = 0 moves a weight at step t by lr * g_t / sqrt(v_t / (1 - beta2^t)), and
# v_t >= (1 - beta2) g_t^2, so by at most lr * sqrt((1 - beta2^t) / (1 - beta2)): lr, then 1.38 lr.
MAX_MOVE = LR * sum(((1 - BETA2**t) / (1 - BETA2)) ** 0.5 for t in range(1, STEPS + 1)) * 1.001
# Measured on this machine: after 2 steps the weights of 1x8 and 2x4 differ by at most 2e-6 (the
# batch-norm moving means; everything else by ~1e-7, float32 round-off and all-reduce order); losses
# and gradient norms by ~2e-7 relative. The tolerances leave a margin of 5x and 100x.
WEIGHT_ATOL, FIGURE_RTOL = 1e-5, 2e-5
# A mean logit near 0 (the conditional GAN's d_fake was -0.003) differs by float32 round-off of the
# logits it averages (2.4e-7 measured), which is no small fraction of it: an absolute floor as well.
FIGURE_ATOL = 1e-6
# Exceptions: the biases of the convolutions inside UpBlocks feed a batch norm, which subtracts any
# constant, so their exact gradient is 0. What the tape returns is round-off, and Adam (a step of
# lr * g / (|g| + eps)) turns round-off into steps of up to lr in either direction. They are
# checked against that bound instead.
ZERO_GRADIENT = re.compile(r"up_\d+(_\d+)?/(conv1|conv2|shortcut_conv)/bias$")
TRAIN = {
    "diffaugment": "",
    "loss": "hinge",
    "ema_start": 0,
    "ema_decay": 0.9,
    "batch_size": BATCH,
    "seed": SEED,
    "precision": "float32",
}


def _images(count: int = BATCH * STEPS) -> np.ndarray:
    """Distinct, deterministic real images in [-1, 1]."""
    return np.random.default_rng(11).uniform(-1, 1, size=(count, 16, 16, 1)).astype(np.float32)


def _params(conditional: bool = False, **train):
    sys.path.insert(0, str(HERE))
    from conftest import tiny_params

    return tiny_params(model={"spectral_norm": True, "conditional": conditional}, train={**TRAIN, **train})


def _state(gan) -> dict[str, np.ndarray]:
    out = {}
    for group, model in (("g", gan.generator), ("d", gan.discriminator), ("ema", gan.ema_generator)):
        for i, weight in enumerate(model.weights):
            out[f"{group}/{i}"] = np.asarray(weight.numpy())
    return out


def train_steps(strategy, gan_class=None, steps: int = STEPS, classes: int = 0, **train) -> tuple[dict, list[dict]]:
    """A tiny GAN under ``strategy``: ``steps`` compiled train steps on ``_images()``; the final
    weights and the figures of every step. ``classes`` > 0: a conditional GAN, image i of label i % classes."""
    import keras
    import tensorflow as tf

    from resgan.gan.trainer import GAN, Shapes

    params = _params(conditional=bool(classes), **train)
    keras.utils.set_random_seed(SEED)
    gan = (gan_class or GAN)(
        params.model, params.train, Shapes(16, 1, classes), strategy=strategy, global_batch_size=BATCH
    )
    images = _images()
    labels = (np.arange(len(images)) % classes).astype(np.int32) if classes else None
    dataset = tf.data.Dataset.from_tensor_slices(images if labels is None else (images, labels)).batch(BATCH)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    figures = [{k: float(v) for k, v in gan.train_step(iterator).items()} for _ in range(steps)]
    return _state(gan), figures


# ---- the child processes ----------------------------------------------------------------------------


def _child_mirrored(out: Path) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from resgan.gan.device import make_strategy
    from resgan.gan.diffaugment import diff_augment
    from resgan.gan.trainer import GAN
    from resgan.nn.networks import build_generator

    class PerReplicaBN(GAN):
        """The control: the generator's batch norm per replica (Keras' default)."""

        def _build_generator(self, name="generator"):
            g = build_generator(
                latent_dim=self.model_params.latent_dim,
                width=self.model_params.width,
                image_size=self.shapes.image_size,
                channels=self.shapes.channels,
            )
            g.name = name
            return g

    mirrored = make_strategy("mirrored")
    one, one_figures = train_steps(tf.distribute.get_strategy())
    two, two_figures = train_steps(mirrored)
    control, control_figures = train_steps(mirrored, gan_class=PerReplicaBN)
    # Class-conditional: each replica's labels must stay with its images and its slice of the latents.
    cond_one, cond_one_figures = train_steps(tf.distribute.get_strategy(), classes=CLASSES)
    cond_two, cond_two_figures = train_steps(mirrored, classes=CLASSES)

    # DiffAugment inside strategy.run: the two replicas must not draw the same numbers.
    same = tf.constant(_images(4))
    augmented = tf.function(lambda x: mirrored.run(lambda y: diff_augment(y, "color,translation,cutout"), args=(x,)))(
        same
    )
    per_replica = [np.asarray(t) for t in mirrored.experimental_local_results(augmented)]

    np.savez(
        out,
        **{f"one/{k}": v for k, v in one.items()},
        **{f"two/{k}": v for k, v in two.items()},
        **{f"control/{k}": v for k, v in control.items()},
        **{f"cond_one/{k}": v for k, v in cond_one.items()},
        **{f"cond_two/{k}": v for k, v in cond_two.items()},
        augment_0=per_replica[0],
        augment_1=per_replica[1],
    )
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "replicas": mirrored.num_replicas_in_sync,
                "devices": list(mirrored.extended.worker_devices),
                "one": one_figures,
                "two": two_figures,
                "control": control_figures,
                "cond_one": cond_one_figures,
                "cond_two": cond_two_figures,
            }
        )
    )


def _child_worker(out: Path) -> None:
    """One worker of the cluster in TF_CONFIG: train, then save its weights and a DiffAugment draw
    made in a function traced the way the train step is (``GAN.seed_graph`` first)."""
    import tensorflow as tf

    from resgan.gan.device import chief_from_tf_config, is_chief, make_strategy
    from resgan.gan.diffaugment import diff_augment
    from resgan.gan.trainer import GAN

    strategy = make_strategy("multi_worker")
    captured = {}

    class Keep(GAN):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            captured["gan"] = self

    state, figures = train_steps(strategy, gan_class=Keep)
    gan = captured["gan"]

    @tf.function
    def draw(x):
        gan.seed_graph()
        return diff_augment(x, "color,translation,cutout")

    np.savez(out, augment=np.asarray(draw(tf.constant(_images(4)))), **state)
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "chief": is_chief(strategy),
                "chief_from_tf_config": chief_from_tf_config("multi_worker"),
                "figures": figures,
            }
        )
    )


# ---- the tests --------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    return env


def _child(mode: str, out: Path, env: dict[str, str]) -> subprocess.Popen:
    log = open(out.with_suffix(".log"), "wb")
    return subprocess.Popen(
        [sys.executable, str(Path(__file__)), mode, str(out)], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def _wait(child: subprocess.Popen, out: Path, timeout: float = 600) -> None:
    try:
        child.wait(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, out.with_suffix(".log").read_text()[-4000:]


def _groups(data, prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): data[k] for k in data.files if k.startswith(prefix)}


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def _zero_gradient_keys(classes: int = 0) -> set[str]:
    from resgan.nn.networks import build_generator

    g = build_generator(latent_dim=16, width=8, image_size=16, channels=1, num_classes=classes)
    paths = [w.path for w in g.weights]
    return {f"{group}/{i}" for group in ("g", "ema") for i, path in enumerate(paths) if ZERO_GRADIENT.search(path)}


def _assert_same_update(
    got: dict, want: dict, got_figures: list[dict], want_figures: list[dict], initial: dict, classes: int = 0
) -> None:
    assert got.keys() == want.keys() == initial.keys()
    zero = _zero_gradient_keys(classes)
    assert len(zero) == 2 * 6  # 3 conv biases in each of the 2 UpBlocks, in G and in the EMA
    for key in want:
        if key in zero:  # both moved by round-off only: at most lr per step
            for state in (got, want):
                assert np.max(np.abs(state[key] - initial[key])) <= MAX_MOVE, key
        else:
            np.testing.assert_allclose(got[key], want[key], rtol=0, atol=WEIGHT_ATOL, err_msg=key)
    for step, (g, w) in enumerate(zip(got_figures, want_figures)):
        assert g.keys() == w.keys()
        for key in w:
            np.testing.assert_allclose(
                g[key], w[key], rtol=FIGURE_RTOL, atol=FIGURE_ATOL, err_msg=f"step {step + 1}: {key}"
            )


@pytest.mark.parametrize(
    "cluster, task, chief",
    [
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True),
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
    ],
)
def test_only_the_chief_logs_and_checkpoints(cluster, task, chief, monkeypatch):
    """TensorFlow's convention, from TF's own resolver and from TF_CONFIG before TF is imported."""
    from types import SimpleNamespace

    import tensorflow as tf

    from resgan.gan.device import chief_from_tf_config, is_chief, worker_index

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    strategy = SimpleNamespace(cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver())
    assert is_chief(strategy) is chief
    assert chief_from_tf_config("multi_worker") is chief
    assert chief_from_tf_config("mirrored") is True  # one process: always the chief
    # Distinct worker numbers for the graph seeds: the chief is 0, the workers after it.
    assert worker_index(strategy) == (0 if chief else 1)
    assert is_chief(tf.distribute.get_strategy()) and worker_index(tf.distribute.get_strategy()) == 0


@pytest.mark.slow
def test_mirrored_two_replicas_of_half_the_batch_make_the_update_of_one_replica(tmp_path):
    out = tmp_path / "mirrored.npz"
    _wait(_child("mirrored", out, _env()), out)
    info = json.loads(out.with_suffix(".json").read_text())
    data = np.load(out)
    one, two, control = _groups(data, "one/"), _groups(data, "two/"), _groups(data, "control/")

    assert info["replicas"] == 2 and len(set(info["devices"])) == 2
    # The same initial weights as this process builds (the child's reference is an honest one), and
    # training moved them well beyond the tolerance, so agreeing within it means something.
    initial, _ = _reference(steps=0)
    assert _max_diff(one, initial) > 100 * WEIGHT_ATOL
    # G's trainable weights move within Adam's bound, and the dense kernel all the way to it
    # (its second gradient is larger than its first): the reference trained from these weights.
    assert 0.5 * MAX_MOVE < np.max(np.abs(one["g/0"] - initial["g/0"])) <= MAX_MOVE

    # The figures include the gradient norms, which are those of the global gradient (the sum over
    # replicas): unlike Adam's steps they scale with the gradient, so a wrong reduction shows here.
    _assert_same_update(two, one, info["two"], info["one"], initial)
    # The control (per-replica batch norm) does NOT make the same update: the comparison can fail.
    bn_stats = [k for k in one if k.startswith("g/") and k not in _zero_gradient_keys() and one[k].ndim == 1]
    assert max(np.max(np.abs(control[k] - one[k])) for k in bn_stats) > 50 * WEIGHT_ATOL
    assert abs(info["control"][0]["loss_g"] - info["one"][0]["loss_g"]) > 100 * FIGURE_RTOL
    # The replicas draw their own DiffAugment numbers.
    assert not np.allclose(data["augment_0"], data["augment_1"])
    # A conditional GAN: the same update too (labels split with their images), which training moved.
    cond_one, cond_two = _groups(data, "cond_one/"), _groups(data, "cond_two/")
    cond_initial, _ = _reference(steps=0, classes=CLASSES)
    assert _max_diff(cond_one, cond_initial) > 100 * WEIGHT_ATOL
    _assert_same_update(cond_two, cond_one, info["cond_two"], info["cond_one"], cond_initial, classes=CLASSES)


def _reference(steps: int = STEPS, classes: int = 0) -> tuple[dict, list[dict]]:
    """One replica of the global batch, in this process (default strategy)."""
    import tensorflow as tf

    return train_steps(tf.distribute.get_strategy(), steps=steps, classes=classes)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_multi_worker_two_processes_on_localhost_match_one_replica(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    children, outs = [], []
    for index in range(2):
        out = tmp_path / f"worker{index}.npz"
        env = {**_env(), "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        children.append(_child("worker", out, env))
        outs.append(out)
    try:
        for child, out in zip(children, outs):
            _wait(child, out, timeout=600)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    infos = [json.loads(out.with_suffix(".json").read_text()) for out in outs]
    data = [np.load(out) for out in outs]
    states = [{k: d[k] for k in d.files if k != "augment"} for d in data]

    assert [i["replicas"] for i in infos] == [2, 2]
    assert [i["chief"] for i in infos] == [True, False]  # worker 0 is the chief when there is none
    assert [i["chief_from_tf_config"] for i in infos] == [True, False]
    assert infos[0]["figures"] == infos[1]["figures"]  # reduced figures: one value for the cluster
    for key in states[0]:  # the mirrored variables are the same on both workers
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=key)
    # And the cluster made the update one process makes with the whole global batch.
    want, want_figures = _reference()
    initial, _ = _reference(steps=0)
    _assert_same_update(states[0], want, infos[0]["figures"], want_figures, initial)
    # Each worker's stateful random ops draw their own numbers (GAN.seed_graph).
    assert not np.allclose(data[0]["augment"], data[1]["augment"])


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    mode, target = sys.argv[1], Path(sys.argv[2])
    {"mirrored": _child_mirrored, "worker": _child_worker}[mode](target)
