"""keras.applications' MobileNetV2, layer for layer, at any width ``alpha`` and input size.

Inverted residual blocks (1×1 expansion, 3×3 depthwise, linear 1×1 projection) with ReLU6 and
BatchNorm (epsilon 1e-3, momentum 0.999) after every convolution, channel counts rounded to
multiples of 8 as Keras rounds them.
"""

from typing import Any, cast

import jax
from flax import nnx

from flaxvision.models.layers import (
    Dtype,
    Pooling,
    Top,
    batch_norm,
    check_input_size,
    conv_norm,
    depthwise_conv,
    relu6,
    zero_pad,
)

EPSILON, MOMENTUM = 1e-3, 0.999

# (expansion, filters at alpha 1, blocks, strides of the first block), the paper's Table 2.
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Keras' _make_divisible: the nearest multiple of ``divisor``, at least ``divisor``, and
    no more than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def correct_pad(size: tuple[int, ...], kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras' imagenet_utils.correct_pad: the zero padding before a strided 'valid' convolution
    that makes it cover the image as TensorFlow's 'same' does (one pixel less before, for even sizes)."""
    half = kernel_size // 2
    # size is (height, width): two pairs
    return cast(tuple[tuple[int, int], tuple[int, int]], tuple((half - (1 - n % 2), half) for n in size))


def _conv_norm(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    batchnorm_momentum: float | None,
    rngs: nnx.Rngs,
    **options: Any,
) -> nnx.Sequential:
    return conv_norm(
        in_features,
        out_features,
        kernel_size,
        use_bias=False,
        epsilon=EPSILON,
        momentum=_momentum(batchnorm_momentum),
        rngs=rngs,
        **options,
    )


def _momentum(batchnorm_momentum: float | None) -> float:
    return MOMENTUM if batchnorm_momentum is None else batchnorm_momentum


class InvertedResidual(nnx.Module):
    """Keras' _inverted_res_block: a 1×1 expansion to ``expansion``× the channels (absent when
    ``expansion`` is 1, as in block 0), a 3×3 depthwise convolution, each with BatchNorm and
    ReLU6, then a 1×1 projection with BatchNorm and no activation; the input is added when it
    has the output's shape."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        expansion: int,
        strides: int,
        dtype: Dtype = None,
        batchnorm_momentum: float | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        hidden = expansion * in_features
        options = dict(dtype=dtype, batchnorm_momentum=batchnorm_momentum, rngs=rngs)
        self.expand = _conv_norm(in_features, hidden, 1, **options) if expansion != 1 else None
        # With strides 2 Keras pads by correct_pad, which depends on the input size, then convolves 'valid'.
        self.depthwise = nnx.Sequential(
            depthwise_conv(
                hidden,
                3,
                strides=strides,
                padding="SAME" if strides == 1 else "VALID",
                use_bias=False,
                dtype=dtype,
                rngs=rngs,
            ),
            batch_norm(hidden, epsilon=EPSILON, momentum=_momentum(batchnorm_momentum), rngs=rngs),
        )
        self.project = _conv_norm(hidden, out_features, 1, **options)
        self.strides = strides
        self.residual = strides == 1 and in_features == out_features

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x if self.expand is None else relu6(self.expand(x))
        if self.strides != 1:
            y = zero_pad(y, correct_pad(y.shape[1:3], 3))
        y = self.project(relu6(self.depthwise(y)))
        return x + y if self.residual else y

    def keras_layers(self, prefix: str) -> dict[str, nnx.Module]:
        """Keras' names for this block's layers: ``prefix`` is 'block_{id}_' ('expanded_conv_' for block 0)."""
        parts = {"depthwise": self.depthwise, "project": self.project}
        if self.expand is not None:
            parts = {"expand": self.expand, **parts}
        layers: dict[str, Any] = {}  # the modules of nnx.Sequential.layers (typed as callables)
        for part, conv_and_norm in parts.items():
            conv, norm = conv_and_norm.layers
            layers |= {f"{prefix}{part}": conv, f"{prefix}{part}_BN": norm}
        return layers


class MobileNetV2(nnx.Module):
    """A 3×3/2 convolution ('Conv1'), 17 inverted residual blocks ('expanded_conv', 'block_1' …
    'block_16'), a 1×1 convolution to 1280 channels ('Conv_1', wider for ``alpha`` > 1), then `Top`."""

    def __init__(
        self,
        *,
        alpha: float,
        input_shape: tuple[int, int, int],
        include_top: bool,
        pooling: Pooling,
        classes: int,
        dtype: Dtype = None,
        batchnorm_momentum: float | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        check_input_size(input_shape)
        options = dict(dtype=dtype, batchnorm_momentum=batchnorm_momentum, rngs=rngs)
        in_features = make_divisible(32 * alpha)
        self.stem = _conv_norm(input_shape[-1], in_features, 3, strides=2, padding="SAME", **options)
        blocks = []
        for expansion, filters, num_blocks, strides in STAGES:
            out_features = make_divisible(int(filters * alpha))
            for index in range(num_blocks):
                blocks.append(
                    InvertedResidual(
                        in_features, out_features, expansion=expansion, strides=strides if index == 0 else 1, **options
                    )
                )
                in_features = out_features
        self.blocks = nnx.List(blocks)
        last_features = make_divisible(1280 * alpha) if alpha > 1 else 1280
        self.last_conv = _conv_norm(in_features, last_features, 1, **options)
        self.top = Top(last_features, include_top=include_top, pooling=pooling, classes=classes, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = relu6(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.top(relu6(self.last_conv(x)))

    def keras_layers(self) -> dict[str, nnx.Module]:
        """Keras layer name → the module holding its weights, in Keras' layer order."""
        layers: dict[str, Any] = {"Conv1": self.stem.layers[0], "bn_Conv1": self.stem.layers[1]}
        for index, block in enumerate(self.blocks):
            layers |= block.keras_layers(f"block_{index}_" if index else "expanded_conv_")
        layers |= {"Conv_1": self.last_conv.layers[0], "Conv_1_bn": self.last_conv.layers[1]}
        return layers | self.top.keras_layers()


def mobilenet_v2(
    *,
    input_shape: tuple[int, int, int],
    alpha: float = 1.0,
    include_top: bool = True,
    pooling: Pooling = None,
    classes: int = 1000,
    dtype: Dtype = None,
    batchnorm_momentum: float | None = None,
    rngs: nnx.Rngs,
) -> MobileNetV2:
    """keras.applications.MobileNetV2 at width ``alpha`` (ImageNet weights exist for 0.35, 0.5,
    0.75, 1.0, 1.3 and 1.4); it expects 'tf' preprocessing."""
    return MobileNetV2(
        alpha=alpha,
        input_shape=input_shape,
        include_top=include_top,
        pooling=pooling,
        classes=classes,
        dtype=dtype,
        batchnorm_momentum=batchnorm_momentum,
        rngs=rngs,
    )
