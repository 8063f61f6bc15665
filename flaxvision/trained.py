"""A trained model on disk: its weights (Orbax) and everything needed to rebuild and feed it."""

import json
from pathlib import Path

import orbax.checkpoint as ocp
from flax import nnx

import models
from flaxvision.errors import UserError

WEIGHTS = "weights"
METADATA = "model.json"


def save_trained(directory: Path, model: nnx.Module, metadata: dict):
    """Write ``directory/weights`` and ``directory/model.json`` (metadata last: it marks completion)."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / WEIGHTS, nnx.state(model), force=True)
        checkpointer.wait_until_finished()
    tmp = directory / (METADATA + ".tmp")
    tmp.write_text(json.dumps(metadata, indent=2) + "\n")
    tmp.replace(directory / METADATA)


def load_trained(directory: Path) -> tuple[nnx.Module, dict]:
    """The model (in eval mode) and its metadata, as written by save_trained."""
    directory = Path(directory).absolute()
    if not (directory / METADATA).is_file():
        raise UserError(f"no trained model in {directory}: run `dvc repro train` first")
    metadata = json.loads((directory / METADATA).read_text())
    abstract = nnx.eval_shape(lambda: build_model(metadata))
    graph, abstract_state = nnx.split(abstract)
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(directory / WEIGHTS, abstract_state)
    model = nnx.merge(graph, state)
    model.eval()
    return model, metadata


def build_model(metadata: dict, seed: int = 0) -> nnx.Module:
    return models.create_model(
        metadata["model"],
        num_classes=len(metadata["classes"]),
        input_shape=tuple(metadata["input_shape"]),
        rngs=nnx.Rngs(seed),
    )
