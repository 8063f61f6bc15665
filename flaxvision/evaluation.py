"""A classifier's scores from its logits (softmax, top classes) and its metrics on a labelled split."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import optax


@dataclasses.dataclass(frozen=True)
class Evaluation:
    summary: dict  # accuracy, loss, top-k accuracy, macro precision/recall/F1
    per_class: dict  # class name -> precision, recall, f1, support
    confusion: np.ndarray  # [true, predicted] counts


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


def _ratio(numerator: npt.ArrayLike, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ratio that is 0 where the denominator is 0 (sklearn's zero_division=0)."""
    numerator = np.asarray(numerator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
