"""The Python API: a trained model folder as a classifier of image files and arrays.

    from flaxvision.classifier import load

    model = load("artifacts/model")
    for prediction in model.predict(["cat.jpg", pixels]):   # paths, or arrays (see Classifier.predict)
        print(prediction.label, prediction.probabilities[0])

Images go through the pipeline's own input path: decoded, converted and resized as preprocess
did (`flaxvision.data.images.load_image`, at the model's size and colour mode), then scaled by the
model's preprocessing mode inside the compiled logits step, as in training and evaluation.

Every input is checked before the model runs: one that `Classifier.predict` does not take raises
`InvalidInput`, whose one-line message names it (``image 2``), an array's dtype and shape, and
the fix, instead of an error from deep inside Pillow or JAX, or a silently wrong prediction.
"""

import dataclasses
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeGuard

import numpy as np
from flax import nnx

from flaxvision.data.images import load_image
from flaxvision.errors import UserError
from flaxvision.evaluation import softmax, top_classes
from flaxvision.inference import model_logits
from flaxvision.model_folder import ModelInfo, load_trained

Image = str | Path | np.ndarray
CHANNELS = (1, 3, 4)  # of an array [height, width, channels]: gray, RGB, RGBA
SHAPES = "pass [height, width] (gray) or [height, width, channels] with 1 (gray), 3 (RGB) or 4 (RGBA) channels"


class InvalidInput(UserError, ValueError):
    """An argument that `Classifier` does not take: a bad image, ``images`` not a list, a bad ``top_k``.

    One class for every refusal, a wrong type included, so ``except InvalidInput`` catches them
    all (and ``except ValueError``; the commands print a UserError as one line). The message is
    ``subject: problem``, e.g. ``image 1: float64 array of shape (32, 32, 3) has values outside
    [0, 1] (min -0.2, max 1.3): scale it to [0, 1] or pass uint8``, where ``subject`` names the
    input (``image 1``, ``image 1 (photo.jpg)`` for a file, ``images``, ``top_k``) and ``problem``,
    also an attribute, says what is wrong with it and the fix.
    """

    def __init__(self, subject: str, problem: str) -> None:
        super().__init__(f"{subject}: {problem}")
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The most probable classes of one image, best first, with their probabilities."""

    classes: tuple[str, ...]
    probabilities: tuple[float, ...]

    @property
    def label(self) -> str:
        return self.classes[0]


class Classifier:
    """A trained model with its input pipeline (see `load`)."""

    def __init__(self, model: nnx.Module, info: ModelInfo) -> None:
        self.model, self.info = model, info

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    def decode(self, image: Image) -> np.ndarray:
        """``image`` as the model takes it: uint8 [height, width, channels] at its input shape.

        ``image`` is one image as `predict` takes them (a file path, or a uint8 or [0, 1] float
        array), of any size; anything else raises `InvalidInput`. Predicting the array this
        returns gives what predicting ``image`` gives. That is not so of
        ``np.asarray(PIL.Image.open(path))``: decoding a file also turns it by its EXIF
        orientation and reads a JPEG much larger than the model's input at a reduced scale.
        """
        return self._decoded(_checked(image, "image"), "image")

    def probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities [n, classes] of decoded images: uint8 [n, height, width, channels] at
        the model's input shape (`decode`'s arrays, stacked), ``batch_size`` (≥ 1) at a time."""
        _check_batch_size(batch_size)
        decoded = isinstance(images, np.ndarray) and images.dtype == np.uint8
        if not decoded or images.shape[1:] != self.info.input_shape:
            shape = ", ".join(map(str, self.info.input_shape))
            raise InvalidInput("images", f"{_what(images)}: pass decoded images, uint8 [n, {shape}]")
        return softmax(model_logits(self.model, self.info.preprocessing, images, batch_size))

    def predict(
        self, images: Sequence[Image] | np.ndarray, top_k: int | None = None, batch_size: int = 32
    ) -> list[Prediction]:
        """The ``top_k`` most probable classes of each image, in input order.

        Args:
            images: a list or tuple of images, or a numpy array [n, height, width, channels] of n
                images. An image, of any size (each is converted to the model's colour mode and
                resized to its input as preprocess did, see `decode`), is either
                - a path (str or pathlib.Path) of an image file in a format Pillow reads, or
                - a numpy array [height, width] (gray) or [height, width, channels] with 1 (gray),
                  3 (RGB) or 4 (RGBA: the alpha is dropped) channels, of dtype uint8 (0 to 255) or
                  a float dtype with values in [0, 1] (rounded to uint8 as ``x * 255``).
            top_k: None for all the classes, or an int from 1 to their number.
            batch_size: images per forward pass, an int ≥ 1.

        Raises:
            InvalidInput: for anything else, before the model runs, naming the first bad image by
                its index in ``images`` (and an array's dtype and shape): an array of another
                dtype (int64, uint16, bool, ...), with NaN, infinite or out-of-range floats, of
                another shape, or empty; a file that is missing or cannot be decoded; a value of
                another type. And for one image given as ``images`` (pass ``[image]``), ``images``
                of another type, a bad ``top_k`` or ``batch_size``.
        """
        if top_k is not None and not (_is_int(top_k) and 1 <= top_k <= len(self.classes)):
            raise InvalidInput(
                "top_k", f"{top_k!r} is not an int from 1 to {len(self.classes)}, the classes (None: all)"
            )
        _check_batch_size(batch_size)
        # Every argument is checked before a file is decoded, and every file decoded before the model runs.
        checked = [_checked(image, f"image {index}") for index, image in enumerate(_listed(images))]
        if not checked:
            return []
        pixels = np.stack([self._decoded(image, f"image {index}") for index, image in enumerate(checked)])
        return [self.prediction(row, top_k) for row in self.probabilities(pixels, batch_size)]

    def prediction(self, probabilities: np.ndarray, top_k: int | None = None) -> Prediction:
        """The `Prediction` that one row of `probabilities` makes, of ``top_k`` classes (None, or
        more than there are: all)."""
        best = top_classes(probabilities[None], top_k or len(self.classes))[0]
        return Prediction(tuple(self.classes[c] for c in best), tuple(float(probabilities[c]) for c in best))

    def _decoded(self, image: Path | np.ndarray, subject: str) -> np.ndarray:
        """A `_checked` image as the model takes it; a file that cannot be decoded is an InvalidInput."""
        height, width, _ = self.info.input_shape
        try:
            return load_image(image, (height, width), self.info.color_mode)
        except Exception as error:  # whatever an untrusted file makes Pillow raise
            if isinstance(image, np.ndarray):  # checked, so this is no fault of the array's
                raise
            raise InvalidInput(f"{subject} ({image})", _unreadable(image, error)) from error


def load(directory: str | Path = "artifacts/model") -> Classifier:
    """The trained model in ``directory`` (as the train stage writes it), ready to classify images."""
    return Classifier(*load_trained(Path(directory)))


def _listed(images: object) -> Sequence | np.ndarray:
    """``images`` if it is a sequence of images (see `Classifier.predict`), else an InvalidInput."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return images
    if isinstance(images, str | Path) or isinstance(images, np.ndarray) and images.ndim in (2, 3):
        # It would be taken for a sequence of characters, or of rows.
        raise InvalidInput("images", f"{_what(images)} is one image: pass [image]")
    if not isinstance(images, Sequence) or isinstance(images, bytes | bytearray):
        raise InvalidInput(
            "images", f"{_what(images)}: pass a list of images, or an array [n, height, width, channels]"
        )
    return images


def _checked(image: object, subject: str) -> Path | np.ndarray:
    """``image`` as `load_image` takes it (a Path, or a uint8 array [h, w] or [h, w, 1, 3 or 4])
    if `Classifier.predict` takes it, else an InvalidInput: all but a file's contents is checked."""
    if isinstance(image, str | Path):
        return Path(image)
    if not isinstance(image, np.ndarray):
        raise InvalidInput(
            subject, f"{_what(image)} is no file path or numpy array: pass the path, or np.asarray(image)"
        )
    what = _what(image)
    if image.size == 0:
        raise InvalidInput(subject, f"{what} is empty")
    if image.ndim not in (2, 3) or image.ndim == 3 and image.shape[2] not in CHANNELS:
        raise InvalidInput(subject, f"{what}: {SHAPES}")
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        # Pillow would take some (int32 as 32-bit gray, bool as 1-bit) with other ranges than 0-255.
        raise InvalidInput(subject, f"{what}: convert it to uint8 (0 to 255), or to floats in [0, 1]")
    if not np.isfinite(image).all():
        raise InvalidInput(subject, f"{what} holds NaN or infinite values: pass floats in [0, 1], or uint8")
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 1:
        raise InvalidInput(
            subject, f"{what} has values outside [0, 1] (min {low:g}, max {high:g}): scale it to [0, 1] or pass uint8"
        )
    return np.rint(image.astype(np.float64) * 255).astype(np.uint8)  # float64: float16 would round x * 255 again


def _check_batch_size(batch_size: object) -> None:
    if not (_is_int(batch_size) and batch_size >= 1):
        raise InvalidInput("batch_size", f"{batch_size!r} is not an int of at least 1")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # True is an int to Python


def _unreadable(path: Path, error: Exception) -> str:
    """Why the file ``path`` could not be decoded (``error``), in a few words.

    os.path's tests, unlike Path's, answer False rather than raise for a path the system refuses
    (too long, in a folder that cannot be searched).
    """
    if os.path.isdir(path):
        return "a folder, not an image file"
    if not os.path.exists(path):
        return "no such file"
    return "not a readable image (" + " ".join(f"{type(error).__name__}: {error}".split()) + ")"


def _what(value: object) -> str:
    """How a message names ``value``: an array by its dtype and shape, anything else by its type."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return f"'{type(value).__name__}' object"
