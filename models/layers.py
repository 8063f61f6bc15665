"""Keras-compatible building blocks shared by every model preset and backbone.

The seeds and keras.applications are Keras models, so these layers take Keras' defaults
where Flax's differ: glorot-uniform kernels with zero bias, 'VALID' padding, BatchNorm
epsilon 1e-3 (momentum 0.99 is the same in both). Layers with parameters are NNX modules
(Conv2D and DepthwiseConv2D are `nnx.Conv`, Dense `nnx.Linear`, BatchNormalization
`nnx.BatchNorm`, so Keras weights map onto them one to one); the others are plain
functions of an NHWC batch. Convolutions, dense products, max pooling and BatchNorm's training pass
go through `flaxvision.ops.cpu_kernels`, which avoids XLA:CPU's slow kernels.

`Sequential` lets a preset list its layers as the Keras original does, without input
sizes: a `Lazy` layer is built once the shape of its input is known.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax
from jax.typing import DTypeLike

from flaxvision import jax_internals
from flaxvision.ops import cpu_kernels, onednn

# The dtype convolutions and dense layers compute in (None: their inputs' and parameters'); the
# parameters themselves stay float32.
Dtype = Any
KERAS_MOMENTUM = 0.99  # BatchNormalization's default

glorot_uniform = nnx.initializers.glorot_uniform()


def random_uniform(minval: float = -0.05, maxval: float = 0.05) -> nnx.Initializer:
    """Keras' RandomUniform initializer, with its default range."""

    def init(key: jax.Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> jax.Array:
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
    dtype: Dtype = None,
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
        conv_general_dilated=cpu_kernels.conv_general_dilated,
        dtype=dtype,
        rngs=rngs,
    )


# params.yaml's `convolutions`: the implementations a model's convolutions can run with.
CONVOLUTIONS = {"xla": cpu_kernels.conv_general_dilated, "onednn": onednn.conv_general_dilated}


def use_convolutions(model: nnx.Module, name: str) -> nnx.Module:
    """Run every convolution of ``model`` with ``CONVOLUTIONS[name]``; returns ``model``.

    The implementation is a static attribute of each nnx.Conv, so a compiled step is traced for
    the one it was built with."""
    for _, module in nnx.iter_modules(model):
        if isinstance(module, nnx.Conv):
            module.conv_general_dilated = CONVOLUTIONS[name]
    return model


def depthwise_conv(
    in_features: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: str | int = "VALID",
    use_bias: bool = True,
    dtype: Dtype = None,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """Keras DepthwiseConv2D (depth multiplier 1): one k×k filter per channel.

    A grouped `nnx.Conv` with a group per channel; its kernel is Keras' depthwise kernel
    (k, k, channels, 1) reshaped to (k, k, 1, channels).
    """
    return conv(
        in_features,
        in_features,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_init=_depthwise_glorot_uniform,
        feature_group_count=in_features,
        dtype=dtype,
        rngs=rngs,
    )


def _depthwise_glorot_uniform(key: jax.Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> jax.Array:
    """Keras' glorot-uniform for a depthwise kernel: its fans count one channel's filter,
    not the (k, k, 1, channels) shape Flax stores it in."""
    kernel_height, kernel_width, _, channels = shape
    keras_shape = (kernel_height, kernel_width, channels, 1)
    return glorot_uniform(key, keras_shape, dtype).reshape(shape)


def dense(
    in_features: int,
    out_features: int,
    *,
    kernel_init: nnx.Initializer = glorot_uniform,
    dtype: Dtype = None,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """Keras Dense (Flax's Linear defaults to a lecun-normal kernel)."""
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=kernel_init,
        dot_general=cpu_kernels.dot_general,
        dtype=dtype,
        rngs=rngs,
    )


def conv_norm(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    epsilon: float = 1e-3,
    momentum: float | None = None,
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
    momentum: float | None = None,
    use_bias: bool = True,
    use_scale: bool = True,
    rngs: nnx.Rngs,
) -> nnx.BatchNorm:
    """Keras BatchNormalization over the channel axis (`BatchNorm`); use_bias/use_scale are Keras' center/scale.

    Its gamma and beta are trainable `nnx.Param`s, its moving mean and variance
    `nnx.BatchStat`s, updated only in training mode. ``momentum`` None is Keras' default.
    """
    return BatchNorm(
        num_features,
        epsilon=epsilon,
        momentum=KERAS_MOMENTUM if momentum is None else momentum,
        use_bias=use_bias,
        use_scale=use_scale,
        rngs=rngs,
    )


class BatchNorm(nnx.BatchNorm):
    """`nnx.BatchNorm`, whose training pass on CPU is `cpu_kernels.batch_normalize` (sums XLA:CPU runs
    on every core, a gradient it computes once). Its variables and other uses are nnx.BatchNorm's."""

    def __call__(
        self, x: jax.Array, use_running_average: bool | None = None, *, mask: jax.Array | None = None
    ) -> jax.Array:
        training = not (self.use_running_average if use_running_average is None else use_running_average)
        # What the layers here use: the channel axis, float32, a scale and a bias, flax's variance
        own = self.axis in (-1, x.ndim - 1) and x.dtype == jnp.float32 and self.dtype is None
        own = own and self.use_fast_variance and mask is None and self.axis_name is None
        scale, bias = self.scale, self.bias
        if not (training and own and jax.default_backend() == "cpu") or scale is None or bias is None:
            return super().__call__(x, use_running_average, mask=mask)
        y, mean, var = cpu_kernels.batch_normalize(x, scale[...], bias[...], self.epsilon)
        self.mean[...] = lax.stop_gradient(self.momentum * self.mean[...] + (1 - self.momentum) * mean)
        self.var[...] = lax.stop_gradient(self.momentum * self.var[...] + (1 - self.momentum) * var)
        return y


class Dropout(nnx.Dropout):
    """Keras Dropout: `nnx.Dropout` with the same masks, drawn once per step on CPU.

    XLA:CPU would fuse the random bits into both the forward op that applies the mask and the
    gradient op that applies it again, and so compute them twice; a barrier keeps the mask as
    one array that both read. The layer's state and its other arguments are nnx.Dropout's, whose
    attributes it reads (rate, broadcast_dims, deterministic, rngs): each new layer checks them
    (flaxvision.jax_internals.check_dropout).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        jax_internals.check_dropout(self)

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic:  # inference: the identity, as nnx.Dropout (and nothing for an export to trace)
            return inputs
        # What the layers here use: their own key stream, a whole mask, a rate below 1.
        own_mask = rngs is None and self.rngs is not None and not self.broadcast_dims and 0 < self.rate < 1
        if deterministic is None or not own_mask or jax.default_backend() != "cpu":
            return super().__call__(inputs, deterministic=deterministic, rngs=rngs)
        keep = 1.0 - self.rate
        mask = lax.optimization_barrier(jax.random.bernoulli(self.rngs(), keep, inputs.shape))
        return lax.select(mask, inputs / keep, jnp.zeros_like(inputs))


def max_pool(x: jax.Array, size: int, strides: int | None = None, padding: str = "VALID") -> jax.Array:
    """Keras MaxPooling2D: the stride defaults to the window size."""
    strides = strides or size
    if jax.default_backend() != "cpu":
        return nnx.max_pool(x, window_shape=(size, size), strides=(strides, strides), padding=padding)
    pads = lax.padtype_to_pads(x.shape[1:3], (size, size), (strides, strides), padding)
    return cpu_kernels.window_max(jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf), size, strides)


def average_pool(x: jax.Array, size: int, strides: int | None = None, padding: str = "VALID") -> jax.Array:
    """Keras AveragePooling2D: the stride defaults to the window size."""
    strides = strides or size
    # By keyword, here and in max_pool: jax2onnx (ONNX export) replaces both by functions that take
    # their window, strides and padding only so.
    return nnx.avg_pool(x, window_shape=(size, size), strides=(strides, strides), padding=padding)


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
    reducers: dict[str, Callable[..., jax.Array]] = {"avg": jnp.mean, "max": jnp.max}
    return reducers[pooling](x, axis=(1, 2))


def flatten(x: jax.Array) -> jax.Array:
    """Keras Flatten: row-major over (height, width, channels), so Keras dense kernels carry over."""
    return x.reshape(x.shape[0], -1)


class Lazy:
    """A layer declared without its input size.

    `Sequential` builds it as ``make(in_features, *args, **kwargs, rngs=rngs)``, with the
    size of the last axis of the input that reaches it.
    """

    def __init__(self, make: Callable[..., nnx.Module], *args: Any, **kwargs: Any) -> None:
        self.make, self.args, self.kwargs = make, args, kwargs

    def build(self, in_features: int, rngs: nnx.Rngs) -> nnx.Module:
        return self.make(in_features, *self.args, **self.kwargs, rngs=rngs)


class ModelError(ValueError):
    """A model cannot be built as asked (an unknown name, inputs it cannot take)."""


class InputTooSmallError(ModelError):
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


class KerasNamed(Protocol):
    """A backbone (or its `Top`): ``keras_layers()`` maps Keras layer names to the modules holding their weights."""

    def keras_layers(self) -> Mapping[str, nnx.Module]: ...


class Top(nnx.Module):
    """The end of a keras.applications network, after its last feature map.

    With ``include_top``: global average pooling and the dense 'predictions' layer,
    returning logits (Keras' ``classifier_activation=None``); ``pooling`` is ignored, as in
    Keras. Without: ``pooling`` ('avg' or 'max' features, or None: the feature map).
    """

    def __init__(
        self,
        in_features: int,
        *,
        include_top: bool,
        pooling: Pooling,
        classes: int,
        dtype: Dtype = None,
        rngs: nnx.Rngs,
    ) -> None:
        check_pooling(pooling)
        self.pooling = "avg" if include_top else pooling
        self.predictions = dense(in_features, classes, dtype=dtype, rngs=rngs) if include_top else None

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

    def __init__(self, input_shape: Sequence[int], *layers: Callable | Lazy, rngs: nnx.Rngs) -> None:
        shape = tuple(input_shape)
        built: list[Callable] = []
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
