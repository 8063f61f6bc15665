"""params.yaml, typed: the root schema `Params` and a dataclass per section, parsed once.

params.yaml is the only place a default lives: every key must be there (a missing one is an
error naming it and the line to add, from the reference docs/params.md), unknown keys and
values of the wrong type are errors naming the key, so a typo in ``dvc exp run -S train.lr=...``
fails at once instead of being silently ignored. The meaning of each key is its comment in
params.yaml (docs/params.md collects them: `flaxvision params`). This module imports no JAX: every
stage parses the whole file, and a stage's DVC deps are the modules it imports.
"""

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml

from flaxvision.errors import UserError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

PARAMS_FILE = Path("params.yaml")
FillMode = Literal["nearest", "reflect", "wrap", "constant"]  # augment.fill_mode, as Keras names them
# The params reference, generated from params.yaml (flaxvision.reference): in a checkout, beside it.
REFERENCE_FILE = Path(__file__).resolve().parents[1] / "docs" / "params.md"


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, reading floats as YAML 1.2 does: `dvc exp run -S lr=0.00001` writes
    ``1e-05``, which YAML 1.1 reads as a string (it wants a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$"
        r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def load_params(path: Path = PARAMS_FILE) -> "Params":
    """params.yaml, checked whole: every key there, none unknown, each of its type and range."""
    return from_dict(read_mapping(path), Params, prefix="", file=str(path))


def read_mapping(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as it is written: a mapping of keys and sections."""
    try:
        with open(path) as f:
            params = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        raise UserError(f"{path} not found: run the stage from the project root") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(params, dict):
        raise UserError(f"{path} must be a mapping of sections")
    return params


def from_dict[Schema: DataclassInstance](
    values: Mapping[str, Any], schema: type[Schema], prefix: str, file: str = "params.yaml"
) -> Schema:
    """The dataclass ``schema`` from ``values`` (the mapping at key ``prefix`` of ``file``; "": the
    whole file), checking keys and types; nested dataclasses are read the same way."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - set(fields))

    def key(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if unknown:
        raise UserError(f"{file}: unknown key '{key(unknown[0])}'; valid keys: {', '.join(fields)}")
    required = [name for name, field in fields.items() if field.default is field.default_factory is dataclasses.MISSING]
    if missing := [name for name in required if name not in values]:
        raise UserError(f"{file}: missing key '{key(missing[0])}'{_line_to_add(key(missing[0]), file)}")
    kwargs = {name: _coerce(value, hints[name], key(name), file) for name, value in values.items()}
    try:
        return schema(**kwargs)
    except ValueError as error:  # a schema's __post_init__ rejects a value
        raise UserError(f"{file}: {prefix + ': ' if prefix else ''}{error}") from None


def _coerce(value: Any, hint: object, key: str, file: str) -> Any:
    """``value`` (as YAML read it) as type ``hint`` says (a class or a typing form), else a UserError."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if value is not None and not isinstance(value, dict):
            raise UserError(f"{file}: '{key}' must be a mapping, got {value!r}")
        return from_dict(value or {}, hint, key, file)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, file)
            except UserError:
                pass
        raise UserError(f"{file}: '{key}' has the wrong type: {value!r} (expected {hint})")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise UserError(f"{file}: '{key}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (tuple, list):
        (item,) = set(typing.get_args(hint)) - {Ellipsis}
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{file}: '{key}' must be a list, got {value!r}")
        return origin(_coerce(v, item, key, file) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise UserError(f"{file}: '{key}' must be true or false, got {value!r}")
    if (
        isinstance(hint, type)
        and hint in (int, float, str)
        and (not isinstance(value, hint) or isinstance(value, bool) and hint is not bool)
    ):
        raise UserError(f"{file}: '{key}' must be a {hint.__name__}, got {value!r}")
    return value


def _line_to_add(key: str, file: str) -> str:
    """How to add params.yaml's missing ``key``: its line as docs/params.md gives it (in a checkout)."""
    if Path(file).name != PARAMS_FILE.name:
        return ""
    section, _, name = key.rpartition(".")
    try:
        reference = REFERENCE_FILE.read_text()
    except OSError:
        reference = ""
    row = re.search(rf"^\| `{re.escape(key)}` \| (?:[^|\\]|\\.)* \| `([^`]*)` \|", reference, re.M)
    value = row[1] if row else "<value>"
    where = f" under '{section}:'" if section else ""
    return f": add the line '{name}: {value}'{where} (docs/params.md says what it means)"


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """params.yaml ``preprocess``."""

    image_size: tuple[int, int] | None
    color_mode: Literal["rgb", "grayscale"]
    val_fraction: float
    test_fraction: float
    split_seed: int
    max_bad_fraction: float

    def __post_init__(self) -> None:
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ValueError(f"image_size must be [height, width], positive, got {list(self.image_size)}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1 (both may be taken from train)")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ValueError(f"max_bad_fraction must be between 0 and 1, got {self.max_bad_fraction}")

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == "rgb" else 1


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation ranges, the params.yaml ``augment`` section (`AUGMENT_OFF`: none).

    rotation: degrees, uniform in [-rotation, rotation] (ImageDataGenerator's rotation_range;
        Keras RandomRotation(factor) is rotation = 360 * factor).
    width_shift, height_shift: fractions of the width and height, uniform in [-s, s].
    shear: degrees, uniform in [-shear, shear].
    zoom: the sampling scale along x and along y, each uniform in [1 - zoom, 1 + zoom]
        (above 1 zooms out).
    horizontal_flip, vertical_flip: flip each image with probability 1/2.
    fill_mode: how points outside the image are filled, as in Keras: 'nearest' (the edge
        pixel), 'reflect' (d c b a | a b c d), 'wrap' (a b c d | a b c d), 'constant' (zeros).
    crop_scale, crop_ratio: random-resized crop (torchvision's RandomResizedCrop(scale, ratio)):
        a crop of a uniform share of the image's area in ``crop_scale`` and a log-uniform
        width/height ratio in ``crop_ratio``, at a uniform place inside the image, resized to
        the full image (a side that would exceed the image is cut to it). (1, 1), (1, 1): off.
    brightness, contrast, saturation, hue: colour jitter, as torchvision's ColorJitter: add a
        uniform [-brightness, brightness] (of the full range), scale the contrast and the
        saturation by uniform factors in [1 - c, 1 + c], turn the hue by [-hue, hue] of a circle
        (saturation and hue: RGB only); the result is clipped to the pixel range.
    mixup, cutmix: the Beta(alpha, alpha) of mixup and CutMix (`mix`); 0: off. With both,
        each batch uses one of them, with probability 1/2.
    """

    rotation: float
    width_shift: float
    height_shift: float
    shear: float
    zoom: float
    horizontal_flip: bool
    vertical_flip: bool
    fill_mode: FillMode
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    brightness: float
    contrast: float
    saturation: float
    hue: float
    mixup: float
    cutmix: float

    def __post_init__(self) -> None:
        for name, limit in [
            ("rotation", math.inf),
            ("shear", math.inf),
            ("width_shift", 1),
            ("height_shift", 1),
            ("zoom", 1),
            ("brightness", 1),
            ("contrast", 1),
            ("saturation", 1),
            ("hue", 0.5),
            ("mixup", math.inf),
            ("cutmix", math.inf),
        ]:
            if not 0 <= getattr(self, name) < limit:  # also rejects nan
                raise ValueError(f"'{name}' must be in [0, {limit}), got {getattr(self, name)}")
        if self.fill_mode not in get_args(FillMode):
            raise ValueError(f"'fill_mode' must be one of {list(get_args(FillMode))}, got {self.fill_mode!r}")
        for name, most in [("crop_scale", 1), ("crop_ratio", math.inf)]:
            bounds = getattr(self, name)
            if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1] <= most:
                raise ValueError(f"'{name}' must be [low, high] with 0 < low <= high <= {most}, got {list(bounds)}")

    @property
    def cropped(self) -> bool:
        return self.crop_scale != (1.0, 1.0) or self.crop_ratio != (1.0, 1.0)

    @property
    def colour(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation or self.hue)

    @property
    def mixing(self) -> bool:
        return bool(self.mixup or self.cutmix)

    @property
    def enabled(self) -> bool:
        """Whether `augment` changes images (`mix` is separate: the loss takes part in it)."""
        ranges = (self.rotation, self.width_shift, self.height_shift, self.shear, self.zoom)
        return any(ranges) or self.horizontal_flip or self.vertical_flip or self.cropped or self.colour


@dataclasses.dataclass(frozen=True)
class TransferConfig:
    """A transfer model: params.yaml ``transfer`` (for model=transfer) or a preset's settings
    (flaxvision.builder.TRANSFER_PRESETS).

    backbones: keys of models.backbones.BACKBONES (checked by the builder), run side by side on
        the same image.
    alpha: MobileNetV2's width multiplier.
    pooling: 'avg' or 'max' over each backbone's last feature map; null keeps the map.
    trainable_layers: how many of each backbone's last layers with weights train (Keras'
        ``for layer in base.layers[:-n]: layer.trainable = False``); 0 freezes the backbones,
        -1 trains them whole.
    cache_features: with frozen backbones, train the head on features computed once by the
        extract-features stage (augmentation then cannot apply: the features are of the
        un-augmented images).
    head: 'dense' (dropout, then dense layers of hidden_units, then the classifier), or the
        name of a from-scratch model preset applied to the features.
    input_size: the image size when params preprocess.image_size is null.
    """

    backbones: tuple[str, ...]
    alpha: float
    pooling: Literal["avg", "max"] | None
    trainable_layers: int
    cache_features: bool
    head: str
    dropout: float
    hidden_units: tuple[int, ...]
    input_size: tuple[int, int]

    def __post_init__(self) -> None:
        if not self.backbones:
            raise ValueError("backbones must name at least one backbone")
        if self.alpha != 1.0 and "mobilenet_v2" not in self.backbones:
            raise ValueError("alpha applies to mobilenet_v2 only")
        if self.trainable_layers < -1:
            raise ValueError(f"trainable_layers must be -1 (all), 0 (none) or a count, got {self.trainable_layers}")
        if self.cache_features and self.trainable_layers:
            raise ValueError("cache_features needs frozen backbones (trainable_layers: 0)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def frozen(self) -> bool:
        return self.trainable_layers == 0

    def backbone_options(self, name: str) -> dict:
        return {"alpha": self.alpha} if name == "mobilenet_v2" else {}


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """params.yaml ``extract_features``."""

    batch_size: int

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """params.yaml ``train``."""

    seed: int
    epochs: int
    batch_size: int
    optimizer: Literal["adam", "adamw", "sgd"]
    learning_rate: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: Literal["constant", "cosine", "step"]
    warmup_epochs: float
    step_epochs: float
    step_factor: float
    clip_grad_norm: float
    label_smoothing: float
    ema_decay: float
    batchnorm_momentum: float | None
    early_stopping_patience: int
    reduce_lr_patience: int
    reduce_lr_factor: float
    min_learning_rate: float
    compute_dtype: Literal["float32", "bfloat16"]
    input: Literal["auto", "device", "stream"]
    device_data_mb: float | None
    checkpoint_steps: int

    def __post_init__(self) -> None:
        if self.checkpoint_steps < 0 or (self.device_data_mb is not None and self.device_data_mb < 0):
            raise ValueError("checkpoint_steps and device_data_mb must not be negative")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 < self.reduce_lr_factor < 1:
            raise ValueError(f"reduce_lr_factor must be in (0, 1), got {self.reduce_lr_factor}")
        if self.batchnorm_momentum is not None and not 0 <= self.batchnorm_momentum < 1:
            raise ValueError(f"batchnorm_momentum must be in [0, 1), got {self.batchnorm_momentum}")
        for name, low, high in [
            ("weight_decay", 0, math.inf),
            ("warmup_epochs", 0, self.epochs + 1),
            ("clip_grad_norm", 0, math.inf),
            ("label_smoothing", 0, 1),
            ("ema_decay", 0, 1),
        ]:
            if not low <= getattr(self, name) < high:
                raise ValueError(f"{name} must be in [{low}, {high}), got {getattr(self, name)}")
        if self.weight_decay and self.optimizer == "adam":
            raise ValueError("weight_decay needs optimizer adamw (decoupled) or sgd; adam has none")
        if self.step_epochs <= 0 or not 0 < self.step_factor < 1:
            raise ValueError(
                f"step_epochs must be positive and step_factor in (0, 1), got {self.step_epochs}, {self.step_factor}"
            )


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """params.yaml ``evaluate``: the metrics, and what the pictures show (see stages/evaluate.py)."""

    batch_size: int
    top_k: int
    samples: int
    misclassified: int
    activation_image: int
    activation_layers: tuple[int | str, ...]
    max_activation_layers: int
    max_channels: int

    def __post_init__(self) -> None:
        for name in ("batch_size", "top_k", "max_activation_layers", "max_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("samples", "misclassified", "activation_image"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class Params:
    """params.yaml: the experiment that `dvc repro` runs."""

    model: str
    data: str
    convolutions: Literal["onednn", "xla"]
    numerics: Literal["portable", "native"]
    pretrained: str
    preprocess: PreprocessConfig
    augment: AugmentConfig
    transfer: TransferConfig
    extract_features: ExtractConfig
    train: TrainConfig
    evaluate: EvaluateConfig


AUGMENT_OFF = AugmentConfig(
    rotation=0.0,
    width_shift=0.0,
    height_shift=0.0,
    shear=0.0,
    zoom=0.0,
    horizontal_flip=False,
    vertical_flip=False,
    fill_mode="nearest",
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    hue=0.0,
    mixup=0.0,
    cutmix=0.0,
)
