"""Reading the weights of a legacy Keras HDF5 file: Keras layer name -> its arrays, in file order.

The layout (Keras' legacy h5 saving, from Keras 1 to Keras 3's
``keras.src.legacy.saving.legacy_h5_format``):

* the *weights group* has the attribute ``layer_names`` and one group per layer, whose attribute
  ``weight_names`` lists the layer's arrays, stored at ``layer_group[weight_name]``, trainable
  ones first (BatchNormalization: gamma, beta, moving_mean, moving_variance). Keras-2 weight
  names end in ':0', Keras 3's do not; a Keras-2 layer name may hold '/' (DenseNet's
  'conv1/conv'), which h5py stores as nested groups.
* a weights-only file (the official keras.applications files) is itself the weights group; a
  full-model save (``model.save('x.h5')``) holds it under ``model_weights``.
* a nested model (a keras.applications backbone under a transfer-learning head) is one layer
  group whose ``weight_names`` are '<layer>/<weight>' for several layers, trainable weights
  first: its layers are recovered from those names, each keeping its arrays' relative order.
* an attribute too large for an HDF5 object header is split into ``<name>0``, ``<name>1``, ...;
  strings read back as bytes or str depending on the writer.

Nothing is matched loosely: the caller maps the names onto its model and every array the file
holds is either in `KerasWeights.layers` or in `KerasWeights.others`, so it is used or reported.
"""

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from flaxvision.errors import UserError

LayerWeights = dict[str, list[np.ndarray]]


@dataclasses.dataclass(frozen=True)
class KerasWeights:
    """The arrays of a Keras h5 file, by Keras layer name, each layer's in the file's order.

    layers: the backbone: the file's layers, or those of its nested model ``submodel``.
    others: the rest of the file, reported as unused: the layers around the nested model (a
        transfer-learning head) and arrays that no ``weight_names`` lists (by their h5 path).
    submodel: the name of the nested model ``layers`` come from; None for a flat file.
    """

    layers: LayerWeights
    others: LayerWeights
    submodel: str | None


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where each layer's arrays are in the file (h5 paths), before anything is read."""

    layers: dict[str, list[str]]
    others: dict[str, list[str]]
    submodel: str | None


def read_keras_h5(path: Path, submodel: str | None = None) -> KerasWeights:
    """The weights in the Keras h5 file ``path``.

    A file whose weights nest one model (a backbone under a head) gives that model's layers;
    a file nesting several needs ``submodel``, the name of the one to read.
    """
    with _open(path) as file:
        layout = _layout(path, file, submodel)

        def read(arrays: Mapping[str, list[str]]) -> LayerWeights:
            return {name: [np.asarray(file[array][()]) for array in paths] for name, paths in arrays.items()}

        return KerasWeights(read(layout.layers), read(layout.others), layout.submodel)


def check_keras_h5(path: Path) -> str:
    """Content check for downloads (`flaxvision.data.download.RemoteFile.check`): the layout reads."""
    with _open(path) as file:
        layout = _layout(path, file, submodel=None)
    arrays = sum(len(paths) for paths in layout.layers.values())
    return f"Keras h5 layout ok ({len(layout.layers)} layers, {arrays} arrays)"


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as error:
        reason = str(error).splitlines()[0]
        raise UserError(f"{path}: not a readable HDF5 file ({reason}); expected Keras weights saved as .h5") from None


def _layout(path: Path, file: h5py.File, submodel: str | None) -> _Layout:
    root = file["model_weights"] if isinstance(file.get("model_weights"), h5py.Group) else file
    layer_names = _string_list(root, "layer_names")
    if layer_names is None:
        hint = (
            " (this is Keras 3's .weights.h5 layout: load the model in Keras and save it with model.save('model.h5'))"
            if "layers" in root
            else ""
        )
        raise UserError(f"{path}: not a Keras h5 weights file (no 'layer_names' attribute){hint}")

    top = {}  # layer name -> (its group, its weight names)
    for name in layer_names:
        group = root.get(name)
        weight_names = _string_list(group, "weight_names") if isinstance(group, h5py.Group) else None
        if weight_names is None:
            raise UserError(f"{path}: layer '{name}' has no group with a 'weight_names' attribute; the file is damaged")
        missing = [weight for weight in weight_names if not isinstance(group.get(weight), h5py.Dataset)]
        if missing:
            raise UserError(f"{path}: layer '{name}' lists weights {missing} that the file does not hold")
        if weight_names:
            top[name] = (group.name, weight_names)

    nested = [name for name, (_, weight_names) in top.items() if _is_nested_model(weight_names)]
    if submodel is not None and submodel not in nested:
        raise UserError(f"{path}: no nested model '{submodel}' (nested models: {', '.join(nested) or 'none'})")
    if submodel is None and len(nested) > 1:
        raise UserError(f"{path}: nests several models ({', '.join(nested)}); name one, as in '{path}:{nested[0]}'")
    submodel = submodel or (nested[0] if nested else None)

    def arrays(group: str, weight_names: list[str]) -> list[str]:
        return [f"{group}/{weight}" for weight in weight_names]

    if submodel is None:
        layers, others = {name: arrays(*top[name]) for name in top}, {}
    else:
        others = {name: arrays(*top[name]) for name in top if name != submodel}
        layers = {}
        group, weight_names = top[submodel]
        for weight in weight_names:  # '<layer>/<weight>': a layer's arrays keep their order
            layers.setdefault(_owner(weight), []).extend(arrays(group, [weight]))

    listed = {array for group, weight_names in top.values() for array in arrays(group, weight_names)}
    for array in _datasets(root):
        if array not in listed:
            others[array.removeprefix(root.name).lstrip("/")] = [array]
    return _Layout(layers, others, submodel)


def _is_nested_model(weight_names: list[str]) -> bool:
    """A group holding the weights of several layers ('<layer>/<weight>'). Not a comparison with
    the group's name: a Keras-2 layer's weights may carry a name scope other than its own."""
    return all("/" in weight for weight in weight_names) and len({_owner(weight) for weight in weight_names}) > 1


def _owner(weight_name: str) -> str:
    """The layer a nested model's weight belongs to: 'conv1/conv/kernel:0' -> 'conv1/conv'."""
    return weight_name.rpartition("/")[0]


def _datasets(group: h5py.Group) -> list[str]:
    found = []
    group.visititems(lambda name, item: found.append(item.name) if isinstance(item, h5py.Dataset) else None)
    return found


def _string_list(group: h5py.Group, name: str) -> list[str] | None:
    """Attribute ``name`` (or its chunks ``name0``, ``name1``, ...) as str; None when absent."""
    if name in group.attrs:
        values = np.atleast_1d(group.attrs[name])
    elif f"{name}0" in group.attrs:
        chunks, index = [], 0
        while f"{name}{index}" in group.attrs:
            chunks.append(np.atleast_1d(group.attrs[f"{name}{index}"]))
            index += 1
        values = np.concatenate(chunks)
    else:
        return None
    return [value.decode("utf8") if isinstance(value, bytes) else str(value) for value in values]
