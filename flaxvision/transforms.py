"""On-device augmentation: pure jnp, so it runs inside a jitted step (models.scaling scales its output).

`augment` reproduces keras ImageDataGenerator's random affine augmentation (rotation,
shift, shear, zoom, flips) and Keras' RandomFlip/RandomRotation layers, with torchvision's
random-resized crop folded into the same map: each image gets its own transform, composed
into one affine map about the image centre and applied with a single bilinear resampling.
Colour jitter (dm-pix's adjustments) follows; `mix` blends images and their targets across
the batch (mixup, CutMix), which the train step applies after both.
"""

import math
from functools import partial

import dm_pix
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from flaxvision.params import AugmentConfig, FillMode

# How `affine_resample` pads the image by one pixel so that the four bilinear neighbours
# of a folded coordinate all exist ('reflect' repeats the edge pixel: d c b a | a b c d).
_PAD_MODES = {"nearest": "edge", "reflect": "symmetric", "wrap": "wrap", "constant": "constant"}


def augment(images: jax.Array, key: jax.Array, config: AugmentConfig) -> jax.Array:
    """Randomly transform each image of a float32 [batch, height, width, channels] batch.

    Returns ``images`` itself when ``config`` enables nothing. ``config`` is static
    under jit (it is hashable).
    """
    if not config.enabled:
        return images
    batch, height, width, _ = images.shape
    uniform_key, flip_key = jax.random.split(key)
    # The crop and the colours draw from keys of their own, so turning them on leaves the
    # affine draws (and the runs that used only those) as they were.
    crop_key, colour_key = jax.random.fold_in(key, 2), jax.random.fold_in(key, 3)
    u = jax.random.uniform(uniform_key, (6, batch), minval=-1, maxval=1)
    coins = jax.random.bernoulli(flip_key, 0.5, (2, batch))
    (crop_x, crop_y), (offset_x, offset_y) = (
        random_crops(crop_key, batch, config) if config.cropped else ((1, 1), (0, 0))
    )
    matrices = jax.vmap(partial(affine_matrix, height, width))(
        rotation=config.rotation * u[0],
        shift=(
            config.width_shift * width * u[1] + offset_x * width,
            config.height_shift * height * u[2] + offset_y * height,
        ),
        shear=config.shear * u[3],
        zoom=((1 + config.zoom * u[4]) * crop_x, (1 + config.zoom * u[5]) * crop_y),
        flip=(coins[0] & config.horizontal_flip, coins[1] & config.vertical_flip),
    )
    images = affine_resample(images, matrices, config.fill_mode)
    return jitter_colours(images, colour_key, config) if config.colour else images


def random_crops(
    key: jax.Array, batch: int, config: AugmentConfig
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """Each image's crop as fractions of its width and height, (sizes, offsets of its centre)."""
    area_key, ratio_key, place_key = jax.random.split(key, 3)
    area = jax.random.uniform(area_key, (batch,), minval=config.crop_scale[0], maxval=config.crop_scale[1])
    log_ratio = jax.random.uniform(
        ratio_key, (batch,), minval=math.log(config.crop_ratio[0]), maxval=math.log(config.crop_ratio[1])
    )
    sizes = jnp.minimum(jnp.sqrt(area * jnp.exp(log_ratio)), 1), jnp.minimum(jnp.sqrt(area / jnp.exp(log_ratio)), 1)
    place = jax.random.uniform(place_key, (2, batch), minval=-0.5, maxval=0.5)
    return sizes, (place[0] * (1 - sizes[0]), place[1] * (1 - sizes[1]))


def jitter_colours(images: jax.Array, key: jax.Array, config: AugmentConfig) -> jax.Array:
    """Brightness, contrast, saturation and hue of each image (float [0, 255]), in that order."""
    if images.shape[-1] != 3 and (config.saturation or config.hue):
        raise ValueError("augment.saturation and augment.hue need RGB images (preprocess.color_mode: rgb)")
    u = jax.random.uniform(key, (4, images.shape[0], 1, 1, 1), minval=-1, maxval=1)
    pixels = images / 255  # dm-pix works on [0, 1]
    pixels = dm_pix.adjust_brightness(pixels, config.brightness * u[0])
    pixels = dm_pix.adjust_contrast(pixels, 1 + config.contrast * u[1])
    if config.saturation:
        pixels = jax.vmap(dm_pix.adjust_saturation)(jnp.clip(pixels, 0, 1), 1 + config.saturation * u[2, :, 0, 0, 0])
    if config.hue:
        pixels = jax.vmap(dm_pix.adjust_hue)(jnp.clip(pixels, 0, 1), config.hue * u[3, :, 0, 0, 0])
    return jnp.clip(pixels, 0, 1) * 255


def mix(images: jax.Array, key: jax.Array, config: AugmentConfig) -> tuple[jax.Array, jax.Array]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of a batch with itself reversed, as
    timm pairs them, with one Beta(alpha, alpha) draw per batch. Returns the mixed images and the
    share of each that is its own image: the loss weighs the image's label by it and the
    reversed batch's label by the rest (the same as mixing one-hot targets)."""
    choice_key, mixup_key, cutmix_key, box_key = jax.random.split(key, 4)
    _, height, width, _ = images.shape
    partner = images[::-1]

    def mixup() -> tuple[jax.Array, jax.Array]:
        weight = jax.random.beta(mixup_key, config.mixup, config.mixup)
        return weight * images + (1 - weight) * partner, weight

    def cutmix() -> tuple[jax.Array, jax.Array]:
        # a box of area share 1 - weight, at a uniform centre, cut at the image's edges
        weight = jax.random.beta(cutmix_key, config.cutmix, config.cutmix)
        centre = jax.random.uniform(box_key, (2,)) * jnp.array([height, width])
        half = jnp.sqrt(1 - weight) * jnp.array([height, width]) / 2
        low, high = (
            jnp.clip(jnp.round(centre - half), 0),
            jnp.minimum(jnp.round(centre + half), jnp.array([height, width])),
        )
        rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
        inside = (rows >= low[0]) & (rows < high[0]) & (cols >= low[1]) & (cols < high[1])
        kept = 1 - jnp.mean(inside)
        return jnp.where(inside[None, :, :, None], partner, images), kept

    if config.mixup and config.cutmix:
        (mixed_up, mixup_weight), (cut, cut_weight) = mixup(), cutmix()
        use_cutmix = jax.random.bernoulli(choice_key, 0.5)
        images, weight = jnp.where(use_cutmix, cut, mixed_up), jnp.where(use_cutmix, cut_weight, mixup_weight)
    else:
        images, weight = cutmix() if config.cutmix else mixup()
    return images, weight


def affine_matrix(
    height: int,
    width: int,
    *,
    rotation: ArrayLike = 0.0,
    shift: tuple[ArrayLike, ArrayLike] = (0.0, 0.0),
    shear: ArrayLike = 0.0,
    zoom: tuple[ArrayLike, ArrayLike] = (1.0, 1.0),
    flip: tuple[ArrayLike, ArrayLike] = (False, False),
) -> jax.Array:
    """The 3×3 map from an output pixel (x, y, 1) to the input point it samples.

    x runs along the width, y along the height, both in pixels. As in Keras, the map is
    rotation · shift · shear · zoom about the image centre, so the parameters mean what
    they mean there: ``rotation`` and ``shear`` in degrees (a positive rotation turns the
    content counter-clockwise as displayed), ``shift`` (x, y) in pixels (the content
    moves by -shift), ``zoom`` (x, y) the sampling scale (above 1 zooms out). ``flip``
    (horizontal, vertical) then mirrors the result.
    """
    theta, shear = jnp.deg2rad(rotation), jnp.deg2rad(shear)
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    mirror_x, mirror_y = jnp.where(flip[0], -1.0, 1.0), jnp.where(flip[1], -1.0, 1.0)
    transforms = [
        _affine(1, 0, centre_x, 0, 1, centre_y),
        _affine(jnp.cos(theta), -jnp.sin(theta), 0, jnp.sin(theta), jnp.cos(theta), 0),
        _affine(1, 0, shift[0], 0, 1, shift[1]),
        _affine(1, -jnp.sin(shear), 0, 0, jnp.cos(shear), 0),
        _affine(zoom[0], 0, 0, 0, zoom[1], 0),
        _affine(mirror_x, 0, 0, 0, mirror_y, 0),
        _affine(1, 0, -centre_x, 0, 1, -centre_y),
    ]
    return jnp.linalg.multi_dot(transforms)


def _affine(a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike, e: ArrayLike, f: ArrayLike) -> jax.Array:
    return jnp.array([[a, b, c], [d, e, f], [0, 0, 1]], jnp.float32)


def affine_resample(images: jax.Array, matrices: jax.Array, fill_mode: FillMode = "nearest") -> jax.Array:
    """Resample each image at the points its matrix (see `affine_matrix`) maps the output
    pixels to, with bilinear interpolation; points outside the image follow ``fill_mode``."""
    batch, height, width, channels = images.shape
    y, x = jnp.mgrid[0:height, 0:width].astype(jnp.float32)
    rows = matrices[:, :2, :, None, None]  # broadcast over the pixels
    source_x = rows[:, 0, 0] * x + rows[:, 0, 1] * y + rows[:, 0, 2]
    source_y = rows[:, 1, 0] * x + rows[:, 1, 1] * y + rows[:, 1, 2]
    left, weight_x = _neighbour(source_x, width, fill_mode)
    top, weight_y = _neighbour(source_y, height, fill_mode)

    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode=_PAD_MODES[fill_mode])
    pixels = padded.reshape(batch, -1, channels)
    top_left = ((top + 1) * (width + 2) + left + 1).reshape(batch, -1, 1)  # +1: the padding

    def neighbours(offset: int) -> jax.Array:  # in bounds by construction; 'clip' only saves the default's masking
        gathered = jnp.take_along_axis(pixels, top_left + offset, axis=1, mode="clip")
        return gathered.reshape(images.shape)

    top_left, top_right, bottom_left, bottom_right = map(neighbours, (0, 1, width + 2, width + 3))
    weight_x, weight_y = weight_x[..., None], weight_y[..., None]
    top_row = top_left * (1 - weight_x) + top_right * weight_x
    bottom_row = bottom_left * (1 - weight_x) + bottom_right * weight_x
    return top_row * (1 - weight_y) + bottom_row * weight_y


def _neighbour(coordinate: jax.Array, size: int, fill_mode: FillMode) -> tuple[jax.Array, jax.Array]:
    """The lower bilinear neighbour of each coordinate along an axis of ``size`` pixels, and
    the weight of the upper one, after folding the coordinate into [-1, size] by ``fill_mode``."""
    if fill_mode == "nearest":
        coordinate = jnp.clip(coordinate, 0, size - 1)
    elif fill_mode == "reflect":  # mirrored about the outer edges of the end pixels, period 2·size
        coordinate = size - 0.5 - jnp.abs(_modulo(coordinate + 0.5, 2 * size) - size)
    elif fill_mode == "wrap":
        coordinate = _modulo(coordinate, size)
    else:  # constant: blends into the zero padding one pixel out, zero beyond
        coordinate = jnp.clip(coordinate, -1, size)
    lower = jnp.clip(jnp.floor(coordinate), -1, size - 1)
    return lower.astype(jnp.int32), coordinate - lower


def _modulo(x: jax.Array, period: int) -> jax.Array:
    # jnp.mod's float remainder is much slower than this on CPU.
    return x - period * jnp.floor(x / period)
