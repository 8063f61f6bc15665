"""Running a model over many images: compiled steps applied batch by batch, on the devices or
streamed to them. Training validates, evaluate scores the test split, extract-features computes
features and predict serves, all through here."""

import contextlib
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import AbstractMesh, Sharding
from tqdm import tqdm

from flaxvision.data import Images, loader
from flaxvision.models.scaling import preprocess_input

# A compiled ``(model_state, images, indices) -> outputs`` (see `gather`).
BatchStep = Callable[[nnx.State, jax.Array, jax.Array | None], jax.Array]


def gather(images: jax.Array, indices: jax.Array | None) -> jax.Array:
    """The batch a compiled step works on: ``images[indices]`` of a set held on the devices, or a
    streamed batch itself (``indices`` None)."""
    return images if indices is None else images[indices]


def make_logits_step(eval_graph: nnx.GraphDef, preprocessing: str, mesh: AbstractMesh | None = None) -> BatchStep:
    """A compiled ``(model_state, images, indices) -> logits`` (see `gather`); with the ``mesh``
    of training's devices, the calls XLA cannot split over them are split by rows (flaxvision.ops.onednn)."""

    @jax.jit
    def logits_step(model_state: nnx.State, images: jax.Array, indices: jax.Array | None) -> jax.Array:
        with jax.sharding.use_abstract_mesh(mesh) if mesh else contextlib.nullcontext():
            model = nnx.merge(eval_graph, model_state)
            return model(preprocess_input(gather(images, indices).astype(jnp.float32), preprocessing))

    return logits_step


def apply_in_batches(
    step: BatchStep,
    model_state: nnx.State,
    images: jax.Array | Images,
    batch_size: int,
    desc: str | None = None,
    sharding: Sharding | None = None,
) -> np.ndarray:
    """``step``'s outputs (logits, features) for every image, in order. The last batch is padded
    (one compiled shape), then trimmed.

    ``images`` on the devices (a jax.Array) are gathered there batch by batch; any other array
    (numpy, data/prepared's shards) is streamed: Grain reads each batch and puts it on the
    devices (laid out by ``sharding``, as training's batches; None: the default device).
    With ``desc``, a progress bar of that name counts the batches (on a terminal only: tqdm's
    ``disable=None``, as every bar here, so logs of queued experiments and CI stay short).
    """
    count = len(images)
    if sharding is None:  # a sharded batch keeps its size, a multiple of the devices
        batch_size = min(batch_size, count)
    order = np.arange(-(-count // batch_size) * batch_size) % count
    feed: Iterable[tuple[jax.Array, jax.Array | None]]
    if isinstance(images, jax.Array):
        feed = ((images, jnp.asarray(order[start : start + batch_size])) for start in range(0, len(order), batch_size))
    else:
        feed = ((batch, None) for (batch,) in loader.batches((images,), order, batch_size, sharding))
    outputs = []
    for batch, indices in tqdm(
        feed, desc=desc, total=len(order) // batch_size, unit="batch", disable=None if desc else True
    ):
        outputs.append(step(model_state, batch, indices))
        if desc:
            outputs[-1].block_until_ready()  # so the bar shows work done, not work queued
    return np.concatenate([multihost_utils.process_allgather(output, tiled=True) for output in outputs])[:count]


def model_logits(model: nnx.Module, preprocessing: str, images: jax.Array | Images, batch_size: int) -> np.ndarray:
    """``model``'s logits for uint8 ``images`` scaled by ``preprocessing``, batched and compiled."""
    graph, state = nnx.split(model)
    return apply_in_batches(make_logits_step(graph, preprocessing), state, images, batch_size)
