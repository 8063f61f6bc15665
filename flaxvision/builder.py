"""The model builder: params (or a trained model's metadata) → a ready model.

`models` holds pure architectures with random weights. Building one for this pipeline takes
three more steps, all here: fill pretrained weights (a transfer model's backbones, converted
from Keras files by flaxvision.conversion), freeze what must not train (the transfer config's
``trainable_layers``, applied as the model is constructed), and word what the registry
rejects as a one-line params.yaml error with the fix.
"""

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

from flax import nnx

from flaxvision import conversion, models
from flaxvision.conversion.weights import imagenet_weights
from flaxvision.errors import UserError
from flaxvision.models.backbones import BACKBONES
from flaxvision.models.layers import Dtype, InputTooSmallError, ModelError
from flaxvision.models.transfer import FeatureShapeError
from flaxvision.ops import onednn
from flaxvision.params import Params, TransferConfig

# The transfer models params.yaml names: each a fixed `transfer` section.
TRANSFER_PRESETS = {
    # Seed 001: frozen MobileNetV2 at 160×160, augmented images, dropout and a 64-unit layer.
    "mobilenet_v2_transfer": TransferConfig(
        backbones=("mobilenet_v2",),
        alpha=1.0,
        pooling="avg",
        trainable_layers=0,
        cache_features=False,
        head="dense",
        dropout=0.2,
        hidden_units=(64,),
        input_size=(160, 160),
    ),
    # Seed 000: MobileNetV2 at 56×56 under the seed's CNN, with Keras' base.layers[-5:]
    # trainable: block_16_project(_BN), Conv_1(_bn) and out_relu, which has no weights.
    "mobilenet_v2_finetune": TransferConfig(
        backbones=("mobilenet_v2",),
        alpha=1.0,
        pooling=None,
        trainable_layers=4,
        cache_features=False,
        head="belgiumtsc_cnn",
        dropout=0.2,
        hidden_units=(),
        input_size=(56, 56),
    ),
    # Seed 003: ResNet50V2 and DenseNet121 pooled features at 331×331, Dropout 0.7, Dense.
    "stacked": TransferConfig(
        backbones=("resnet50v2", "densenet121"),
        alpha=1.0,
        pooling="avg",
        trainable_layers=0,
        cache_features=True,
        head="dense",
        dropout=0.7,
        hidden_units=(),
        input_size=(331, 331),
    ),
}
MODEL_NAMES = (*models.MODEL_NAMES, *TRANSFER_PRESETS, "transfer")


def build_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    transfer: TransferConfig | None = None,
    pretrained: str | None = None,
    dtype: Dtype = None,
    batchnorm_momentum: float | None = None,
    seed: int = 0,
) -> nnx.Module:
    """Model ``name`` (params ``model``) for ``input_shape`` images and ``num_classes`` classes.

    ``transfer`` is a transfer model's settings (`transfer_config`; a preset's own when None);
    ``pretrained`` is params
    ``pretrained``: the weights of a transfer model's backbones ('imagenet', 'none', a Keras .h5
    file or a folder of them), None for random ones (as when trained weights are loaded next).
    ``dtype`` and ``batchnorm_momentum`` are params train.compute_dtype and train.batchnorm_momentum.
    """
    _check_name(name)
    transfer = transfer or TRANSFER_PRESETS.get(name)
    input_shape = cast(tuple[int, int, int], tuple(input_shape))
    rngs = nnx.Rngs(seed)
    options = dict(num_classes=num_classes, input_shape=input_shape, dtype=dtype, batchnorm_momentum=batchnorm_momentum)
    with _params_errors(name):
        if transfer is None:
            return models.create_model(name, rngs=rngs, **options)
        backbones = None
        if pretrained not in (None, "none"):
            backbones = [
                conversion.build_backbone(
                    backbone,
                    weights=_weights_file(cast(str, pretrained), backbone, transfer, input_shape),
                    input_shape=input_shape,
                    pooling=transfer.pooling,
                    dtype=dtype,
                    batchnorm_momentum=batchnorm_momentum,
                    rngs=rngs,
                    **transfer.backbone_options(backbone),
                )[0]
                for backbone in transfer.backbones
            ]
        return models.create_transfer(
            transfer.backbones,
            head=transfer.head,
            pooling=transfer.pooling,
            trainable_layers=transfer.trainable_layers,
            dropout=transfer.dropout,
            hidden_units=transfer.hidden_units,
            backbone_options={name: transfer.backbone_options(name) for name in transfer.backbones},
            backbone_modules=backbones,
            rngs=rngs,
            **options,
        )


def convolutions(params: Params) -> str:
    """params.yaml's ``convolutions``: what the model's convolutions run with (a key of
    models.layers.CONVOLUTIONS), with oneDNN's extension loaded when it is named."""
    if params.convolutions == "onednn" and not onednn.SUPPORTED:
        return "xla"  # and no portable bits to keep there: XLA's own are that CPU's
    if params.convolutions == "onednn":
        try:
            onednn.load()
        except ImportError as error:
            raise UserError(f"params.yaml: convolutions is onednn, but {error}; or set convolutions: xla") from None
    return params.convolutions


def transfer_config(name: str, transfer: TransferConfig) -> TransferConfig | None:
    """The transfer settings of model ``name``: params ``transfer`` for 'transfer', a preset's for
    the transfer presets, None for a from-scratch model."""
    _check_name(name)
    config = transfer if name == "transfer" else TRANSFER_PRESETS.get(name)
    if config and (unknown := [backbone for backbone in config.backbones if backbone not in BACKBONES]):
        raise UserError(
            f"params.yaml: transfer.backbones: unknown backbone '{unknown[0]}'; valid backbones: {', '.join(BACKBONES)}"
        )
    return config


def input_size(name: str, transfer: TransferConfig) -> tuple[int, int]:
    """The (height, width) model ``name`` was designed for: preprocess's size when params leave it null."""
    config = transfer_config(name, transfer)
    return config.input_size if config else models.input_size(name)


def preprocessing(name: str) -> str:
    """The models.scaling mode that model ``name`` takes its images in: 'none' for the transfer
    models, which scale their input per backbone."""
    _check_name(name)
    if name == "transfer" or name in TRANSFER_PRESETS:
        return "none"
    with _params_errors(name):
        return models.preprocessing(name)


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise UserError(f"params.yaml: unknown model '{name}'; valid models: {', '.join(MODEL_NAMES)}")


@contextlib.contextmanager
def _params_errors(name: str) -> Iterator[None]:
    """What the registry cannot build, as the params.yaml error that says what to change."""
    try:
        yield
    except InputTooSmallError as error:
        raise UserError(
            f"params.yaml: model '{name}' cannot take these images (raise preprocess.image_size): {error}"
        ) from None
    except FeatureShapeError as error:
        raise UserError(f"params.yaml: {error}: set transfer.pooling to avg or max to stack them") from None
    except ModelError as error:
        raise UserError(f"params.yaml: {error}") from None


def _weights_file(pretrained: str, backbone: str, config: TransferConfig, input_shape: Sequence[int]) -> str:
    """params ``pretrained`` for ``backbone``: 'imagenet', a .h5 file (one backbone), or a folder
    holding the official files under their official names."""
    if pretrained == "imagenet" or Path(pretrained).is_file():
        if len(config.backbones) > 1 and Path(pretrained).is_file():
            raise UserError(
                f"params.yaml: pretrained: {pretrained} is one file for {len(config.backbones)} "
                "backbones: give a folder holding each backbone's file"
            )
        return pretrained
    if not Path(pretrained).is_dir():
        raise UserError(
            f"params.yaml: pretrained: {pretrained} is not a file or folder; "
            "give imagenet, none, a Keras .h5 file or a folder of them"
        )
    official = imagenet_weights(
        backbone, include_top=False, input_shape=input_shape, **config.backbone_options(backbone)
    )
    path = Path(pretrained) / official.name
    if not path.is_file():
        raise UserError(f"params.yaml: pretrained: {pretrained} has no {official.name} for backbone '{backbone}'")
    return str(path)
