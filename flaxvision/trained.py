"""A trained model on disk: its weights and everything needed to rebuild and feed it.

The weights are Flax msgpack rather than an Orbax checkpoint: Orbax's files carry timestamps
and random names, while msgpack is byte-for-byte the same for the same weights, so two
identical runs give DVC the same hash for the model (Orbax keeps the training checkpoints).
"""

import json
from pathlib import Path

from flax import nnx, serialization

import models
from flaxvision.config import from_dict
from flaxvision.errors import UserError
from flaxvision.files import write_bytes, write_json
from models.transfer import TransferConfig

WEIGHTS = "weights.msgpack"
METADATA = "model.json"
WEIGHT_KINDS = nnx.Not(nnx.RngState)  # parameters, frozen weights, BatchNorm statistics; not dropout RNGs


def save_trained(directory: Path, model: nnx.Module, metadata: dict):
    """Write ``directory/weights.msgpack`` and ``directory/model.json`` (last: it marks completion)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = nnx.to_pure_dict(nnx.state(model, WEIGHT_KINDS))
    write_bytes(directory / WEIGHTS, serialization.msgpack_serialize(weights))
    write_json(directory / METADATA, metadata)


def load_trained(directory: Path) -> tuple[nnx.Module, dict]:
    """The model (in eval mode) and its metadata, as written by save_trained."""
    directory = Path(directory)
    if not (directory / METADATA).is_file():
        raise UserError(f"no trained model in {directory}: run `dvc repro train` first")
    metadata = json.loads((directory / METADATA).read_text())
    model = build_model(metadata)
    weights = nnx.state(model, WEIGHT_KINDS)
    nnx.replace_by_pure_dict(weights, serialization.msgpack_restore((directory / WEIGHTS).read_bytes()))
    nnx.update(model, weights)
    model.eval()
    return model, metadata


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
