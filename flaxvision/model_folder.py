"""A trained model on disk: its weights, and `ModelInfo` (model.json), all that rebuilding and feeding it needs.

With the decoding of `flaxvision.data.images`, `ModelInfo` is the whole input pipeline, so
predict needs only this folder.

The folder's SHA256SUMS (flaxvision.files) is checked, and the weights must be finite, before a
model is used: a damaged model never predicts, exports or is evaluated.

The weights are Flax msgpack rather than an Orbax checkpoint: Orbax's files carry timestamps
and random names, while msgpack is byte-for-byte the same for the same weights, so two
identical runs give DVC the same hash for the model (Orbax keeps the training checkpoints).
"""

import dataclasses
import json
import os
from pathlib import Path
from typing import Literal, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization, traverse_util

from flaxvision.builder import MODEL_NAMES, build_model
from flaxvision.errors import UserError
from flaxvision.files import atomic_directory, verify_checksums, write_bytes, write_checksums, write_json
from flaxvision.models.scaling import PREPROCESSING_MODES
from flaxvision.params import TransferConfig, from_dict

WEIGHTS = "weights.msgpack"
METADATA = "model.json"
WEIGHT_KINDS = nnx.Not(nnx.RngState)  # parameters, frozen weights, BatchNorm statistics; not dropout RNGs
_Split = tuple[nnx.GraphDef, nnx.State, nnx.State]  # what nnx.split with two filters returns
FORMAT = 1  # model.json's layout; files from before it was recorded have this layout too


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """model.json: what a trained model is and what it takes.

    model: params.yaml's name (builder.MODEL_NAMES); transfer: a transfer model's settings.
    classes: class names in label order. input_shape: (height, width, channels) of its images,
    decoded in ``color_mode`` and scaled by ``preprocessing`` (a models.scaling mode).
    """

    model: str
    transfer: TransferConfig | None = None
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]
    color_mode: Literal["rgb", "grayscale"]
    preprocessing: str
    format: int = FORMAT

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model '{self.model}'; this code has {', '.join(MODEL_NAMES)}")
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(f"unknown preprocessing '{self.preprocessing}'; valid: {', '.join(PREPROCESSING_MODES)}")
        if self.format > FORMAT:
            raise ValueError(f"format {self.format} is newer than this code's ({FORMAT}): update flaxvision")
        if not self.classes:
            raise ValueError("classes is empty")

    def build(self, seed: int = 0) -> nnx.Module:
        """The model, randomly initialised (pretrained weights are not fetched)."""
        return build_model(
            self.model, num_classes=len(self.classes), input_shape=self.input_shape, transfer=self.transfer, seed=seed
        )


def save_trained(directory: Path, model: nnx.Module, info: ModelInfo) -> None:
    """Replace ``directory`` with one holding ``weights.msgpack`` and ``model.json``, atomically."""
    weights = nnx.to_pure_dict(nnx.state(model, WEIGHT_KINDS))
    with atomic_directory(Path(directory)) as tmp:
        write_bytes(tmp / WEIGHTS, serialization.msgpack_serialize(weights))
        write_json(tmp / METADATA, dataclasses.asdict(info))
        write_checksums(tmp)


def read_info(directory: Path) -> ModelInfo:
    """The `ModelInfo` of a model folder, or a UserError naming what is wrong with it."""
    path = Path(directory) / METADATA
    if not os.path.isfile(path):  # os.path's: Path's raises for a name the system refuses (too long)
        raise UserError(f"no trained model in {directory}: run `dvc repro train` first")
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(
            f"{directory} holds an unreadable model ({type(error).__name__}): run `dvc repro train`"
        ) from None
    if not isinstance(values, dict):
        raise UserError(f"{path} is not a model description: run `dvc repro train`")
    if missing := [
        field.name
        for field in dataclasses.fields(ModelInfo)
        if field.default is dataclasses.MISSING and field.name not in values
    ]:
        raise UserError(f"{path} lacks {', '.join(missing)}: retrain with `dvc repro train`")
    return from_dict(values, ModelInfo, prefix="", file=str(path))


def load_trained(directory: Path) -> tuple[nnx.Module, ModelInfo]:
    """The model (in eval mode) and its `ModelInfo`, as written by save_trained."""
    directory = Path(directory)
    info = read_info(directory)
    verify_checksums(directory, "retrain it with `dvc repro -f train`")
    try:
        restored = serialization.msgpack_restore((directory / WEIGHTS).read_bytes())
    except (OSError, ValueError) as error:
        raise UserError(
            f"{directory} holds an unreadable model ({type(error).__name__}): run `dvc repro train`"
        ) from None
    # Build the network from shapes only: initialising weights the file replaces takes seconds
    # (an eager op per layer). The other state (dropout RNGs) is computed in one compiled call,
    # from which XLA drops the unused weight initialisers.
    # Two filters: three parts (flax annotates any number from the second on).
    graph, weights, _ = cast(_Split, nnx.split(nnx.eval_shape(info.build), WEIGHT_KINDS, ...))
    if mismatch := _mismatch(nnx.to_pure_dict(weights), restored):
        shape = "×".join(map(str, info.input_shape))
        raise UserError(
            f"{directory / WEIGHTS} does not fit {info.model} for {shape} inputs and "
            f"{len(info.classes)} classes (as {METADATA} says): {mismatch}"
        )
    if name := nonfinite(restored):
        raise UserError(
            f"{directory / WEIGHTS} holds NaN or infinite values in {name}: retrain it with `dvc repro -f train`"
        )
    nnx.replace_by_pure_dict(weights, jax.tree.map(jnp.asarray, restored))
    other_state = jax.jit(lambda: cast(_Split, nnx.split(info.build(), WEIGHT_KINDS, ...))[2])()
    model = nnx.merge(graph, weights, other_state)
    model.eval()
    return model, info


def nonfinite(tree: object) -> str:
    """The name of the first array of ``tree`` (any pytree) that holds a NaN or an infinity, or '' if none does."""
    for path, value in jax.tree_util.tree_leaves_with_path(tree):
        if jnp.issubdtype(value.dtype, jnp.inexact) and not np.isfinite(np.asarray(value)).all():
            return jax.tree_util.keystr(path, simple=True, separator=".")
    return ""


def _mismatch(expected: dict, restored: dict) -> str:
    """The first weight that ``restored`` lacks or has in another shape, or '' if they match."""

    def shapes(tree: object) -> dict[str, tuple[int, ...]]:
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
