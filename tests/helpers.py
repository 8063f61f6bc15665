"""Small generated data shared by the tests."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax


def pattern_images(count: int, size: int = 32, classes: int = 3, seed: int = 0):
    """uint8 images whose class is the colour of a bright square on a noisy background.

    Learnable in a few steps, so tests can check that training makes progress.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    images = rng.integers(0, 60, size=(count, size, size, 3), dtype=np.uint8)
    colours = np.eye(3, dtype=np.uint8)[np.arange(classes) % 3] * 200 + 40
    for image, label in zip(images, labels):
        top, left = rng.integers(0, size // 2, size=2)
        image[top:top + size // 2, left:left + size // 2] = colours[label]
    return images, labels.astype(np.int32)


def assert_conv_matches_lax(layer, x, strides: int, padding):
    """An nnx.Conv of models.layers, whichever path it takes, against lax.conv_general_dilated:
    values and gradients (the fast paths are differentiated by JAX, not written by hand).
    ``padding`` is as lax takes it."""

    def reference(x, kernel):
        return lax.conv_general_dilated(
            x, kernel, (strides, strides), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=layer.feature_group_count,
        ) + layer.bias[...]

    np.testing.assert_allclose(layer(x), reference(x, layer.kernel[...]), rtol=1e-5, atol=1e-5)
    want_x, want_kernel = jax.grad(lambda *a: jnp.sum(reference(*a) ** 2), (0, 1))(x, layer.kernel[...])
    got_x = jax.grad(lambda x: jnp.sum(layer(x) ** 2))(x)
    got_kernel = nnx.grad(lambda layer: jnp.sum(layer(x) ** 2))(layer).kernel[...]
    np.testing.assert_allclose(got_x, want_x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_kernel, want_kernel, rtol=1e-4, atol=1e-3)
