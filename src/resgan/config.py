"""Typed, frozen, validated parameters: ``params.yaml`` is the only config.

``load_params(path)`` reads the YAML file and returns a :class:`Params`. Unknown keys, wrong
types and out-of-range values raise :class:`ParamsError` naming the key (``train.lr_g``) and,
for a typo, the nearest valid key. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from resgan.errors import ResganError


class ParamsError(ResganError):
    """params.yaml is missing, malformed or invalid."""


class _FieldError(ValueError):
    """A check across fields of a section that blames one of them: the message names ``section.field``."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class _Section(BaseModel):
    # strict: "5" is not an int and 1 is not a bool; ints are accepted where floats are expected.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _power_of_two(value: int) -> int:
    if value < 16 or value > 256 or value & (value - 1):
        raise ValueError("must be a power of two from 16 to 256")
    return value


class PrepareParams(_Section):
    source: Literal["digits", "folder", "idx", "npz", "keras"] = "idx"
    path: str = "data/raw/mnist"  # folder, IDX directory/file or .npz file; unused for digits and keras
    dataset: Literal["mnist", "fashion_mnist", "cifar10"] = "mnist"  # for source: keras
    image_size: int = 32  # pixels, square
    channels: Literal[1, 3] = 1
    fit: Literal["resize", "pad"] = "pad"  # pad: centre smaller images on a black canvas
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0)
    on_bad_image: Literal["skip", "fail"] = "skip"
    min_size: int = Field(8, ge=1, le=4096)  # pixels; smaller images are bad input
    labels_from_folders: bool = True
    max_images: int = Field(0, ge=0)  # 0: all
    shard_size: int = Field(0, ge=0, le=10_000_000)  # train images per shard file under shards/; 0: no shards
    npz_max_images: int = Field(0, ge=0)  # with shards: cap on images in each of train.npz/test.npz; 0: all
    workers: int = Field(0, ge=0, le=1024)  # processes that decode files; 0: one per CPU this process may use

    @field_validator("image_size")
    @classmethod
    def _size(cls, value: int) -> int:
        return _power_of_two(value)

    @model_validator(mode="after")
    def _npz_cap_needs_shards(self) -> PrepareParams:
        if self.npz_max_images and not self.shard_size:
            raise _FieldError(
                "npz_max_images",
                "needs shard_size > 0 (without shards, train.npz is what training "
                "reads, so it must hold every training image)",
            )
        return self


SSL_OPS = ("crop", "flip", "color", "translation", "cutout")  # the self-supervised encoder's augmentations


class ClassifierParams(_Section):
    # The learned feature extractor. auto: the domain classifier where the data has labels and it proves
    # itself on held-out images, else a self-supervised (SimCLR) encoder; classifier / ssl force one.
    kind: Literal["auto", "classifier", "ssl"] = "auto"
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=65536)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    width: int = Field(32, ge=4, le=1024)
    feature_dim: int = Field(128, ge=8, le=4096)
    augment: str = ""  # the classifier's training views: any of crop, flip, color, translation, cutout; "": none
    seed: int = Field(0, ge=0)
    min_skill: float = Field(0.5, ge=0.0, le=1.0)  # classifier: (accuracy - chance) / (1 - chance) on test
    ssl_epochs: int = Field(20, ge=1, le=1000)
    ssl_min_steps: int = Field(150, ge=0, le=100_000)  # more epochs where ssl_epochs make fewer steps
    ssl_batch_size: int = Field(256, ge=2, le=65536)
    ssl_temperature: float = Field(0.5, gt=0.0, le=10.0)
    ssl_augment: str = "crop,color,translation,cutout"  # crop, flip, color, translation, cutout
    ssl_min_skill: float = Field(0.1, ge=0.0, le=1.0)  # two-view retrieval gain over the untrained encoder

    @field_validator("ssl_augment")
    @classmethod
    def _ssl_ops(cls, value: str) -> str:
        if not parse_ops(value, SSL_OPS, "augmentation"):
            raise ValueError(f"names no op; use any of {', '.join(SSL_OPS)}")
        return value

    @field_validator("augment")
    @classmethod
    def _augment_ops(cls, value: str) -> str:
        parse_ops(value, SSL_OPS, "augmentation")  # "" is allowed: no augmentation
        return value


class ModelParams(_Section):
    latent_dim: int = Field(64, ge=1, le=4096)
    # Channels of every G and D block. auto: resolve_width (32 for a few thousand images of 64x64 and
    # larger, else 48), settled by the train stage's plan.
    width: Literal["auto"] | Annotated[int, Field(ge=4, le=2048)] = "auto"
    d_width: int = Field(0, ge=0, le=2048)  # 0: same as width
    width_growth: float = Field(1.0, ge=1.0, le=4.0)  # channels x this at each halving of resolution
    max_width: int = Field(0, ge=0, le=4096)  # cap on any block's channels with width_growth; 0: none
    blocks_per_resolution: int = Field(1, ge=1, le=8)
    spectral_norm: bool = True  # on the discriminator
    # Group size of D's minibatch standard-deviation channel (ProGAN/StyleGAN's diversity signal); 0: off.
    minibatch_std: int = Field(0, ge=0, le=64)
    # Class-conditional G and projection D. auto: conditional when every training image has a label and
    # there are at least 2 classes (resolved by the train stage); true needs such labels; false: never.
    conditional: Literal["auto"] | bool = "auto"
    # Data without labels and conditional auto: condition on this many k-means clusters of the feature
    # stage's self-supervised features (a self-conditioned GAN, Liu et al. 2020); 0: unconditional.
    self_condition: int = Field(10, ge=0, le=1000)
    # With classes (labels or clusters): class-conditional batch norm in every G block (SNGAN, BigGAN),
    # besides the label's embedding beside z; false: the embedding alone.
    class_norm: bool = False

    @model_validator(mode="after")
    def _cap_above_widths(self) -> ModelParams:
        if self.max_width and self.width != "auto" and self.max_width < max(self.width, self.d_width):
            raise _FieldError("max_width", "must be 0 or at least width and d_width")
        return self


# The ops train.diffaugment may name, in the order of Zhao et al.; resgan.gan.diffaugment.OPS implements
# each (a test ties them). They live here because that module imports TensorFlow and this one must not.
DiffAugmentOp = Literal["color", "translation", "cutout"]
DIFFAUGMENT_OPS: tuple[str, ...] = get_args(DiffAugmentOp)


SMALL_DATA = 5000  # training images below which train.diffaugment: auto turns DiffAugment on
SMALL_DATA_POLICY = "color,translation,cutout"  # Zhao et al.'s policy for small data sets


STEPS, MAX_STEPS = 1500, 10_000_000  # train.steps: auto's count without a time budget; the most steps


def resolve_steps(steps: int | str, max_minutes: float) -> int:
    """``train.steps`` as the loop uses it: ``auto`` -> :data:`STEPS`, or :data:`MAX_STEPS` when
    ``max_minutes`` is set (the time budget alone stops the run: with a fixed count a faster model would
    stop before the minutes it was given); a number as it is."""
    if steps != "auto":
        return int(steps)
    return MAX_STEPS if max_minutes else STEPS


WIDE, NARROW = 48, 32  # model.width: auto's two widths (channels)


def resolve_width(width: int | str, image_size: int, n_train: int) -> int:
    """``model.width`` as the networks use it: ``auto`` -> :data:`NARROW` for fewer than :data:`SMALL_DATA`
    training images of 64x64 pixels or more, else :data:`WIDE`; a number as it is. At 64x64 on 2 CPU
    cores the narrow nets train about twice the images a second (112 against 61 img/s), and a few
    hundred photographs need steps more than channels (docs/photographs.md); the digits keep 48."""
    if width != "auto":
        return int(width)
    return NARROW if image_size >= 64 and n_train < SMALL_DATA else WIDE


def resolve_diffaugment(policy: str, n_train: int, adaptive: bool = False) -> str:
    """``train.diffaugment`` as the step uses it: ``auto`` -> :data:`SMALL_DATA_POLICY` below
    :data:`SMALL_DATA` training images or with ADA (``adaptive``: ADA decides how often the ops apply),
    else ``""``; any other value as it is."""
    if policy != "auto":
        return policy
    return SMALL_DATA_POLICY if adaptive or n_train < SMALL_DATA else ""


def parse_ops(policy: str, allowed: tuple[str, ...], what: str = "DiffAugment") -> list[str]:
    """``"color, translation"`` -> ``["color", "translation"]``; ValueError naming an op not in ``allowed``."""
    names = [part.strip() for part in policy.split(",") if part.strip()]
    for name in names:
        if name not in allowed:
            raise ValueError(f"unknown {what} op {name!r}; use any of {', '.join(allowed)}")
    return names


def parse_diffaugment(policy: str) -> list[str]:
    """The ops of a ``train.diffaugment`` policy (see :func:`parse_ops`)."""
    return parse_ops(policy, DIFFAUGMENT_OPS)


class TrainParams(_Section):
    # Generator updates. auto: resolve_steps (1500, or as many as train.max_minutes allows when it is set).
    steps: Literal["auto"] | Annotated[int, Field(ge=1, le=MAX_STEPS)] = "auto"
    batch_size: int = Field(32, ge=1, le=65536)
    loss: Literal["minimax", "non_saturating", "hinge", "wasserstein_gp"] = "hinge"
    lr_g: float = Field(4e-4, gt=0.0, le=1.0)
    lr_d: float = Field(4e-4, gt=0.0, le=1.0)
    beta1_g: float = Field(0.0, ge=0.0, lt=1.0)
    beta2_g: float = Field(0.9, ge=0.0, lt=1.0)
    beta1_d: float = Field(0.0, ge=0.0, lt=1.0)
    beta2_d: float = Field(0.9, ge=0.0, lt=1.0)
    # Learning-rate decay of both nets over the run: constant until lr_decay_start x steps, then down to
    # lr_decay_floor x the rate at train.steps, linearly (SNGAN's schedule) or on a half cosine; none: constant.
    lr_decay: Literal["none", "linear", "cosine"] = "none"
    lr_decay_start: float = Field(0.0, ge=0.0, lt=1.0)  # share of train.steps at which the decay begins
    lr_decay_floor: float = Field(0.0, ge=0.0, lt=1.0)  # share of the rates left at train.steps (0: down to 0)
    d_steps: int = Field(1, ge=1, le=100)  # discriminator updates per generator update
    # With classes: weight of AC-GAN's auxiliary class loss (Odena et al. 2017). D gains a class head
    # trained on the real images' labels; G is trained to make images that head puts in their class.
    # 0: off (the projection term alone).
    class_loss: float = Field(0.0, ge=0.0, le=100.0)
    gp_weight: float = Field(10.0, ge=0.0, le=1e6)  # wasserstein_gp only
    r1_gamma: float = Field(0.0, ge=0.0, le=1e6)  # R1 penalty on real images (gamma/2 E|grad D(x)|^2); 0: off
    r1_every: int = Field(16, ge=1, le=10_000)  # lazy R1: every N steps, scaled by N (StyleGAN2)
    # Adaptive augmentation (StyleGAN2-ADA's heuristic): each DiffAugment op is applied with probability p,
    # raised while the sign of D's real logits averages above ada_target, lowered below; 0: off (p = 1).
    ada_target: float = Field(0.0, ge=0.0, le=1.0)
    ada_kimg: float = Field(100.0, gt=0.0, le=1e6)  # thousands of images for p to go from 0 to 1
    ada_interval: int = Field(4, ge=1, le=10_000)  # steps between adjustments
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    ema_start: int = Field(0, ge=0)  # steps before the EMA starts averaging (it copies G until then)
    # The EMA's half-life is at most this share of the steps so far (stylegan2's ema_rampup), so a short
    # run's EMA generator never holds much of the random initial weights; 0: ema_decay from the start.
    ema_rampup: float = Field(0.05, ge=0.0, le=1.0)
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    # Comma-separated policy, e.g. "color,translation,cutout"; "" turns it off; auto: SMALL_DATA_POLICY when
    # the training split has fewer than SMALL_DATA images (resolved by the train stage), else off.
    diffaugment: str = "auto"
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    sample_every: int = Field(500, ge=1)
    # FID over training: every eval_every steps (and at the last), FID of eval_num images of the EMA generator
    # with evaluate.features against the evaluation's reference set; 0: off. export: which generator the
    # stage exports and logs: the best-FID one (when FID was measured) or the last.
    eval_every: int = Field(250, ge=0)
    eval_num: int = Field(1000, ge=10, le=100_000)
    export: Literal["best", "last"] = "best"
    max_minutes: float = Field(0.0, ge=0.0)  # wall-clock budget; 0: none
    seed: int = Field(0, ge=0)
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"
    input: Literal["auto", "memory", "stream"] = "auto"  # auto: stream when prepare wrote shards
    shuffle_buffer: int = Field(10_000, ge=1, le=10_000_000)  # images; streaming only

    @model_validator(mode="after")
    def _ada_needs_ops(self) -> TrainParams:
        if self.ada_target and not self.diffaugment.strip():
            raise _FieldError(
                "ada_target",
                "adapts how often train.diffaugment's ops apply: set train.diffaugment "
                "to auto or a policy such as color,translation,cutout, or ada_target to 0",
            )
        return self

    @field_validator("diffaugment")
    @classmethod
    def _policy(cls, value: str) -> str:
        if value.strip() != "auto":
            parse_diffaugment(value)
        return value.strip() if value.strip() == "auto" else value


class SampleParams(_Section):
    num: int = Field(2000, ge=1, le=1_000_000)
    seed: int = Field(1234, ge=0)
    batch_size: int = Field(256, ge=1, le=65536)
    grid: int = Field(64, ge=1, le=1024)  # images in samples/grid.png


MetricName = Literal["fid", "kid", "is", "ssim", "pr"]


class EvaluateParams(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)  # YAML lists -> tuples
    features: Literal["auto", "inception", "classifier", "ssl"] = "auto"
    metrics: tuple[MetricName, ...] = ("fid", "kid", "is", "ssim", "pr")
    inception_weights: str = ""  # path to InceptionV3 ImageNet weights (.h5); "" uses Keras' cache
    batch_size: int = Field(256, ge=1, le=65536)
    kid_subsets: int = Field(100, ge=1, le=10000)
    kid_subset_size: int = Field(1000, ge=2)
    is_splits: int = Field(10, ge=1, le=1000)
    ssim_pairs: int = Field(1000, ge=1)
    memorization_threshold: float = Field(0.9, ge=-1.0, le=1.0)
    memorization_shortlist: int = Field(10, ge=1, le=1000)  # nearest neighbours by L2 checked by SSIM
    pr_k: int = Field(3, ge=1, le=100)
    max_real: int = Field(10000, ge=2)  # cap on real images used for reference statistics
    seed: int = Field(0, ge=0)

    @field_validator(
        "batch_size",
        "kid_subsets",
        "kid_subset_size",
        "is_splits",
        "ssim_pairs",
        "memorization_shortlist",
        "pr_k",
        "max_real",
        "seed",
        mode="before",
    )
    @classmethod
    def _strict_int(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        return value

    @field_validator("memorization_threshold", mode="before")
    @classmethod
    def _strict_float(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        return value

    @field_validator("features", "inception_weights", mode="before")
    @classmethod
    def _strict_str(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_list(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError("must be a non-empty list, e.g. [fid, kid, is, ssim, pr]")
        if len(set(value)) != len(value):
            raise ValueError("lists a metric twice")
        return tuple(value)


# Which way each is better and where its number is: resgan.metrics.registry.CHAMPION_METRICS (a test ties them).
ChampionMetric = Literal["fid", "kid", "is", "pr_precision", "pr_recall"]


class MlflowParams(_Section):
    experiment: str = Field("resgan", min_length=1)
    registered_model: str = Field("resgan", min_length=1)
    champion_metric: ChampionMetric = "fid"  # the registry's champion is the best version on this
    tracking_retries: int = Field(5, ge=0, le=100)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prepare: PrepareParams = PrepareParams()
    classifier: ClassifierParams = ClassifierParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    sample: SampleParams = SampleParams()
    evaluate: EvaluateParams = EvaluateParams()
    mlflow: MlflowParams = MlflowParams()

    def flat(self) -> dict[str, Any]:
        """The params as ``{"train.lr_g": 0.0002, ...}`` (lists joined by commas)."""
        out: dict[str, Any] = {}
        for section, values in self.model_dump().items():
            for key, value in values.items():
                out[f"{section}.{key}"] = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        return out

    def view(self, declared: tuple[str, ...], stage: str) -> ParamsView:
        """What stage ``stage`` may read: the sections and keys ``declared`` (see :class:`ParamsView`)."""
        return ParamsView(self, declared, stage)


class UndeclaredParamError(RuntimeError):
    """A stage read a param that dvc.yaml does not give it (a change to it would not re-run the stage).
    A bug in the stage, not bad input: no ``except ResganError`` on the way may take it for one."""


class ParamsView:
    """The params one stage may read: the sections and ``section.key`` entries ``dvc.yaml`` lists for it.

    ``view.train`` is the section itself where the whole section is declared and a view of its declared
    keys where only some are (``sample.grid``); any other read raises :class:`UndeclaredParamError` naming
    the param. :attr:`read` records what was read (sections and keys), for the test that holds the stage
    and ``dvc.yaml`` together; :meth:`flat` gives the declared params only.
    """

    def __init__(self, params: Params, declared: tuple[str, ...], stage: str, read: set[str] | None = None):
        self._params, self.declared, self.stage = params, tuple(declared), stage
        self.read: set[str] = set() if read is None else read

    def __getattr__(self, section: str) -> Any:
        if section.startswith("_") or section not in SECTIONS:
            raise AttributeError(section)
        values = getattr(self._params, section)
        if section in self.declared:
            self.read.add(section)
            return values
        keys = {entry.split(".", 1)[1] for entry in self.declared if entry.startswith(f"{section}.")}
        if not keys:
            raise self.undeclared(section)
        return _SectionView(values, section, keys, self)

    def undeclared(self, name: str) -> UndeclaredParamError:
        return UndeclaredParamError(
            f"the {self.stage} stage reads params {name!r}, which dvc.yaml does not "
            f"give it (it declares {', '.join(self.declared)})"
        )

    def flat(self) -> dict[str, Any]:
        """The declared params as ``{"train.lr_g": 0.0002, ...}`` (see :meth:`Params.flat`)."""
        out = {k: v for k, v in self._params.flat().items() if k.split(".")[0] in self.declared or k in self.declared}
        self.read.update(entry for entry in self.declared if any(k == entry or k.startswith(f"{entry}.") for k in out))
        return out

    def view(self, declared: tuple[str, ...], stage: str) -> ParamsView:
        """A narrower view that records its reads here too (a caller's view handed to a stage)."""
        narrower = tuple(entry for entry in declared if entry in self.declared or entry.split(".")[0] in self.declared)
        return ParamsView(self._params, narrower, stage, self.read)


class _SectionView:
    """The declared keys of a section of which a stage reads only some."""

    def __init__(self, values: BaseModel, section: str, keys: set[str], owner: ParamsView):
        self._values, self._section, self._keys, self._owner = values, section, keys, owner

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        if key not in self._keys:
            raise self._owner.undeclared(f"{self._section}.{key}")
        self._owner.read.add(f"{self._section}.{key}")
        return getattr(self._values, key)


SECTIONS: dict[str, type[BaseModel]] = {
    name: field.annotation
    for name, field in Params.model_fields.items()  # type: ignore[misc]
}


def _nearest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _check_keys(raw: dict[str, Any]) -> None:
    """Reject unknown sections and keys before pydantic, so the message can suggest a name."""
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ParamsError(f"params: unknown section {section!r}{_nearest(str(section), list(SECTIONS))}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ParamsError(f"params: section {section!r} must be a mapping of keys to values")
        fields = list(SECTIONS[section].model_fields)
        for key in values:
            if key not in fields:
                hint = _nearest(str(key), fields).replace("'", f"'{section}.", 1)
                raise ParamsError(f"params: unknown key '{section}.{key}'{hint}")


def _format(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or "params"
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, _FieldError) and isinstance(got, dict):  # a section's check naming its field
        where, got = f"{where}.{cause.field}", got.get(cause.field)
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    more = len(error.errors()) - 1
    return f"params: {where}: {message}{shown}" + (f" and {more} more problem(s)" if more else "")


def parse_params(raw: Any) -> Params:
    """Validate a mapping as read from params.yaml (missing sections or keys take defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError("params: the file must hold a mapping of sections (prepare, train, ...)")
    _check_keys(raw)
    raw = {k: ({} if v is None else v) for k, v in raw.items()}
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_format(error)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; raise ParamsError naming the key on any problem."""
    path = Path(path)
    raw = _read_yaml(path)
    if isinstance(raw, dict):
        missing = [name for name in SECTIONS if name not in raw]
        if missing:  # DVC reads these sections too: a stage whose section is absent cannot run
            raise ParamsError(f"params: {path} has no section {missing[0]!r} (every file needs {', '.join(SECTIONS)})")
    return parse_params(raw)


def load_mlflow_params(path: str | Path = "params.yaml") -> MlflowParams:
    """The ``mlflow`` section of ``path``, for commands that read nothing else (``resgan models``, the
    default model of ``resgan generate``). Absent sections take their defaults, but every key that is
    there is validated as :func:`load_params` validates it: a typo is the same ParamsError everywhere."""
    return parse_params(_read_yaml(Path(path))).mlflow


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; ParamsError when it is missing, unreadable or not YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"params: {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ParamsError(f"params: cannot read {path}: {error}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ParamsError(
            f"params: {path} is not valid YAML{line}: {getattr(error, 'problem', None) or error}"
        ) from None
