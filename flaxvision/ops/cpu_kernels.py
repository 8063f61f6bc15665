"""Convolution, max pooling and BatchNorm's training pass for XLA:CPU, in forms that avoid its
slow kernels.

XLA:CPU runs some convolutions and pooling windows far below the machine's speed: grouped
(depthwise) convolutions, 1×1 convolutions whose gradient transposes fused activations, kernels
as large as their input, unpadded stride-1 convolutions, and reduce_window / select_and_scatter
max pooling; its reductions over a batch (BatchNorm's statistics and gradient) run on one core.
Each is rewritten here as operations XLA:CPU runs fast (matrix products, shifted views of the
input, elementwise maxima), with the same results up to rounding; docs/benchmarks.md ("CPU kernels")
gives the measured cost of each form. Other backends, and the cases not listed, get the native
operation. The rewrites are differentiated by JAX, except max pooling and BatchNorm, whose
gradients are written out (tests/test_models.py checks values and gradients against lax and
nnx.BatchNorm).

Matrix products (dense layers, and the convolutions written as one) sum long contractions in
fixed chunks (`matmul`): Eigen, which runs XLA:CPU's, splits a long sum over its threads when
the other two sides are small, so its bits would depend on the core count.
"""

import math
from collections.abc import Sequence
from functools import partial, reduce
from typing import Any, cast

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec
from jax.typing import DTypeLike

Padding = Sequence[tuple[int, int]]  # (low, high) per spatial axis, as lax.padtype_to_pads gives


def conv_general_dilated(
    lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: str | Padding, **kwargs: Any
) -> jax.Array:
    """lax.conv_general_dilated (NHWC, HWIO), routed around the slow paths of XLA:CPU:

    - depthwise: the sum of nine (k×k) shifted multiply-adds instead of a grouped convolution;
    - 1×1, or a feature map no larger than the kernel: one matrix product over the patches;
    - an unpadded ('VALID') stride-1 convolution with an odd kernel: 'SAME' padding, cropped.

    Other backends get the native convolution, and so do dilated and other grouped ones, and
    those asked for an output type or sharding.
    """
    if (
        jax.default_backend() != "cpu"
        or {*kwargs["lhs_dilation"], *kwargs["rhs_dilation"]} != {1}
        or kwargs.get("preferred_element_type") is not None
        or kwargs.get("out_sharding") is not None
    ):
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
        return same[:, crop_y : same.shape[1] - crop_y, crop_x : same.shape[2] - crop_x]
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


def _conv_as_matmul(
    lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Padding, precision: lax.PrecisionLike
) -> jax.Array:
    """The convolution as one matrix product of its patches (im2col) with the kernel."""
    lhs = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    # Patch features in HWIO kernel order: (kernel row, kernel column, input channel).
    patches = jnp.concatenate(_taps(lhs, rhs.shape[:2], window_strides), axis=-1)
    return matmul(patches, rhs.reshape(-1, rhs.shape[-1]), precision)


def dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: lax.DotDimensionNumbers,
    precision: lax.PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
    out_sharding: NamedSharding | PartitionSpec | None = None,
) -> jax.Array:
    """lax.dot_general, where it is a matrix product x [..., K] @ w [K, N] on a CPU (a dense
    layer's), through `matmul`."""
    if (
        jax.default_backend() != "cpu"
        or dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ()))
        or rhs.ndim != 2
        or preferred_element_type is not None
        or out_sharding is not None
    ):
        return lax.dot_general(
            lhs, rhs, dimension_numbers, precision, preferred_element_type, out_sharding=out_sharding
        )
    return matmul(lhs, rhs, precision)


SUM_CHUNK = 256  # within Eigen's one unsplit block of a sum on CPUs with a 32 KiB L1 cache or more


def matmul(x: jax.Array, w: jax.Array, precision: lax.PrecisionLike = None) -> jax.Array:
    """x [..., K] @ w [K, N]. Each of the three products (this one, and the gradient's two)
    sums over chunks of SUM_CHUNK, whose partial products are added in order."""
    product = _matmul_in_chunks(x.reshape(-1, x.shape[-1]), w, precision)
    return product.reshape(*x.shape[:-1], w.shape[1])


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_in_chunks(a: jax.Array, b: jax.Array, precision: lax.PrecisionLike) -> jax.Array:
    """a [M, K] @ b [K, N]."""
    length = a.shape[1]
    if length <= SUM_CHUNK:
        return jnp.matmul(a, b, precision=precision)
    chunks = -(-length // SUM_CHUNK)
    padding = chunks * SUM_CHUNK - length  # zeros, which add nothing
    a = jnp.pad(a, ((0, 0), (0, padding))).reshape(a.shape[0], chunks, SUM_CHUNK)
    b = jnp.pad(b, ((0, padding), (0, 0))).reshape(chunks, SUM_CHUNK, b.shape[1])
    return jnp.einsum("mck,ckn->cmn", a, b, precision=precision).sum(axis=0)


def _matmul_forward(
    a: jax.Array, b: jax.Array, precision: lax.PrecisionLike
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _matmul_in_chunks(a, b, precision), (a, b)


def _matmul_backward(
    precision: lax.PrecisionLike, residuals: tuple[jax.Array, jax.Array], grad: jax.Array
) -> tuple[jax.Array, jax.Array]:
    a, b = residuals
    return _matmul_in_chunks(grad, b.T, precision), _matmul_in_chunks(a.T, grad, precision)


_matmul_in_chunks.defvjp(_matmul_forward, _matmul_backward)


def _depthwise_as_taps(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Padding) -> jax.Array:
    """A depthwise convolution as the sum of the input's shifted views, each scaled per channel
    by one kernel position: elementwise work that XLA fuses into one pass."""
    taps = _taps(jnp.pad(lhs, ((0, 0), *padding, (0, 0))), rhs.shape[:2], window_strides)
    total = sum(tap * weights for tap, weights in zip(taps, rhs.reshape(-1, rhs.shape[-1]), strict=True))
    return cast(jax.Array, total)  # not sum's start, 0: there is at least one tap


def _taps(x: jax.Array, window: Sequence[int], strides: Sequence[int]) -> list[jax.Array]:
    """The views of x [B, H, W, C] that a 'VALID' window sliding with ``strides`` reads, one per
    window position in row-major order: view (i, j) is [B, H', W', C], each output position's
    input at offset (i, j) within its window."""
    (window_height, window_width), (stride_y, stride_x) = window, strides
    out_height = (x.shape[1] - window_height) // stride_y + 1
    out_width = (x.shape[2] - window_width) // stride_x + 1
    return [
        x[:, i : i + (out_height - 1) * stride_y + 1 : stride_y, j : j + (out_width - 1) * stride_x + 1 : stride_x]
        for i in range(window_height)
        for j in range(window_width)
    ]


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def window_max(x: jax.Array, size: int, strides: int) -> jax.Array:
    """Max over size×size windows sliding by ``strides`` ('VALID'), as a max of the windows' views.

    Both directions are written out because XLA:CPU's are slow (reduce_window forward,
    select_and_scatter backward). Like XLA's, the gradient goes to each window's first maximum
    in row-major order.
    """
    return reduce(jnp.maximum, _taps(x, (size, size), (strides, strides)))


def _window_max_forward(x: jax.Array, size: int, strides: int) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    y = window_max(x, size, strides)
    return y, (x, y)


def _window_max_backward(
    size: int, strides: int, residuals: tuple[jax.Array, jax.Array], grad: jax.Array
) -> tuple[jax.Array]:
    x, y = residuals
    taps, scatter = jax.vjp(lambda x: _taps(x, (size, size), (strides, strides)), x)
    taken = jnp.zeros(y.shape, bool)
    routed = []
    for tap in taps:
        is_first_max = (tap == y) & ~taken
        taken = taken | is_first_max
        routed.append(jnp.where(is_first_max, grad, 0.0))
    if strides == size:  # disjoint windows: laid out as tiles, faster than summing the scattered taps
        return (_untile(routed, size, x.shape),)
    # Computed once: XLA:CPU would fuse the sum of the scattered taps into every op that reads
    # the gradient (BatchNorm's backward has several reductions) and compute it in each.
    return lax.optimization_barrier(scatter(routed))


window_max.defvjp(_window_max_forward, _window_max_backward)


def _untile(pieces: list[jax.Array], size: int, shape: tuple[int, ...]) -> jax.Array:
    """`_taps` of disjoint size×size windows put back: the pieces [B, H', W', C] laid out as the
    tiles of a [B, H'·size, W'·size, C] map, zero-padded to ``shape``."""
    batch, out_height, out_width, channels = pieces[0].shape
    rows = [jnp.stack(pieces[i * size : (i + 1) * size], axis=3) for i in range(size)]
    tiles = jnp.stack(rows, axis=2).reshape(batch, out_height * size, out_width * size, channels)
    return jnp.pad(tiles, ((0, 0), (0, shape[1] - out_height * size), (0, shape[2] - out_width * size), (0, 0)))


@jax.custom_vjp
def batch_normalize(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """BatchNorm in training mode over every axis but the last: ``(y, mean, var)``, the batch's
    mean and variance (E[x²] - E[x]², as flax's) the running statistics are updated with.

    Its sums over the batch are products with a row of ones (`matmul`, in fixed chunks), which
    XLA:CPU runs on every core and several times faster than its reductions. The gradient is
    written out: JAX's goes through the statistics with more reductions, and XLA:CPU fuses the
    incoming gradient's elementwise chain into each of them and computes it once per reduction.
    """
    return _batch_normalize_forward(x, scale, bias, epsilon)[0]


def _column_sums(x: jax.Array) -> jax.Array:
    """The sums over every axis but the last."""
    rows = x.reshape(-1, x.shape[-1])
    return matmul(jnp.ones((1, len(rows)), x.dtype), rows)[0]


def _batch_normalize_forward(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[tuple[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array, jax.Array]]:
    count = math.prod(x.shape[:-1])
    mean = _column_sums(x) / count
    var = jnp.maximum(_column_sums(lax.square(x)) / count - lax.square(mean), 0.0)
    inverse = lax.rsqrt(var + epsilon)
    y = (x - mean) * (inverse * scale) + bias
    return (y, mean, var), (x, scale, mean, inverse)


def _batch_normalize_backward(
    residuals: tuple[jax.Array, jax.Array, jax.Array, jax.Array], cotangents: tuple[jax.Array, jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array, None]:
    x, scale, mean, inverse = residuals
    grad, grad_mean, grad_var = cotangents
    count = math.prod(x.shape[:-1])
    normalized = (x - mean) * inverse
    grad_bias, grad_scale = _column_sums(grad), _column_sums(grad * normalized)
    grad_x = (scale * inverse) * (grad - (grad_bias + normalized * grad_scale) / count)
    grad_x += (grad_mean + 2 * grad_var * normalized / inverse) / count  # through the statistics returned
    return grad_x, grad_scale, grad_bias, None


batch_normalize.defvjp(_batch_normalize_forward, _batch_normalize_backward)
