"""The model registry: the presets that params.yaml's ``model`` names.

From-scratch presets (the seeds' CNNs, ResNet50) take float32 images [batch, height, width,
channels] already scaled by `preprocessing(name)` (see flaxvision.transforms.preprocess_input).
Transfer models (`TRANSFER_PRESETS`, and ``transfer``: the general form configured by params
``transfer``) take [0, 255] images and scale them per backbone themselves. Every model returns
logits [batch, num_classes]. Dropout and BatchNorm follow NNX's ``model.train()`` /
``model.eval()``; a new model is in training mode. Dropout draws from the model's own RNG
streams, so its state lives with the parameters.
"""

from collections.abc import Callable
from typing import NamedTuple

from flax import nnx

from flaxvision.errors import UserError
from models import cnn, resnet
from models.layers import InputTooSmallError
from models.transfer import Transfer, TransferConfig


class _Preset(NamedTuple):
    build: Callable[..., nnx.Module]
    preprocessing: str  # the flaxvision.transforms.preprocess_input mode it was designed with
    input_size: tuple[int, int]  # (height, width) when params preprocess.image_size is null


_PRESETS = {
    "belgiumtsc_cnn": _Preset(cnn.belgiumtsc_cnn, "unit", (56, 56)),
    # Seed 001 used 160×160; 96×96 keeps the default `dvc repro` within minutes on a CPU.
    "simple_cnn": _Preset(cnn.simple_cnn, "tf", (96, 96)),
    "tutorial_cnn": _Preset(cnn.tutorial_cnn, "unit", (150, 150)),
    "resnet50": _Preset(resnet.resnet50, "unit", (64, 64)),
}
TRANSFER_PRESETS = {
    # Seed 001: frozen MobileNetV2 at 160×160, augmented images, dropout and a 64-unit layer.
    "mobilenet_v2_transfer": TransferConfig(
        backbones=("mobilenet_v2",), pooling="avg", cache_features=False, dropout=0.2,
        hidden_units=(64,), input_size=(160, 160)),
    # Seed 000: MobileNetV2 at 56×56 under the seed's CNN, with Keras' base.layers[-5:]
    # trainable: block_16_project(_BN), Conv_1(_bn) and out_relu, which has no weights.
    "mobilenet_v2_finetune": TransferConfig(
        backbones=("mobilenet_v2",), pooling=None, trainable_layers=4, cache_features=False,
        head="belgiumtsc_cnn", input_size=(56, 56)),
    # Seed 003: ResNet50V2 and DenseNet121 pooled features at 331×331, Dropout 0.7, Dense.
    "stacked": TransferConfig(
        backbones=("resnet50v2", "densenet121"), pooling="avg", dropout=0.7, input_size=(331, 331)),
}
MODEL_NAMES = (*_PRESETS, *TRANSFER_PRESETS, "transfer")


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    rngs: nnx.Rngs,
    transfer: TransferConfig | None = None,
    pretrained: str | None = None,
) -> nnx.Module:
    """A new model ``name`` for ``input_shape`` (height, width, channels) images.

    ``transfer`` is params ``transfer``, used when ``name`` is 'transfer'; ``pretrained`` is params
    ``pretrained``, the weights of a transfer model's backbones (None: random).
    """
    try:
        if config := transfer_config(name, transfer):
            if config.head != "dense" and config.head not in _PRESETS:
                raise UserError(f"params.yaml: transfer head '{config.head}' is neither 'dense' nor one of "
                                f"the from-scratch models {', '.join(_PRESETS)}")
            return Transfer(config, num_classes=num_classes, input_shape=tuple(input_shape),
                            make_head=config.head != "dense" and _PRESETS[config.head].build,
                            pretrained=pretrained, rngs=rngs)
        return _preset(name).build(num_classes=num_classes, input_shape=tuple(input_shape), rngs=rngs)
    except InputTooSmallError as error:
        raise UserError(
            f"params.yaml: model '{name}' cannot take these images (raise preprocess.image_size): {error}"
        ) from None


def transfer_config(name: str, transfer: TransferConfig | None = None) -> TransferConfig | None:
    """The settings of transfer model ``name`` (params ``transfer`` for 'transfer'); None for the others."""
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
        raise UserError(f"params.yaml: unknown model '{name}'; valid models: {', '.join(MODEL_NAMES)}")
    return _PRESETS[name]
