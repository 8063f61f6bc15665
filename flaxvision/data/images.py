"""Image decoding with Pillow: any common file or array to a uint8 [H, W, C] of fixed size.

Each image is EXIF-rotated (``ImageOps.exif_transpose``), converted to the configured colour
mode (``rgb``: 3 channels, ``grayscale``: 1 channel, Pillow's ITU-R 601-2 luma) and resized
to ``image_size`` with bilinear filtering, ignoring the aspect ratio as Keras's
``image_dataset_from_directory`` does. Alpha is dropped (as Keras does, not composited);
16-bit greyscale is scaled to 8 bits (Pillow's own conversion would clip it). JPEGs much
larger than the target are decoded at a reduced scale (``Image.draft``), which makes
decoding several times faster and bounds its memory. Other formats cannot be decoded reduced:
an image that would still be above ``MAX_PIXELS`` is refused before decoding, from the size in
its header (``ImageTooLarge``), so a huge file costs neither gigabytes nor Pillow's
multi-line DecompressionBombWarning.

``ImageDecoder`` runs this over a process pool with a progress bar; a file that cannot be
decoded yields its reason instead of an array, so the caller can skip and report it.
"""

import functools
import multiprocessing
import os
import warnings
from collections.abc import Iterable, Iterator
from multiprocessing.pool import Pool
from pathlib import Path
from typing import NamedTuple, cast

import numpy as np
from PIL import ExifTags, Image, ImageOps
from tqdm import tqdm

from flaxvision import interrupts

PIL_MODES = {"rgb": "RGB", "grayscale": "L"}
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
# 50 megapixels decode to 150 MB as RGB, per decoding worker: a 7000×7000 PNG is still read, a
# 12000×12000 one is not (a JPEG is first reduced by draft(), up to 8× each way).
MAX_PIXELS = 50_000_000


class ImageTooLarge(ValueError):
    """An image too large to decode with bounded memory."""


class Example(NamedTuple):
    """One image of a split: ``image`` is a file path or a decoded uint8 array."""

    key: str  # a name for reports: the file's path, or "<file>[<index>]"
    image: str | Path | np.ndarray
    label: int


class Decoded(NamedTuple):
    key: str
    label: int
    pixels: np.ndarray | None  # None when the image could not be decoded
    error: str  # why it could not be decoded


def load_image(image: str | Path | np.ndarray, size: tuple[int, int], color_mode: str) -> np.ndarray:
    """Decode a file (or convert an array) to uint8 [height, width, channels]."""
    if isinstance(image, np.ndarray):
        single_channel = image.ndim == 3 and image.shape[-1] == 1
        return _finish(Image.fromarray(image[:, :, 0] if single_channel else image), size, color_mode)
    height, width = size
    with warnings.catch_warnings():
        # Pillow warns (several lines) above its own limit, which is above MAX_PIXELS: ours decides.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(image)
    with img:
        if img.format in ("JPEG", "MPO"):  # the formats decoded reduced; their EXIF is in the header
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
            # draft() picks the smallest JPEG scale that is still at least the requested size.
            img.draft(img.mode, (height, width) if orientation in TRANSPOSING_ORIENTATIONS else (width, height))
        # Before anything decodes the pixels (a PNG's getexif() does: its EXIF may follow them).
        if img.width * img.height > MAX_PIXELS:
            raise ImageTooLarge(
                f"{img.width}×{img.height} pixels, more than the {MAX_PIXELS:,} this decodes "
                "(memory): shrink the image or remove it"
            )
        return _finish(ImageOps.exif_transpose(img), size, color_mode)


def _finish(img: Image.Image, size: tuple[int, int], color_mode: str) -> np.ndarray:
    height, width = size
    img = _convert(img, PIL_MODES[color_mode]).resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def _convert(img: Image.Image, mode: str) -> Image.Image:
    if img.mode.startswith("I"):  # 16/32-bit greyscale: scale 16 bits to 8
        img = Image.fromarray((np.clip(np.asarray(img), 0, 65535) >> 8).astype(np.uint8))
    elif img.mode == "P" or img.mode == "PA" or "transparency" in img.info:
        img = img.convert("RGBA")  # palette transparency must go through RGBA
    return img if img.mode == mode else img.convert(mode)


def _decode(example: Example, size: tuple[int, int], color_mode: str) -> Decoded:
    try:
        pixels = load_image(example.image, size, color_mode)
    except Exception as error:  # any failure of an untrusted file: report it, go on
        reason = " ".join(f"{type(error).__name__}: {error}".split())  # one line, for the report
        return Decoded(example.key, example.label, None, reason)
    return Decoded(example.key, example.label, pixels, "")


class ImageDecoder:
    """Decode examples in parallel, in order, with a progress bar per call of ``map``.

    Use as a context manager so the worker processes are started once and stopped at the end.
    """

    def __init__(self, size: tuple[int, int], color_mode: str, workers: int | None = None) -> None:
        self.size = cast(tuple[int, int], tuple(size))
        self.color_mode = color_mode
        self.workers = workers or len(os.sched_getaffinity(0))
        self._pool: Pool | None = None

    def __enter__(self) -> "ImageDecoder":
        # spawn, not fork: forking a process that may hold threads (tfds, JAX) can deadlock.
        try:
            with interrupts.children_without_stderr():
                self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
        except BaseException:  # a signal while they start: stop those started (no __exit__ will)
            for worker in multiprocessing.active_children():
                worker.terminate()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        pool = cast(Pool, self._pool)  # set by __enter__
        pool.terminate()
        pool.join()

    def map(self, examples: Iterable[Example], total: int, desc: str) -> Iterator[Decoded]:
        decode = functools.partial(_decode, size=self.size, color_mode=self.color_mode)
        results = cast(Pool, self._pool).imap(decode, examples, chunksize=16)
        yield from tqdm(results, total=total, desc=desc, unit="img", disable=None)  # bar on a terminal only
