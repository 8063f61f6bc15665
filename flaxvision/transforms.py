"""On-device augmentation: pure jnp, so it runs inside a jitted step (models.scaling scales its output).

`augment` reproduces keras ImageDataGenerator's random affine augmentation (rotation,
shift, shear, zoom, flips) and Keras' RandomFlip/RandomRotation layers: each image gets
its own transform, composed into one affine map about the image centre and applied
with a single bilinear resampling.
"""

import dataclasses
import math
from functools import partial
from typing import Literal, get_args

import jax
import jax.numpy as jnp

FillMode = Literal["nearest", "reflect", "wrap", "constant"]

# How `affine_resample` pads the image by one pixel so that the four bilinear neighbours
# of a folded coordinate all exist ('reflect' repeats the edge pixel: d c b a | a b c d).
_PAD_MODES = {"nearest": "edge", "reflect": "symmetric", "wrap": "wrap", "constant": "constant"}


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation ranges, the params.yaml ``augment`` section; the defaults are off.

    rotation: degrees, uniform in [-rotation, rotation] (ImageDataGenerator's rotation_range;
        Keras RandomRotation(factor) is rotation = 360 * factor).
    width_shift, height_shift: fractions of the width and height, uniform in [-s, s].
    shear: degrees, uniform in [-shear, shear].
    zoom: the sampling scale along x and along y, each uniform in [1 - zoom, 1 + zoom]
        (above 1 zooms out).
    horizontal_flip, vertical_flip: flip each image with probability 1/2.
    fill_mode: how points outside the image are filled, as in Keras: 'nearest' (the edge
        pixel), 'reflect' (d c b a | a b c d), 'wrap' (a b c d | a b c d), 'constant' (zeros).
    """

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    shear: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: FillMode = "nearest"

    def __post_init__(self):
        for name, limit in [
            ("rotation", math.inf),
            ("shear", math.inf),
            ("width_shift", 1),
            ("height_shift", 1),
            ("zoom", 1),
        ]:
            if not 0 <= getattr(self, name) < limit:  # also rejects nan
                raise ValueError(f"'{name}' must be in [0, {limit}), got {getattr(self, name)}")
        if self.fill_mode not in get_args(FillMode):
            raise ValueError(f"'fill_mode' must be one of {list(get_args(FillMode))}, got {self.fill_mode!r}")

    @property
    def enabled(self) -> bool:
        ranges = (self.rotation, self.width_shift, self.height_shift, self.shear, self.zoom)
        return any(ranges) or self.horizontal_flip or self.vertical_flip


def augment(images: jax.Array, key: jax.Array, config: AugmentConfig) -> jax.Array:
    """Randomly transform each image of a float32 [batch, height, width, channels] batch.

    Returns ``images`` itself when ``config`` enables nothing. ``config`` is static
    under jit (it is hashable).
    """
    if not config.enabled:
        return images
    batch, height, width, _ = images.shape
    uniform_key, flip_key = jax.random.split(key)
    u = jax.random.uniform(uniform_key, (6, batch), minval=-1, maxval=1)
    coins = jax.random.bernoulli(flip_key, 0.5, (2, batch))
    matrices = jax.vmap(partial(affine_matrix, height, width))(
        rotation=config.rotation * u[0],
        shift=(config.width_shift * width * u[1], config.height_shift * height * u[2]),
        shear=config.shear * u[3],
        zoom=(1 + config.zoom * u[4], 1 + config.zoom * u[5]),
        flip=(coins[0] & config.horizontal_flip, coins[1] & config.vertical_flip),
    )
    return affine_resample(images, matrices, config.fill_mode)


def affine_matrix(
    height: int,
    width: int,
    *,
    rotation=0.0,
    shift=(0.0, 0.0),
    shear=0.0,
    zoom=(1.0, 1.0),
    flip=(False, False),
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


def _affine(a, b, c, d, e, f) -> jax.Array:
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

    def neighbours(offset):  # in bounds by construction; 'clip' only saves the default's masking
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
    # jnp.mod's float remainder is about 30 times slower than this on CPU.
    return x - period * jnp.floor(x / period)
