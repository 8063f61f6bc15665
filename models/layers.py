"""Keras-compatible building blocks shared by every model preset and backbone.

The seeds and keras.applications are Keras models, so these layers take Keras' defaults
where Flax's differ: glorot-uniform kernels with zero bias, 'VALID' padding, BatchNorm
epsilon 1e-3 (momentum 0.99 is the same in both). Layers with parameters are NNX modules
(Conv2D and DepthwiseConv2D are `nnx.Conv`, Dense `nnx.Linear`, BatchNormalization
`nnx.BatchNorm`, so Keras weights map onto them one to one); the others are plain
functions of an NHWC batch. On CPU, convolutions and max pooling are computed in forms that
avoid XLA:CPU's slow kernels (`_conv_general_dilated`, `_window_max`); other backends get the
native operations.

`Sequential` lets a preset list its layers as the Keras original does, without input
sizes: a `Lazy` layer is built once the shape of its input is known.
"""

from collections.abc import Callable, Sequence
from functools import partial, reduce
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

glorot_uniform = nnx.initializers.glorot_uniform()


def random_uniform(minval: float = -0.05, maxval: float = 0.05) -> nnx.Initializer:
    """Keras' RandomUniform initializer, with its default range."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval, maxval)

    return init


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: str | int = "VALID",
    use_bias: bool = True,
    kernel_init: nnx.Initializer = glorot_uniform,
    feature_group_count: int = 1,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """Keras Conv2D with a square kernel (grouped with ``feature_group_count``).

    ``padding`` is 'VALID', 'SAME', or n: Keras' ZeroPadding2D(n) followed by a 'valid'
    convolution, as one convolution that pads n zeros on every side.
    """
    return nnx.Conv(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_init=kernel_init,
        feature_group_count=feature_group_count,
        conv_general_dilated=_conv_general_dilated,
        rngs=rngs,
    )


def depthwise_conv(
    in_features: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: str | int = "VALID",
    use_bias: bool = True,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """Keras DepthwiseConv2D (depth multiplier 1): one k×k filter per channel.

    A grouped `nnx.Conv` with a group per channel; its kernel is Keras' depthwise kernel
    (k, k, channels, 1) reshaped to (k, k, 1, channels).
    """
    return conv(in_features, in_features, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
                kernel_init=_depthwise_glorot_uniform, feature_group_count=in_features, rngs=rngs)


def _depthwise_glorot_uniform(key, shape, dtype=jnp.float32):
    """Keras' glorot-uniform for a depthwise kernel: its fans count one channel's filter,
    not the (k, k, 1, channels) shape Flax stores it in."""
    kernel_height, kernel_width, _, channels = shape
    keras_shape = (kernel_height, kernel_width, channels, 1)
    return glorot_uniform(key, keras_shape, dtype).reshape(shape)


def _conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs):
    """lax.conv_general_dilated (NHWC, HWIO), routed around the slow paths of XLA:CPU.

    Measured on a 2-core x86 CPU, batch 32, forward (forward + backward):
    - depthwise (MobileNetV2): XLA's grouped convolution runs near 1 GFLOP/s, 3×3 over
      56×56×144 maps takes 330 ms (1.2 s), and 41 ms (230 ms) as nine shifted multiply-adds;
    - 1×1 (most of ResNet50): a matrix product over channels. XLA differentiates the
      convolution by transposing the activations to batch-last, and fuses the elementwise
      chain that made them (a ResNet stage's BatchNorms and residual adds) into each
      transpose: seed 004's ResNet50 (64×64) trains at 540 ms a step, 340 ms as matrix products;
    - a feature map no larger than the kernel (ResNet50's last stage at 64×64): a 3×3,
      512→512 convolution over 2×2 maps takes 184 ms, and 1.7 ms as one matrix product;
    - an unpadded ('VALID') stride-1 convolution is 2-6× slower than the same convolution
      with 'SAME' padding: 32→32 channels over 77×77 maps takes 115 ms (282 ms) as 'VALID',
      47 ms (88 ms) as 'SAME' + crop.
    Other backends get the native convolution, and so do dilated and other grouped ones, and
    those asked for an output type or sharding.
    """
    if (jax.default_backend() != "cpu" or {*kwargs["lhs_dilation"], *kwargs["rhs_dilation"]} != {1}
            or kwargs.get("preferred_element_type") is not None or kwargs.get("out_sharding") is not None):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
    kernel_height, kernel_width, group_features, out_features = rhs.shape
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    if kwargs["feature_group_count"] != 1:
        if group_features == 1 and out_features == lhs.shape[-1]:
            return _depthwise_as_taps(lhs, rhs, window_strides, padding)
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
    if min(lhs.shape[1:3]) <= max(kernel_height, kernel_width) or (kernel_height, kernel_width) == (1, 1):
        return _conv_as_matmul(lhs, rhs, window_strides, padding, precision=kwargs["precision"])
    unpadded = all(pad == (0, 0) for pad in padding)
    if unpadded and tuple(window_strides) == (1, 1) and kernel_height % 2 and kernel_width % 2:
        same = lax.conv_general_dilated(lhs, rhs, window_strides, "SAME", **kwargs)
        crop_y, crop_x = kernel_height // 2, kernel_width // 2
        return same[:, crop_y:same.shape[1] - crop_y, crop_x:same.shape[2] - crop_x]
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


def _conv_as_matmul(lhs, rhs, window_strides, padding, precision):
    """The convolution as one matrix product of its patches (im2col) with the kernel."""
    lhs = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    # Patch features in HWIO kernel order: (kernel row, kernel column, input channel).
    patches = jnp.concatenate(_taps(lhs, rhs.shape[:2], window_strides), axis=-1)
    return jnp.matmul(patches, rhs.reshape(-1, rhs.shape[-1]), precision=precision)


def _depthwise_as_taps(lhs, rhs, window_strides, padding):
    """A depthwise convolution as the sum of the input's shifted views, each scaled per channel
    by one kernel position: elementwise work that XLA fuses into one pass."""
    taps = _taps(jnp.pad(lhs, ((0, 0), *padding, (0, 0))), rhs.shape[:2], window_strides)
    return sum(tap * weights for tap, weights in zip(taps, rhs.reshape(-1, rhs.shape[-1]), strict=True))


def _taps(x: jax.Array, window: tuple[int, int], strides: Sequence[int]) -> list[jax.Array]:
    """The views of x [B, H, W, C] that a 'VALID' window sliding with ``strides`` reads, one per
    window position in row-major order: view (i, j) is [B, H', W', C], each output position's
    input at offset (i, j) within its window."""
    (window_height, window_width), (stride_y, stride_x) = window, strides
    out_height = (x.shape[1] - window_height) // stride_y + 1
    out_width = (x.shape[2] - window_width) // stride_x + 1
    return [
        x[:, i:i + (out_height - 1) * stride_y + 1:stride_y, j:j + (out_width - 1) * stride_x + 1:stride_x]
        for i in range(window_height)
        for j in range(window_width)
    ]


def dense(
    in_features: int,
    out_features: int,
    *,
    kernel_init: nnx.Initializer = glorot_uniform,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """Keras Dense (Flax's Linear defaults to a lecun-normal kernel)."""
    return nnx.Linear(in_features, out_features, kernel_init=kernel_init, rngs=rngs)


def conv_norm(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    epsilon: float = 1e-3,
    momentum: float = 0.99,
    rngs: nnx.Rngs,
    **conv_options: Any,
) -> nnx.Sequential:
    """Conv2D then BatchNormalization, no activation: the unit ResNet and MobileNet stack.

    ``conv_options`` go to `conv` (strides, padding, use_bias, kernel_init).
    """
    return nnx.Sequential(
        conv(in_features, out_features, kernel_size, rngs=rngs, **conv_options),
        batch_norm(out_features, epsilon=epsilon, momentum=momentum, rngs=rngs),
    )


def batch_norm(
    num_features: int,
    *,
    epsilon: float = 1e-3,
    momentum: float = 0.99,
    use_bias: bool = True,
    use_scale: bool = True,
    rngs: nnx.Rngs,
) -> nnx.BatchNorm:
    """Keras BatchNormalization over the channel axis; use_bias/use_scale are Keras' center/scale.

    Its gamma and beta are trainable `nnx.Param`s, its moving mean and variance
    `nnx.BatchStat`s, updated only in training mode.
    """
    return nnx.BatchNorm(
        num_features,
        epsilon=epsilon,
        momentum=momentum,
        use_bias=use_bias,
        use_scale=use_scale,
        rngs=rngs,
    )


def max_pool(x: jax.Array, size: int, strides: int | None = None, padding: str = "VALID") -> jax.Array:
    """Keras MaxPooling2D: the stride defaults to the window size."""
    strides = strides or size
    if jax.default_backend() != "cpu":
        return nnx.max_pool(x, (size, size), (strides, strides), padding)
    pads = lax.padtype_to_pads(x.shape[1:3], (size, size), (strides, strides), padding)
    return _window_max(jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf), size, strides)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _window_max(x: jax.Array, size: int, strides: int) -> jax.Array:
    """Max over size×size windows sliding by ``strides`` ('VALID'), as a max of the windows' views.

    Both directions are written out because XLA:CPU's are slow (reduce_window forward,
    select_and_scatter backward). Measured on a 2-core x86 CPU, batch 32, forward + backward:
    2×2/2 over 158×158×32 maps takes 286 ms in XLA's ops and 35 ms here, 3×3/2 over
    114×114×64 maps (the ResNet and DenseNet stems at 224×224) 362 ms and 66 ms. Like XLA's,
    the gradient goes to each window's first maximum in row-major order.
    """
    return reduce(jnp.maximum, _taps(x, (size, size), (strides, strides)))


def _window_max_forward(x, size, strides):
    y = _window_max(x, size, strides)
    return y, (x, y)


def _window_max_backward(size, strides, residuals, grad):
    x, y = residuals
    taps, scatter = jax.vjp(lambda x: _taps(x, (size, size), (strides, strides)), x)
    taken = jnp.zeros(y.shape, bool)
    routed = []
    for tap in taps:
        is_first_max = (tap == y) & ~taken
        taken = taken | is_first_max
        routed.append(jnp.where(is_first_max, grad, 0.0))
    if strides == size:  # disjoint windows: laid out as tiles, 3% faster for seed 000's CNN than summed
        return (_untile(routed, size, x.shape),)
    return scatter(routed)


_window_max.defvjp(_window_max_forward, _window_max_backward)


def _untile(pieces: list[jax.Array], size: int, shape: tuple[int, ...]) -> jax.Array:
    """`_taps` of disjoint size×size windows put back: the pieces [B, H', W', C] laid out as the
    tiles of a [B, H'·size, W'·size, C] map, zero-padded to ``shape``."""
    batch, out_height, out_width, channels = pieces[0].shape
    rows = [jnp.stack(pieces[i * size:(i + 1) * size], axis=3) for i in range(size)]
    tiles = jnp.stack(rows, axis=2).reshape(batch, out_height * size, out_width * size, channels)
    return jnp.pad(tiles, ((0, 0), (0, shape[1] - out_height * size), (0, shape[2] - out_width * size), (0, 0)))


def average_pool(x: jax.Array, size: int, strides: int | None = None, padding: str = "VALID") -> jax.Array:
    """Keras AveragePooling2D: the stride defaults to the window size."""
    strides = strides or size
    return nnx.avg_pool(x, (size, size), (strides, strides), padding)


def zero_pad(x: jax.Array, padding: int | tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
    """Keras ZeroPadding2D: ``padding`` zeros on every side, or ((top, bottom), (left, right))."""
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    return jnp.pad(x, ((0, 0), *padding, (0, 0)))


def relu6(x: jax.Array) -> jax.Array:
    """Keras ReLU(6.0): max(x, 0) capped at 6."""
    return jnp.clip(x, 0, 6)


Pooling = Literal["avg", "max"] | None


def global_pool(x: jax.Array, pooling: Pooling) -> jax.Array:
    """keras.applications' ``pooling``: 'avg' or 'max' over height and width (Keras'
    GlobalAveragePooling2D / GlobalMaxPooling2D), None keeps the feature map."""
    if pooling is None:
        return x
    return {"avg": jnp.mean, "max": jnp.max}[pooling](x, axis=(1, 2))


def flatten(x: jax.Array) -> jax.Array:
    """Keras Flatten: row-major over (height, width, channels), so Keras dense kernels carry over."""
    return x.reshape(x.shape[0], -1)


class Lazy:
    """A layer declared without its input size.

    `Sequential` builds it as ``make(in_features, *args, **kwargs, rngs=rngs)``, with the
    size of the last axis of the input that reaches it.
    """

    def __init__(self, make: Callable[..., nnx.Module], *args: Any, **kwargs: Any):
        self.make, self.args, self.kwargs = make, args, kwargs

    def build(self, in_features: int, rngs: nnx.Rngs) -> nnx.Module:
        return self.make(in_features, *self.args, **self.kwargs, rngs=rngs)


class InputTooSmallError(ValueError):
    """The input shrinks to nothing inside the network (a `Sequential` or a backbone)."""


def check_input_size(input_shape: Sequence[int], min_size: int = 32) -> None:
    """keras.applications' minimum input size: five halvings leave at least one pixel."""
    if min(input_shape[:2]) < min_size:
        raise InputTooSmallError(
            f"{tuple(input_shape)} inputs are too small: this backbone needs at least {min_size}×{min_size}"
        )


def check_pooling(pooling: Pooling) -> None:
    if pooling not in ("avg", "max", None):
        raise ValueError(f"pooling must be 'avg', 'max' or None, got {pooling!r}")


class Top(nnx.Module):
    """The end of a keras.applications network, after its last feature map.

    With ``include_top``: global average pooling and the dense 'predictions' layer,
    returning logits (Keras' ``classifier_activation=None``); ``pooling`` is ignored, as in
    Keras. Without: ``pooling`` ('avg' or 'max' features, or None: the feature map).
    """

    def __init__(self, in_features: int, *, include_top: bool, pooling: Pooling, classes: int, rngs: nnx.Rngs):
        check_pooling(pooling)
        self.pooling = "avg" if include_top else pooling
        self.predictions = dense(in_features, classes, rngs=rngs) if include_top else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = global_pool(x, self.pooling)
        return x if self.predictions is None else self.predictions(x)

    def keras_layers(self) -> dict[str, nnx.Module]:
        return {} if self.predictions is None else {"predictions": self.predictions}


class Sequential(nnx.Sequential):
    """Layers applied in order, declared like keras.Sequential.

    Each item is a callable applied as it is (an activation, a pooling function, a
    module) or a `Lazy` layer, built here for the shape its input has at that point.
    """

    def __init__(self, input_shape: Sequence[int], *layers: Callable | Lazy, rngs: nnx.Rngs):
        shape = tuple(input_shape)
        built = []
        for layer in layers:
            if isinstance(layer, Lazy):
                layer = layer.build(shape[-1], rngs)
            shape = output_shape(layer, shape)
            if 0 in shape:
                raise InputTooSmallError(
                    f"{tuple(input_shape)} inputs are too small: layer {len(built)} outputs {shape}"
                )
            built.append(layer)
        super().__init__(*built)


def output_shape(layer: Callable, input_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape of one example out of ``layer``, found by tracing: nothing is computed."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    if isinstance(layer, nnx.Module):
        # Trace a copy: calling the layer itself would write tracers into its state
        # (BatchNorm statistics, dropout RNG counts).
        graphdef, state = nnx.split(layer)
        return jax.eval_shape(lambda state, x: nnx.merge(graphdef, state)(x), state, x).shape[1:]
    return jax.eval_shape(layer, x).shape[1:]
