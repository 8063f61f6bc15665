"""What `Classifier.predict` takes (flaxvision.classifier): each kind of image its docstring names
is decoded to what the plain uint8 RGB array of the same picture is, and anything else is refused,
before the model runs, with one `InvalidInput` line naming the image's index, dtype and shape."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flaxvision.classifier import InvalidInput, load
from flaxvision.errors import UserError
from tests.helpers import pattern_images, save_model

RGB = pattern_images(1, size=20, seed=0)[0][0]  # uint8 [20, 20, 3], resized to the model's 32×32
GRAY = RGB[:, :, 1]
GRAY_AS_RGB = np.repeat(GRAY[:, :, None], 3, axis=-1)  # what Pillow converts gray to
OUT_OF_RANGE = np.full((20, 20, 3), 0.5)
OUT_OF_RANGE[0, 0, 0], OUT_OF_RANGE[1, 1, 1] = -0.2, 1.3
NAN = (RGB / 255).astype(np.float32)
NAN[3, 4, 0] = np.nan
SHAPES = "pass [height, width] (gray) or [height, width, channels] with 1 (gray), 3 (RGB) or 4 (RGBA) channels"
TO_UINT8 = "convert it to uint8 (0 to 255), or to floats in [0, 1]"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """simple_cnn as initialised (Rngs(0)), for 32×32 RGB: equal inputs predict alike, trained or not."""
    return load(save_model(tmp_path_factory.mktemp("model") / "model"))


@pytest.fixture
def files(tmp_path, monkeypatch) -> Path:
    """A working folder holding rgb.png (RGB, lossless), notes.txt (not an image) and a folder."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(RGB).save("rgb.png")
    Path("notes.txt").write_text("not an image\n")
    Path("folder").mkdir()
    return tmp_path


# Each image predict takes, and the uint8 RGB array it is the same picture as.
TAKEN = {
    "uint8 RGB (any memory layout)": (np.asfortranarray(RGB[::-1])[::-1], RGB),
    "uint8 gray [H, W]": (GRAY, GRAY_AS_RGB),
    "uint8 gray [H, W, 1]": (GRAY[:, :, None], GRAY_AS_RGB),
    "uint8 RGBA (alpha dropped)": (np.dstack([RGB, GRAY]), RGB),
    "float32 RGB in [0, 1]": ((RGB / 255).astype(np.float32), RGB),
    "float16 gray in [0, 1]": ((GRAY / 255).astype(np.float16), GRAY_AS_RGB),
    "float64 gray [H, W, 1] in [0, 1]": (GRAY[:, :, None] / 255, GRAY_AS_RGB),
    "str path": ("rgb.png", RGB),
    "pathlib.Path": (Path("rgb.png"), RGB),
}


@pytest.mark.parametrize("kind", TAKEN)
def test_each_kind_of_image_is_the_same_picture_as_its_uint8_rgb_array(model, files, kind):
    image, same = TAKEN[kind]
    assert np.array_equal(model.decode(image), model.decode(same))
    from_image, from_same = model.predict([image, same], top_k=2)
    assert from_image == from_same and len(from_image.classes) == 2


def test_a_batch_array_or_a_tuple_is_a_list_of_images(model):
    batch = np.stack([RGB, GRAY_AS_RGB])
    assert model.predict(batch) == model.predict(tuple(batch)) == model.predict(list(batch))
    assert model.predict([]) == [] == model.predict(np.zeros((0, 20, 20, 3), np.uint8))


# An image (second in the list) predict refuses, and the start of its message.
REFUSED = {
    "int64": (RGB.astype(np.int64), f"image 1: int64 array of shape (20, 20, 3): {TO_UINT8}"),
    "uint16": (RGB.astype(np.uint16) * 257, f"image 1: uint16 array of shape (20, 20, 3): {TO_UINT8}"),
    "bool": (GRAY > 100, f"image 1: bool array of shape (20, 20): {TO_UINT8}"),
    "object": (RGB.astype(object), f"image 1: object array of shape (20, 20, 3): {TO_UINT8}"),
    "complex": (GRAY.astype(np.complex64), f"image 1: complex64 array of shape (20, 20): {TO_UINT8}"),
    "floats outside [0, 1]": (
        OUT_OF_RANGE,
        "image 1: float64 array of shape (20, 20, 3) has values outside [0, 1] (min -0.2, max 1.3): "
        "scale it to [0, 1] or pass uint8",
    ),
    "floats in 0-255": (
        RGB.astype(np.float32),
        f"image 1: float32 array of shape (20, 20, 3) has values outside [0, 1] (min {RGB.min()}, max {RGB.max()})",
    ),
    "NaN": (NAN, "image 1: float32 array of shape (20, 20, 3) holds NaN or infinite values: pass floats in [0, 1]"),
    "2 channels": (RGB[:, :, :2], f"image 1: uint8 array of shape (20, 20, 2): {SHAPES}"),
    "5 channels": (np.dstack([RGB, RGB[:, :, :2]]), f"image 1: uint8 array of shape (20, 20, 5): {SHAPES}"),
    "1-D": (GRAY[0], f"image 1: uint8 array of shape (20,): {SHAPES}"),
    "4-D": (RGB[None], f"image 1: uint8 array of shape (1, 20, 20, 3): {SHAPES}"),
    "0-D": (np.array(7, np.uint8), f"image 1: uint8 array of shape (): {SHAPES}"),
    "no rows": (RGB[:0], "image 1: uint8 array of shape (0, 20, 3) is empty"),
    "no columns": (GRAY[:, :0], "image 1: uint8 array of shape (20, 0) is empty"),
    "no channels": (RGB[:, :, :0], "image 1: uint8 array of shape (20, 20, 0) is empty"),
    "None": (None, "image 1: 'NoneType' object is no file path or numpy array: pass the path, or np.asarray(image)"),
    "int": (3, "image 1: 'int' object is no file path or numpy array"),
    "nested lists": (GRAY.tolist(), "image 1: 'list' object is no file path or numpy array"),
    "bytes": (b"\x89PNG", "image 1: 'bytes' object is no file path or numpy array"),
    "PIL image": (Image.fromarray(RGB), "image 1: 'Image' object is no file path or numpy array"),
    "missing file": ("missing.png", "image 1 (missing.png): no such file"),
    "not an image": (Path("notes.txt"), "image 1 (notes.txt): not a readable image (UnidentifiedImageError: "),
    "a folder": ("folder", "image 1 (folder): a folder, not an image file"),
}


@pytest.mark.parametrize("kind", REFUSED)
def test_another_image_is_refused_by_index_dtype_and_shape(model, files, kind):
    image, message = REFUSED[kind]
    with pytest.raises(InvalidInput) as refused:
        model.predict([RGB, image])
    assert isinstance(refused.value, UserError) and isinstance(refused.value, ValueError)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value), str(refused.value)
    if isinstance(image, np.ndarray):  # decode checks as predict does, naming no index
        with pytest.raises(InvalidInput, match=r"^image: "):
            model.decode(image)


# Arguments predict refuses, and the start of its message.
REFUSED_ARGUMENTS = {
    "one path": ({"images": "rgb.png"}, "images: 'str' object is one image: pass [image]"),
    "one Path": ({"images": Path("rgb.png")}, f"images: '{type(Path()).__name__}' object is one image: pass [image]"),
    "one array": ({"images": RGB}, "images: uint8 array of shape (20, 20, 3) is one image: pass [image]"),
    "one gray array": ({"images": GRAY}, "images: uint8 array of shape (20, 20) is one image: pass [image]"),
    "a dict": (
        {"images": {"a": RGB}},
        "images: 'dict' object: pass a list of images, or an array [n, height, width, channels]",
    ),
    "None": ({"images": None}, "images: 'NoneType' object: pass a list of images"),
    "a generator": ({"images": (image for image in [RGB])}, "images: 'generator' object: pass a list of images"),
    "a PIL image": ({"images": Image.fromarray(RGB)}, "images: 'Image' object: pass a list of images"),
    "bytes": ({"images": b"rgb.png"}, "images: 'bytes' object: pass a list of images"),
    "a 5-D array": ({"images": RGB[None, None]}, "images: uint8 array of shape (1, 1, 20, 20, 3): pass a list"),
    "top_k 0": ({"top_k": 0}, "top_k: 0 is not an int from 1 to 3, the classes (None: all)"),
    "top_k above the classes": ({"top_k": 4}, "top_k: 4 is not an int from 1 to 3"),
    "top_k float": ({"top_k": 2.0}, "top_k: 2.0 is not an int"),
    "top_k True": ({"top_k": True}, "top_k: True is not an int"),
    "batch_size 0": ({"batch_size": 0}, "batch_size: 0 is not an int of at least 1"),
    "batch_size str": ({"batch_size": "8"}, "batch_size: '8' is not an int of at least 1"),
}


@pytest.mark.parametrize("kind", REFUSED_ARGUMENTS)
def test_other_arguments_are_refused(model, files, kind):
    arguments, message = REFUSED_ARGUMENTS[kind]
    with pytest.raises(InvalidInput) as refused:
        model.predict(**{"images": [RGB], **arguments})
    assert str(refused.value).startswith(message), str(refused.value)


def test_probabilities_take_decoded_images_only(model):
    assert model.probabilities(model.decode(RGB)[None]).shape == (1, 3)
    with pytest.raises(InvalidInput, match=r"^images: uint8 array of shape \(1, 20, 20, 3\): pass decoded images"):
        model.probabilities(RGB[None])
