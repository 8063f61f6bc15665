"""The Python API: a trained model folder as a classifier of image files and arrays.

    from flaxvision.classifier import load

    model = load("artifacts/model")
    for prediction in model.predict(["cat.jpg", pixels]):   # paths, or uint8 [H, W, C] arrays
        print(prediction.label, prediction.probabilities[0])

Images go through the pipeline's own input path: decoded, converted and resized as preprocess
did (`flaxvision.data.images.load_image`, at the model's size and colour mode), then scaled by the
model's preprocessing mode inside the compiled predict step, as in training and evaluation.
"""

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from flax import nnx

from flaxvision.data.images import load_image
from flaxvision.evaluation import predict_model, softmax, top_classes
from flaxvision.trained import ModelInfo, load_trained

Image = str | Path | np.ndarray


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

    def __init__(self, model: nnx.Module, info: ModelInfo):
        self.model, self.info = model, info

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    def decode(self, image: Image) -> np.ndarray:
        """``image`` (a file, or an array of any size) as the model takes it: uint8 [height, width, channels]."""
        height, width, _ = self.info.input_shape
        return load_image(image, (height, width), self.info.color_mode)

    def probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities [n, classes] of decoded images (uint8 [n, height, width, channels])."""
        return softmax(predict_model(self.model, self.info.preprocessing, images, batch_size))

    def predict(self, images: Sequence[Image], top_k: int | None = None, batch_size: int = 32) -> list[Prediction]:
        """The ``top_k`` most probable classes (None: all) of each image, in input order."""
        if not images:
            return []
        probabilities = self.probabilities(np.stack([self.decode(image) for image in images]), batch_size)
        return [self.prediction(row, top_k) for row in probabilities]

    def prediction(self, probabilities: np.ndarray, top_k: int | None = None) -> Prediction:
        """The `Prediction` that one row of `probabilities` makes."""
        best = top_classes(probabilities[None], top_k or len(self.classes))[0]
        return Prediction(tuple(self.classes[c] for c in best), tuple(float(probabilities[c]) for c in best))


def load(directory: str | Path = "artifacts/model") -> Classifier:
    """The trained model in ``directory`` (as the train stage writes it), ready to classify images."""
    return Classifier(*load_trained(Path(directory)))
