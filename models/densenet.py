"""keras.applications' DenseNet121, layer for layer.

Dense blocks of `ConvBlock`s, each adding ``growth_rate`` channels to its input by
concatenation, separated by `TransitionBlock`s that halve the channels and the resolution.
All BatchNorms are pre-activation (BatchNorm → ReLU → convolution), epsilon 1.001e-5; no
convolution has a bias.
"""

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from flaxvision.models.layers import (
    Dtype,
    Pooling,
    Top,
    average_pool,
    batch_norm,
    check_input_size,
    conv,
    max_pool,
    zero_pad,
)

EPSILON = 1.001e-5
GROWTH_RATE = 32
DENSENET121_BLOCKS = (6, 12, 24, 16)  # ConvBlocks per dense block


class ConvBlock(nnx.Module):
    """Keras' conv_block: BatchNorm, ReLU, 1×1 convolution to 4·growth_rate channels,
    BatchNorm, ReLU, 3×3 convolution to growth_rate channels, concatenated to the input."""

    def __init__(
        self,
        in_features: int,
        growth_rate: int,
        *,
        dtype: Dtype = None,
        batchnorm_momentum: float | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        norm = partial(batch_norm, epsilon=EPSILON, momentum=batchnorm_momentum, rngs=rngs)
        self.norm0 = norm(in_features)
        self.conv1 = conv(in_features, 4 * growth_rate, 1, use_bias=False, dtype=dtype, rngs=rngs)
        self.norm1 = norm(4 * growth_rate)
        self.conv2 = conv(4 * growth_rate, growth_rate, 3, padding="SAME", use_bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv1(nnx.relu(self.norm0(x)))
        y = self.conv2(nnx.relu(self.norm1(y)))
        return jnp.concatenate([x, y], axis=-1)

    def keras_layers(self, prefix: str) -> dict[str, nnx.Module]:
        return {
            f"{prefix}_0_bn": self.norm0,
            f"{prefix}_1_conv": self.conv1,
            f"{prefix}_1_bn": self.norm1,
            f"{prefix}_2_conv": self.conv2,
        }


class TransitionBlock(nnx.Module):
    """Keras' transition_block: BatchNorm, ReLU, 1×1 convolution to half the channels, 2×2 average pooling."""

    def __init__(
        self, in_features: int, *, dtype: Dtype = None, batchnorm_momentum: float | None = None, rngs: nnx.Rngs
    ) -> None:
        self.norm = batch_norm(in_features, epsilon=EPSILON, momentum=batchnorm_momentum, rngs=rngs)
        self.conv = conv(in_features, in_features // 2, 1, use_bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return average_pool(self.conv(nnx.relu(self.norm(x))), 2)

    def keras_layers(self, prefix: str) -> dict[str, nnx.Module]:
        return {f"{prefix}_bn": self.norm, f"{prefix}_conv": self.conv}


class DenseNet(nnx.Module):
    """A 7×7/2 convolution with BatchNorm and ReLU ('conv1'), 3×3/2 max pooling, dense blocks
    ('conv2' … 'conv5', their ConvBlocks 'block1', …) with transitions between them ('pool2' …
    'pool4'), BatchNorm and ReLU ('bn'), then `Top`."""

    def __init__(
        self,
        blocks: tuple[int, ...],
        *,
        input_shape: tuple[int, int, int],
        include_top: bool = True,
        pooling: Pooling = None,
        classes: int = 1000,
        dtype: Dtype = None,
        batchnorm_momentum: float | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        check_input_size(input_shape)
        options = dict(dtype=dtype, batchnorm_momentum=batchnorm_momentum, rngs=rngs)
        norm = partial(batch_norm, epsilon=EPSILON, momentum=batchnorm_momentum, rngs=rngs)
        self.stem_conv = conv(input_shape[-1], 64, 7, strides=2, padding=3, use_bias=False, dtype=dtype, rngs=rngs)
        self.stem_bn = norm(64)
        in_features, dense_blocks, transitions = 64, [], []
        for index, num_blocks in enumerate(blocks):
            if index:
                transitions.append(TransitionBlock(in_features, **options))
                in_features //= 2
            dense_block = []
            for _ in range(num_blocks):
                dense_block.append(ConvBlock(in_features, GROWTH_RATE, **options))
                in_features += GROWTH_RATE
            dense_blocks.append(nnx.List(dense_block))
        self.dense_blocks = nnx.List(dense_blocks)
        self.transitions = nnx.List(transitions)
        self.final_bn = norm(in_features)
        self.top = Top(in_features, include_top=include_top, pooling=pooling, classes=classes, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.stem_bn(self.stem_conv(x)))
        x = max_pool(zero_pad(x, 1), 3, strides=2)
        for index, dense_block in enumerate(self.dense_blocks):
            if index:
                x = self.transitions[index - 1](x)
            for block in dense_block:
                x = block(x)
        return self.top(nnx.relu(self.final_bn(x)))

    def keras_layers(self) -> dict[str, nnx.Module]:
        """Keras layer name → the module holding its weights, in Keras' layer order."""
        layers = {"conv1_conv": self.stem_conv, "conv1_bn": self.stem_bn}
        for index, dense_block in enumerate(self.dense_blocks):
            if index:
                layers |= self.transitions[index - 1].keras_layers(f"pool{index + 1}")
            for number, block in enumerate(dense_block, start=1):
                layers |= block.keras_layers(f"conv{index + 2}_block{number}")
        return layers | {"bn": self.final_bn} | self.top.keras_layers()
