"""VGG networks: keras.applications' VGG16, layer for layer (3×3 'same' convolutions with ReLU in
five blocks, each ending in 2×2 max pooling; the top flattens and has two 4096-wide dense
layers), and `small_vgg`, a small VGG-style network with BatchNorm for training from scratch."""

from functools import partial

import jax
from flax import nnx

from flaxvision.models.layers import (
    Dropout,
    Dtype,
    Lazy,
    Pooling,
    Sequential,
    batch_norm,
    check_input_size,
    check_pooling,
    conv,
    dense,
    flatten,
    global_pool,
    max_pool,
)

VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convolutions) per block


class VGG(nnx.Module):
    """Keras names block b's convolutions ``block{b}_conv1, …``; the top's layers 'fc1', 'fc2',
    'predictions'. With ``include_top`` it returns logits and ``pooling`` is ignored (as in Keras)."""

    def __init__(
        self,
        blocks: tuple[tuple[int, int], ...],
        *,
        input_shape: tuple[int, int, int],
        include_top: bool = True,
        pooling: Pooling = None,
        classes: int = 1000,
        dtype: Dtype = None,
        batchnorm_momentum: float | None = None,  # VGG has no BatchNorm; taken as every backbone takes it
        rngs: nnx.Rngs,
    ) -> None:
        check_input_size(input_shape)
        check_pooling(pooling)
        in_features, convs = input_shape[-1], []
        for filters, num_convs in blocks:
            block = []
            for _ in range(num_convs):
                block.append(conv(in_features, filters, 3, padding="SAME", dtype=dtype, rngs=rngs))
                in_features = filters
            convs.append(nnx.List(block))
        self.blocks = nnx.List(convs)
        self.pooling = pooling
        if include_top:
            height, width = (size // 2 ** len(blocks) for size in input_shape[:2])  # 'valid' pooling floors
            self.fc1: nnx.Linear | None = dense(height * width * in_features, 4096, dtype=dtype, rngs=rngs)
            self.fc2: nnx.Linear | None = dense(4096, 4096, dtype=dtype, rngs=rngs)
            self.predictions: nnx.Linear | None = dense(4096, classes, dtype=dtype, rngs=rngs)
        else:
            self.fc1 = self.fc2 = self.predictions = None

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            for layer in block:
                x = nnx.relu(layer(x))
            x = max_pool(x, 2)
        if self.predictions is None:
            return global_pool(x, self.pooling)
        assert self.fc1 is not None and self.fc2 is not None  # set with predictions
        x = nnx.relu(self.fc1(flatten(x)))
        x = nnx.relu(self.fc2(x))
        return self.predictions(x)

    def keras_layers(self) -> dict[str, nnx.Module]:
        """Keras layer name → the module holding its weights, in Keras' layer order."""
        layers: dict[str, nnx.Module] = {
            f"block{block + 1}_conv{index + 1}": layer
            for block, convs in enumerate(self.blocks)
            for index, layer in enumerate(convs)
        }
        if self.predictions is not None:
            assert self.fc1 is not None and self.fc2 is not None  # set with predictions
            layers |= {"fc1": self.fc1, "fc2": self.fc2, "predictions": self.predictions}
        return layers


def small_vgg(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    dtype: Dtype = None,
    batchnorm_momentum: float | None = None,
    rngs: nnx.Rngs,
) -> Sequential:
    """Not a seed's: a VGG-style CNN with BatchNorm, for training from scratch on small sets
    such as cats vs dogs' 2,000 images on a CPU (docs/results.md).

    Five 3×3 'same' convolutions of 32, 64, 128, 256 and 256 filters, each followed by
    BatchNorm and ReLU and all but the last by 2×2 max pooling; then global average pooling
    (so the head does not grow with the image), dropout and the classifier.
    """
    conv3 = partial(Lazy, conv, kernel_size=3, padding="SAME", use_bias=False, dtype=dtype)
    norm = partial(Lazy, batch_norm, momentum=batchnorm_momentum)
    pool = partial(max_pool, size=2)
    return Sequential(
        input_shape,
        conv3(32), norm(), nnx.relu, pool,
        conv3(64), norm(), nnx.relu, pool,
        conv3(128), norm(), nnx.relu, pool,
        conv3(256), norm(), nnx.relu, pool,
        conv3(256), norm(), nnx.relu,
        partial(global_pool, pooling="avg"),
        Dropout(0.3, rngs=rngs),
        Lazy(dense, num_classes, dtype=dtype),
        rngs=rngs,
    )  # fmt: skip
