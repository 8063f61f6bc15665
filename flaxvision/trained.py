"""A trained model on disk: its weights and everything needed to rebuild and feed it.

``model.json`` holds ``model`` (the registry name), ``classes`` (names in label order),
``input_shape`` ([height, width, channels]), ``color_mode`` ('rgb' or 'grayscale') and
``preprocessing`` (the `flaxvision.transforms.preprocess_input` mode), and for transfer models
``transfer`` (their models.transfer.TransferConfig): with the decoding of
`flaxvision.data.images`, that is the whole input pipeline, so predict needs only this folder.

The weights are Flax msgpack rather than an Orbax checkpoint: Orbax's files carry timestamps
and random names, while msgpack is byte-for-byte the same for the same weights, so two
identical runs give DVC the same hash for the model (Orbax keeps the training checkpoints).
"""

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx, serialization, traverse_util

import models
from flaxvision.config import from_dict
from flaxvision.errors import UserError
from flaxvision.files import atomic_directory, write_bytes, write_json
from models.transfer import TransferConfig

WEIGHTS = "weights.msgpack"
METADATA = "model.json"
WEIGHT_KINDS = nnx.Not(nnx.RngState)  # parameters, frozen weights, BatchNorm statistics; not dropout RNGs
BUILD_KEYS = ("model", "classes", "input_shape")  # what rebuilding the network needs


def save_trained(directory: Path, model: nnx.Module, metadata: dict):
    """Replace ``directory`` with one holding ``weights.msgpack`` and ``model.json``, atomically."""
    weights = nnx.to_pure_dict(nnx.state(model, WEIGHT_KINDS))
    with atomic_directory(Path(directory)) as tmp:
        write_bytes(tmp / WEIGHTS, serialization.msgpack_serialize(weights))
        write_json(tmp / METADATA, metadata)


def load_trained(directory: Path) -> tuple[nnx.Module, dict]:
    """The model (in eval mode) and its metadata, as written by save_trained."""
    directory = Path(directory)
    if not (directory / METADATA).is_file():
        raise UserError(f"no trained model in {directory}: run `dvc repro train` first")
    try:
        metadata = json.loads((directory / METADATA).read_text())
        restored = serialization.msgpack_restore((directory / WEIGHTS).read_bytes())
    except (OSError, ValueError) as error:
        problem = type(error).__name__
        raise UserError(f"{directory} holds an unreadable model ({problem}): run `dvc repro train`") from None
    missing = [key for key in BUILD_KEYS if key not in metadata]
    if missing:
        raise UserError(f"{directory / METADATA} lacks {', '.join(missing)}: retrain with `dvc repro train`")
    if metadata["model"] not in models.MODEL_NAMES:
        raise UserError(f"{directory / METADATA}: unknown model '{metadata['model']}'; "
                        f"this code has {', '.join(models.MODEL_NAMES)}")
    # Build the network from shapes only: initialising weights the file replaces takes seconds
    # (an eager op per layer). The other state (dropout RNGs) is computed in one compiled call,
    # from which XLA drops the unused weight initialisers.
    build = functools.partial(build_model, metadata)
    graph, weights, _ = nnx.split(nnx.eval_shape(build), WEIGHT_KINDS, ...)
    if mismatch := _mismatch(nnx.to_pure_dict(weights), restored):
        shape = "×".join(map(str, metadata["input_shape"]))
        raise UserError(f"{directory / WEIGHTS} does not fit {metadata['model']} for {shape} inputs and "
                        f"{len(metadata['classes'])} classes (as {METADATA} says): {mismatch}")
    nnx.replace_by_pure_dict(weights, jax.tree.map(jnp.asarray, restored))
    other_state = jax.jit(lambda: nnx.split(build(), WEIGHT_KINDS, ...)[2])()
    model = nnx.merge(graph, weights, other_state)
    model.eval()
    return model, metadata


def _mismatch(expected: dict, restored: dict) -> str:
    """The first weight that ``restored`` lacks or has in another shape, or '' if they match."""
    def shapes(tree):
        flat = traverse_util.flatten_dict(tree) if isinstance(tree, dict) else {}
        return {".".join(map(str, path)): tuple(getattr(value, "shape", ())) for path, value in flat.items()}

    expected, restored = shapes(expected), shapes(restored)
    for name, shape in expected.items():
        if name not in restored:
            return f"it has no {name}"
        if restored[name] != shape:
            return f"{name} is {restored[name]}, the model needs {shape}"
    if extra := sorted(set(restored) - set(expected)):
        return f"it has {extra[0]}, which the model lacks"
    return ""


def build_model(metadata: dict, seed: int = 0) -> nnx.Module:
    """The model of ``metadata``, randomly initialised (pretrained weights are not fetched)."""
    transfer = metadata.get("transfer")
    return models.create_model(
        metadata["model"],
        num_classes=len(metadata["classes"]),
        input_shape=tuple(metadata["input_shape"]),
        rngs=nnx.Rngs(seed),
        transfer=transfer and from_dict(transfer, TransferConfig, prefix="model.json transfer"),
    )
