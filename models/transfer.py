"""Transfer learning: pretrained Keras backbones under a new head (seeds 000, 001 and 003).

A `Transfer` model runs each backbone on the raw [0, 255] image with that backbone's own
keras.applications preprocessing, concatenates their outputs (pooled features, or feature maps
of equal size) and feeds them to a head: dropout and dense layers, or one of the from-scratch
presets applied to the feature map (seed 000 puts its CNN on top of MobileNetV2).

Freezing follows Keras' ``layer.trainable = False``: a frozen layer's weights become `Frozen`
variables, which are not `nnx.Param`s, so neither the gradient nor the optimizer sees them, and
a frozen BatchNorm stays in inference mode in training (its statistics are not updated).
"""

import dataclasses
import math
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from flaxvision import conversion  # a module, not its names: flaxvision.conversion imports models
from flaxvision.conversion.weights import imagenet_weights
from flaxvision.errors import UserError
from flaxvision.transforms import preprocess_input
from models.backbones import BACKBONES
from models.layers import dense, flatten, output_shape


class Frozen(nnx.Variable):
    """A pretrained weight that training leaves as it is."""


@dataclasses.dataclass(frozen=True)
class TransferConfig:
    """A transfer model: params.yaml ``transfer`` (for model=transfer) or a preset's settings.

    backbones: keys of models.backbones.BACKBONES, run side by side on the same image.
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

    backbones: tuple[str, ...] = ("mobilenet_v2",)
    alpha: float = 1.0
    pooling: Literal["avg", "max"] | None = "avg"
    trainable_layers: int = 0
    cache_features: bool = True
    head: str = "dense"
    dropout: float = 0.2
    hidden_units: tuple[int, ...] = ()
    input_size: tuple[int, int] = (224, 224)

    def __post_init__(self):
        if not self.backbones:
            raise ValueError("backbones must name at least one backbone")
        if unknown := [name for name in self.backbones if name not in BACKBONES]:
            raise ValueError(f"unknown backbone {unknown[0]!r}; valid backbones: {', '.join(BACKBONES)}")
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


class Transfer(nnx.Module):
    def __init__(self, config: TransferConfig, *, num_classes: int, input_shape: tuple[int, int, int],
                 make_head, pretrained: str | None, rngs: nnx.Rngs):
        """Backbones with ``pretrained`` weights (params ``pretrained``; None: random, as when
        the trained weights are loaded next), and a head: ``make_head(num_classes=, input_shape=,
        rngs=)`` (a from-scratch preset), or `DenseHead` when make_head is False."""
        self.preprocessing = tuple(BACKBONES[name].preprocessing for name in config.backbones)
        self.backbones = nnx.List([
            conversion.build_backbone(name, weights=_weights_file(pretrained, name, config, input_shape),
                           input_shape=input_shape, pooling=config.pooling, rngs=rngs,
                           **config.backbone_options(name))[0]
            for name in config.backbones
        ])
        for backbone in self.backbones:
            layers = list(backbone.keras_layers().values())
            trainable = len(layers) if config.trainable_layers == -1 else config.trainable_layers
            for layer in layers[:len(layers) - trainable]:
                _freeze(layer)

        shapes = [output_shape(backbone, input_shape) for backbone in self.backbones]
        if len({shape[:-1] for shape in shapes}) > 1:
            raise UserError(f"params.yaml: the backbones' feature maps {shapes} differ in size: "
                            "set transfer.pooling to avg or max to stack them")
        feature_shape = (*shapes[0][:-1], sum(shape[-1] for shape in shapes))
        if make_head:
            self.head = make_head(num_classes=num_classes, input_shape=feature_shape, rngs=rngs)
        else:
            self.head = DenseHead(feature_shape, config.hidden_units, config.dropout, num_classes, rngs=rngs)

    def features(self, images: jax.Array) -> jax.Array:
        """The backbones' outputs for [0, 255] images, concatenated along the last axis."""
        outputs = [backbone(preprocess_input(images, mode))
                   for backbone, mode in zip(self.backbones, self.preprocessing)]
        return jnp.concatenate(outputs, axis=-1)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.head(self.features(images))

    def train(self, **attributes):
        super().train(**attributes)
        for _, module in nnx.iter_modules(self.backbones):
            if isinstance(module, nnx.BatchNorm) and nnx.state(module, Frozen):
                module.use_running_average = True


class DenseHead(nnx.Module):
    """Dropout → (Dense + ReLU) per hidden size → Dense logits, over flattened features."""

    def __init__(self, feature_shape, hidden_units, dropout: float, num_classes: int, *, rngs: nnx.Rngs):
        sizes = [math.prod(feature_shape), *hidden_units, num_classes]
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.layers = nnx.List([dense(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])])

    def __call__(self, features: jax.Array) -> jax.Array:
        x = self.dropout(flatten(features))
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x)


def _freeze(layer: nnx.Module):
    for name, value in list(vars(layer).items()):
        if isinstance(value, nnx.Param):
            setattr(layer, name, Frozen(value.get_value()))


def _weights_file(pretrained: str | None, name: str, config: TransferConfig, input_shape) -> str | None:
    """params ``pretrained`` for backbone ``name``: 'imagenet', 'none', a .h5 file (one backbone),
    or a folder holding the official files under their official names."""
    if pretrained is None or pretrained in ("imagenet", "none") or Path(pretrained).is_file():
        if len(config.backbones) > 1 and pretrained and Path(pretrained).is_file():
            raise UserError(f"params.yaml: pretrained: {pretrained} is one file for {len(config.backbones)} "
                            "backbones: give a folder holding each backbone's file")
        return pretrained
    if not Path(pretrained).is_dir():
        raise UserError(f"params.yaml: pretrained: {pretrained} is not a file or folder; "
                        "give imagenet, none, a Keras .h5 file or a folder of them")
    official = imagenet_weights(name, include_top=False, input_shape=input_shape, **config.backbone_options(name))
    path = Path(pretrained) / official.name
    if not path.is_file():
        raise UserError(f"params.yaml: pretrained: {pretrained} has no {official.name} for backbone '{name}'")
    return str(path)
