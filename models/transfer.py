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
import itertools
import math
from collections.abc import Sequence
from typing import Literal, cast

import jax
import jax.numpy as jnp
from flax import nnx

from flaxvision.models.backbones import BACKBONES
from flaxvision.models.layers import Dropout, Dtype, KerasNamed, ModelError, dense, flatten, output_shape
from flaxvision.models.scaling import preprocess_input


class FeatureShapeError(ModelError):
    """The backbones' feature maps cannot be concatenated."""


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
    def __init__(
        self,
        config: TransferConfig,
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
        make_head,
        backbones: Sequence[nnx.Module] | None = None,
        dtype: Dtype = None,
        batchnorm_momentum: float | None = None,
        rngs: nnx.Rngs,
    ):
        """``config.backbones``, frozen as ``config.trainable_layers`` says, under a head:
        ``make_head(num_classes=, input_shape=, dtype=, batchnorm_momentum=, rngs=)`` (a
        from-scratch preset), or `DenseHead` when make_head is False.

        ``backbones`` are the backbone modules, built by the caller (e.g. with pretrained weights);
        None builds them here with random weights.
        """
        self.preprocessing = tuple(BACKBONES[name].preprocessing for name in config.backbones)
        if backbones is None:
            backbones = [
                BACKBONES[name].build(
                    input_shape=input_shape,
                    include_top=False,
                    pooling=config.pooling,
                    dtype=dtype,
                    batchnorm_momentum=batchnorm_momentum,
                    rngs=rngs,
                    **config.backbone_options(name),
                )
                for name in config.backbones
            ]
        self.backbones = nnx.List(backbones)
        for backbone in self.backbones:
            layers = list(cast(KerasNamed, backbone).keras_layers().values())
            trainable = len(layers) if config.trainable_layers == -1 else config.trainable_layers
            for layer in layers[: len(layers) - trainable]:
                _freeze(layer)

        shapes = [output_shape(backbone, input_shape) for backbone in self.backbones]
        if len({shape[:-1] for shape in shapes}) > 1:
            raise FeatureShapeError(f"the backbones' feature maps {shapes} differ in size")
        feature_shape = (*shapes[0][:-1], sum(shape[-1] for shape in shapes))
        if make_head:
            self.head = make_head(
                num_classes=num_classes,
                input_shape=feature_shape,
                dtype=dtype,
                batchnorm_momentum=batchnorm_momentum,
                rngs=rngs,
            )
        else:
            self.head = DenseHead(
                feature_shape, config.hidden_units, config.dropout, num_classes, dtype=dtype, rngs=rngs
            )

    def features(self, images: jax.Array) -> jax.Array:
        """The backbones' outputs for [0, 255] images, concatenated along the last axis."""
        outputs = [
            backbone(preprocess_input(images, mode))
            for backbone, mode in zip(self.backbones, self.preprocessing, strict=True)
        ]
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

    def __init__(
        self, feature_shape, hidden_units, dropout: float, num_classes: int, *, dtype: Dtype = None, rngs: nnx.Rngs
    ):
        sizes = [math.prod(feature_shape), *hidden_units, num_classes]
        self.dropout = Dropout(dropout, rngs=rngs)
        self.layers = nnx.List([dense(a, b, dtype=dtype, rngs=rngs) for a, b in itertools.pairwise(sizes)])

    def __call__(self, features: jax.Array) -> jax.Array:
        x = self.dropout(flatten(features))
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x)


def _freeze(layer: nnx.Module):
    for name, value in list(vars(layer).items()):
        if isinstance(value, nnx.Param):
            setattr(layer, name, Frozen(value.get_value()))
