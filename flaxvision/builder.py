"""The model builder: params (or a trained model's metadata) → a ready model.

`models` holds pure architectures with random weights. Building one for this pipeline takes
three more steps, all here: fill pretrained weights (a transfer model's backbones, converted
from Keras files by flaxvision.conversion), freeze what must not train (the transfer config's
``trainable_layers``, applied as the model is constructed), and word what the registry
rejects as a one-line params.yaml error with the fix.
"""

import contextlib
from pathlib import Path
from typing import cast

from flax import nnx

from flaxvision import conversion, models
from flaxvision.config import require
from flaxvision.conversion.weights import imagenet_weights
from flaxvision.errors import UserError
from flaxvision.models import onednn
from flaxvision.models.layers import CONVOLUTIONS, Dtype, InputTooSmallError, ModelError
from flaxvision.models.transfer import FeatureShapeError, TransferConfig


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

    ``transfer`` is params ``transfer`` (for 'transfer'); ``pretrained`` is params ``pretrained``:
    the weights of a transfer model's backbones ('imagenet', 'none', a Keras .h5 file or a folder
    of them), None for random ones (as when trained weights are loaded next). ``dtype`` and
    ``batchnorm_momentum`` are params train.compute_dtype and train.batchnorm_momentum.
    """
    input_shape = cast(tuple[int, int, int], tuple(input_shape))
    rngs = nnx.Rngs(seed)
    with _params_errors(name):
        config = models.transfer_config(name, transfer)
        backbones = None
        if config and pretrained not in (None, "none"):
            backbones = [
                conversion.build_backbone(
                    backbone,
                    weights=_weights_file(cast(str, pretrained), backbone, config, input_shape),
                    input_shape=input_shape,
                    pooling=config.pooling,
                    dtype=dtype,
                    batchnorm_momentum=batchnorm_momentum,
                    rngs=rngs,
                    **config.backbone_options(backbone),
                )[0]
                for backbone in config.backbones
            ]
        return models.create_model(
            name,
            num_classes=num_classes,
            input_shape=input_shape,
            rngs=rngs,
            transfer=config,
            backbones=backbones,
            dtype=dtype,
            batchnorm_momentum=batchnorm_momentum,
        )


def convolutions(params: dict) -> str:
    """params.yaml's ``convolutions``: what the model's convolutions run with (a key of
    models.layers.CONVOLUTIONS), checked, with oneDNN's extension loaded when it is named."""
    name = require(params, "convolutions")
    if name not in CONVOLUTIONS:
        raise UserError(f"params.yaml: 'convolutions' must be one of {', '.join(CONVOLUTIONS)}, got {name!r}")
    if name == "onednn" and not onednn.SUPPORTED:
        return "xla"  # and no portable bits to keep there: XLA's own are that CPU's
    if name == "onednn":
        try:
            onednn.load()
        except ImportError as error:
            raise UserError(f"params.yaml: convolutions is onednn, but {error}; or set convolutions: xla") from None
    return name


def transfer_config(name: str, transfer: TransferConfig | None) -> TransferConfig | None:
    """The transfer settings of model ``name`` (params ``transfer`` for 'transfer'); None if it has none."""
    with _params_errors(name):
        return models.transfer_config(name, transfer)


def input_size(name: str, transfer: TransferConfig | None) -> tuple[int, int]:
    """The (height, width) model ``name`` was designed for: preprocess's size when params leave it null."""
    with _params_errors(name):
        return models.input_size(name, transfer)


def preprocessing(name: str) -> str:
    """The models.scaling mode that model ``name`` takes its images in."""
    with _params_errors(name):
        return models.preprocessing(name)


@contextlib.contextmanager
def _params_errors(name: str):
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


def _weights_file(pretrained: str, backbone: str, config: TransferConfig, input_shape) -> str:
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
