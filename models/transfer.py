"""Transfer learning: pretrained Keras backbones under a new head (seeds 000, 001 and 003).

A `Transfer` model runs each backbone on the raw [0, 255] image with that backbone's own
keras.applications preprocessing, concatenates their outputs (pooled features, or feature maps
of equal size) and feeds them to a head: dropout and dense layers, or one of the from-scratch
presets applied to the feature map (seed 000 puts its CNN on top of MobileNetV2).

Freezing follows Keras' ``layer.trainable = False``: a frozen layer's weights become `Frozen`
variables, which are not `nnx.Param`s, so neither the gradient nor the optimizer sees them, and
a frozen BatchNorm stays in inference mode in training (its statistics are not updated).
"""

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

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


class Transfer(nnx.Module):
    def __init__(
        self,
        backbones: Sequence[str],
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
        pooling: Literal["avg", "max"] | None,
        trainable_layers: int,
        dropout: float,
        hidden_units: Sequence[int],
        make_head: Callable[..., nnx.Module] | None = None,
        backbone_options: Mapping[str, Mapping[str, Any]] | None = None,
        backbone_modules: Sequence[nnx.Module] | None = None,
        dtype: Dtype = None,
        batchnorm_momentum: float | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        """The ``backbones`` (keys of models.backbones.BACKBONES, built with their
        ``backbone_options``, e.g. MobileNetV2's alpha, and ``pooling``), their last
        ``trainable_layers`` layers with weights trainable (0: frozen, -1: all), under a head:
        ``make_head(num_classes=, input_shape=, dtype=, batchnorm_momentum=, rngs=)`` (a
        from-scratch preset), or, without one, `DenseHead` (``dropout``, ``hidden_units``).

        ``backbone_modules`` are the backbones built by the caller (e.g. with pretrained
        weights); None builds them here with random weights.
        """
        options = backbone_options or {}
        self.preprocessing = tuple(BACKBONES[name].preprocessing for name in backbones)
        if backbone_modules is None:
            backbone_modules = [
                BACKBONES[name].build(
                    input_shape=input_shape,
                    include_top=False,
                    pooling=pooling,
                    dtype=dtype,
                    batchnorm_momentum=batchnorm_momentum,
                    rngs=rngs,
                    **options.get(name, {}),
                )
                for name in backbones
            ]
        self.backbones = nnx.List(backbone_modules)
        for backbone in self.backbones:
            layers = list(cast(KerasNamed, backbone).keras_layers().values())
            trainable = len(layers) if trainable_layers == -1 else trainable_layers
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
            self.head = DenseHead(feature_shape, hidden_units, dropout, num_classes, dtype=dtype, rngs=rngs)

    def features(self, images: jax.Array) -> jax.Array:
        """The backbones' outputs for [0, 255] images, concatenated along the last axis."""
        outputs = [
            backbone(preprocess_input(images, mode))
            for backbone, mode in zip(self.backbones, self.preprocessing, strict=True)
        ]
        return jnp.concatenate(outputs, axis=-1)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.head(self.features(images))

    def train(self, **attributes: Any) -> None:
        super().train(**attributes)
        for _, module in nnx.iter_modules(self.backbones):
            if isinstance(module, nnx.BatchNorm) and nnx.state(module, Frozen):
                module.use_running_average = True


class DenseHead(nnx.Module):
    """Dropout → (Dense + ReLU) per hidden size → Dense logits, over flattened features."""

    def __init__(
        self,
        feature_shape: Sequence[int],
        hidden_units: Sequence[int],
        dropout: float,
        num_classes: int,
        *,
        dtype: Dtype = None,
        rngs: nnx.Rngs,
    ) -> None:
        sizes = [math.prod(feature_shape), *hidden_units, num_classes]
        self.dropout = Dropout(dropout, rngs=rngs)
        self.layers = nnx.List([dense(a, b, dtype=dtype, rngs=rngs) for a, b in itertools.pairwise(sizes)])

    def __call__(self, features: jax.Array) -> jax.Array:
        x = self.dropout(flatten(features))
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x)


def _freeze(layer: nnx.Module) -> None:
    for name, value in list(vars(layer).items()):
        if isinstance(value, nnx.Param):
            setattr(layer, name, Frozen(value.get_value()))
