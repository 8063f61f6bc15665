"""The model registry: the from-scratch architectures that params.yaml's ``model`` names, and
`create_transfer`, pretrained backbones under a new head (a from-scratch model or dense layers).

From-scratch presets (the seeds' CNNs, ResNet50) take float32 images [batch, height, width,
channels] already scaled by `preprocessing(name)` (see models.scaling.preprocess_input).
Transfer models take [0, 255] images and scale them per backbone themselves. Every model returns
logits [batch, num_classes]. Dropout and BatchNorm follow NNX's ``model.train()`` /
``model.eval()``; a new model is in training mode. Dropout draws from the model's own RNG
streams, so its state lives with the parameters.

This is architecture only: weights are random, and a name or shape the registry cannot build is a
`ModelError`. flaxvision.builder names the transfer presets (params.yaml's transfer models), fills
pretrained weights and words the errors for params.yaml.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from flax import nnx

from flaxvision.models import cnn, resnet, vgg
from flaxvision.models.layers import Dtype, ModelError
from flaxvision.models.transfer import Transfer

__all__ = [
    "MODEL_NAMES",
    "ModelError",
    "UnknownModelError",
    "create_model",
    "create_transfer",
    "input_size",
    "preprocessing",
]


class UnknownModelError(ModelError):
    """No model of that name."""


class _Preset(NamedTuple):
    build: Callable[..., nnx.Module]
    preprocessing: str  # the models.scaling.preprocess_input mode it was designed with
    input_size: tuple[int, int]  # (height, width) when params preprocess.image_size is null


_PRESETS = {
    "belgiumtsc_cnn": _Preset(cnn.belgiumtsc_cnn, "unit", (56, 56)),
    # Seed 001 used 160×160; 80×80 keeps the default `dvc repro` short on a CPU of few cores.
    "simple_cnn": _Preset(cnn.simple_cnn, "tf", (80, 80)),
    "tutorial_cnn": _Preset(cnn.tutorial_cnn, "unit", (150, 150)),
    "resnet50": _Preset(resnet.resnet50, "unit", (64, 64)),
    "small_resnet": _Preset(resnet.small_resnet, "unit", (128, 128)),
    "small_vgg": _Preset(vgg.small_vgg, "unit", (96, 96)),
}
MODEL_NAMES = tuple(_PRESETS)


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    rngs: nnx.Rngs,
    dtype: Dtype = None,
    batchnorm_momentum: float | None = None,
) -> nnx.Module:
    """A new from-scratch model ``name`` for ``input_shape`` (height, width, channels) images.

    ``dtype`` is the computation dtype of convolutions and dense layers (None: float32, as their
    parameters); ``batchnorm_momentum`` overrides every BatchNorm's (None: each keeps the Keras
    original's).
    """
    return _preset(name).build(
        num_classes=num_classes,
        input_shape=tuple(input_shape),
        dtype=dtype,
        batchnorm_momentum=batchnorm_momentum,
        rngs=rngs,
    )


def create_transfer(backbones: Sequence[str], *, head: str, **options: Any) -> Transfer:
    """A `Transfer` model of ``backbones`` under ``head``: 'dense', or a from-scratch model's name
    applied to their features; ``options`` are Transfer's."""
    if head != "dense" and head not in _PRESETS:
        raise ModelError(
            f"transfer head '{head}' is neither 'dense' nor one of the from-scratch models {', '.join(_PRESETS)}"
        )
    return Transfer(backbones, make_head=None if head == "dense" else _PRESETS[head].build, **options)


def preprocessing(name: str) -> str:
    """The input scaling of from-scratch model ``name``: 'unit' (x/255) or 'tf' (x/127.5 - 1)."""
    return _preset(name).preprocessing


def input_size(name: str) -> tuple[int, int]:
    """The (height, width) from-scratch model ``name`` was designed for."""
    return _preset(name).input_size


def _preset(name: str) -> _Preset:
    if name not in _PRESETS:
        raise UnknownModelError(f"unknown model '{name}'; valid models: {', '.join(MODEL_NAMES)}")
    return _PRESETS[name]
