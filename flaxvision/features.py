"""Bottleneck features: frozen backbones run once over data/prepared, so that training the head
(and every head-only experiment after it) reads features instead of running the backbones.

Layout of data/features (replaced as a whole, atomically): ``<split>.npy`` float32 [N, ...] for
train, validation and test, ``features.json`` (which model and weights made them) and
``SHA256SUMS`` (checked when loaded). For a
model without cached features only features.json is written, with ``"features": null``.
"""

import json
from pathlib import Path
from typing import Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxvision.data import Images
from flaxvision.errors import UserError
from flaxvision.files import atomic_directory, verify_checksums, write_checksums, write_json
from flaxvision.inference import apply_in_batches, gather

FEATURES_DIR = Path("data/features")
MANIFEST = "features.json"


class FeatureModel(Protocol):
    """A model with bottleneck features (models.transfer.Transfer): its backbones' output for [0, 255] images."""

    def features(self, images: jax.Array) -> jax.Array: ...


def extract_features(model: nnx.Module, images: Images, batch_size: int, desc: str) -> np.ndarray:
    """``model.features`` of uint8 ``images`` in inference mode: jitted, batched, with a progress bar."""
    model.eval()
    graph, state = nnx.split(model)

    @jax.jit
    def features_step(state: nnx.State, images: jax.Array, indices: jax.Array | None) -> jax.Array:
        model = cast(FeatureModel, nnx.merge(graph, state))  # an nnx.Module to mypy; a transfer model here
        return model.features(gather(images, indices).astype(jnp.float32))

    return apply_in_batches(features_step, state, images, batch_size, desc=desc)


def write_features(directory: Path, features: dict[str, np.ndarray] | None, manifest: dict) -> None:
    with atomic_directory(Path(directory)) as tmp:
        for split, array in (features or {}).items():
            np.save(tmp / f"{split}.npy", array)
        write_json(tmp / MANIFEST, {**manifest, "features": sorted(features) if features else None})
        write_checksums(tmp)


def load_features(directory: Path = FEATURES_DIR) -> dict[str, np.ndarray] | None:
    """The cached features per split, or None when the model trains on images."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise UserError(f"no {directory / MANIFEST}: run `dvc repro extract-features` first")
    verify_checksums(directory, "run `dvc repro --force extract-features`")
    try:
        splits = json.loads((directory / MANIFEST).read_text())["features"]
        return None if splits is None else {split: np.load(directory / f"{split}.npy") for split in splits}
    except (OSError, ValueError, KeyError, TypeError) as error:  # a half-deleted or hand-edited folder
        problem = type(error).__name__
        raise UserError(
            f"{directory} is incomplete or unreadable ({problem}): run `dvc repro --force extract-features`"
        ) from None
