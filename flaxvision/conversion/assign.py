"""Keras weights onto a Flax backbone, layer by layer, through the backbone's explicit name table.

A backbone's ``keras_layers()`` maps each Keras layer name to the Flax module holding that
layer's weights; each module takes its Keras layer's weights in Keras order:

- Conv2D → nnx.Conv: kernel (kh, kw, in, out), [bias], the same layout;
- DepthwiseConv2D → nnx.Conv with a group per channel: depthwise_kernel (kh, kw, in, 1),
  reshaped to (kh, kw, 1, in), [bias];
- Dense → nnx.Linear: kernel (in, out), bias;
- BatchNormalization → nnx.BatchNorm: [gamma → scale], [beta → bias], moving_mean → mean,
  moving_variance → var (gamma and beta as its scale and center options have them).
"""

from collections.abc import Mapping, Sequence
from typing import cast

import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxvision.errors import UserError
from flaxvision.models.layers import KerasNamed


def assign_keras_weights(
    model: nnx.Module,
    layer_weights: Mapping[str, Sequence[np.ndarray]],
    aliases: Mapping[str, str] = {},
) -> list[str]:
    """Fill every Param and BatchStat of ``model`` from Keras weights.

    ``layer_weights`` maps Keras layer names to their weights in Keras order (a Keras
    layer's ``get_weights()``, or a legacy h5 file's layer group); ``aliases`` maps names an
    older Keras gave a layer (DenseNet's 'conv1/conv') to the Keras-3 name the model uses.
    ``model`` may be abstract (`nnx.eval_shape`): every variable is replaced.

    Returns the names in ``layer_weights`` the model did not use (e.g. 'predictions' when the
    model was built without its top). A layer of the model missing from ``layer_weights``, or
    whose weights differ in number or shape, is a UserError naming it; ``model`` is then
    left as it was.
    """
    table = cast(KerasNamed, model).keras_layers()
    _check_table_covers(model, table)
    names = _names_in_weights(layer_weights, aliases)
    assignments = []
    for name, module in table.items():
        slots = _keras_slots(module)
        if name not in names:
            raise UserError(
                f"Keras weights: layer '{name}' is missing (the model needs {_describe(slots)}); "
                "were they saved from another architecture?"
            )
        weights = layer_weights[names[name]]
        if len(weights) != len(slots):
            raise UserError(
                f"Keras weights: layer '{name}' has {len(weights)} arrays {[np.shape(w) for w in weights]} "
                f"where the model needs {len(slots)}: {_describe(slots)}"
            )
        for (weight_name, variable, keras_shape), weight in zip(slots, weights, strict=True):
            if np.shape(weight) != keras_shape:
                raise UserError(
                    f"Keras weights: layer '{name}' {weight_name} has shape {np.shape(weight)} where the model "
                    f"needs {keras_shape} (another input size, width or number of classes?)"
                )
            value = variable.get_value()
            assignments.append((variable, jnp.asarray(np.reshape(weight, value.shape), value.dtype)))
    for variable, value in assignments:
        variable.set_value(value)
    used = {names[name] for name in table}
    return [name for name in layer_weights if name not in used]


def _names_in_weights(layer_weights: Mapping[str, object], aliases: Mapping[str, str]) -> dict[str, str]:
    """Keras-3 layer name → the name ``layer_weights`` uses for it."""
    names: dict[str, str] = {}
    for name in layer_weights:
        canonical = aliases.get(name, name)
        if canonical in names:
            raise UserError(f"Keras weights: layer '{canonical}' appears twice, as '{names[canonical]}' and '{name}'")
        names[canonical] = name
    return names


_Slot = tuple[str, nnx.Variable, tuple[int, ...]]  # (Keras weight name, Flax variable, Keras shape)


def _keras_slots(module: nnx.Module) -> list[_Slot]:
    """(Keras weight name, Flax variable, Keras shape) for each weight of the Keras layer that
    ``module`` stands for, in Keras order."""
    if isinstance(module, nnx.Conv):
        kernel_shape = tuple(module.kernel.get_value().shape)
        slots: list[_Slot]
        if module.feature_group_count == 1:
            slots = [("kernel", module.kernel, kernel_shape)]
        elif module.feature_group_count == module.in_features:
            height, width, _, channels = kernel_shape
            slots = [
                ("depthwise_kernel", module.kernel, (height, width, module.in_features, channels // module.in_features))
            ]
        else:
            raise ValueError(f"no Keras layer is a convolution in {module.feature_group_count} groups")
        return slots + ([("bias", module.bias, (module.out_features,))] if module.bias is not None else [])
    if isinstance(module, nnx.Linear):
        return [
            ("kernel", module.kernel, (module.in_features, module.out_features)),
            ("bias", cast(nnx.Param, module.bias), (module.out_features,)),  # Keras Dense: always a bias
        ]
    if isinstance(module, nnx.BatchNorm):
        shape = (module.num_features,)
        slots = [("gamma", module.scale, shape)] if module.scale is not None else []
        slots += [("beta", module.bias, shape)] if module.bias is not None else []
        return slots + [("moving_mean", module.mean, shape), ("moving_variance", module.var, shape)]
    raise ValueError(f"no Keras layer maps onto a {type(module).__name__}")


def _describe(slots: Sequence[_Slot]) -> str:
    return ", ".join(f"{name} {shape}" for name, _, shape in slots)


def _check_table_covers(model: nnx.Module, table: Mapping[str, nnx.Module]) -> None:
    """The name table lists every Param and BatchStat of ``model`` once (a bug in the model if not)."""
    listed = [id(variable) for module in table.values() for _, variable, _ in _keras_slots(module)]
    variables = [id(node) for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Param | nnx.BatchStat)]
    if sorted(listed) != sorted(variables):
        raise ValueError(
            f"{type(model).__name__}.keras_layers() lists {len(listed)} weights for the model's {len(variables)}"
        )
