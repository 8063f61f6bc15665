"""Keras models with random weights, written in the legacy h5 layouts the converter reads.

The ground truth of tests/test_conversion.py (and tests/test_backbones.py), built offline: a
keras.applications model with ``weights=None``, random biases and randomised BatchNorm statistics
(so inference-mode BatchNorm matters), written as Keras 3 writes the official weights-only files
and full-model .h5 saves, or, through h5py directly, in the Keras-2 variants Keras 3 cannot write
(':0' names, '/' in layer names, ``layer_names`` split into chunks, attributes as bytes or str).
"""

import os
from collections.abc import Mapping, Sequence

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is imported: JAX is the only backend installed

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

# A Keras-2 file's weights: layer name -> [(weight name, array)], in the file's order.
Keras2Weights = Mapping[str, Sequence[tuple[str, np.ndarray]]]

_BATCHNORM_DRAWS = {
    "gamma": lambda rng, shape: rng.uniform(0.5, 1.5, shape),
    "beta": lambda rng, shape: rng.normal(0.0, 0.5, shape),
    "moving_mean": lambda rng, shape: rng.normal(0.0, 0.5, shape),
    "moving_variance": lambda rng, shape: rng.uniform(0.5, 2.0, shape),
}


def applications_model(keras_class: str, seed: int = 0, **kwargs) -> keras.Model:
    """``keras.applications.<keras_class>(weights=None, classifier_activation=None, **kwargs)``,
    randomised (`randomize`)."""
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, keras_class)(weights=None, classifier_activation=None, **kwargs)
    return randomize(model, seed)


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Draw every bias (Keras starts them at zero) and every BatchNormalization's gamma, beta and
    moving statistics at random, so that each reaches its layer and inference-mode BatchNorm matters."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for weight in layer.weights:
            if isinstance(layer, keras.layers.BatchNormalization):
                weight.assign(_BATCHNORM_DRAWS[weight.name](rng, weight.shape).astype("float32"))
            elif weight.name == "bias":
                weight.assign(rng.normal(0.0, 0.2, weight.shape).astype("float32"))
    return model


def copy_weights(source: keras.Model, target: keras.Model) -> keras.Model:
    """Give ``target``'s layers the weights of ``source``'s layers of the same names."""
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return target


def layer_weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """What Keras holds: layer name -> its weights in Keras order."""
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def save_weights_only(model: keras.Model, path) -> None:
    """The layout of Keras's official weight files, as Keras 3 writes it (names without ':0')."""
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)


def with_head(backbone: keras.Model, classes: int = 3) -> keras.Model:
    """The common transfer-learning model: ``backbone`` nested as one layer, then Dropout and a
    Dense layer named 'head'."""
    inputs = keras.Input(backbone.input_shape[1:])
    features = keras.layers.Dropout(0.2)(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(classes, name="head")(features))


def save_full_model(model: keras.Model, path) -> None:
    """A full-model .h5 save (``model.save('x.h5')``): the weights under ``model_weights``."""
    legacy_h5_format.save_model_to_hdf5(model, str(path))


def keras2_names(weights: Sequence[keras.Variable], renames: Mapping[str, str] = {}) -> list[tuple[str, np.ndarray]]:
    """Keras 3 variables named as Keras 2 named them: '<layer>/<weight>:0', with Keras-2 layer
    names where they differ (``renames``: Keras-3 name -> Keras-2 name)."""

    def name(weight: keras.Variable) -> str:
        layer, _, variable = weight.path.rpartition("/")
        return f"{renames.get(layer, layer)}/{variable}:0"

    return [(name(weight), np.asarray(weight)) for weight in weights]


def keras2_file_weights(model: keras.Model, renames: Mapping[str, str] = {}) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``model``'s layers as a Keras-2 weights-only file holds them (every layer, even without weights)."""
    return {renames.get(layer.name, layer.name): keras2_names(layer.weights, renames) for layer in model.layers}


def nested_weights(model: keras.Model, renames: Mapping[str, str] = {}) -> list[tuple[str, np.ndarray]]:
    """``model`` as the one group a nested model is in a Keras-2 save: all its trainable weights first."""
    return keras2_names(model.trainable_weights + model.non_trainable_weights, renames)


def write_legacy_h5(path, layers: Keras2Weights, *, group: str = "/", chunks: int = 1, strings: type = bytes) -> None:
    """Write ``layers`` in the legacy layout with h5py, under ``group`` ('model_weights' for a
    full-model save); ``layer_names`` split into ``chunks`` attributes (as Keras does with long
    lists), the name attributes stored as ``strings`` (bytes or str)."""

    def encoded(names):  # bytes as fixed-length strings (numpy 'S'), as Keras 2 wrote them
        names = [str(name) for name in names]
        return np.array(names, dtype="S") if strings is bytes else names

    with h5py.File(path, "a") as file:
        root = file.require_group(group)
        if chunks == 1:
            root.attrs["layer_names"] = encoded(layers)
        else:
            for index, chunk in enumerate(np.array_split(list(layers), chunks)):
                root.attrs[f"layer_names{index}"] = encoded(chunk)
        for layer, weights in layers.items():
            layer_group = root.create_group(layer)
            layer_group.attrs["weight_names"] = encoded(name for name, _ in weights) if weights else np.zeros(0)
            for name, array in weights:
                layer_group.create_dataset(name, data=array)
