"""The seeds' small convolutional networks, listed layer by layer as in their Keras originals.

Each returns logits: the seeds' final softmax/sigmoid belongs to the loss here. ``dtype`` is
the computation dtype of the convolutions and dense layers (None: float32, their parameters');
``batchnorm_momentum`` overrides Keras' 0.99 when given.
"""

from functools import partial

from flax import nnx

from flaxvision.models.layers import (
    Dropout,
    Dtype,
    Lazy,
    Sequential,
    batch_norm,
    conv,
    dense,
    flatten,
    max_pool,
)

relu = nnx.relu


def belgiumtsc_cnn(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    dtype: Dtype = None,
    batchnorm_momentum: float | None = None,
    rngs: nnx.Rngs,
) -> Sequential:
    """Seed 000: BelgiumTSC traffic signs, 56×56 grayscale, 62 classes.

    Three pairs of 5×5 'same' convolutions, each pair followed by BatchNorm and ReLU.
    """
    conv5 = partial(Lazy, conv, kernel_size=5, padding="SAME", dtype=dtype)
    fc = partial(Lazy, dense, dtype=dtype)
    norm = partial(Lazy, batch_norm, momentum=batchnorm_momentum)
    pool = partial(max_pool, size=2, padding="SAME")
    return Sequential(
        input_shape,
        conv5(16), conv5(32), relu, norm(), relu, pool, Dropout(0.1, rngs=rngs),
        conv5(32), conv5(16), norm(), relu, pool, Dropout(0.1, rngs=rngs),
        conv5(16), conv5(8), norm(), relu, Dropout(0.1, rngs=rngs),
        flatten,
        fc(200), relu, Dropout(0.25, rngs=rngs),
        fc(num_classes),
        rngs=rngs,
    )  # fmt: skip


def simple_cnn(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    dtype: Dtype = None,
    batchnorm_momentum: float | None = None,
    rngs: nnx.Rngs,
) -> Sequential:
    """Seed 001's "model3": cats vs dogs, 160×160 RGB scaled to [-1, 1], 2 classes."""
    conv3 = partial(Lazy, conv, kernel_size=3, dtype=dtype)
    fc = partial(Lazy, dense, dtype=dtype)
    pool = partial(max_pool, size=2)
    return Sequential(
        input_shape,
        conv3(32), relu, pool, Dropout(0.2, rngs=rngs),
        conv3(32), relu, pool, Dropout(0.2, rngs=rngs),
        conv3(64), relu, pool,
        flatten,
        fc(64), relu,
        fc(num_classes),
        rngs=rngs,
    )  # fmt: skip


def tutorial_cnn(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    dtype: Dtype = None,
    batchnorm_momentum: float | None = None,
    rngs: nnx.Rngs,
) -> Sequential:
    """Seed 002's CNN with dropout: cats vs dogs, 150×150 RGB scaled to [0, 1].

    The seed ends in one sigmoid unit for its two classes; here the last layer has
    ``num_classes`` logits for a softmax. For two classes that is the same model (a
    softmax over two logits is the sigmoid of their difference), and it serves more.
    """
    conv3 = partial(Lazy, conv, kernel_size=3, padding="SAME", dtype=dtype)
    fc = partial(Lazy, dense, dtype=dtype)
    pool = partial(max_pool, size=2)
    return Sequential(
        input_shape,
        conv3(16), relu, pool, Dropout(0.3, rngs=rngs),
        conv3(32), relu, pool,
        conv3(64), relu, pool, Dropout(0.3, rngs=rngs),
        flatten,
        fc(512), relu, Dropout(0.1, rngs=rngs),
        fc(num_classes),
        rngs=rngs,
    )  # fmt: skip
