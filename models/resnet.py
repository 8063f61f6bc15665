"""ResNet v1 with bottleneck blocks, as built in seed 004 (the Keras ResNet50 exercise).

One implementation; `resnet50` is its preset. For 64×64×3 inputs and 6 classes it has
the seed's 23,600,006 parameters: 23,546,886 trainable and 53,120 BatchNorm statistics.
"""

from collections.abc import Sequence
from functools import partial

import jax
from flax import nnx

from models.layers import (
    Lazy,
    Sequential,
    average_pool,
    batch_norm,
    conv,
    dense,
    flatten,
    glorot_uniform,
    max_pool,
    random_uniform,
    zero_pad,
)


class BottleneckBlock(nnx.Module):
    """1×1 → k×k → 1×1 convolutions, each with BatchNorm, added to the shortcut, then ReLU.

    With ``projection`` it is the seed's ``convolutional_block``: the shortcut is a 1×1
    convolution with BatchNorm, and ``strides`` applies to it and to the first 1×1
    convolution (as in Keras' ResNet50 v1). Without, it is the ``identity_block``.
    """

    def __init__(
        self,
        in_features: int,
        filters: tuple[int, int, int],
        *,
        kernel_size: int = 3,
        strides: int = 1,
        projection: bool = False,
        kernel_init: nnx.Initializer = glorot_uniform,
        use_bias: bool = True,
        epsilon: float = 1e-3,
        rngs: nnx.Rngs,
    ):
        if not projection and (strides != 1 or in_features != filters[-1]):
            raise ValueError("an identity shortcut needs strides 1 and in_features == filters[-1]")
        reduce, middle, expand = filters

        def conv_norm(in_features, out_features, kernel_size, **kwargs):
            return nnx.Sequential(
                conv(in_features, out_features, kernel_size, use_bias=use_bias, kernel_init=kernel_init,
                     rngs=rngs, **kwargs),
                batch_norm(out_features, epsilon=epsilon, rngs=rngs),
            )

        self.reduce = conv_norm(in_features, reduce, 1, strides=strides)
        self.middle = conv_norm(reduce, middle, kernel_size, padding="SAME")
        self.expand = conv_norm(middle, expand, 1)
        self.shortcut = conv_norm(in_features, expand, 1, strides=strides) if projection else None

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        x = nnx.relu(self.reduce(x))
        x = nnx.relu(self.middle(x))
        return nnx.relu(self.expand(x) + shortcut)


def resnet(
    stage_sizes: Sequence[int],
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    rngs: nnx.Rngs,
) -> Sequential:
    """The seed's ResNet: a 7×7/2 stem, bottleneck stages, 2×2 average pooling, a dense head.

    Stage i has ``stage_sizes[i]`` blocks of filters (64·2^i, 64·2^i, 256·2^i); its first
    block projects the shortcut (stride 2 after the first stage). Initializers follow the
    seed: glorot-uniform for the stem, head and projection blocks, Keras RandomUniform
    (±0.05) for identity blocks.
    """
    blocks = []
    for stage, num_blocks in enumerate(stage_sizes):
        filters = (64 * 2**stage, 64 * 2**stage, 256 * 2**stage)
        blocks.append(Lazy(BottleneckBlock, filters, strides=1 if stage == 0 else 2, projection=True))
        blocks += [Lazy(BottleneckBlock, filters, kernel_init=random_uniform())] * (num_blocks - 1)
    return Sequential(
        input_shape,
        partial(zero_pad, padding=3),
        Lazy(conv, 64, 7, strides=2),
        Lazy(batch_norm),
        nnx.relu,
        partial(max_pool, size=3, strides=2),
        *blocks,
        partial(average_pool, size=2),
        flatten,
        Lazy(dense, num_classes),
        rngs=rngs,
    )


def resnet50(*, num_classes: int, input_shape: tuple[int, int, int], rngs: nnx.Rngs) -> Sequential:
    """Seed 004: ResNet50 for the SIGNS hand-digit images (64×64 RGB scaled to [0, 1], 6 classes)."""
    return resnet((3, 4, 6, 3), num_classes=num_classes, input_shape=input_shape, rngs=rngs)
