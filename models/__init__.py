"""The model registry: the presets that params.yaml's ``model`` names.

Every model takes float32 images [batch, height, width, channels], already scaled by
`preprocessing(name)` (see flaxvision.transforms.preprocess_input), and returns logits
[batch, num_classes]. Dropout and BatchNorm follow NNX's ``model.train()`` /
``model.eval()``; a new model is in training mode. Dropout draws from the model's own
RNG streams, so its state lives with the parameters.
"""

from collections.abc import Callable
from typing import NamedTuple

from flax import nnx

from flaxvision.errors import UserError
from models import cnn, resnet
from models.layers import InputTooSmallError


class _Preset(NamedTuple):
    build: Callable[..., nnx.Module]
    preprocessing: str  # the flaxvision.transforms.preprocess_input mode it was designed with


_PRESETS = {
    "belgiumtsc_cnn": _Preset(cnn.belgiumtsc_cnn, "unit"),
    "simple_cnn": _Preset(cnn.simple_cnn, "tf"),
    "tutorial_cnn": _Preset(cnn.tutorial_cnn, "unit"),
    "resnet50": _Preset(resnet.resnet50, "unit"),
}
MODEL_NAMES = tuple(_PRESETS)


def create_model(
    name: str, *, num_classes: int, input_shape: tuple[int, int, int], rngs: nnx.Rngs
) -> nnx.Module:
    """A new model ``name`` for ``input_shape`` (height, width, channels) images."""
    build = _preset(name).build
    try:
        return build(num_classes=num_classes, input_shape=tuple(input_shape), rngs=rngs)
    except InputTooSmallError as error:
        raise UserError(
            f"params.yaml: model '{name}' cannot take these images (raise preprocess.image_size): {error}"
        ) from None


def preprocessing(name: str) -> str:
    """The input scaling model ``name`` was designed with: 'unit' (x/255) or 'tf' (x/127.5 - 1)."""
    return _preset(name).preprocessing


def _preset(name: str) -> _Preset:
    if name not in _PRESETS:
        raise UserError(f"params.yaml: unknown model '{name}'; valid models: {', '.join(MODEL_NAMES)}")
    return _PRESETS[name]
