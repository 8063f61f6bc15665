import numpy as np
import pytest
from flax import nnx

from flaxvision import models
from flaxvision.evaluation import evaluate_logits
from flaxvision.inference import model_logits
from tests.helpers import pattern_images


def test_metrics_match_hand_computed_values():
    classes = ["a", "b", "c"]
    labels = np.array([0, 0, 1, 1, 2])
    # predictions: 0, 1, 1, 1, 0; the true class is second-ranked for the two mistakes
    logits = np.log(
        np.array(
            [
                [0.7, 0.2, 0.1],
                [0.3, 0.6, 0.1],
                [0.1, 0.8, 0.1],
                [0.2, 0.7, 0.1],
                [0.5, 0.1, 0.4],
            ]
        )
    )
    result = evaluate_logits(logits, labels, classes, top_k=2)
    assert result.summary["accuracy"] == pytest.approx(3 / 5)
    assert result.summary["top_2_accuracy"] == pytest.approx(1.0)
    assert result.summary["loss"] == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.8, 0.7, 0.4])), rel=1e-5)
    np.testing.assert_array_equal(result.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert result.per_class["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert result.per_class["b"]["precision"] == pytest.approx(2 / 3)
    assert result.per_class["b"]["recall"] == 1.0
    assert result.per_class["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert result.summary["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_top_k_accuracy_is_reported_only_below_the_number_of_classes():
    logits, labels = np.log(np.full((2, 3), 1 / 3)), np.array([0, 1])
    assert "top_3_accuracy" not in evaluate_logits(logits, labels, ["x", "y", "z"], top_k=3).summary
    assert set(evaluate_logits(logits, labels, ["x", "y", "z"], top_k=5).summary) == {
        "loss",
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
    }
    assert "top_2_accuracy" in evaluate_logits(logits, labels, ["x", "y", "z"], top_k=2).summary


def test_prediction_does_not_depend_on_the_batch_size():
    images, _ = pattern_images(7)
    model = models.create_model("simple_cnn", num_classes=3, input_shape=(32, 32, 3), rngs=nnx.Rngs(0))
    model.eval()
    whole = model_logits(model, "tf", images, batch_size=7)
    padded = model_logits(model, "tf", images, batch_size=3)  # batches of 3, 3, 1 (+2 padding)
    assert padded.shape == (7, 3)
    np.testing.assert_allclose(padded, whole, rtol=1e-5, atol=1e-5)
