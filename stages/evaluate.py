"""evaluate: score the trained model on the test split; write metrics and the confusion matrix."""

from pathlib import Path

from flaxvision.config import load_params, section
from flaxvision.data import load_prepared
from flaxvision.errors import UserError, stage_main
from flaxvision.evaluation import EvaluateConfig, evaluate_logits, predict_model
from flaxvision.files import write_json
from flaxvision.trained import load_trained

MODEL_DIR = Path("artifacts/model")
RESULTS_DIR = Path("results/evaluate")


@stage_main
def main():
    config = section(load_params(), "evaluate", EvaluateConfig)
    data = load_prepared()
    images, labels = data.splits["test"]
    if len(labels) == 0:
        raise UserError("the test split is empty: raise preprocess.test_fraction")
    model, metadata = load_trained(MODEL_DIR)

    logits = predict_model(model, metadata["preprocessing"], images, config.batch_size)
    result = evaluate_logits(logits, labels, data.classes, config.top_k)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS_DIR / "metrics.json", result.summary)
    write_json(RESULTS_DIR / "per_class.json", [{"class": name, **scores} for name, scores in result.per_class.items()])
    # One row per test image: DVC's confusion template counts them into the matrix.
    write_json(RESULTS_DIR / "predictions.json", [
        {"actual": data.classes[t], "predicted": data.classes[p]}
        for t, p in zip(labels.tolist(), logits.argmax(-1).tolist())
    ])
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in result.summary.items()))


if __name__ == "__main__":
    main()
