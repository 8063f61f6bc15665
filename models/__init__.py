"""The model registry: the architectures that params.yaml's ``model`` names.

From-scratch presets (the seeds' CNNs, ResNet50) take float32 images [batch, height, width,
channels] already scaled by `preprocessing(name)` (see models.scaling.preprocess_input).
Transfer models (`TRANSFER_PRESETS`, and ``transfer``: the general form, configured by a
`TransferConfig`) take [0, 255] images and scale them per backbone themselves. Every model returns
logits [batch, num_classes]. Dropout and BatchNorm follow NNX's ``model.train()`` /
``model.eval()``; a new model is in training mode. Dropout draws from the model's own RNG
streams, so its state lives with the parameters.

This is architecture only: weights are random, and a name or shape the registry cannot build is a
`ModelError`. flaxvision.builder fills pretrained weights and words the errors for params.yaml.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

from flax import nnx

from flaxvision.models import cnn, resnet
from flaxvision.models.layers import Dtype, ModelError

__all__ = [
    "MODEL_NAMES",
    "TRANSFER_PRESETS",
    "ModelError",
    "TransferConfig",
    "UnknownModelError",
    "create_model",
    "input_size",
    "preprocessing",
    "transfer_config",
]
from flaxvision.models.transfer import Transfer, TransferConfig


class UnknownModelError(ModelError):
    """No model of that name."""


class _Preset(NamedTuple):
    build: Callable[..., nnx.Module]
    preprocessing: str  # the models.scaling.preprocess_input mode it was designed with
    input_size: tuple[int, int]  # (height, width) when params preprocess.image_size is null


_PRESETS = {
    "belgiumtsc_cnn": _Preset(cnn.belgiumtsc_cnn, "unit", (56, 56)),
    # Seed 001 used 160×160; 80×80 keeps the default `dvc repro` within 3 minutes on 2 cores.
    "simple_cnn": _Preset(cnn.simple_cnn, "tf", (80, 80)),
    "tutorial_cnn": _Preset(cnn.tutorial_cnn, "unit", (150, 150)),
    "resnet50": _Preset(resnet.resnet50, "unit", (64, 64)),
    "small_resnet": _Preset(resnet.small_resnet, "unit", (128, 128)),
    "small_vgg": _Preset(cnn.small_vgg, "unit", (96, 96)),
}
TRANSFER_PRESETS = {
    # Seed 001: frozen MobileNetV2 at 160×160, augmented images, dropout and a 64-unit layer.
    "mobilenet_v2_transfer": TransferConfig(
        backbones=("mobilenet_v2",),
        pooling="avg",
        cache_features=False,
        dropout=0.2,
        hidden_units=(64,),
        input_size=(160, 160),
    ),
    # Seed 000: MobileNetV2 at 56×56 under the seed's CNN, with Keras' base.layers[-5:]
    # trainable: block_16_project(_BN), Conv_1(_bn) and out_relu, which has no weights.
    "mobilenet_v2_finetune": TransferConfig(
        backbones=("mobilenet_v2",),
        pooling=None,
        trainable_layers=4,
        cache_features=False,
        head="belgiumtsc_cnn",
        input_size=(56, 56),
    ),
    # Seed 003: ResNet50V2 and DenseNet121 pooled features at 331×331, Dropout 0.7, Dense.
    "stacked": TransferConfig(
        backbones=("resnet50v2", "densenet121"), pooling="avg", dropout=0.7, input_size=(331, 331)
    ),
}
MODEL_NAMES = (*_PRESETS, *TRANSFER_PRESETS, "transfer")


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    rngs: nnx.Rngs,
    transfer: TransferConfig | None = None,
    backbones: Sequence[nnx.Module] | None = None,
    dtype: Dtype = None,
    batchnorm_momentum: float | None = None,
) -> nnx.Module:
    """A new model ``name`` for ``input_shape`` (height, width, channels) images.

    ``transfer`` configures model 'transfer'. ``backbones`` are a transfer model's backbones, built
    (and filled with weights) by the caller; None builds them with random weights. ``dtype`` is the
    computation dtype of convolutions and dense layers (None: float32, as their parameters);
    ``batchnorm_momentum`` overrides every BatchNorm's (None: each keeps the Keras original's).
    """
    options = dict(
        num_classes=num_classes,
        input_shape=tuple(input_shape),
        dtype=dtype,
        batchnorm_momentum=batchnorm_momentum,
        rngs=rngs,
    )
    if config := transfer_config(name, transfer):
        if config.head != "dense" and config.head not in _PRESETS:
            raise ModelError(
                f"transfer head '{config.head}' is neither 'dense' nor one of the from-scratch "
                f"models {', '.join(_PRESETS)}"
            )
        return Transfer(
            config, backbones=backbones, make_head=config.head != "dense" and _PRESETS[config.head].build, **options
        )
    return _preset(name).build(**options)


def transfer_config(name: str, transfer: TransferConfig | None = None) -> TransferConfig | None:
    """The settings of transfer model ``name`` (``transfer`` for 'transfer'); None for the others."""
    if name == "transfer":
        return transfer or TransferConfig()
    if name in TRANSFER_PRESETS:
        return TRANSFER_PRESETS[name]
    _preset(name)  # an unknown name fails here
    return None


def preprocessing(name: str) -> str:
    """The input scaling of model ``name``: 'unit' (x/255), 'tf' (x/127.5 - 1), or 'none' for the
    transfer models, which scale their input per backbone."""
    return "none" if transfer_config(name) else _preset(name).preprocessing


def input_size(name: str, transfer: TransferConfig | None = None) -> tuple[int, int]:
    """The (height, width) model ``name`` was designed for."""
    config = transfer_config(name, transfer)
    return config.input_size if config else _preset(name).input_size


def _preset(name: str) -> _Preset:
    if name not in _PRESETS:
        raise UnknownModelError(f"unknown model '{name}'; valid models: {', '.join(MODEL_NAMES)}")
    return _PRESETS[name]
