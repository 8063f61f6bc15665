"""ResNet with bottleneck blocks: seed 004's ResNet50, and keras.applications' ResNet50 and ResNet50V2.

One block, `BottleneckBlock`, in its v1 (post-activation) and v2 (pre-activation) forms.
`resnet50` is the seed's network (a `Sequential`): for 64×64×3 inputs and 6 classes it has
the seed's 23,600,006 parameters, 23,546,886 trainable and 53,120 BatchNorm statistics.
`ResNet` is keras.applications' ResNet50 (v1, 'caffe' preprocessing) and ResNet50V2 ('tf'),
presets in models/backbones.py that take Keras' ImageNet weights: same layers, same padding,
BatchNorm epsilon 1.001e-5.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any, cast

import jax
from flax import nnx

from flaxvision.models.layers import (
    Dtype,
    Lazy,
    Pooling,
    Sequential,
    Top,
    average_pool,
    batch_norm,
    check_input_size,
    conv,
    conv_norm,
    dense,
    flatten,
    global_pool,
    glorot_uniform,
    max_pool,
    random_uniform,
    zero_pad,
)

KERAS_EPSILON = 1.001e-5  # keras.applications' ResNets


class BottleneckBlock(nnx.Module):
    """1×1 → k×k → 1×1 convolutions with filters ``(reduce, middle, expand)``, added to a shortcut.

    v1 (the seed, Keras ResNet50): each convolution is followed by BatchNorm, the first two
    by ReLU, and the sum by ReLU; ``strides`` applies to the first 1×1 convolution. With
    ``projection`` the shortcut is a 1×1 convolution with BatchNorm (the seed's
    ``convolutional_block``), otherwise the input itself (``identity_block``).

    v2 (``preact``, Keras ResNet50V2): BatchNorm and ReLU come first and feed both branches;
    the first two convolutions have BatchNorm and no bias, the last neither, nor does the sum
    get a ReLU; ``strides`` applies to the k×k convolution. With ``projection`` the shortcut
    is a 1×1 convolution of the pre-activation, otherwise the input subsampled by ``strides``.
    """

    def __init__(
        self,
        in_features: int,
        filters: tuple[int, int, int],
        *,
        kernel_size: int = 3,
        strides: int = 1,
        projection: bool = False,
        preact: bool = False,
        kernel_init: nnx.Initializer = glorot_uniform,
        use_bias: bool = True,
        epsilon: float = 1e-3,
        dtype: Dtype = None,
        batchnorm_momentum: float | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        if not projection and (in_features != filters[-1] or (strides != 1 and not preact)):
            raise ValueError("an identity shortcut needs in_features == filters[-1] (and strides 1 in v1)")
        reduce, middle, expand = filters
        # A convolution followed by BatchNorm has a bias in v1 (as Keras builds it), none in v2.
        conv_norm_options = dict(
            kernel_init=kernel_init,
            use_bias=use_bias and not preact,
            epsilon=epsilon,
            momentum=batchnorm_momentum,
            dtype=dtype,
            rngs=rngs,
        )
        reduce_strides, middle_strides = (1, strides) if preact else (strides, 1)

        self.preact = (
            batch_norm(in_features, epsilon=epsilon, momentum=batchnorm_momentum, rngs=rngs) if preact else None
        )
        self.reduce = conv_norm(in_features, reduce, 1, strides=reduce_strides, **conv_norm_options)
        # Keras: 'same' in v1, ZeroPadding2D + 'valid' in v2 (they differ only with strides 2).
        self.middle = conv_norm(
            reduce, middle, kernel_size, strides=middle_strides, padding=kernel_size // 2, **conv_norm_options
        )
        if preact:
            conv_options = dict(kernel_init=kernel_init, use_bias=use_bias, dtype=dtype, rngs=rngs)
            self.expand: nnx.Conv | nnx.Sequential = conv(middle, expand, 1, **conv_options)
            self.shortcut: nnx.Conv | nnx.Sequential | None = (
                conv(in_features, expand, 1, strides=strides, **conv_options) if projection else None
            )
        else:
            self.expand = conv_norm(middle, expand, 1, **conv_norm_options)
            self.shortcut = (
                conv_norm(in_features, expand, 1, strides=strides, **conv_norm_options) if projection else None
            )
        self.strides = strides

    def __call__(self, x: jax.Array) -> jax.Array:
        inputs = x if self.preact is None else nnx.relu(self.preact(x))
        # No shortcut layer: Keras v2's MaxPooling2D(1, strides), a subsampling.
        shortcut = x[:, :: self.strides, :: self.strides] if self.shortcut is None else self.shortcut(inputs)
        y = nnx.relu(self.reduce(inputs))
        y = nnx.relu(self.middle(y))
        y = self.expand(y) + shortcut
        return y if self.preact is not None else nnx.relu(y)

    def keras_layers(self, prefix: str) -> dict[str, nnx.Module]:
        """Keras' names for this block's layers (``prefix`` is e.g. 'conv2_block1'), in Keras'
        order: by depth, so the shortcut's layers sit beside the last convolution's."""
        (reduce_conv, reduce_bn), (middle_conv, middle_bn) = self.reduce.layers, self.middle.layers
        # Any: the modules of nnx.Sequential.layers (typed as callables)
        layers: dict[str, Any] = {"1_conv": reduce_conv, "1_bn": reduce_bn, "2_conv": middle_conv, "2_bn": middle_bn}
        if self.preact is not None:
            layers = {"preact_bn": self.preact, **layers}
            if self.shortcut is not None:
                layers["0_conv"] = self.shortcut
            layers["3_conv"] = self.expand
        elif self.shortcut is None:
            expand = cast(nnx.Sequential, self.expand)  # without preact: conv_norm's (conv, bn)
            layers |= {"3_conv": expand.layers[0], "3_bn": expand.layers[1]}
        else:
            expand, shortcut = cast(nnx.Sequential, self.expand), cast(nnx.Sequential, self.shortcut)
            layers |= {
                "0_conv": shortcut.layers[0],
                "3_conv": expand.layers[0],
                "0_bn": shortcut.layers[1],
                "3_bn": expand.layers[1],
            }
        return {f"{prefix}_{name}": layer for name, layer in layers.items()}


def seed_resnet(
    stage_sizes: Sequence[int],
    *,
    width: int = 64,
    global_pooling: bool = False,
    num_classes: int,
    input_shape: tuple[int, int, int],
    dtype: Dtype = None,
    batchnorm_momentum: float | None = None,
    rngs: nnx.Rngs,
) -> Sequential:
    """The seed's ResNet: a 7×7/2 stem, bottleneck stages, 2×2 average pooling, a dense head.

    Stage i has ``stage_sizes[i]`` blocks of filters (w·2^i, w·2^i, 4w·2^i) for ``width`` w;
    its first block projects the shortcut (stride 2 after the first stage). Initializers
    follow the seed: glorot-uniform for the stem, head and projection blocks, Keras
    RandomUniform (±0.05) for identity blocks. ``global_pooling`` averages the last feature
    map over all of it instead (so the head does not grow with the image).
    """
    block = partial(Lazy, BottleneckBlock, dtype=dtype, batchnorm_momentum=batchnorm_momentum)
    blocks = []
    for stage, num_blocks in enumerate(stage_sizes):
        filters = (width * 2**stage, width * 2**stage, 4 * width * 2**stage)
        blocks.append(block(filters, strides=1 if stage == 0 else 2, projection=True))
        blocks += [block(filters, kernel_init=random_uniform())] * (num_blocks - 1)
    pooling = [partial(global_pool, pooling="avg")] if global_pooling else [partial(average_pool, size=2), flatten]
    return Sequential(
        input_shape,
        partial(zero_pad, padding=3),
        Lazy(conv, width, 7, strides=2, dtype=dtype),
        Lazy(batch_norm, momentum=batchnorm_momentum),
        nnx.relu,
        partial(max_pool, size=3, strides=2),
        *blocks,
        *pooling,
        Lazy(dense, num_classes, dtype=dtype),
        rngs=rngs,
    )


resnet50 = partial(seed_resnet, (3, 4, 6, 3))  # seed 004: SIGNS hand digits, 64×64 RGB scaled to [0, 1], 6 classes
# Not a seed's: a quarter of ResNet50's width and two blocks a stage, for training from scratch
# on a CPU, on small sets such as cats vs dogs' 2,000 images (docs/results.md).
small_resnet = partial(seed_resnet, (2, 2, 2, 2), width=16, global_pooling=True)


class ResNet(nnx.Module):
    """keras.applications' ResNet (v1) or ResNetV2 (``preact``), layer for layer.

    A 7×7/2 convolution (with BatchNorm and ReLU in v1), 3×3/2 max pooling, then stages of
    bottleneck blocks with filters (64·2^i, 64·2^i, 256·2^i), then (v2) BatchNorm and ReLU,
    then `Top`. Stage i is named ``conv{i + 2}`` in Keras, its blocks ``block1, block2, …``.
    Every stage's first block projects the shortcut; v1 strides the first block of every
    stage but the first, v2 the last block of every stage but the last.
    """

    def __init__(
        self,
        stage_sizes: Sequence[int],
        *,
        preact: bool,
        input_shape: tuple[int, int, int],
        include_top: bool = True,
        pooling: Pooling = None,
        classes: int = 1000,
        dtype: Dtype = None,
        batchnorm_momentum: float | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        check_input_size(input_shape)
        norm = partial(batch_norm, epsilon=KERAS_EPSILON, momentum=batchnorm_momentum, rngs=rngs)
        # conv1_pad + 'valid'
        self.stem_conv = conv(input_shape[-1], 64, 7, strides=2, padding=3, dtype=dtype, rngs=rngs)
        self.stem_bn = None if preact else norm(64)
        in_features, stages = 64, []
        for stage, num_blocks in enumerate(stage_sizes):
            if preact:
                strides = [1] * (num_blocks - 1) + [1 if stage == len(stage_sizes) - 1 else 2]
            else:
                strides = [1 if stage == 0 else 2] + [1] * (num_blocks - 1)
            filters = (64 * 2**stage, 64 * 2**stage, 256 * 2**stage)
            blocks = []
            for index, block_strides in enumerate(strides):
                blocks.append(
                    BottleneckBlock(
                        in_features,
                        filters,
                        strides=block_strides,
                        projection=index == 0,
                        preact=preact,
                        epsilon=KERAS_EPSILON,
                        dtype=dtype,
                        batchnorm_momentum=batchnorm_momentum,
                        rngs=rngs,
                    )
                )
                in_features = filters[-1]
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.post_bn = norm(in_features) if preact else None
        self.top = Top(in_features, include_top=include_top, pooling=pooling, classes=classes, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem_conv(x)
        if self.stem_bn is not None:
            x = nnx.relu(self.stem_bn(x))
        # pool1_pad pads zeros, not -inf: in v2 they can win over negative activations.
        x = max_pool(zero_pad(x, 1), 3, strides=2)
        for blocks in self.stages:
            for block in blocks:
                x = block(x)
        if self.post_bn is not None:
            x = nnx.relu(self.post_bn(x))
        return self.top(x)

    def keras_layers(self) -> dict[str, nnx.Module]:
        """Keras layer name → the module holding its weights, in Keras' layer order."""
        layers: dict[str, nnx.Module] = {"conv1_conv": self.stem_conv}
        if self.stem_bn is not None:
            layers["conv1_bn"] = self.stem_bn
        for stage, blocks in enumerate(self.stages):
            for index, block in enumerate(blocks):
                layers |= block.keras_layers(f"conv{stage + 2}_block{index + 1}")
        if self.post_bn is not None:
            layers["post_bn"] = self.post_bn
        return layers | self.top.keras_layers()
