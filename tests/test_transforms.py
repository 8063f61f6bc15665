"""On-device augmentation (against NumPy and scipy.ndimage, which Keras' ImageDataGenerator
resamples with) and input preprocessing."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from flaxvision.errors import UserError
from flaxvision.models.scaling import preprocess_input
from flaxvision.transforms import affine_matrix, affine_resample, augment
from tests.helpers import augment_config

# scipy's names for our fill modes ('grid-' modes pad first, then interpolate).
SCIPY_MODES = {"nearest": "nearest", "reflect": "reflect", "wrap": "grid-wrap", "constant": "grid-constant"}
SEED_000 = augment_config(rotation=10, width_shift=0.1, height_shift=0.1, shear=0.1, zoom=0.1, horizontal_flip=True)
SEED_001 = augment_config(rotation=72, horizontal_flip=True, vertical_flip=True, fill_mode="reflect")


def random_images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def resample(images, matrix, fill_mode="nearest"):
    """affine_resample of every image by one matrix, as NumPy."""
    matrices = jnp.broadcast_to(matrix, (len(images), 3, 3))
    return np.asarray(affine_resample(jnp.asarray(images), matrices, fill_mode))


def test_disabled_config_returns_the_input_itself():
    images = jnp.asarray(random_images((2, 8, 8, 3)))
    assert not augment_config().enabled
    assert augment(images, jax.random.key(0), augment_config()) is images


def test_config_enabled_and_validation():
    assert augment_config(vertical_flip=True).enabled
    assert augment_config(zoom=0.1).enabled
    for bad in [
        dict(rotation=-1),
        dict(rotation=math.nan),
        dict(shear=math.inf),
        dict(zoom=1.0),
        dict(width_shift=-0.1),
        dict(height_shift=math.nan),
        dict(fill_mode="mirror"),
    ]:
        with pytest.raises(UserError, match="^params.yaml: '?augment"):
            augment_config(**bad)


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, variants",
    [
        (augment_config(horizontal_flip=True), lambda x: [x, x[:, ::-1]]),
        (augment_config(vertical_flip=True), lambda x: [x, x[::-1]]),
        (
            augment_config(horizontal_flip=True, vertical_flip=True),
            lambda x: [x, x[:, ::-1], x[::-1], x[::-1, ::-1]],
        ),
    ],
)
def test_flips_are_exact_and_drawn_per_image(config, variants):
    images = random_images((32, 6, 7, 3))
    out = np.asarray(augment(jnp.asarray(images), jax.random.key(0), config))
    drawn = [
        next(i for i, variant in enumerate(variants(image)) if np.array_equal(result, variant))
        for image, result in zip(images, out, strict=True)
    ]
    assert set(drawn) == set(range(len(variants(images[0]))))  # every variant occurs in 32 draws


@pytest.mark.parametrize("size", [7, 8])
def test_rotation_by_90_degrees_matches_rot90(size):
    images = random_images((2, size, size, 3))
    out = resample(images, affine_matrix(size, size, rotation=90))
    np.testing.assert_allclose(out, np.rot90(images, 1, axes=(1, 2)), atol=1e-3)


def test_shift_moves_content_by_minus_shift():
    images = random_images((2, 6, 9, 1))
    right = resample(images, affine_matrix(6, 9, shift=(-3, 0)))
    np.testing.assert_array_equal(right[:, :, 3:], images[:, :, :-3])
    up = resample(images, affine_matrix(6, 9, shift=(0, 2)))
    np.testing.assert_array_equal(up[:, :-2], images[:, 2:])


@pytest.mark.parametrize(
    "fill_mode, expected",
    [
        ("nearest", [1, 1, 1, 1, 2]),
        ("reflect", [3, 2, 1, 1, 2]),  # d c b a | a b c d
        ("wrap", [3, 4, 5, 1, 2]),
        ("constant", [0, 0, 0, 1, 2]),
    ],
)
def test_fill_modes(fill_mode, expected):
    row = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5, 1)
    out = resample(row, affine_matrix(1, 5, shift=(-3, 0)), fill_mode)
    np.testing.assert_array_equal(out.ravel(), expected)


@pytest.mark.parametrize("fill_mode", SCIPY_MODES)
def test_bilinear_resampling_matches_scipy(fill_mode):
    images = random_images((2, 9, 12, 3))
    matrices = [
        affine_matrix(9, 12, rotation=30, shift=(2.5, -1.25), shear=8, zoom=(1.2, 0.9), flip=(True, False)),
        affine_matrix(9, 12, rotation=-100, shift=(30, 10), zoom=(0.5, 0.7), flip=(False, True)),
    ]
    out = np.asarray(affine_resample(jnp.asarray(images), jnp.stack(matrices), fill_mode))
    for image, matrix, result in zip(images, np.asarray(matrices), out, strict=True):
        swap_xy = np.array([[0, 1], [1, 0]])  # scipy indexes (row, column): (y, x)
        expected = np.stack(
            [
                ndimage.affine_transform(
                    channel,
                    swap_xy @ matrix[:2, :2] @ swap_xy,
                    swap_xy @ matrix[:2, 2],
                    order=1,
                    mode=SCIPY_MODES[fill_mode],
                )
                for channel in np.moveaxis(image, -1, 0)
            ],
            axis=-1,
        )
        np.testing.assert_allclose(result, expected, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("config", [SEED_000, SEED_001], ids=["seed000", "seed001"])
def test_augment_under_jit_is_deterministic_per_key(config):
    images = jnp.asarray(random_images((4, 16, 16, 3)))
    augment_jit = jax.jit(partial(augment, config=config))
    first = augment_jit(images, jax.random.key(1))
    assert first.shape == images.shape and first.dtype == jnp.float32
    np.testing.assert_array_equal(first, augment_jit(images, jax.random.key(1)))
    assert not np.allclose(first, augment_jit(images, jax.random.key(2)))
    # Bilinear interpolation with these fill modes only mixes input pixels.
    assert images.min() <= first.min() and first.max() <= images.max()
    for a, b in [(0, 1), (0, 2), (1, 3)]:
        assert not np.allclose(first[a], first[b]), "each image gets its own transform"


def test_augment_draws_within_the_configured_ranges():
    # A pure zoom of a centred bright square changes its area by a factor in [0.8², 1.2²].
    config = augment_config(zoom=0.2, fill_mode="constant")
    images = np.zeros((64, 41, 41, 1), np.float32)
    images[:, 10:31, 10:31] = 1.0
    areas = np.asarray(augment(jnp.asarray(images), jax.random.key(0), config)).sum(axis=(1, 2, 3))
    ratios = areas / images[0].sum()
    assert ratios.min() >= 1 / 1.2**2 - 0.05 and ratios.max() <= 1 / 0.8**2 + 0.05
    assert ratios.max() - ratios.min() > 0.3, "zoom factors vary across the batch"


def test_preprocess_input_modes():
    pixel = jnp.array([[[[0.0, 127.5, 255.0]]]])  # one RGB pixel
    np.testing.assert_allclose(preprocess_input(pixel, "unit"), [[[[0, 0.5, 1]]]])
    np.testing.assert_allclose(preprocess_input(pixel, "tf"), [[[[-1, 0, 1]]]])
    # BGR order: (255 - 103.939, 127.5 - 116.779, 0 - 123.68)
    np.testing.assert_allclose(preprocess_input(pixel, "caffe"), [[[[151.061, 10.721, -123.68]]]], rtol=1e-5)
    # ((0 - .485) / .229, (.5 - .456) / .224, (1 - .406) / .225)
    np.testing.assert_allclose(preprocess_input(pixel, "torch"), [[[[-2.117904, 0.196429, 2.64]]]], rtol=1e-5)
    assert preprocess_input(np.uint8([[[[7]]]]), "unit").dtype == jnp.float32


def test_preprocess_input_rejects_unknown_modes_and_grayscale_for_imagenet_modes():
    message = "unknown preprocessing mode 'bogus'; valid modes: none, unit, tf, caffe, torch"
    with pytest.raises(ValueError, match=message):
        preprocess_input(jnp.zeros((1, 2, 2, 3)), "bogus")
    with pytest.raises(ValueError, match="needs RGB"):
        preprocess_input(jnp.zeros((1, 2, 2, 1)), "caffe")
