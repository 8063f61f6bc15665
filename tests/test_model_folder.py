import numpy as np
import pytest
from flax import nnx

from flaxvision import models
from flaxvision.model_folder import WEIGHTS, ModelInfo, load_trained, save_trained

INFO = ModelInfo(
    model="belgiumtsc_cnn",
    classes=("a", "b", "c"),
    input_shape=(32, 32, 1),
    color_mode="grayscale",
    preprocessing="unit",
)


@pytest.mark.slow
def test_saved_model_loads_back_in_eval_mode_with_the_same_outputs(tmp_path):
    model = models.create_model("belgiumtsc_cnn", num_classes=3, input_shape=(32, 32, 1), rngs=nnx.Rngs(3))
    model.eval()
    save_trained(tmp_path / "model", model, INFO)
    loaded, info = load_trained(tmp_path / "model")
    images = np.random.default_rng(0).random((2, 32, 32, 1), np.float32)
    np.testing.assert_array_equal(loaded(images), model(images))
    assert info == INFO


def test_same_weights_give_the_same_bytes(tmp_path):
    # DVC hashes the model: identical runs must produce identical files.
    model = models.create_model("belgiumtsc_cnn", num_classes=3, input_shape=(32, 32, 1), rngs=nnx.Rngs(3))
    save_trained(tmp_path / "first", model, INFO)
    save_trained(tmp_path / "second", model, INFO)
    assert (tmp_path / "first" / WEIGHTS).read_bytes() == (tmp_path / "second" / WEIGHTS).read_bytes()
