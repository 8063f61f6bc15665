"""Evaluation metrics for a classifier's logits on a labelled split."""

import dataclasses
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import AbstractMesh, Sharding
from tqdm import tqdm

from flaxvision.data import loader
from flaxvision.models.scaling import preprocess_input


@dataclasses.dataclass(frozen=True)
class Evaluation:
    summary: dict  # accuracy, loss, top-k accuracy, macro precision/recall/F1
    per_class: dict  # class name -> precision, recall, f1, support
    confusion: np.ndarray  # [true, predicted] counts


def gather(images, indices):
    """The batch a compiled step works on: ``images[indices]`` of a set held on the devices, or a
    streamed batch itself (``indices`` None)."""
    return images if indices is None else images[indices]


def make_predict_step(eval_graph: nnx.GraphDef, preprocessing: str, mesh: AbstractMesh | None = None):
    """A compiled ``(model_state, images, indices) -> logits`` (see `gather`); with the ``mesh``
    of training's devices, the calls XLA cannot split over them are split by rows (flaxvision.ops.onednn)."""

    @jax.jit
    def predict_step(model_state, images, indices):
        with jax.sharding.use_abstract_mesh(mesh or jax.sharding.get_abstract_mesh()):
            model = nnx.merge(eval_graph, model_state)
            return model(preprocess_input(gather(images, indices).astype(jnp.float32), preprocessing))

    return predict_step


def predict(
    predict_step, model_state, images, batch_size: int, desc: str | None = None, sharding: Sharding | None = None
) -> np.ndarray:
    """Outputs for every image, in order. The last batch is padded (one compiled shape), then trimmed.

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
        outputs.append(predict_step(model_state, batch, indices))
        if desc:
            outputs[-1].block_until_ready()  # so the bar shows work done, not work queued
    return np.concatenate([multihost_utils.process_allgather(output, tiled=True) for output in outputs])[:count]


def predict_model(model: nnx.Module, preprocessing: str, images, batch_size: int) -> np.ndarray:
    graph, state = nnx.split(model)
    return predict(make_predict_step(graph, preprocessing), state, images, batch_size)


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))


def top_classes(scores: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` highest-scoring classes of each row (logits or probabilities), best first."""
    return np.argsort(-scores, axis=-1, kind="stable")[:, :k]


def most_confident_errors(probabilities: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to ``count`` misclassified examples, the most confidently wrong first."""
    predicted = probabilities.argmax(-1)
    wrong = np.flatnonzero(predicted != np.asarray(labels))
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count]


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> dict:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return {"loss": float(loss.mean()), "accuracy": float(np.mean(logits.argmax(-1) == labels))}


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, classes: list[str], top_k: int) -> Evaluation:
    labels = np.asarray(labels)
    predicted = logits.argmax(-1)
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_positives = np.diag(confusion)
    support = confusion.sum(1)
    precision = _ratio(true_positives, confusion.sum(0))
    recall = _ratio(true_positives, support)
    f1 = _ratio(2 * precision * recall, precision + recall)

    present = support > 0  # macro averages over the classes the split contains
    summary = {
        **loss_and_accuracy(logits, labels),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
    }
    # Only where it says something (top-k of k classes or fewer is 1 by definition), under a key
    # that the class count does not change.
    if top_k < len(classes):
        top_k_hits = (top_classes(logits, top_k) == labels[:, None]).any(-1)
        summary[f"top_{top_k}_accuracy"] = float(top_k_hits.mean())
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    }
    return Evaluation(summary, per_class, confusion)


def _ratio(numerator, denominator):
    """Elementwise ratio that is 0 where the denominator is 0 (sklearn's zero_division=0)."""
    numerator = np.asarray(numerator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
