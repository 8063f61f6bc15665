"""evaluate: score the trained model on the test split; write metrics, the confusion matrix and pictures.

Pictures (PNG, DVC image plots) in results/evaluate/plots/: sample training images, the same
images augmented as in training, the most confidently misclassified test images, and the
activation maps of one test image for the model's convolutions (activations/).
"""

from pathlib import Path

from flaxvision import builder, plots
from flaxvision.data import load_prepared
from flaxvision.dvc_stage import stage_main
from flaxvision.errors import UserError
from flaxvision.evaluation import evaluate_logits, softmax
from flaxvision.files import atomic_directory, write_json
from flaxvision.inference import model_logits
from flaxvision.model_folder import load_trained
from flaxvision.models.layers import use_convolutions
from flaxvision.params import Params

MODEL_DIR = Path("artifacts/model")
RESULTS_DIR = Path("results/evaluate")
PLOTS_DIR = RESULTS_DIR / "plots"


@stage_main
def main(params: Params) -> None:
    config = params.evaluate
    convolutions = builder.convolutions(params)
    data = load_prepared()
    images, labels = data.splits["test"]
    if len(labels) == 0:
        raise UserError("the test split is empty: raise preprocess.test_fraction")
    if config.activation_image >= len(labels):
        raise UserError(
            f"params.yaml: evaluate.activation_image is {config.activation_image}, "
            f"but the test split has {len(labels)} images: use 0 to {len(labels) - 1}"
        )
    model, info = load_trained(MODEL_DIR)
    use_convolutions(model, convolutions)

    logits = model_logits(model, info.preprocessing, images, config.batch_size)
    result = evaluate_logits(logits, labels, data.classes, config.top_k)
    probabilities = softmax(logits)
    predicted = probabilities.argmax(-1)

    # Each output is replaced atomically and the metrics come last: a run killed part-way leaves
    # no metrics without the predictions and pictures they go with.
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS_DIR / "per_class.json", [{"class": name, **scores} for name, scores in result.per_class.items()])
    # One row per test image: DVC's confusion template counts them into the matrix.
    write_json(
        RESULTS_DIR / "predictions.json",
        [
            {"actual": data.classes[t], "predicted": data.classes[p]}
            for t, p in zip(labels.tolist(), predicted.tolist(), strict=True)
        ],
    )

    height, width, _ = data.image_shape
    train_images, train_labels = data.splits["train"]
    figures = plots.training_samples(
        train_images, train_labels, data.classes, config.samples, f"{height}×{width} {data.color_mode}", params.augment
    )
    figures["test_misclassified.png"] = plots.misclassified(
        images, labels, probabilities, data.classes, config.misclassified
    )
    index = config.activation_image
    true, guess = labels[index], predicted[index]
    caption = (
        f"test image {index}\ntrue: {plots.short(data.classes[true])}\npredicted: "
        f"{plots.short(data.classes[guess])} {probabilities[index, guess]:.0%} "
        f"({'correct' if true == guess else 'wrong'})"
    )
    activations = plots.activation_maps(
        model,
        info.preprocessing,
        images[index],
        caption,
        true == guess,
        config.activation_layers,
        config.max_activation_layers,
        config.max_channels,
    )
    with atomic_directory(PLOTS_DIR) as folder:
        (folder / "activations").mkdir()
        for name, figure in [*figures.items(), *((f"activations/{name}", f) for name, f in activations.items())]:
            plots.write_png(figure, folder / name)
    print(f"{PLOTS_DIR}: samples, samples_augmented, test_misclassified and {len(activations)} activation maps")

    write_json(RESULTS_DIR / "metrics.json", {"test": result.summary})  # test.accuracy beside train's in exp show
    print("test: " + " ".join(f"{name} {value:.4f}" for name, value in result.summary.items()))


if __name__ == "__main__":
    main()
