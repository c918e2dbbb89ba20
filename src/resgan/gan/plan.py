"""The train stage's plan: every ``auto`` param settled, the checkpoint key and the params the run depends on.

:func:`plan` is pure (no TensorFlow, no MLflow): the params a stage may read and a :class:`DataSummary`
(what the stage learnt about the training data, the clusters and the device) give one :class:`TrainPlan`.
That object is hashed for the checkpoint key, logged as the run's params, handed to the GAN (which
settles nothing itself) and printed in one block when training starts.

Each ``auto`` is settled by one function in :data:`SETTLERS`, in order, each seeing what those before it
settled: it returns a :class:`Choice` (the value and the reason printed beside it) or None where the
param keeps its value. A new ``auto`` is one more function and one more line in that list.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from resgan.config import (
    SMALL_DATA,
    ModelParams,
    TrainParams,
    resolve_diffaugment,
    resolve_steps,
    resolve_width,
)
from resgan.errors import ResganError
from resgan.gan.clusters import MIN_PER_CLUSTER, cluster_count

# Params that only change how often we look, not what is computed: they do not change the key.
NOT_IN_KEY = {"checkpoint_every", "log_every", "sample_every", "max_minutes", "eval_every", "eval_num", "export"}


class PlanError(ResganError):
    """The params cannot train on these data (e.g. model.conditional: true without labels)."""


@dataclass(frozen=True)
class Shapes:
    image_size: int
    channels: int
    num_classes: int = 0  # the data's classes; used when ``model.conditional``
    # Self-conditioning: the classes are k-means clusters, drawn with these frequencies by the exported
    # generator (resgan.nn.networks.self_conditioned); empty for real classes.
    cluster_prior: tuple[float, ...] = ()


@dataclass(frozen=True)
class DataSummary:
    """What the plan needs to know about the training data and the machine.

    ``classes``: the classes when every training image has one of at least 2 labels, else 0 and
    ``no_classes`` says why. ``clusters``: self-conditioning's k-means clusters once the stage has tried
    (None: not tried yet; 0: tried, ``cluster_note`` says why there are none). ``accelerator``: what
    :func:`resgan.gan.device.accelerator` found (``gpu:<major compute capability>``, ``cpu:bf16``,
    ``cpu``), or None before TensorFlow has started.
    """

    images: int
    image_size: int
    channels: int
    data_hash: str = ""
    classes: int = 0
    no_classes: str = "the prepared data has no labels"
    streamed: bool = False
    clusters: int | None = None
    cluster_hash: str = ""
    cluster_prior: tuple[float, ...] = ()
    cluster_note: str = ""
    accelerator: str | None = None


@dataclass(frozen=True)
class Choice:
    """A settled ``auto``: the value and why, in words."""

    value: Any
    reason: str


@dataclass(frozen=True)
class TrainPlan:
    """Every choice of one training run. ``model``/``train``: the sections with every ``auto`` settled;
    ``params``: what the run depends on, flat (``train.lr_g``: ...), as logged; ``choices``: the
    settled autos (``train.diffaugment``: Choice); ``key``: the checkpoint key."""

    model: ModelParams
    train: TrainParams
    shapes: Shapes
    key: str
    params: dict[str, Any]
    choices: dict[str, Choice] = field(default_factory=dict)
    data: DataSummary | None = None

    @property
    def wants_clusters(self) -> bool:
        """True while self-conditioning still needs the stage to cluster the training images."""
        return (
            self.data is not None
            and self.data.clusters is None
            and "model.self_condition" in self.choices
            and bool(self.model.self_condition)
        )

    def describe(self) -> str:
        """The plan as one block of text: the key, the run's size, each settled auto and why."""
        tp, shapes = self.train, self.shapes
        images = f"{self.data.images:,} training images, " if self.data else ""
        lines = [
            f"plan: checkpoint key {self.key}; {tp.steps:,} steps of {tp.batch_size} images; {images}"
            f"{shapes.image_size}x{shapes.image_size}x{shapes.channels}"
        ]
        for name, choice in self.choices.items():
            shown = "off" if choice.value in ("", 0) and name != "model.conditional" else choice.value
            lines.append(f"  {name}: {shown} (auto: {choice.reason})")
        return "\n".join(lines)


# ---- the autos, one function each: (model, train, data) -> Choice, or None where there is nothing to settle


def settle_self_condition(model: ModelParams, train: TrainParams, data: DataSummary) -> Choice | None:
    """Unlabelled data with ``model.conditional: auto``: the clusters to condition on (see
    :mod:`resgan.gan.clusters`); once the stage clustered, the clusters it found (0: none, and why)."""
    if model.conditional != "auto" or data.classes or not model.self_condition:
        return None
    if data.clusters is not None:
        return Choice(data.clusters, data.cluster_note or f"{data.clusters} k-means clusters stand in for labels")
    k = cluster_count(model.self_condition, data.images)
    if not k:
        return Choice(0, f"{data.images} training images are too few for 2 clusters of {MIN_PER_CLUSTER}")
    return Choice(k, f"{k} clusters of the feature stage's features for {data.images} unlabelled training images")


def settle_conditional(model: ModelParams, train: TrainParams, data: DataSummary) -> Choice | None:
    """``auto``: conditional on the data's classes when every image has a label, else on self-conditioning's
    clusters when there are some, else unconditional. ``true`` without classes is a :class:`PlanError`."""
    if model.conditional is True and not data.classes:
        raise PlanError(data.no_classes)
    if model.conditional != "auto":
        return None
    if data.classes:
        return Choice(True, f"every training image has one of {data.classes} labels")
    if data.clusters:
        return Choice(True, f"self-conditioned on {data.clusters} clusters")
    return Choice(False, data.no_classes)


def settle_diffaugment(model: ModelParams, train: TrainParams, data: DataSummary) -> Choice | None:
    """``auto``: DiffAugment's small-data policy below :data:`~resgan.config.SMALL_DATA` training images or
    with ADA (see :func:`resgan.config.resolve_diffaugment`), else off."""
    if train.diffaugment != "auto":
        return None
    policy = resolve_diffaugment("auto", data.images, adaptive=bool(train.ada_target))
    why = (
        "train.ada_target is set"
        if train.ada_target
        else (f"{data.images} training images, {'below' if policy else 'not below'} {SMALL_DATA}")
    )
    return Choice(policy, why)


def settle_steps(model: ModelParams, train: TrainParams, data: DataSummary) -> Choice | None:
    """``auto``: 1500 steps, or with ``train.max_minutes`` set as many as the minutes allow (see
    :func:`resgan.config.resolve_steps`)."""
    if train.steps != "auto":
        return None
    steps = resolve_steps("auto", train.max_minutes)
    if train.max_minutes:
        return Choice(steps, f"train.max_minutes={train.max_minutes:g} ends the run")
    return Choice(steps, "no time budget: train.max_minutes is 0")


def settle_width(model: ModelParams, train: TrainParams, data: DataSummary) -> Choice | None:
    """``auto``: narrow nets for a few thousand images of 64x64 and more, else the digits' 48 (see
    :func:`resgan.config.resolve_width`)."""
    if model.width != "auto":
        return None
    width = resolve_width("auto", data.image_size, data.images)
    size = f"{data.images} training images of {data.image_size}x{data.image_size}"
    if width < resolve_width("auto", 0, 0):
        return Choice(width, f"{size}, fewer than {SMALL_DATA} of 64x64 or more: about twice the steps of 48 a minute")
    return Choice(width, f"{size}, not fewer than {SMALL_DATA} of 64x64 or more")


def settle_precision(model: ModelParams, train: TrainParams, data: DataSummary) -> Choice | None:
    """``auto`` on a known device (see :func:`precision_for`); left ``auto`` until TensorFlow has started."""
    if train.precision != "auto" or data.accelerator is None:
        return None
    return precision_for(data.accelerator)


def precision_for(accelerator: str) -> Choice:
    """mixed_bfloat16 on a GPU of compute capability >= 8 or a CPU with BF16 instructions, mixed_float16
    on an older GPU, float32 otherwise."""
    kind, _, detail = accelerator.partition(":")
    if kind == "gpu":
        major = int(detail or 0)
        return Choice("mixed_bfloat16" if major >= 8 else "mixed_float16", f"a GPU of compute capability {major}")
    if detail == "bf16":
        return Choice("mixed_bfloat16", "the CPU has BF16 instructions")
    return Choice("float32", "no GPU, and the CPU has no BF16 instructions")


Settler = Callable[[ModelParams, TrainParams, DataSummary], "Choice | None"]
SETTLERS: list[tuple[str, Settler]] = [
    ("model.width", settle_width),
    ("train.steps", settle_steps),
    ("model.self_condition", settle_self_condition),
    ("model.conditional", settle_conditional),
    ("train.diffaugment", settle_diffaugment),
    ("train.precision", settle_precision),
]


def plan(params, data: DataSummary) -> TrainPlan:
    """Settle every ``auto`` of ``params`` (a :class:`~resgan.config.Params` or the stage's view of it) for
    ``data``; returns the :class:`TrainPlan`. Raises :class:`PlanError` where the params cannot train on
    these data."""
    sections = {"model": params.model, "train": params.train}
    choices: dict[str, Choice] = {}
    for name, settle in SETTLERS:
        choice = settle(sections["model"], sections["train"], data)
        if choice is not None:
            section, key = name.split(".")
            sections[section] = sections[section].model_copy(update={key: choice.value})
            choices[name] = choice
    model, train = sections["model"], sections["train"]
    classes = (data.classes or data.clusters or 0) if model.conditional else 0
    shapes = Shapes(data.image_size, data.channels, classes, data.cluster_prior if classes and not data.classes else ())
    flat = dict(params.flat())
    flat.update({name: choice.value for name, choice in choices.items()})
    settled = TrainPlan(model=model, train=train, shapes=shapes, key="", params=flat, choices=choices, data=data)
    return replace(settled, key=run_key(settled, data.data_hash + (data.cluster_hash if shapes.cluster_prior else "")))


def run_key(settled, data_hash: str) -> str:
    """A short hash of the data and of every model/train param that changes the result: of ``settled``'s
    ``model`` and ``train`` sections (a plan's, or params with no ``auto`` left)."""
    kept = {k: v for k, v in settled.train.model_dump().items() if k not in NOT_IN_KEY}
    blob = json.dumps({"model": settled.model.model_dump(), "train": kept, "data": data_hash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def summarize(summary: dict[str, Any], train_data) -> DataSummary:
    """The plan's facts about the prepared data: ``summary.json``'s hash and the opened training split
    (:class:`resgan.data.pipeline.TrainData`: its size, shape and, where every image has one, its labels)."""
    try:
        classes, why = train_data.num_classes(summary.get("class_names")), ""
    except ResganError as error:  # conditional: true fails with this; auto trains unconditional
        classes, why = 0, str(error)
    return DataSummary(
        images=train_data.count,
        image_size=train_data.image_size,
        channels=train_data.channels,
        data_hash=str(summary.get("data_hash", "")),
        classes=classes,
        no_classes=why,
        streamed=train_data.mode == "stream",
    )


def with_clusters(data: DataSummary, clusters, note: str = "") -> DataSummary:
    """``data`` once the stage has tried to cluster: ``clusters`` (a :class:`~resgan.gan.clusters.Clusters`
    or None where there are none, ``note`` saying why)."""
    if clusters is None:
        return replace(data, clusters=0, cluster_note=note)
    return replace(
        data,
        clusters=clusters.k,
        cluster_prior=clusters.prior,
        cluster_note=note,
        cluster_hash=hashlib.sha256(clusters.labels.tobytes()).hexdigest()[:12],
    )
